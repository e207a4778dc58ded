"""The syntax tree of one `.cap` file, before includes, names and lists are resolved."""

from __future__ import annotations

from dataclasses import dataclass

from capsule.lang.model import Location


@dataclass(slots=True)
class Value:
    """One written value; `quoted` values are taken literally (no `$` expansion).

    Positions are kept as numbers and made a Location only when asked: the parser
    makes one Value per value of a policy, and most are never reported.
    """

    text: str
    file: str
    line: int
    col: int
    quoted: bool = False
    start: int = 0  # offsets in the file's text, for the source of a rule
    end: int = 0

    @property
    def loc(self) -> Location:
        return Location(self.file, self.line, self.col)

    @property
    def length(self) -> int:
        return len(self.text) + 2 * self.quoted


@dataclass(slots=True)
class ListValue:
    """`[a, b, c]`, written inline."""

    items: tuple[Value, ...]
    file: str
    line: int
    col: int
    start: int = 0
    end: int = 0

    @property
    def loc(self) -> Location:
        return Location(self.file, self.line, self.col)


Item = Value | ListValue


@dataclass(slots=True)
class Word:
    """A bare word whose place gives it meaning: an area, an operation, a name."""

    text: str
    file: str
    line: int
    col: int
    start: int = 0
    end: int = 0

    @property
    def loc(self) -> Location:
        return Location(self.file, self.line, self.col)


@dataclass(slots=True)
class ObjectSyntax:
    field: Word | None  # None: the area's default field
    items: tuple[Item, ...]

    @property
    def loc(self) -> Location:
        return (self.field or self.items[0]).loc


@dataclass(slots=True)
class Trigger:
    """`AREA OPS OBJECTS`, as written after `after` or in `taint NAME = ...`."""

    area: Word
    ops: tuple[Word, ...]
    objects: tuple[ObjectSyntax, ...]
    loc: Location
    text: str


@dataclass(slots=True)
class EffectSyntax:
    effect: Word
    fallback: Word | None


@dataclass(slots=True)
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


@dataclass(slots=True)
class Include:
    path: Value
    loc: Location


@dataclass(slots=True)
class Let:
    name: Word
    items: tuple[Item, ...]
    loc: Location


@dataclass(slots=True)
class TaintDef:
    name: Word
    trigger: Trigger
    loc: Location


@dataclass(slots=True)
class Default:
    areas: tuple[Word, ...]  # empty: every area
    effect: EffectSyntax
    loc: Location


@dataclass(slots=True)
class Setting:
    key: Word
    value: Value
    loc: Location


Statement = Include | Let | TaintDef | Default | Setting | RuleSyntax


@dataclass(slots=True)
class FileSyntax:
    path: str
    text: str
    statements: tuple[Statement, ...]
