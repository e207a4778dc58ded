"""Credential clauses -> one rule table, strongest first, for the creds hooks.

A creds clause names at most one field (`uid`, `gid` or `cap`) or none; an event of
setuid carries uids, of setgid gids, of capset capabilities, so a clause whose field
the op does not carry never matches it. The kernel scans the short table (one array
map, `bpf_loop`) and stops at the first entry that matches, as for network clauses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from capsule.lang.model import IdRange, Name
from capsule.lang.names import AREAS

FIELDS = {"uid", "gid", "cap"}
FIELD_CODES = {None: 0, "uid": 1, "gid": 2, "cap": 3}
OP_FIELD = {"setuid": "uid", "setgid": "gid", "capset": "cap"}  # what each op carries
ENTRY = struct.Struct("<IIHH")  # lo, hi, field, ops


@dataclass(frozen=True)
class CredEntry:
    """One clause: matches if its op is in `ops` and, unless `field` is None, the
    event's value of that field is in lo..hi."""

    field: str | None
    lo: int
    hi: int
    ops: int  # bit per op id of names.AREAS["creds"]
    verdict: object  # ir.Verdict

    def matches(self, op_id: int, value: int | None) -> bool:
        if not self.ops & (1 << op_id):
            return False
        if self.field is None:
            return True
        op = AREAS["creds"][op_id]
        return (
            OP_FIELD.get(op) == self.field
            and value is not None
            and (self.lo <= value <= self.hi)
        )

    def key_bytes(self) -> bytes:
        return ENTRY.pack(self.lo, self.hi, FIELD_CODES[self.field], self.ops)


@dataclass
class CredTable:
    """The creds area: entries strongest first, then the default."""

    area: str
    default: object  # ir.Verdict
    entries: list[CredEntry] = field(default_factory=list)
    blocking_ops: set[int] = field(default_factory=set)

    def op_id(self, op: str) -> int:
        return AREAS[self.area].index(op)

    def decide(self, op: str, value: int | None):
        """One value of the op's field (None: the event carries none)."""
        op_id = self.op_id(op)
        for entry in self.entries:
            if entry.matches(op_id, value):
                return entry.verdict
        return self.default


def entry(clause_object, op_ids: list[int], verdict) -> CredEntry:
    """The table entry of one clause object (at most one of uid, gid, cap)."""
    ops = sum(1 << op for op in op_ids)
    if not clause_object:
        return CredEntry(None, 0, 0, ops, verdict)
    ((name, pattern),) = clause_object.items()
    if isinstance(pattern, Name):
        return CredEntry(name, pattern.number, pattern.number, ops, verdict)
    assert isinstance(pattern, IdRange)
    return CredEntry(name, pattern.lo, pattern.hi, ops, verdict)


def build(default, entries: list[CredEntry]) -> CredTable:
    table = CredTable("creds", default)
    table.entries = sorted(entries, key=lambda e: e.verdict.rank, reverse=True)
    return table
