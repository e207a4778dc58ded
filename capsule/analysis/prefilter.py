"""Cheap tests that rule out most clause pairs before z3 sees them.

Two clauses can only overlap if they share an operation and, field by field, their
patterns can meet: one literal path prefix extends the other, CIDRs nest, ranges
intersect, names are equal. A "may overlap" here is only a candidate; z3 decides.
A "no" must be sound: it is never said of two clauses that share an event.
"""

from __future__ import annotations

import functools
from collections import defaultdict

from capsule.lang import names
from capsule.lang.model import (
    Cidr,
    Clause,
    DeviceNumber,
    IdRange,
    Name,
    PathGlob,
    PortRange,
    device_class_numbers,
)


def patterns_may_meet(a, b) -> bool:
    """False only if no value matches both patterns (of the same field)."""
    if isinstance(a, PathGlob) and isinstance(b, PathGlob):
        (pa, literal_a), (pb, literal_b) = _prefix(a.text), _prefix(b.text)
        if literal_a and literal_b:
            return a.text == b.text
        return pa.startswith(pb) or pb.startswith(pa)
    if isinstance(a, Cidr) and isinstance(b, Cidr):
        return a.network.overlaps(b.network)
    if isinstance(a, (PortRange, IdRange)) and isinstance(b, (PortRange, IdRange)):
        return a.lo <= b.hi and b.lo <= a.hi
    if isinstance(a, (Name, DeviceNumber)) and isinstance(b, (Name, DeviceNumber)):
        return _names_may_meet(a, b)
    return True


@functools.lru_cache(maxsize=65536)
def _prefix(text: str) -> tuple[str, bool]:
    glob = PathGlob(text)
    return glob.literal_prefix, glob.is_literal


def _names_may_meet(a, b) -> bool:
    if isinstance(a, Name) and a.kind == names.MOUNT_FLAG:
        return True  # an event carries a set of flags: any two can meet
    devices_a, devices_b = _devices(a), _devices(b)
    if devices_a is not None and devices_b is not None:
        return any(_devices_meet(x, y) for x in devices_a for y in devices_b)
    return a == b


def _devices(pattern):
    if isinstance(pattern, DeviceNumber):
        return (pattern,)
    if pattern.kind == "device-class":
        return device_class_numbers(pattern.value)
    return None


def _devices_meet(x: DeviceNumber, y: DeviceNumber) -> bool:
    return x.major == y.major and (x.minor is None or y.minor is None or x.minor == y.minor)


def _alternatives_may_meet(xs, ys) -> bool:
    if not xs or not ys:
        return True
    return any(patterns_may_meet(x, y) for x in xs for y in ys)


def may_overlap(a: Clause, b: Clause) -> bool:
    """False only if no event matches both clauses."""
    ra, rb = a.rule, b.rule
    if ra.area != rb.area or not (ra.ops & rb.ops):
        return False
    for field in a.object.keys() & b.object.keys():
        if not patterns_may_meet(a.object[field], b.object[field]):
            return False
    sa, sb = ra.subject, rb.subject
    return (
        _alternatives_may_meet(sa.exe, sb.exe)
        and _alternatives_may_meet(sa.uid, sb.uid)
        and _alternatives_may_meet(sa.cgroup, sb.cgroup)
    )


class PairIndex:
    """Finds the candidate partners of a clause without comparing all pairs.

    Clauses are bucketed by operation and by the first component of the literal
    prefix of their `path` (clauses without one go to a bucket every clause meets).
    """

    def __init__(self, clauses: list[Clause]):
        self.clauses = clauses
        self._by_op: dict[str, set[int]] = defaultdict(set)
        self._by_top: dict[str, set[int]] = defaultdict(set)
        self._wild: set[int] = set()
        for i, clause in enumerate(clauses):
            for op in clause.rule.ops:
                self._by_op[op].add(i)
            top = _top_component(clause)
            (self._by_top[top] if top is not None else self._wild).add(i)

    def partners(self, i: int) -> list[int]:
        """Indices of the other clauses that may overlap clause `i`, ascending."""
        clause = self.clauses[i]
        same_op = set().union(*(self._by_op[op] for op in clause.rule.ops))
        top = _top_component(clause)
        near = self._wild | self._by_top[top] if top is not None else same_op
        found = (same_op & near) - {i}
        return sorted(j for j in found if may_overlap(clause, self.clauses[j]))


def _top_component(clause: Clause) -> str | None:
    """The first path component every matching path has, if the prefix fixes it."""
    glob = clause.object.get("path")
    if not isinstance(glob, PathGlob):
        return None
    prefix, literal = _prefix(glob.text)
    top, sep, _ = prefix[1:].partition("/")
    return top if sep or literal else None
