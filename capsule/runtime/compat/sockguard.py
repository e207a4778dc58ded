"""Load the sock_addr programs, fill their rule trie, attach them to the agent's cgroup.

The programs decide in the kernel; this side only reads what they decided (one record
per denial, audit or kill) and, for a kill, sends the signal, as a cgroup hook cannot.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Callable
from pathlib import Path

from capsule.runtime import build, libbpf
from capsule.runtime.compat import kills
from capsule.runtime.compat.cgroup import AgentCgroup
from capsule.runtime.compat.network import OPS, VERDICTS, Table
from capsule.runtime.ringbuf import RingBuffer

log = logging.getLogger(__name__)

SOURCE = build.BPF_DIR / "compat" / "sock_addr.bpf.c"
PROGRAMS = ("connect4", "connect6", "sendmsg4", "sendmsg6", "bind4", "bind6")
RINGBUF_SIZE = 256 * 1024  # max_entries of `events` in sock_addr.bpf.c
# struct sock_event in sock_addr.bpf.c; tests compare it with the object's BTF
EVENT = struct.Struct("=QQIIIBBBBHH16s16s")
EVENT_FIELDS = (
    "ts_ns",
    "cgroup_id",
    "pid",
    "tid",
    "rule_id",
    "op",
    "verdict",
    "protocol",
    "family",
    "port",
    "pad",
    "addr",
    "comm",
)
_OP_NAMES = {v: k for k, v in OPS.items()}
_VERDICT_NAMES = {0: "allow", 1: "audit", 2: "deny", 3: "kill"}
_PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp"}


class SockGuard:
    """The network rules of one run, in force for every process of its cgroup."""

    def __init__(
        self, table: Table, cgroup: AgentCgroup, report: Callable[[dict], None]
    ) -> None:
        self.table = table
        self.report = report
        self.obj = libbpf.BpfObject(build.compile_bpf(SOURCE))
        self.links: list[libbpf.Link] = []
        try:
            self._load()
            self.ring = RingBuffer(self.obj.map("events").fd, RINGBUF_SIZE)
            for name in PROGRAMS:
                self.links.append(self.obj.program(name).attach_cgroup(cgroup.path))
        except Exception:
            self.close()
            raise

    def _load(self) -> None:
        default = VERDICTS[self.table.default]
        self.obj.set_rodata("targ_default_verdict", bytes([default]))
        self.obj.set_rodata("targ_default_rule", struct.pack("=I", 0))
        self.obj.load()
        rules = self.obj.map("rules")
        for key, value in self.table.items():
            rules.update(key, value)
        log.info(
            "network rules: %d trie entries, default %s",
            len(self.table.entries),
            self.table.default,
        )

    def poll(self, timeout_ms: int) -> None:
        for record in self.ring.poll(timeout_ms):
            self._handle(dict(zip(EVENT_FIELDS, EVENT.unpack_from(record))))

    def _handle(self, raw: dict) -> None:
        event = to_event(raw, self.table.rules)
        if event["verdict"] == "kill":
            event |= kills.outcome(raw["pid"])
        self.report(event)

    def close(self) -> None:
        for link in self.links:
            link.destroy()
        self.links = []
        if getattr(self, "ring", None) is not None:
            self.ring.close()
            self.ring = None
        self.obj.close()


def to_event(raw: dict, rules: list[str]) -> dict:
    """A decision record as a timeline event (area network)."""
    address = ipaddress.IPv6Address(raw["addr"])
    if address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    rule_id = raw["rule_id"]
    return {
        "ts_ns": raw["ts_ns"],
        "pid": raw["pid"],
        "tid": raw["tid"],
        "cgroup_id": raw["cgroup_id"],
        "comm": raw["comm"].split(b"\0")[0].decode("utf-8", "replace"),
        "area": "network",
        "op": _OP_NAMES.get(raw["op"], "?"),
        "verdict": _VERDICT_NAMES.get(raw["verdict"], "deny"),
        "rule": rules[rule_id] if rule_id < len(rules) else f"rule#{rule_id}",
        "address": f"{address}:{raw['port']}",
        "addr": str(address),
        "port": raw["port"],
        "family": raw["family"],
        "proto": _PROTOCOLS.get(raw["protocol"], str(raw["protocol"])),
    }


def object_path() -> Path:
    return build.compile_bpf(SOURCE)
