"""Network rules as entries of the sock_addr programs' LPM trie (bpf/compat/).

The key is (op, protocol, port, address prefix). A rule without a protocol or port
goes in the "any" class (0) of that dimension, so the program looks up four classes.
Each entry's value is the winner among every rule of its class whose block contains
the entry's prefix: the longest match the trie returns is then also the rule-combining
winner for its class, and the program keeps the highest rank of the four.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from capsule.lang.model import (
    DEFAULT_FALLBACK,
    Cidr,
    Clause,
    Effect,
    Name,
    Policy,
    PortRange,
)
from capsule.lang.semantics import precedence
from capsule.runtime.compat.files import enforced

OPS = {"connect": 1, "bind": 2, "send": 3}
VERDICTS = {"allow": 0, "audit": 1, "escalate": 1, "deny": 2, "kill": 3}
MAX_PORTS_PER_RULE = 4096
MAX_ENTRIES = 16384  # max_entries of the trie in sock_addr.bpf.c
KEY_HEAD_BITS = 32
_KEY = struct.Struct("=IBBH16s")
_VALUE = struct.Struct("=IIB3x")
_ANY = ipaddress.IPv6Network("::/0")


@dataclass(frozen=True)
class Entry:
    op: int
    protocol: int
    port: int
    network: ipaddress.IPv6Network

    def key(self) -> bytes:
        return _KEY.pack(
            KEY_HEAD_BITS + self.network.prefixlen,
            self.op,
            self.protocol,
            self.port,
            self.network.network_address.packed,
        )


def cgroup_limit(clause: Clause) -> str | None:
    """Why the cgroup hooks cannot enforce this clause, or None if they can."""
    rule = clause.rule
    if not rule.subject.is_any:
        return "cgroup hooks cannot tell processes apart (subject conditions)"
    if rule.after is not None:
        return "cgroup hooks cannot follow taints (after)"
    port = clause.object.get("port")
    if isinstance(port, PortRange) and port.hi - port.lo + 1 > MAX_PORTS_PER_RULE:
        return f"a port range wider than {MAX_PORTS_PER_RULE} ports"
    return None


def _classes(clause: Clause) -> list[tuple[int, int, ipaddress.IPv6Network]]:
    proto = clause.object.get("protocol")
    port = clause.object.get("port")
    addr = clause.object.get("addr")
    protocol = proto.number if isinstance(proto, Name) else 0
    ports = range(port.lo, port.hi + 1) if isinstance(port, PortRange) else [0]
    network = addr.network if isinstance(addr, Cidr) else _ANY
    return [(protocol, p, network) for p in ports]


@dataclass
class Table:
    """The trie's entries and the rule references their ids index."""

    entries: dict[Entry, tuple[int, int, str]]  # entry -> (rank, rule id, verdict)
    rules: list[str]
    default: str

    def items(self):
        for entry, (rank, rule_id, verdict) in self.entries.items():
            yield entry.key(), _VALUE.pack(rank, rule_id, VERDICTS[verdict])


def build_table(policy: Policy) -> Table:
    """Compute the trie for the clauses of the ops the hooks see."""
    clauses = [
        c
        for c in policy.clauses("network")
        if c.rule.ops & OPS.keys() and cgroup_limit(c) is None
    ]
    ranks = {
        key: i + 1 for i, key in enumerate(sorted({precedence(c) for c in clauses}))
    }
    rules = ["default:network"] + sorted({c.rule.ref for c in clauses})
    placed: dict[tuple[int, int, int], list[tuple[ipaddress.IPv6Network, Clause]]] = {}
    for clause in clauses:
        for op in sorted(clause.rule.ops & OPS.keys()):
            for protocol, port, network in _classes(clause):
                placed.setdefault((OPS[op], protocol, port), []).append(
                    (network, clause)
                )
    entries: dict[Entry, tuple[int, int, str]] = {}
    for (op, protocol, port), members in placed.items():
        for network, _ in members:
            covering = [c for n, c in members if network.subnet_of(n)]
            winner = max(covering, key=precedence)
            entries[Entry(op, protocol, port, network)] = (
                ranks[precedence(winner)],
                rules.index(winner.rule.ref),
                str(_hook_effect(winner.rule.effect, enforced(winner.rule))),
            )
    if len(entries) > MAX_ENTRIES:
        from capsule.errors import CapsuleError

        raise CapsuleError(
            f"failed to build network rules: {len(entries)} entries, "
            f"more than the {MAX_ENTRIES} the hooks hold",
            hint="use fewer ports or port ranges in network rules",
        )
    default = policy.default("network")
    fallback = policy.default_fallbacks.get("network", DEFAULT_FALLBACK)
    now = fallback if default is Effect.ESCALATE else default
    return Table(entries, rules, str(_hook_effect(default, now)))


def _hook_effect(effect: Effect, now: Effect) -> Effect:
    """What the hook applies: an escalation allowed now is still reported (as an
    audit), so that the runtime can hand it to the classifier."""
    if effect is Effect.ESCALATE and now is Effect.ALLOW:
        return Effect.AUDIT
    return now
