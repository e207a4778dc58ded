"""The lexer lark uses for `.cap` files: one regular expression, and the parser's
state to tell a keyword from a value.

A word such as `signal` or `path` is a keyword only where the grammar can take
that keyword; elsewhere it is a plain WORD (an area, an operation, a value). Lark's
contextual lexer does the same, but tries each terminal in turn; one combined
regex and a dictionary make parsing large policies about a third faster.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lark.exceptions import UnexpectedCharacters
from lark.lexer import Lexer, Token

_TOKEN = re.compile(
    r"""(?P<space>[^\S\n]+)
      | (?P<newline>\n)
      | (?P<comment>\#[^\n]*)
      | (?P<STRING>"(?:[^"\\\n]|\\.)*")
      | (?P<punct>[,\[\]()=])
      | (?P<WORD>(?:[^\s,\[\]()"\#=\\]|\\[^\n])+)""",
    re.VERBOSE,
)
_SHAPES = {  # terminals that are words of a particular shape, where the parser wants them
    "NAME": re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z"),
    "KEY": re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z"),
    "INT": re.compile(r"[+-]?[0-9]+\Z"),
}


class CapLexer(Lexer):
    """Lark's custom-lexer interface 2: `lex(lexer_state, parser_state)`."""

    __future_interface__ = 2

    def __init__(self, lexer_conf) -> None:
        # anonymous string terminals: "deny" -> DENY, "(" -> LPAR, ...
        self.literals = {
            t.pattern.value: t.name for t in lexer_conf.terminals if t.pattern.type == "str"
        }

    def lex(self, lexer_state, parser_state) -> Iterator[Token]:
        text = getattr(lexer_state.text, "text", lexer_state.text)
        states = parser_state.parse_conf.parse_table.states
        literals = self.literals
        line, line_start, pos, end = 1, 0, 0, len(text)
        match = _TOKEN.match
        while pos < end:
            found = match(text, pos)
            if found is None:
                accepts = states[parser_state.position]
                raise UnexpectedCharacters(
                    text, pos, line, pos - line_start + 1, allowed=set(accepts)
                )
            kind, value, start, pos = found.lastgroup, found.group(), pos, found.end()
            if kind == "newline":
                line, line_start = line + 1, pos
                continue
            if kind in ("space", "comment"):
                continue
            if kind == "WORD":
                kind = _word_type(value, literals, states[parser_state.position])
            elif kind == "punct":
                kind = literals[value]
            column = start - line_start + 1
            yield Token(kind, value, start, line, column, line, column + len(value), pos)


def _word_type(value: str, literals: dict[str, str], accepts: dict) -> str:
    keyword = literals.get(value)
    if keyword is not None and keyword in accepts:
        return keyword
    if "WORD" in accepts:
        return "WORD"
    for name, shape in _SHAPES.items():
        if name in accepts and shape.match(value):
            return name
    return keyword or "WORD"  # not acceptable here: the parser reports it
