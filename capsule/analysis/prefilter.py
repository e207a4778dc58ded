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
        return any(
            _prefixes_meet(x, y) for x in _expanded(a.text) for y in _expanded(b.text)
        )
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


@functools.lru_cache(maxsize=65536)
def _expanded(text: str) -> tuple[tuple[str, bool], ...]:
    """(literal prefix, is literal) of each form: `~/x` is /root/x and /home/*/x."""
    return tuple(_prefix(g.text) for g in PathGlob(text).expand_home())


def _prefixes_meet(x: tuple[str, bool], y: tuple[str, bool]) -> bool:
    (px, literal_x), (py, literal_y) = x, y
    if literal_x and literal_y:
        return px == py
    if literal_x or literal_y:
        # a literal path meets a glob only if the glob's prefix is a prefix of it
        path, prefix = (px, py) if literal_x else (py, px)
        return path.startswith(prefix)
    return px.startswith(py) or py.startswith(px)


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
    return x.major == y.major and (
        x.minor is None or y.minor is None or x.minor == y.minor
    )


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

    Each clause gets keys: the directory part of its path's literal prefix, as a
    tuple of components (`~` gives two keys, /root and /home), or the whole bytes
    of its address block. Two clauses can only meet if one's key is a prefix of
    the other's, so a clause is compared with the clauses keyed on its ancestors
    and on its own subtree of a trie, not with all others. A clause without a key
    has the empty key: it is compared with everything.
    """

    def __init__(self, clauses: list[Clause]):
        self.clauses = clauses
        self._by_op: dict[str, set[int]] = defaultdict(set)
        self._exact: dict[tuple, list[int]] = defaultdict(list)
        self._subtree: dict[tuple, list[int]] = defaultdict(list)
        for i, clause in enumerate(clauses):
            for op in clause.rule.ops:
                self._by_op[op].add(i)
            for key in clause_keys(clause):
                self._exact[key].append(i)
                for depth in range(len(key) + 1):
                    self._subtree[key[:depth]].append(i)

    def partners(self, i: int) -> list[int]:
        """Indices of the other clauses that may overlap clause `i`, ascending."""
        clause = self.clauses[i]
        near: set[int] = set()
        for key in clause_keys(clause):
            near.update(self._subtree.get(key, ()))
            for depth in range(len(key) + 1):
                near.update(self._exact.get(key[:depth], ()))
        same_op = set().union(*(self._by_op[op] for op in clause.rule.ops))
        found = (near & same_op) - {i}
        return sorted(j for j in found if may_overlap(clause, self.clauses[j]))


def clause_keys(clause: Clause) -> tuple[tuple, ...]:
    """The trie keys of a clause (see PairIndex)."""
    pattern = clause.object.get("path") or clause.object.get("addr")
    if isinstance(pattern, PathGlob):
        return _path_keys(pattern.text)
    if isinstance(pattern, Cidr):
        net = pattern.network
        whole = net.prefixlen // 8
        return (tuple(net.network_address.packed[:whole]),)
    return ((),)


@functools.lru_cache(maxsize=65536)
def _path_keys(text: str) -> tuple[tuple, ...]:
    keys = []
    for prefix, _ in _expanded(text):
        directory = prefix[: prefix.rfind("/") + 1].strip("/")
        keys.append(tuple(directory.split("/")) if directory else ())
    return tuple(dict.fromkeys(keys))
