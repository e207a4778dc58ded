"""Device rules at the cgroup device hook (bpf/compat/device.bpf.c).

A rule names devices by number (`1:3`, `226:*`) or by class (`gpu`); the hook sees the
device number of every node the agent's processes open, whatever its path.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from capsule.lang.model import Clause, DeviceNumber, Name, Policy
from capsule.lang.patterns import device_class_numbers
from capsule.lang.semantics import precedence
from capsule.runtime import build, libbpf
from capsule.runtime.compat import kills
from capsule.runtime.compat.cgroup import AgentCgroup
from capsule.runtime.compat.files import enforced
from capsule.runtime.compat.network import VERDICTS
from capsule.runtime.ringbuf import RingBuffer

log = logging.getLogger(__name__)

SOURCE = build.BPF_DIR / "compat" / "device.bpf.c"
ANY = 0xFFFFFFFF
RINGBUF_SIZE = 64 * 1024
_KEY = struct.Struct("=II")
_VALUE = struct.Struct("=IIB3x")
# struct dev_event in device.bpf.c; a test compares it with the object's BTF
EVENT = struct.Struct("=QQIIIIIHBB16s")
EVENT_FIELDS = (
    "ts_ns",
    "cgroup_id",
    "pid",
    "tid",
    "rule_id",
    "major",
    "minor",
    "access",
    "verdict",
    "pad",
    "comm",
)
_VERDICT_NAMES = {0: "allow", 1: "audit", 2: "deny", 3: "kill"}


def device_limit(clause: Clause) -> str | None:
    """Why the device hook cannot enforce this clause, or None if it can."""
    rule = clause.rule
    if not rule.subject.is_any:
        return "the device hook cannot tell processes apart (subject conditions)"
    if rule.after is not None:
        return "the device hook cannot follow taints (after)"
    if "path" in clause.object:
        return "the device hook sees device numbers, not paths"
    return None


def _keys(clause: Clause) -> list[tuple[int, int]]:
    dev = clause.object.get("dev")
    if dev is None:
        return [(ANY, ANY)]
    numbers = device_class_numbers(dev.value) if isinstance(dev, Name) else (dev,)
    return [
        (n.major, ANY if n.minor is None else n.minor)
        for n in numbers
        if isinstance(n, DeviceNumber)
    ]


def _covers(outer: tuple[int, int], inner: tuple[int, int]) -> bool:
    return all(o == ANY or o == i for o, i in zip(outer, inner))


@dataclass
class DeviceTable:
    entries: dict[tuple[int, int], tuple[int, int, str]]  # key -> rank, rule, verdict
    rules: list[str]
    default: str

    def empty(self) -> bool:
        return not self.entries and self.default == "allow"


def build_table(policy: Policy) -> DeviceTable:
    clauses = [
        c
        for c in policy.clauses("device")
        if "open" in c.rule.ops and device_limit(c) is None
    ]
    ranks = {
        key: i + 1 for i, key in enumerate(sorted({precedence(c) for c in clauses}))
    }
    rules = ["default:device"] + sorted({c.rule.ref for c in clauses})
    placed = [(key, c) for c in clauses for key in _keys(c)]
    entries = {}
    for key, _ in placed:
        winner = max((c for k, c in placed if _covers(k, key)), key=precedence)
        entries[key] = (
            ranks[precedence(winner)],
            rules.index(winner.rule.ref),
            str(enforced(winner.rule)),
        )
    return DeviceTable(entries, rules, str(policy.default("device")))


class DeviceGuard:
    """The device rules of one run, attached to the agent's cgroup."""

    def __init__(
        self, table: DeviceTable, cgroup: AgentCgroup, report: Callable[[dict], None]
    ) -> None:
        self.table, self.report = table, report
        self.obj = libbpf.BpfObject(build.compile_bpf(SOURCE))
        self.link = self.ring = None
        try:
            self.obj.set_rodata(
                "targ_default_verdict", bytes([VERDICTS[table.default]])
            )
            self.obj.load()
            rules = self.obj.map("dev_rules")
            for key, (rank, rule_id, verdict) in table.entries.items():
                rules.update(
                    _KEY.pack(*key), _VALUE.pack(rank, rule_id, VERDICTS[verdict])
                )
            self.ring = RingBuffer(self.obj.map("dev_events").fd, RINGBUF_SIZE)
            self.link = self.obj.program("check_device").attach_cgroup(cgroup.path)
        except Exception:
            self.close()
            raise

    def poll(self, timeout_ms: int) -> None:
        for record in self.ring.poll(timeout_ms):
            raw = dict(zip(EVENT_FIELDS, EVENT.unpack_from(record)))
            verdict = _VERDICT_NAMES.get(raw["verdict"], "deny")
            killed = kills.outcome(raw["pid"]) if verdict == "kill" else {}
            rule_id = raw["rule_id"]
            self.report(
                killed
                | {
                    "ts_ns": raw["ts_ns"],
                    "pid": raw["pid"],
                    "tid": raw["tid"],
                    "comm": raw["comm"].split(b"\0")[0].decode("utf-8", "replace"),
                    "area": "device",
                    "op": "open",
                    "verdict": verdict,
                    "rule": self.table.rules[rule_id]
                    if rule_id < len(self.table.rules)
                    else f"rule#{rule_id}",
                    "device": f"{raw['major']}:{raw['minor']}",
                }
            )

    def close(self) -> None:
        if self.link is not None:
            self.link.destroy()
            self.link = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.obj.close()


def object_path():
    return build.compile_bpf(SOURCE)
