"""Path globs -> one DFA over bytes, so the kernel matches any glob in one pass.

BPF has no regex engine and no backtracking worth the verifier's patience, so the
matching is done here: each glob becomes an NFA (the same language as
PathGlob.regex), the NFAs of one area are joined and determinized, and the kernel
walks the path one byte at a time through a transition table in an array map.
Every DFA state knows which clauses accept there; the kernel looks up the verdict
of the final state.

Bytes are grouped into classes ('/' and each literal byte of the globs get their
own, every other byte shares one), which keeps the table small.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from capsule.lang.model import PathGlob
from capsule.lang.patterns import _tokenize

SLASH = ord("/")
ANY_BUT_SLASH = -1  # an edge label: any byte except '/'
MAX_STATES = 4096


class TooLarge(ValueError):
    """The globs determinize into more states than the kernel table holds."""


@dataclass
class _Nfa:
    edges: list[list[tuple[int | None, int]]] = field(default_factory=list)  # None: eps

    def state(self) -> int:
        self.edges.append([])
        return len(self.edges) - 1

    def edge(self, src: int, label: int | None, dst: int) -> None:
        self.edges[src].append((label, dst))

    def literal(self, src: int, text: bytes) -> int:
        for byte in text:
            nxt = self.state()
            self.edge(src, byte, nxt)
            src = nxt
        return src

    def component(self, src: int) -> int:
        """`/[^/]+`: a slash and one or more other bytes."""
        mid, end = self.state(), self.state()
        self.edge(src, SLASH, mid)
        self.edge(mid, ANY_BUT_SLASH, end)
        self.edge(end, ANY_BUT_SLASH, end)
        return end

    def components(self, src: int, at_least_one: bool) -> int:
        """`(?:/[^/]+)*` or `(?:/[^/]+)+`."""
        head = self.state()  # a fresh loop head: `src` may have other edges
        self.edge(src, None, head)
        end = self.component(head)
        self.edge(end, None, head)  # repeat
        if at_least_one:
            return end
        out = self.state()
        self.edge(head, None, out)
        self.edge(end, None, out)
        return out


def _add_glob(nfa: _Nfa, start: int, glob: PathGlob) -> int:
    """Add the NFA of `glob` from `start`; return its accepting state."""
    parts = glob._parts()
    if not parts and not glob.home:  # "/" or "/": every absolute path
        root = nfa.literal(start, b"/")
        rest = nfa.components(start, at_least_one=True)
        out = nfa.state()
        nfa.edge(root, None, out)
        nfa.edge(rest, None, out)
        return out
    state = _add_home(nfa, start) if glob.home else start
    for index, part in enumerate(parts):
        if part[0].kind == "globstar":
            state = nfa.components(state, at_least_one=index == len(parts) - 1)
            continue
        state = nfa.literal(state, b"/")
        for token in part:
            state = _add_token(nfa, state, token)
    if glob.tree:
        state = nfa.components(state, at_least_one=False)
    return state


def _add_home(nfa: _Nfa, start: int) -> int:
    """`(?:/root|/home/[^/]+)`."""
    root = nfa.literal(start, b"/root")
    home = nfa.component(nfa.literal(start, b"/home"))
    out = nfa.state()
    nfa.edge(root, None, out)
    nfa.edge(home, None, out)
    return out


def _add_token(nfa: _Nfa, state: int, token) -> int:
    if token.kind == "lit":
        return nfa.literal(state, token.text.encode())
    nxt = nfa.state()
    nfa.edge(state, ANY_BUT_SLASH, nxt)
    if token.kind == "star":  # zero or more: loop, and skip
        nfa.edge(nxt, ANY_BUT_SLASH, nxt)
        out = nfa.state()
        nfa.edge(state, None, out)
        nfa.edge(nxt, None, out)
        return out
    return nxt  # qmark: exactly one byte


@dataclass
class Dfa:
    """classes[byte] -> class; next[state][class] -> state; accepts[state] -> tags.

    State 0 is dead (no glob can match any more); state 1 is the start.
    """

    classes: list[int]
    next: list[list[int]]
    accepts: list[frozenset[int]]

    @property
    def class_count(self) -> int:
        return max(self.classes) + 1

    def final_state(self, data: bytes) -> int:
        """The state after `data`, as the kernel's loop walks it."""
        state = 1
        for byte in data:
            state = self.next[state][self.classes[byte]]
            if state == 0:
                break
        return state

    def run(self, data: bytes) -> frozenset[int]:
        return self.accepts[self.final_state(data)]


def _byte_classes(globs: Iterable[PathGlob]) -> list[int]:
    special = {SLASH} | set(b"/root/home")  # the literals of `~`
    for glob in globs:
        special |= {
            b for t in _tokenize(glob.text) if t.kind == "lit" for b in t.text.encode()
        }
    ordered = sorted(special)
    index = {byte: number + 1 for number, byte in enumerate(ordered)}
    return [index.get(byte, 0) for byte in range(256)]


def _closure(nfa: _Nfa, states: Iterable[int]) -> frozenset[int]:
    seen, todo = set(states), list(states)
    while todo:
        for label, dst in nfa.edges[todo.pop()]:
            if label is None and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return frozenset(seen)


def _step(nfa: _Nfa, states: frozenset[int], byte: int) -> frozenset[int]:
    out = set()
    for state in states:
        for label, dst in nfa.edges[state]:
            if label == byte or (label == ANY_BUT_SLASH and byte != SLASH):
                out.add(dst)
    return _closure(nfa, out)


def build(globs: list[tuple[PathGlob, int]]) -> Dfa:
    """Determinize globs tagged with integers (the caller's clause ids).

    Raises:
        TooLarge: more than MAX_STATES states.
    """
    nfa = _Nfa()
    start = nfa.state()
    accept_tags: dict[int, set[int]] = {}
    for glob, tag in globs:
        accept_tags.setdefault(_add_glob(nfa, start, glob), set()).add(tag)
    classes = _byte_classes(glob for glob, _ in globs)
    samples = {cls: byte for byte, cls in reversed(list(enumerate(classes)))}
    dead, first = frozenset(), _closure(nfa, [start])
    ids, order = {dead: 0, first: 1}, [dead, first]
    table: list[list[int]] = []
    for subset in order:  # grows while we walk it
        row = []
        for cls in range(len(samples)):
            nxt = _step(nfa, subset, samples[cls])
            if nxt not in ids:
                if len(order) >= MAX_STATES:
                    raise TooLarge(f"the globs need more than {MAX_STATES} DFA states")
                ids[nxt] = len(order)
                order.append(nxt)
            row.append(ids[nxt])
        table.append(row)
    accepts = [
        frozenset(t for s in subset for t in accept_tags.get(s, ())) for subset in order
    ]
    return Dfa(classes, table, accepts)
