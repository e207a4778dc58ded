"""Candidate events built from the patterns of a few clauses: a cheap way to show
that a query is satisfiable before asking z3.

Most questions the conflict analysis asks ("does this rule decide anything at all?")
have an obvious yes: fill each wildcard of the rule's patterns with a plain name and
look. Each candidate is judged by the language's own matcher (Clause.matches), which
is exact, so a candidate that passes proves "sat". A candidate never proves "unsat":
when none passes, z3 decides. Findings that print a witness still take it from a z3
model (conflicts.py pins z3 to the candidate to get one).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from capsule.analysis import matchset
from capsule.lang import names
from capsule.lang.model import (
    Cidr,
    Clause,
    DeviceNumber,
    Event,
    IdRange,
    Name,
    PathGlob,
    PortRange,
    device_class_numbers,
)

MAX_CANDIDATES = 48
# Fillers for wildcards: two, so that one can miss a literal name another rule uses.
_FILLS = ("a", "zq")
_NEUTRAL = {
    names.PATH: "/zq",
    names.CIDR: "192.0.2.7",  # TEST-NET-1: no policy means it
    names.PORT: 40999,
    names.ID: 4242,
    names.DEVICE: (4095, 7),
    names.MOUNT_FLAG: set(),
    names.CAPABILITY: "CAP_WAKE_ALARM",
    names.SIGNAL: "SIGWINCH",
    names.NAMESPACE: "uts",
    names.PROTOCOL: "tcp",
    names.FSTYPE: "zqfs",
}


def find(positives: list[Clause], accept: Callable[[Event], bool]) -> Event | None:
    """The first candidate that every clause of `positives` matches and `accept`
    takes, or None."""
    for event in itertools.islice(candidates(positives), MAX_CANDIDATES):
        if all(c.matches(event) for c in positives) and accept(event):
            return event
    return None


def candidates(positives: list[Clause]) -> Iterator[Event]:
    area = positives[0].rule.area
    ops = frozenset.intersection(*(c.rule.ops for c in positives))
    field_choices = [
        _field_choices(area, f, k, positives) for f, k in names.FIELDS[area].items()
    ]
    subject_choices = _subject_choices(positives)
    taints = frozenset(c.rule.after.name for c in positives if c.rule.after)
    for op in sorted(ops):
        for values in itertools.product(*field_choices, *subject_choices):
            fields = {f: v for f, v in values[: len(field_choices)] if v is not None}
            exe, ancestors, uid, cgroup = values[len(field_choices) :]
            fields = _drop_absent(area, op, fields)
            yield Event(area, op, fields, exe, ancestors, uid, cgroup, taints)


def neutral_events(area: str, op: str) -> Iterator[Event]:
    """Events of `op` built from neutral values, which few rules mention."""
    fields = {}
    for field, kind in names.FIELDS[area].items():
        if (area, field) not in matchset.OPTIONAL_FIELDS:
            fields[field] = _NEUTRAL[kind]
    fields = _drop_absent(area, op, fields)
    for path in ("/zq/zq", "/zq"):
        with_path = {f: path if names.FIELDS[area][f] == names.PATH else v
                     for f, v in fields.items()}  # fmt: skip
        yield Event(area, op, with_path, "/usr/bin/zq", (), 4242, "/zq")


def _drop_absent(area: str, op: str, fields: dict) -> dict:
    return {
        f: v for f, v in fields.items() if op in matchset.FIELD_OPS.get((area, f), {op})
    }


def _field_choices(area, field, kind, positives) -> list[tuple]:
    patterns = [c.object[field] for c in positives if field in c.object]
    if not patterns:
        if (area, field) in matchset.OPTIONAL_FIELDS:
            return [(field, None)]
        return [(field, _NEUTRAL[kind])]
    values = []
    for pattern in patterns:
        values += [v for v in samples(pattern) if v not in values]
    return [(field, v) for v in values if all(p.matches(v) for p in patterns)][:4]


def _subject_choices(positives) -> list[list]:
    def pick(name: str, neutral):
        alternatives = [getattr(c.rule.subject, name) for c in positives]
        alternatives = [a for a in alternatives if a]
        if not alternatives:
            return [neutral]
        values = []
        for pattern in alternatives[0]:
            values += samples(pattern)
        ok = [
            v for v in values if all(any(p.matches(v) for p in a) for a in alternatives)
        ]
        return ok[:4]

    ancestors = [(a,) for a in pick("ancestor", None) if a is not None] or [()]
    return [
        pick("exe", "/usr/bin/zq"),
        ancestors,
        pick("uid", 4242),
        pick("cgroup", "/zq"),
    ]


def samples(pattern) -> list:
    """A few values that `pattern` matches (checked by the caller)."""
    if isinstance(pattern, PathGlob):
        return glob_samples(pattern)
    if isinstance(pattern, Cidr):
        net = pattern.network
        first = net.network_address + (1 if net.num_addresses > 2 else 0)
        return [_addr_text(first), _addr_text(net.broadcast_address)]
    if isinstance(pattern, (PortRange, IdRange)):
        return [pattern.lo, pattern.hi]
    if isinstance(pattern, DeviceNumber):
        return [(pattern.major, pattern.minor if pattern.minor is not None else 7)]
    if isinstance(pattern, Name):
        return _name_samples(pattern)
    return []


def _name_samples(name: Name) -> list:
    if name.kind == "device-class":
        return [samples(d)[0] for d in device_class_numbers(name.value)]
    if name.kind == names.MOUNT_FLAG:
        return [{name.value}]
    return [name.value]


def _addr_text(address) -> str:
    mapped = address.ipv4_mapped
    return str(mapped if mapped is not None else address)


def glob_samples(glob: PathGlob) -> list[str]:
    """Paths made by filling the glob's wildcards with plain names."""
    heads = ["/root", "/home/a"] if glob.home else [""]
    text = glob.text[1:] if glob.home else glob.text
    tree = glob.tree
    if tree:
        text = text[:-1]
    out = []
    for fill, head in itertools.product(_FILLS, heads):
        body = _fill(text, fill)
        if body is None:
            continue
        path = (head + body) or "/"
        out.append(path)
        if tree or text.endswith("/**"):
            out.append(path.rstrip("/") + f"/{fill}/{fill}")
    return out


def _fill(text: str, fill: str) -> str | None:
    """Replace wildcards: `**` by one component, `*` and `?` by `fill` or its first
    character; None if the text has no sensible filling."""
    parts = text.split("/")
    out = []
    for part in parts:
        if part == "**":
            out.append(fill)
            continue
        out.append(_fill_component(part, fill))
    path = "/".join(out)
    return path if path.startswith("/") or path == "" else None


def _fill_component(part: str, fill: str) -> str:
    chars, i = [], 0
    while i < len(part):
        char = part[i]
        if char == "\\" and i + 1 < len(part):
            chars.append(part[i + 1])
            i += 2
            continue
        chars.append({"*": fill, "?": fill[0]}.get(char, char))
        i += 1
    return "".join(chars)
