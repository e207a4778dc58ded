"""z3 encodings of the policy's pattern kinds, built from plain values.

Each function here turns one kind of pattern (a path glob, a CIDR, a port or id range,
a name from a closed set) into a z3 term over one event field. The conflict analysis,
`diff` and `explain` combine these terms; nothing here knows about rules.

The path glob semantics are those of docs/architecture.md ("Path patterns").
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import logging
from dataclasses import dataclass

import z3

log = logging.getLogger(__name__)

# Fixed so that two runs on the same policy give the same findings and witnesses.
SEED = 0
# Both limits, because they fail differently: the resource limit counts solver steps
# and is deterministic, so a query that is "undecided" is undecided on every machine,
# however loaded; the timeout bounds wall-clock time for the steps that the resource
# counter ticks rarely (some string and regex rewrites), which would otherwise hang.
TIMEOUT_MS = 5_000
RLIMIT = 20_000_000

# z3's string characters are code points up to this value (its default "unicode"
# encoding); a pattern with a larger code point cannot be encoded.
MAX_CHAR = 0x2FFFF

IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class EncodeError(ValueError):
    """A pattern that has no encoding (malformed text, unsupported characters)."""


# -- outcomes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sat:
    """The query has a solution; `model` gives a witness."""

    model: z3.ModelRef


@dataclass(frozen=True)
class Unsat:
    """The query has no solution: proved, not merely not found."""


@dataclass(frozen=True)
class Undecided:
    """z3 gave up (timeout, resource limit); this is never "no"."""

    reason: str


Outcome = Sat | Unsat | Undecided


def configure(solver: z3.Solver, timeout_ms: int = TIMEOUT_MS, rlimit: int = RLIMIT):
    """Give `solver` the fixed seed and both limits."""
    solver.set("random_seed", SEED)
    solver.set("timeout", timeout_ms)
    solver.set("rlimit", rlimit)
    return solver


def new_solver(timeout_ms: int = TIMEOUT_MS, rlimit: int = RLIMIT) -> z3.Solver:
    """A solver with the fixed seed, timeout and resource limit."""
    return configure(z3.Solver(), timeout_ms, rlimit)


# Queries sent by this process, and by the workers it collected results from.
stats = {"queries": 0}


def solve(constraints, timeout_ms: int = TIMEOUT_MS, rlimit: int = RLIMIT) -> Outcome:
    """Check the conjunction of `constraints` on a fresh, configured solver."""
    stats["queries"] += 1
    solver = new_solver(timeout_ms, rlimit)
    solver.add(*constraints)
    return check(solver)


def check(solver: z3.Solver) -> Outcome:
    """Run `solver.check()` and name the result; unknown becomes Undecided."""
    result = solver.check()
    log.debug("z3 %s for %d assertions", result, len(solver.assertions()))
    if result == z3.sat:
        return Sat(solver.model())
    if result == z3.unsat:
        return Unsat()
    return Undecided(solver.reason_unknown() or "unknown")


# -- strings -----------------------------------------------------------------------


def string_literal(text: str) -> z3.SeqRef:
    """A z3 string with exactly these code points.

    z3.StringVal would read `\\u{..}` in `text` as an escape; paths may contain it.
    """
    for ch in text:
        if ord(ch) > MAX_CHAR:
            raise EncodeError(f"character U+{ord(ch):X} is beyond what z3 encodes")
    ctx = z3.main_ctx()
    codes = (ctypes.c_uint * len(text))(*(ord(ch) for ch in text))
    return z3.SeqRef(z3.Z3_mk_u32string(ctx.ref(), len(text), codes), ctx)


def string_value(term: z3.SeqRef) -> str:
    """The Python text of a z3 string value, without z3's escapes."""
    ctx = term.ctx_ref()
    size = z3.Z3_get_string_length(ctx, term.as_ast())
    codes = (ctypes.c_uint * size)()
    z3.Z3_get_string_contents(ctx, term.as_ast(), size, codes)
    return "".join(chr(code) for code in codes)


def _re_sort():
    return z3.ReSort(z3.StringSort())


def literal_re(text: str) -> z3.ReRef:
    return z3.Re(string_literal(text))


def _char_range(lo: int, hi: int) -> z3.ReRef:
    return z3.Range(string_literal(chr(lo)), string_literal(chr(hi)))


# Any one character other than "/": "/" is U+2F.
NON_SLASH = z3.Union(_char_range(0, 0x2E), _char_range(0x30, MAX_CHAR))
# A non-empty path component (normalization forbids empty ones).
SEGMENT = z3.Plus(NON_SLASH)
# Zero or more whole components, each with its leading "/".
COMPONENTS = z3.Star(z3.Concat(literal_re("/"), SEGMENT))
SOME_COMPONENTS = z3.Plus(z3.Concat(literal_re("/"), SEGMENT))


# -- path globs --------------------------------------------------------------------

_STAR, _QMARK = object(), object()


def _components(pattern: str) -> list[list]:
    """Split a glob after its leading "/" into components of atoms.

    An atom is a literal character, _STAR or _QMARK; an escaped "/" stays literal and
    does not split.
    """
    components: list[list] = [[]]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 == len(pattern):
                raise EncodeError(f"pattern {pattern!r} ends with a lone backslash")
            components[-1].append(pattern[i + 1])
            i += 2
            continue
        if ch == "/":
            components.append([])
        elif ch == "*":
            components[-1].append(_STAR)
        elif ch == "?":
            components[-1].append(_QMARK)
        else:
            components[-1].append(ch)
        i += 1
    return components


def _is_double_star(component: list) -> bool:
    return component == [_STAR, _STAR]


def _component_re(component: list) -> z3.ReRef:
    parts = []
    for atom in component:
        if atom is _STAR:
            # consecutive stars inside a component mean the same as one
            if not (parts and parts[-1] is _STAR):
                parts.append(_STAR)
        else:
            parts.append(atom)
    pieces, text = [], "/"
    for atom in parts:
        if isinstance(atom, str):
            text += atom  # runs of literal characters become one z3 string: faster
            continue
        if text:
            pieces.append(literal_re(text))
            text = ""
        pieces.append(z3.Star(NON_SLASH) if atom is _STAR else NON_SLASH)
    if text:
        pieces.append(literal_re(text))
    return _concat(pieces)


def _concat(pieces: list) -> z3.ReRef:
    return pieces[0] if len(pieces) == 1 else z3.Concat(*pieces)


def _home_re() -> z3.ReRef:
    # "~" is any home directory: /root or /home/<one component>
    return z3.Union(literal_re("/root"), z3.Concat(literal_re("/home/"), SEGMENT))


@functools.lru_cache(maxsize=65536)
def glob_re(pattern: str) -> z3.ReRef:
    """The z3 regular expression of the paths that `pattern` matches.

    Raises:
        EncodeError: the pattern is not absolute or is malformed.
    """
    if pattern == "/":
        return z3.Union(literal_re("/"), SOME_COMPONENTS)
    if pattern.startswith("~"):
        head, rest = _home_re(), pattern[1:]
    elif pattern.startswith("/"):
        head, rest = None, pattern
    else:
        raise EncodeError(f"pattern {pattern!r} is not absolute (must start / or ~)")
    trailing = _ends_with_unescaped_slash(rest)
    if trailing:
        rest = rest[:-1]
    body = _body_re(rest, head)
    if trailing:
        # "D/" is D itself and everything below it
        return z3.Concat(body, z3.Star(z3.Concat(literal_re("/"), SEGMENT)))
    return body


def _ends_with_unescaped_slash(text: str) -> bool:
    if not text.endswith("/"):
        return False
    backslashes = len(text[:-1]) - len(text[:-1].rstrip("\\"))
    return backslashes % 2 == 0


def _body_re(rest: str, head: z3.ReRef | None) -> z3.ReRef:
    pieces = [head] if head is not None else []
    if rest:
        if not rest.startswith("/"):
            raise EncodeError(f"pattern '~{rest}' must continue with '/' after '~'")
        comps = _components(rest[1:])
        for index, comp in enumerate(comps):
            last = index == len(comps) - 1
            if _is_double_star(comp):
                # as the last component: strictly below; elsewhere: zero or more
                pieces.append(SOME_COMPONENTS if last else COMPONENTS)
            else:
                pieces.append(_component_re(comp))
    if not pieces:
        raise EncodeError("empty path pattern")
    return _concat(pieces)


def glob_literals(pattern: str) -> set[str]:
    """The characters a glob names literally (see `path_domain`)."""
    chars = {"r", "o", "t", "h", "m", "e"} if pattern.startswith("~") else set()
    escaped = False
    for ch in pattern:
        if escaped or ch not in "\\*?":
            chars.add(ch)
        escaped = not escaped and ch == "\\"
    return chars


# Characters offered for the parts of a witness path that no pattern names; any one
# of them not named by a pattern stands for all such characters (see path_domain).
_FILLER = "abcdefghijklmnopqrstuvwxyz"


def path_domain(path: z3.SeqRef, literals: set[str]) -> z3.BoolRef:
    """Constrain `path` to a normalized absolute path over a small alphabet.

    Normalized: "/" or "/c1/c2/..." with no empty, "." or ".." component. The
    alphabet is `literals` (every character the query's patterns name) plus readable
    filler. Restricting it loses no solutions: a glob only tells apart "/", the
    characters it names, and everything else, so any character that no pattern names
    can stand for all of them, and the filler always holds one such character.
    """
    return z3.InRe(path, _path_shape(frozenset(literals)))


@functools.lru_cache(maxsize=4096)
def _path_shape(literals: frozenset[str]) -> z3.ReRef:
    alphabet = (set(literals) | set(_FILLER)) - {"/"}
    if set(_FILLER) <= literals:
        alphabet.add(
            next(chr(c) for c in range(0xC0, MAX_CHAR) if chr(c) not in literals)
        )
    segment = z3.Intersect(
        z3.Plus(_char_set_re(alphabet)),
        z3.Complement(z3.Union(literal_re("."), literal_re(".."))),
    )
    return z3.Union(literal_re("/"), z3.Plus(z3.Concat(literal_re("/"), segment)))


def _char_set_re(chars: set[str]) -> z3.ReRef:
    """One character of `chars`, as a few ranges: z3 is far slower on many unions."""
    codes = sorted(ord(c) for c in chars)
    runs, start = [], codes[0]
    for prev, code in zip(codes, codes[1:] + [None]):
        if code is None or code != prev + 1:
            runs.append(_char_range(start, prev))
            start = code
    return runs[0] if len(runs) == 1 else z3.Union(*runs)


def glob_matches(path: z3.SeqRef, pattern: str) -> z3.BoolRef:
    return z3.InRe(path, glob_re(pattern))


# -- addresses ---------------------------------------------------------------------

ADDR_BITS = 128


def as_ipv6_network(network) -> ipaddress.IPv6Network:
    """An IPv4 network as its IPv4-mapped IPv6 network; IPv6 unchanged."""
    net = ipaddress.ip_network(network, strict=False)
    if net.version == 4:
        base = int(IPV4_MAPPED.network_address) | int(net.network_address)
        return ipaddress.IPv6Network((base, 96 + net.prefixlen))
    return net


def addr_int(address) -> int:
    """An address as the 128-bit integer the encoding uses (IPv4 mapped)."""
    addr = ipaddress.ip_address(address)
    if addr.version == 4:
        return int(IPV4_MAPPED.network_address) | int(addr)
    return int(addr)


def addr_text(value: int) -> str:
    """Render a 128-bit value; an IPv4-mapped address prints as plain IPv4."""
    addr = ipaddress.IPv6Address(value)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def in_cidr(addr: z3.BitVecRef, network) -> z3.BoolRef:
    """`addr` lies in `network` (IPv4 or IPv6; IPv4 is compared as mapped IPv6)."""
    net = as_ipv6_network(network)
    if net.prefixlen == 0:
        return z3.BoolVal(True)
    mask = int(net.netmask)
    return addr & z3.BitVecVal(mask, ADDR_BITS) == z3.BitVecVal(
        int(net.network_address), ADDR_BITS
    )


# -- numbers -----------------------------------------------------------------------

PORT_BITS = 16
ID_MAX = 2**32 - 1


def in_port_range(port: z3.BitVecRef, low: int, high: int) -> z3.BoolRef:
    """`low <= port <= high`, unsigned, both ends included."""
    if not 0 <= low <= high <= 0xFFFF:
        raise EncodeError(f"port range {low}-{high} is outside 0-65535")
    return z3.And(z3.UGE(port, low), z3.ULE(port, high))


def id_var(name: str) -> z3.ArithRef:
    return z3.Int(name)


def id_domain(value: z3.ArithRef) -> z3.BoolRef:
    """uids and gids are unsigned 32-bit numbers."""
    return z3.And(value >= 0, value <= ID_MAX)


def in_id_range(value: z3.ArithRef, low: int, high: int) -> z3.BoolRef:
    return z3.And(value >= low, value <= high)


# -- closed sets -------------------------------------------------------------------

OTHER = "<other>"


class Enumeration:
    """A closed set of names (capabilities, signals, ...) as a z3 enumeration sort.

    The sort holds the known names plus OTHER, which stands for every value that the
    list leaves out, so "none of the named values" stays satisfiable.
    """

    _made = 0

    def __init__(self, kind: str, names):
        self.kind = kind
        self.names = list(dict.fromkeys(n for n in names if n != OTHER)) + [OTHER]
        # z3 sort names must be unique in a context; the suffix only tells them apart
        Enumeration._made += 1
        labels = [f"{kind}{i}" for i in range(len(self.names))]
        self.sort, consts = z3.EnumSort(f"{kind}_enum{Enumeration._made}", labels)
        self._const = dict(zip(self.names, consts))

    def var(self, name: str) -> z3.ExprRef:
        return z3.Const(name, self.sort)

    def value(self, name: str) -> z3.ExprRef:
        if name not in self._const:
            raise EncodeError(f"unknown {self.kind} {name!r}")
        return self._const[name]

    def is_one_of(self, term: z3.ExprRef, names) -> z3.BoolRef:
        return (
            z3.Or(*[term == self.value(n) for n in names])
            if names
            else z3.BoolVal(False)
        )

    def name_of(self, model_value: z3.ExprRef) -> str:
        """The name that a model gave to a variable of this sort."""
        for name, const in self._const.items():
            if const.eq(model_value):
                return name
        raise EncodeError(f"{model_value} is not a {self.kind}")
