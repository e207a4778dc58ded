"""The resolved policy: what every other package reads after `capsule.lang` parsed,
included, expanded and checked the source files.

All classes are frozen. Names here are a contract with capsule/analysis,
capsule/codegen and capsule/runtime; keep them stable.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from capsule.lang.names import AREAS, FIELDS, SUBJECT_FIELDS
from capsule.lang.patterns import (  # noqa: F401  (re-exported for other packages)
    Cidr,
    DeviceNumber,
    IdRange,
    Name,
    PathGlob,
    Pattern,
    PatternError,
    PortRange,
    device_class_numbers,
    to_ipv6,
)

__all__ = [
    "AREAS",
    "FIELDS",
    "SUBJECT_FIELDS",
    "After",
    "Cidr",
    "Clause",
    "DeviceNumber",
    "Effect",
    "Event",
    "IdRange",
    "Location",
    "Name",
    "ObjectPattern",
    "PathGlob",
    "Pattern",
    "Policy",
    "PortRange",
    "Rule",
    "Subject",
]


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A place in a policy file; line and col count from 1."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Effect(enum.Enum):
    """What happens to a matching event. `rank` orders effects when only the effect
    can decide between two clauses (deny overrides)."""

    ALLOW = "allow"
    AUDIT = "audit"  # allow and record
    ESCALATE = "escalate"  # decide with the fallback now, ask the classifier
    DENY = "deny"
    KILL = "kill"  # deny and kill the offending process

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def blocks(self) -> bool:
        return self in (Effect.DENY, Effect.KILL)

    def __str__(self) -> str:
        return self.value


_RANK = {effect: rank for rank, effect in enumerate(Effect)}
DEFAULT_EFFECT = Effect.ALLOW  # when a policy sets no default for an area
DEFAULT_FALLBACK = Effect.AUDIT  # when an escalate rule names no fallback


class ObjectPattern(Mapping[str, Pattern]):
    """A frozen mapping field -> pattern; an event matches if every field matches.

    An empty ObjectPattern matches any object of its area.
    """

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, Pattern] | None = None):
        self._items = MappingProxyType(dict(sorted((items or {}).items())))
        self._hash: int | None = None  # computed when first asked: most are not

    def __getitem__(self, key: str) -> Pattern:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ObjectPattern):
            return self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return f"ObjectPattern({dict(self._items)!r})"

    def __str__(self) -> str:
        return " ".join(f"{k} {v}" for k, v in self._items.items()) or "any"

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """True if every field is present in `fields` and its pattern matches.

        A field the event lacks never matches, so `deny file rename to /etc/**`
        does not fire on a write.
        """
        for name, pattern in self._items.items():
            value = fields.get(name)
            if value is None or not pattern.matches(value):
                return False
        return True


ANY_OBJECT = ObjectPattern()


@dataclass(frozen=True, slots=True)
class Subject:
    """Conditions on the process that causes the event. Each field is a tuple of
    alternatives (any may match); an empty tuple puts no condition."""

    exe: tuple[PathGlob, ...] = ()
    ancestor: tuple[PathGlob, ...] = ()  # any ancestor's executable
    uid: tuple[IdRange, ...] = ()
    cgroup: tuple[PathGlob, ...] = ()  # the cgroup v2 path, e.g. /agent.slice/x

    @property
    def is_any(self) -> bool:
        return not (self.exe or self.ancestor or self.uid or self.cgroup)

    def matches(self, event: Event) -> bool:
        if self.exe and not _any_match(self.exe, event.exe):
            return False
        if self.uid and not _any_match(self.uid, event.uid):
            return False
        if self.cgroup and not _any_match(self.cgroup, event.cgroup):
            return False
        if self.ancestor:
            return any(_any_match(self.ancestor, exe) for exe in event.ancestors)
        return True

    def __str__(self) -> str:
        parts = [
            f"{name} " + ", ".join(str(p) for p in getattr(self, name))
            for name in SUBJECT_FIELDS
            if getattr(self, name)
        ]
        return " ".join(parts)


def _any_match(patterns: tuple[Pattern, ...], value: object) -> bool:
    return value is not None and any(p.matches(value) for p in patterns)


ANY_SUBJECT = Subject()


@dataclass(frozen=True, slots=True)
class After:
    """A taint: once a process caused an event that matches (area, ops, objects),
    it carries the taint `name`, and rules with this `after` apply to it.

    The taint passes to children forked later; with `set taint-scope = process`
    it stays with the one process.
    """

    name: str
    area: str
    ops: frozenset[str]
    objects: tuple[ObjectPattern, ...]  # empty: any object
    loc: Location

    def triggered_by(self, event: Event) -> bool:
        if event.area != self.area or event.op not in self.ops:
            return False
        return not self.objects or any(o.matches(event.fields) for o in self.objects)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, with lists and variables expanded: one objects entry per clause."""

    loc: Location
    effect: Effect
    fallback: Effect | None  # escalate only: the effect enforced now
    area: str
    ops: frozenset[str]
    objects: tuple[ObjectPattern, ...]  # empty: any object
    subject: Subject = ANY_SUBJECT
    after: After | None = None
    priority: int = 0
    message: str | None = None
    severity: str = "medium"
    tags: tuple[str, ...] = ()
    text: str = ""  # the rule's source text, for explain and the timeline

    @property
    def enforced(self) -> Effect:
        """The effect the kernel applies now (escalate applies its fallback)."""
        return self.fallback if self.effect is Effect.ESCALATE else self.effect

    def clauses(self) -> tuple[Clause, ...]:
        objects = self.objects or (ANY_OBJECT,)
        return tuple(Clause(self, i, obj) for i, obj in enumerate(objects))

    @property
    def ref(self) -> str:
        """`file:line`, as enforcement events name the rule."""
        return f"{self.loc.file}:{self.loc.line}"


@dataclass(frozen=True, slots=True)
class Clause:
    """One object of one rule: the unit that matches events and wins or loses."""

    rule: Rule
    index: int
    object: ObjectPattern

    def matches(self, event: Event) -> bool:
        rule = self.rule
        if event.area != rule.area or event.op not in rule.ops:
            return False
        if rule.after is not None and rule.after.name not in event.taints:
            return False
        return self.object.matches(event.fields) and rule.subject.matches(event)


@dataclass(frozen=True, slots=True)
class Policy:
    """A checked policy: rules from every included file, defaults and settings."""

    rules: tuple[Rule, ...]
    defaults: Mapping[str, Effect] = field(default_factory=dict)  # area -> effect
    settings: Mapping[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # the given files, then their includes
    default_fallbacks: Mapping[str, Effect] = field(default_factory=dict)

    def default(self, area: str) -> Effect:
        return self.defaults.get(area, DEFAULT_EFFECT)

    def clauses(self, area: str | None = None) -> Iterator[Clause]:
        for rule in self.rules:
            if area is None or rule.area == area:
                yield from rule.clauses()

    @property
    def taints(self) -> tuple[After, ...]:
        """Every distinct taint that some rule waits for."""
        seen: dict[str, After] = {}
        for rule in self.rules:
            if rule.after is not None:
                seen.setdefault(rule.after.name, rule.after)
        return tuple(seen.values())


@dataclass(frozen=True, slots=True)
class Event:
    """What the decision sees of one observed event.

    `fields` uses the object field names of names.FIELDS: path/to (str), addr (str
    or ipaddress), port (int), protocol (str), uid/gid (int), cap (name or number),
    dev ((major, minor)), fstype (str), flags (set of names), ns (str), signal (name
    or number), target (str, the other process's executable).
    """

    area: str
    op: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    exe: str | None = None
    ancestors: tuple[str, ...] = ()  # executables of parent, grandparent, ...
    uid: int | None = None
    cgroup: str | None = None
    taints: frozenset[str] = frozenset()
