"""Parse the text of one `.cap` file into its syntax tree with lark (LALR).

Lark builds its tree, then _Builder turns it into capsule.lang.syntax nodes. Syntax
errors become one Diagnostic each; no input raises anything else.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import lark
from lark import Token, Transformer, v_args

from capsule.lang import syntax as ast
from capsule.lang.diagnostics import ERROR, Diagnostic
from capsule.lang.model import Location

GRAMMAR = Path(__file__).with_name("capsule.lark")
# C0 controls except tab, newline and carriage return, plus DEL
_BAD_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACE = re.compile(r"\s+")
_TERMINAL_NAMES = {
    "WORD": "a value",
    "NAME": "a name",
    "KEY": "a setting name",
    "INT": "a number",
    "STRING": "a quoted string",
    "$END": "end of file",
}
_MAX_EXPECTED = 8


class ParseFailed(Exception):
    """The text is not a policy; `diagnostic` says where and why."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def unescape(text: str) -> str:
    """A quoted string's content with `\\"` and `\\\\` (and any `\\x`) resolved."""
    return re.sub(r"\\(.)", r"\1", text)


@v_args(inline=False)
class _Builder(Transformer):
    """Turns each grammar rule into a syntax node as the parser reduces it."""

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)
        self.file = "<string>"
        self.text = ""

    def _loc(self, token: Token) -> Location:
        return Location(self.file, token.line, token.column)

    def _word(self, token: Token) -> ast.Word:
        return ast.Word(str(token), self._loc(token))

    def _source(self, meta: lark.tree.Meta) -> str:
        return _SPACE.sub(" ", self.text[meta.start_pos : meta.end_pos]).strip()

    # values
    def value(self, children: list[Token]) -> ast.Value:
        token = children[0]
        if token.type == "STRING":
            return ast.Value(str(token)[1:-1], self._loc(token), quoted=True)
        return ast.Value(str(token), self._loc(token))

    @v_args(meta=True)
    def list(self, meta: lark.tree.Meta, children: list) -> ast.ListValue:
        items = tuple(c for c in children if c is not None)
        return ast.ListValue(items, Location(self.file, meta.line, meta.column))

    def items(self, children: list) -> tuple[ast.Item, ...]:
        return tuple(children)

    def ops(self, children: list[Token]) -> tuple[ast.Word, ...]:
        return tuple(self._word(t) for t in children)

    areas = ops

    def field(self, children: list[Token]) -> ast.Word:
        return self._word(children[0])

    subject_field = field
    effect_kw = field

    def effect(self, children: list) -> ast.EffectSyntax:
        return ast.EffectSyntax(children[0], children[1] if len(children) > 1 else None)

    def object(self, children: list) -> ast.ObjectSyntax:
        field = children[0] if len(children) == 2 else None
        items = children[-1]
        loc = field.loc if field else _item_loc(items[0])
        return ast.ObjectSyntax(field, items, loc)

    condition = object

    # rule parts, tagged so that `rule` can sort them
    def subject(self, children: list) -> tuple:
        return ("when", tuple(children))

    def after(self, children: list) -> tuple:
        child = children[0]
        return ("after", self._word(child) if isinstance(child, Token) else child)

    def priority(self, children: list[Token]) -> tuple:
        return ("priority", self._word(children[0]))

    def message(self, children: list[Token]) -> tuple:
        token = children[0]
        return ("message", ast.Value(unescape(str(token)[1:-1]), self._loc(token), True))

    def severity(self, children: list[Token]) -> tuple:
        return ("severity", self._word(children[0]))

    def tags(self, children: list) -> tuple:
        return ("tags", children[0])

    @v_args(meta=True)
    def trigger(self, meta: lark.tree.Meta, children: list) -> ast.Trigger:
        area, ops, *objects = children
        loc = self._loc(area)
        return ast.Trigger(self._word(area), ops, tuple(objects), loc, self._source(meta))

    @v_args(meta=True)
    def rule(self, meta: lark.tree.Meta, children: list) -> ast.RuleSyntax:
        effect, area, ops, *rest = children
        objects = tuple(c for c in rest if isinstance(c, ast.ObjectSyntax))
        parts: dict[str, object] = {}
        repeated = []
        for tag, payload in (c for c in rest if isinstance(c, tuple)):
            if tag in parts:
                repeated.append(_part_word(tag, payload))
            parts.setdefault(tag, payload)
        return ast.RuleSyntax(
            loc=effect.effect.loc,
            effect=effect,
            area=self._word(area),
            ops=ops,
            objects=objects,
            conditions=parts.get("when", ()),
            after=parts.get("after"),
            priority=parts.get("priority"),
            message=parts.get("message"),
            severity=parts.get("severity"),
            tags=parts.get("tags", ()),
            text=self._source(meta),
            repeated=tuple(repeated),
        )

    # statements
    @v_args(meta=True)
    def include(self, meta: lark.tree.Meta, children: list) -> ast.Include:
        value = children[0]
        path = ast.Value(unescape(value.text) if value.quoted else value.text, value.loc)
        return ast.Include(path, Location(self.file, meta.line, meta.column))

    @v_args(meta=True)
    def let(self, meta: lark.tree.Meta, children: list) -> ast.Let:
        return ast.Let(self._word(children[0]), children[1], _meta_loc(self, meta))

    @v_args(meta=True)
    def taint(self, meta: lark.tree.Meta, children: list) -> ast.TaintDef:
        return ast.TaintDef(self._word(children[0]), children[1], _meta_loc(self, meta))

    @v_args(meta=True)
    def default(self, meta: lark.tree.Meta, children: list) -> ast.Default:
        areas = children[0] if len(children) == 2 else ()
        return ast.Default(areas, children[-1], _meta_loc(self, meta))

    @v_args(meta=True)
    def setting(self, meta: lark.tree.Meta, children: list) -> ast.Setting:
        return ast.Setting(self._word(children[0]), children[1], _meta_loc(self, meta))

    def start(self, children: list) -> tuple[ast.Statement, ...]:
        return tuple(children)


def _meta_loc(builder: _Builder, meta: lark.tree.Meta) -> Location:
    return Location(builder.file, meta.line, meta.column)


def _item_loc(item: ast.Item) -> Location:
    return item.loc


def _part_word(tag: str, payload: object) -> ast.Word:
    if isinstance(payload, ast.Word):
        return ast.Word(tag, payload.loc)
    if isinstance(payload, (ast.Value, ast.Trigger)):
        return ast.Word(tag, payload.loc)
    first = payload[0] if payload else None
    loc = first.loc if first is not None else Location("<string>", 1, 1)
    return ast.Word(tag, loc)


@functools.cache
def _parser() -> tuple[lark.Lark, _Builder]:
    builder = _Builder()
    parser = lark.Lark(
        GRAMMAR.read_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )
    return parser, builder


def decode(data: bytes, file: str) -> str:
    """UTF-8 text of a policy file; raise ParseFailed at the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        good = data[: err.start].decode("utf-8")
        line = good.count("\n") + 1
        col = len(good) - (good.rfind("\n") + 1) + 1
        message = f"invalid UTF-8: byte 0x{data[err.start]:02x} cannot start or continue a character"
        raise ParseFailed(_error(Location(file, line, col), message, "invalid-utf8"))
    return text.removeprefix("\ufeff")


def parse(text: str, file: str = "<string>") -> ast.FileSyntax:
    """Parse one file's text; raise ParseFailed with a syntax diagnostic."""
    bad = _BAD_CHAR.search(text)
    if bad:
        raise ParseFailed(_bad_char(text, bad.start(), file))
    parser, builder = _parser()
    builder.file, builder.text = file, text
    try:
        statements = builder.transform(parser.parse(text))
    except lark.exceptions.UnexpectedInput as err:
        raise ParseFailed(_syntax_error(err, text, file, parser)) from None
    except lark.exceptions.LarkError as err:  # not expected; still no traceback
        message = f"cannot parse: {type(err).__name__}"
        raise ParseFailed(_error(Location(file, 1, 1), message, "syntax-error")) from None
    except RecursionError:  # cannot happen with a flat grammar; kept as a last guard
        raise ParseFailed(_error(Location(file, 1, 1), "policy too deeply nested",
                                 "syntax-error")) from None
    return ast.FileSyntax(file, text, statements)


def _error(loc: Location, message: str, code: str, length: int = 1) -> Diagnostic:
    return Diagnostic(ERROR, code, message, loc, length=length)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _bad_char(text: str, offset: int, file: str) -> Diagnostic:
    line, col = _position(text, offset)
    char = text[offset]
    name = "NUL byte" if char == "\x00" else f"control character U+{ord(char):04X}"
    return _error(Location(file, line, col), f"unexpected {name}", "bad-character")


def _syntax_error(
    err: lark.exceptions.UnexpectedInput, text: str, file: str, parser: lark.Lark
) -> Diagnostic:
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        line, col = err.line, err.column
        char = text[err.pos_in_stream]
        if char == '"':
            message = "unterminated string: close it with '\"' on the same line"
            return _error(Location(file, line, col), message, "syntax-error")
        found = f"character {char!r}"
        expected = err.allowed or set()
        length = 1
    else:
        token = getattr(err, "token", None)
        at_end = token is None or token.type == "$END"
        end = len(text.rstrip())
        line, col = _position(text, end) if at_end else (token.line, token.column)
        found = "end of file" if at_end else _describe_token(token)
        expected = getattr(err, "expected", None) or getattr(err, "accepts", set())
        length = 1 if at_end else len(str(token))
    message = f"unexpected {found}"
    names = _expected_names(expected, parser)
    if names:
        message += "; expected " + names
    return _error(Location(file, line, col), message, "syntax-error", length)


def _describe_token(token: Token) -> str:
    text = str(token)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"'{text}'"


def _expected_names(expected: set[str], parser: lark.Lark) -> str:
    literal = {t.name: t.pattern for t in parser.terminals}
    shown = []
    for name in expected:
        pattern = literal.get(name)
        if name in _TERMINAL_NAMES:
            shown.append(_TERMINAL_NAMES[name])
        elif pattern is not None and pattern.type == "str":
            shown.append(f"'{pattern.value}'")
    shown = sorted(set(shown), key=lambda s: (s.startswith("'"), s))
    if len(shown) > _MAX_EXPECTED:
        shown = shown[:_MAX_EXPECTED] + ["..."]
    if len(shown) > 1:
        return "one of " + ", ".join(shown)
    return shown[0] if shown else ""
