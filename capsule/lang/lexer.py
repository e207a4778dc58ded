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

# blanks and comments before a token are matched with it: one match per token
_TOKEN = re.compile(
    r"""(?:\s|\#[^\n]*)*
    (?: (?P<STRING>"(?:[^"\\\n]|\\.)*")
      | (?P<punct>[,\[\]()=])
      | (?P<WORD>(?:[^\s,\[\]()"\#=\\]|\\[^\n])+)
      | (?P<end>\Z) )""",
    re.VERBOSE,
)
# terminals that are words of a particular shape, where the parser wants them
_SHAPES = {
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
            t.pattern.value: t.name
            for t in lexer_conf.terminals
            if t.pattern.type == "str"
        }

    def lex(self, lexer_state, parser_state) -> Iterator[Token]:
        text = getattr(lexer_state.text, "text", lexer_state.text)
        states = parser_state.parse_conf.parse_table.states
        literals = self.literals
        line, line_start, pos = 1, 0, 0
        match, count, rfind = _TOKEN.match, text.count, text.rfind
        while True:
            found = match(text, pos)
            kind = found.lastgroup if found else None
            start = found.start(kind) if kind else _skip_blanks(text, pos)
            newlines = count("\n", pos, start)
            if newlines:
                line, line_start = line + newlines, rfind("\n", pos, start) + 1
            if kind == "end":
                return
            if kind is None:
                accepts = states[parser_state.position]
                raise UnexpectedCharacters(
                    text, start, line, start - line_start + 1, allowed=set(accepts)
                )
            value, pos = found.group(kind), found.end()
            if kind == "WORD":
                kind = _word_type(value, literals, states[parser_state.position])
            elif kind == "punct":
                kind = literals[value]
            column = start - line_start + 1
            yield Token(
                kind, value, start, line, column, line, column + len(value), pos
            )


def _skip_blanks(text: str, pos: int) -> int:
    """Where the character that no token can start with is."""
    return _BLANKS.match(text, pos).end()


_BLANKS = re.compile(r"(?:\s|\#[^\n]*)*")


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
