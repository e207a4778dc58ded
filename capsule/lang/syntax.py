"""The syntax tree of one `.cap` file, before includes, names and lists are resolved."""

from __future__ import annotations

from dataclasses import dataclass

from capsule.lang.model import Location


@dataclass(frozen=True, slots=True)
class Value:
    """One written value; `quoted` values are taken literally (no `$` expansion)."""

    text: str
    loc: Location
    quoted: bool = False

    @property
    def length(self) -> int:
        return len(self.text) + 2 * self.quoted


@dataclass(frozen=True, slots=True)
class ListValue:
    """`[a, b, c]`, written inline."""

    items: tuple[Value, ...]
    loc: Location


Item = Value | ListValue


@dataclass(frozen=True, slots=True)
class Word:
    """A bare word whose place gives it meaning: an area, an operation, a name."""

    text: str
    loc: Location


@dataclass(frozen=True, slots=True)
class ObjectSyntax:
    field: Word | None  # None: the area's default field
    items: tuple[Item, ...]
    loc: Location


@dataclass(frozen=True, slots=True)
class Trigger:
    """`AREA OPS OBJECTS`, as written after `after` or in `taint NAME = ...`."""

    area: Word
    ops: tuple[Word, ...]
    objects: tuple[ObjectSyntax, ...]
    loc: Location
    text: str


@dataclass(frozen=True, slots=True)
class EffectSyntax:
    effect: Word
    fallback: Word | None


@dataclass(frozen=True, slots=True)
class RuleSyntax:
    loc: Location
    effect: EffectSyntax
    area: Word
    ops: tuple[Word, ...]
    objects: tuple[ObjectSyntax, ...]
    conditions: tuple[ObjectSyntax, ...]  # subject conditions, field always set
    after: Word | Trigger | None
    priority: Word | None
    message: Value | None
    severity: Word | None
    tags: tuple[Item, ...]
    text: str
    repeated: tuple[Word, ...] = ()  # a `when`, `after` or metadata given twice


@dataclass(frozen=True, slots=True)
class Include:
    path: Value
    loc: Location


@dataclass(frozen=True, slots=True)
class Let:
    name: Word
    items: tuple[Item, ...]
    loc: Location


@dataclass(frozen=True, slots=True)
class TaintDef:
    name: Word
    trigger: Trigger
    loc: Location


@dataclass(frozen=True, slots=True)
class Default:
    areas: tuple[Word, ...]  # empty: every area
    effect: EffectSyntax
    loc: Location


@dataclass(frozen=True, slots=True)
class Setting:
    key: Word
    value: Value
    loc: Location


Statement = Include | Let | TaintDef | Default | Setting | RuleSyntax


@dataclass(frozen=True, slots=True)
class FileSyntax:
    path: str
    text: str
    statements: tuple[Statement, ...]
