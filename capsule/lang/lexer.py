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
        # This loop runs once per token (120,000 times for 10,000 rules), so it
        # binds what it calls to locals and handles the common word inline.
        text = getattr(lexer_state.text, "text", lexer_state.text)
        states = parser_state.parse_conf.parse_table.states
        stack = parser_state.state_stack  # lark changes this list in place
        literals = self.literals
        line, line_start, pos = 1, 0, 0
        match, count, rfind = _TOKEN.match, text.count, text.rfind
        # Token() without its keyword handling
        new_token = getattr(Token, "_future_new", Token)
        while True:
            found = match(text, pos)
            kind = found.lastgroup if found else None
            start = found.start(kind) if kind else _skip_blanks(text, pos)
            newlines = count("\n", pos, start)
            if newlines:
                line, line_start = line + newlines, rfind("\n", pos, start) + 1
            if kind == "WORD":
                value, pos = found.group(kind), found.end()
                accepts = states[stack[-1]]
                keyword = literals.get(value)
                if keyword is not None and keyword in accepts:
                    kind = keyword
                elif "WORD" not in accepts:
                    kind = _word_type(value, keyword, accepts)
            elif kind == "STRING":
                value, pos = found.group(kind), found.end()
            elif kind == "punct":
                value, pos = found.group(kind), found.end()
                kind = literals[value]
            elif kind == "end":
                return
            else:
                accepts = states[stack[-1]]
                raise UnexpectedCharacters(
                    text, start, line, start - line_start + 1, allowed=set(accepts)
                )
            column = start - line_start + 1
            yield new_token(
                kind, value, start, line, column, line, column + len(value), pos
            )


def _skip_blanks(text: str, pos: int) -> int:
    """Where the character that no token can start with is."""
    return _BLANKS.match(text, pos).end()


_BLANKS = re.compile(r"(?:\s|\#[^\n]*)*")


def _word_type(value: str, keyword: str | None, accepts: dict) -> str:
    """The type of a word where the parser takes neither it as a keyword nor a
    plain WORD: a word of a particular shape, or what the parser then reports."""
    for name, shape in _SHAPES.items():
        if name in accepts and shape.match(value):
            return name
    return keyword or "WORD"  # not acceptable here: the parser reports it
