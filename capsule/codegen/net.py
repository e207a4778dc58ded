"""Network clauses -> one rule table, strongest first, for the socket hooks.

A network clause is a conjunction of an address block, a port range and a protocol;
an LPM trie can index the address but not the other two without a cross product, so
the kernel scans this short table (one array map, `bpf_loop`) and stops at the first
entry that matches: the table is sorted by rank, so the first match is the winner.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from capsule.lang.model import Cidr, Name, PortRange
from capsule.lang.names import AREAS

ALL_V6 = Cidr(ipaddress.IPv6Network("::/0"))
FIELDS = {"addr", "port", "protocol"}
RAW = 255  # names.PROTOCOLS["raw"]: any SOCK_RAW socket
ENTRY = struct.Struct("<16s16sHHHH")  # net, mask, port lo, port hi, proto, ops


@dataclass(frozen=True)
class NetEntry:
    """One clause: the event matches if every part matches and its op is in `ops`."""

    cidr: Cidr
    ports: PortRange
    proto: int  # 0: any protocol
    ops: int  # bit per op id of names.AREAS["network"]
    verdict: object  # ir.Verdict

    def matches(self, op_id: int, addr: object, port: int, proto: int) -> bool:
        if not self.ops & (1 << op_id) or (self.proto and self.proto != proto):
            return False
        return self.ports.matches(port) and self.cidr.matches(addr)

    def key_bytes(self) -> bytes:
        network = self.cidr.network
        mask = int(network.netmask).to_bytes(16, "big")
        return ENTRY.pack(
            network.network_address.packed,
            mask,
            self.ports.lo,
            self.ports.hi,
            self.proto,
            self.ops,
        )


@dataclass
class NetTable:
    """The network area: entries strongest first, then the default."""

    area: str
    default: object  # ir.Verdict
    entries: list[NetEntry] = field(default_factory=list)
    blocking_ops: set[int] = field(default_factory=set)

    def op_id(self, op: str) -> int:
        return AREAS[self.area].index(op)

    def decide(self, op: str, addr: object, port: int, proto: int):
        op_id = self.op_id(op)
        for entry in self.entries:
            if entry.matches(op_id, addr, port, proto):
                return entry.verdict
        return self.default


def entry(clause_object, op_ids: list[int], verdict) -> NetEntry:
    """The table entry of one clause object (fields addr, port, protocol)."""
    protocol: Name | None = clause_object.get("protocol")
    return NetEntry(
        cidr=clause_object.get("addr", ALL_V6),
        ports=clause_object.get("port", PortRange(0, 65535)),
        proto=protocol.number if protocol is not None else 0,
        ops=sum(1 << op for op in op_ids),
        verdict=verdict,
    )


def build(default, entries: list[NetEntry]) -> NetTable:
    table = NetTable("network", default)
    table.entries = sorted(entries, key=lambda e: e.verdict.rank, reverse=True)
    for item in entries:
        if item.verdict.enforced.blocks:
            table.blocking_ops.update(i for i in range(8) if item.ops & (1 << i))
    return table
