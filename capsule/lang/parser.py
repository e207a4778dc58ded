"""Parse the text of one `.cap` file into its syntax tree with lark (LALR).

_Builder makes capsule.lang.syntax nodes while lark parses (no lark tree is built:
that halves the time on large policies). Syntax errors become one Diagnostic each;
no input raises anything else.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import lark
from lark import Token, Transformer

from capsule.lang import syntax as ast
from capsule.lang.diagnostics import ERROR, Diagnostic
from capsule.lang.lexer import CapLexer
from capsule.lang.model import Location

GRAMMAR = Path(__file__).with_name("capsule.lark")
# C0 controls except tab, newline and carriage return, plus DEL
_BAD_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPE = re.compile(r"\\(.)")
_TERMINAL_NAMES = {
    "WORD": "a value",
    "NAME": "a name",
    "KEY": "a setting name",
    "INT": "a number",
    "STRING": "a quoted string",
    "$END": "end of file",
}
_MAX_EXPECTED = 8
_VALUES = ("WORD", "STRING")


class ParseFailed(Exception):
    """The text is not a policy; `diagnostic` says where and why."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def unescape(text: str) -> str:
    """A quoted string's content with `\\"` and `\\\\` (and any `\\x`) resolved."""
    if "\\" not in text:  # most strings: nothing to resolve
        return text
    return _ESCAPE.sub(r"\1", text)


class _Builder(Transformer):
    """Turns each grammar rule into a syntax node as the parser reduces it.

    Lark calls these methods during parsing (no tree is built), so nodes take their
    positions from tokens: every Word and Value keeps its offsets, and a rule's
    source text runs from its first token to its last.
    """

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)
        self.file = "<string>"
        self.text = ""

    def _loc(self, token: Token) -> Location:
        return Location(self.file, token.line, token.column)

    def _word(self, token: Token) -> ast.Word:
        return ast.Word(
            token.value,  # the plain str the lexer matched: no copy to make
            self.file,
            token.line,
            token.column,
            token.start_pos,
            token.end_pos,
        )

    def _source(self, start: int, end: int) -> str:
        # runs of whitespace as one space: split() takes the same characters as
        # the regex \s, and is faster
        return " ".join(self.text[start:end].split())

    # values
    def _value(self, token: Token) -> ast.Value:
        if token.type == "STRING":
            return ast.Value(
                token.value[1:-1],
                self.file,
                token.line,
                token.column,
                True,
                token.start_pos,
                token.end_pos,
            )
        return ast.Value(
            token.value,
            self.file,
            token.line,
            token.column,
            False,
            token.start_pos,
            token.end_pos,
        )

    def value(self, children: list[Token]) -> ast.Value:
        return self._value(children[0])

    def list(self, children: list) -> ast.ListValue:
        opening, *inside, closing = children  # `!list` keeps brackets and commas
        items = tuple(
            self._value(t) for t in inside if t is not None and t.type in _VALUES
        )
        return ast.ListValue(
            items,
            self.file,
            opening.line,
            opening.column,
            opening.start_pos,
            closing.end_pos,
        )

    def items(self, children: list) -> tuple[ast.Item, ...]:
        return tuple(
            c if isinstance(c, ast.ListValue) else self._value(c) for c in children
        )

    def ops(self, children: list[Token]) -> tuple[ast.Word, ...]:
        return tuple(self._word(t) for t in children)

    areas = ops

    def effect(self, children: list) -> ast.EffectSyntax:
        words = [
            c for c in children if c is not None and c.type not in ("LPAR", "RPAR")
        ]
        fallback = self._word(words[1]) if len(words) > 1 else None
        return ast.EffectSyntax(self._word(words[0]), fallback)

    def object(self, children: list) -> ast.ObjectSyntax:
        field = self._word(children[0]) if len(children) == 2 else None
        return ast.ObjectSyntax(field, children[-1])

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
        value = self._value(token)
        value.text = unescape(value.text)
        return ("message", value)

    def severity(self, children: list[Token]) -> tuple:
        return ("severity", self._word(children[0]))

    def tags(self, children: list) -> tuple:
        return ("tags", children[0])

    def trigger(self, children: list) -> ast.Trigger:
        area, ops, *objects = children
        word = self._word(area)
        text = self._source(area.start_pos, _end(children))
        return ast.Trigger(word, ops, tuple(objects), word.loc, text)

    def rule(self, children: list) -> ast.RuleSyntax:
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
            text=self._source(effect.effect.start, _end(children)),
            repeated=tuple(repeated),
        )

    # statements: their keyword is not kept, so they start at their first child
    def include(self, children: list) -> ast.Include:
        value = children[0]
        if value.quoted:
            value.text = unescape(value.text)
        return ast.Include(value, value.loc)

    def let(self, children: list) -> ast.Let:
        name = self._word(children[0])
        return ast.Let(name, children[1], name.loc)

    def taint(self, children: list) -> ast.TaintDef:
        name = self._word(children[0])
        return ast.TaintDef(name, children[1], name.loc)

    def default(self, children: list) -> ast.Default:
        keyword, *rest = children  # `!default` keeps its keyword for the location
        areas = rest[0] if len(rest) == 2 else ()
        return ast.Default(areas, rest[-1], self._loc(keyword))

    def setting(self, children: list) -> ast.Setting:
        key = self._word(children[0])
        return ast.Setting(key, children[1], key.loc)

    def start(self, children: list) -> tuple[ast.Statement, ...]:
        return tuple(children)

    def __default__(self, data: str, children: list, meta: object) -> _Run:
        # only lark's helper rules for `x*` and `x+` get here; their parent takes
        # `.children` at once, so a lark Tree (with its meta) is not needed
        return _Run(children)


class _Run:
    """The items of one `x*` or `x+` repetition, as lark's helper rules pass them."""

    __slots__ = ("children",)

    def __init__(self, children: list) -> None:
        self.children = children


def _end(node: object) -> int:
    """The end offset of the last token of a node: the last child is the last in
    the source, so only the last branch is followed."""
    while True:
        if isinstance(node, (ast.Word, ast.Value, ast.ListValue)):
            return node.end
        if isinstance(node, Token):
            return node.end_pos
        if isinstance(node, ast.EffectSyntax):
            node = node.fallback or node.effect
        elif isinstance(node, ast.ObjectSyntax):
            node = node.items
        elif isinstance(node, ast.Trigger):
            node = node.objects or node.ops
        elif isinstance(node, (list, tuple)) and node:
            node = node[-1]
        else:
            return 0


def _part_word(tag: str, payload: object) -> ast.Word:
    first = (
        payload
        if isinstance(payload, (ast.Word, ast.Value, ast.Trigger))
        else payload[0]
    )
    loc = first.loc
    return ast.Word(tag, loc.file, loc.line, loc.col)


@functools.cache
def _parser() -> tuple[lark.Lark, _Builder]:
    builder = _Builder()
    parser = lark.Lark(
        GRAMMAR.read_text(),
        parser="lalr",
        lexer=CapLexer,
        maybe_placeholders=False,  # the builder needs no None for a missing `[x]`
        transformer=builder,
    )
    # Lark names rules with Tokens; the parser looks each reduced rule's name up
    # in its table, and a Token key there costs a Token.__eq__ call per reduction
    # (7 % of parsing). A plain str of the same text hashes and compares the same.
    for rule in parser.rules:
        rule.origin.name = str(rule.origin.name)
    return parser, builder


def decode(data: bytes, file: str) -> str:
    """UTF-8 text of a policy file; raise ParseFailed at the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        good = data[: err.start].decode("utf-8")
        line = good.count("\n") + 1
        col = len(good) - (good.rfind("\n") + 1) + 1
        byte = f"0x{data[err.start]:02x}"
        message = f"invalid UTF-8: byte {byte} cannot start or continue a character"
        loc = Location(file, line, col)
        raise ParseFailed(_error(loc, message, "invalid-utf8")) from None
    return text.removeprefix("\ufeff")


def parse(text: str, file: str = "<string>") -> ast.FileSyntax:
    """Parse one file's text; raise ParseFailed with a syntax diagnostic."""
    bad = _BAD_CHAR.search(text)
    if bad:
        raise ParseFailed(_bad_char(text, bad.start(), file))
    parser, builder = _parser()
    builder.file, builder.text = file, text
    try:
        statements = parser.parse(text)
    except lark.exceptions.UnexpectedInput as err:
        raise ParseFailed(_syntax_error(err, text, file, parser)) from None
    except lark.exceptions.LarkError as err:  # not expected; still no traceback
        message = f"cannot parse: {type(err).__name__}"
        raise ParseFailed(
            _error(Location(file, 1, 1), message, "syntax-error")
        ) from None
    except RecursionError:  # cannot happen with a flat grammar; kept as a last guard
        raise ParseFailed(
            _error(Location(file, 1, 1), "policy too deeply nested", "syntax-error")
        ) from None
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
