"""The enforcement coverage report: every clause and what enforces it, or "audit only".

Shown before the command starts, so that a rule nothing can enforce is never a
surprise. `--require full` refuses to start when a deny or kill clause is audit only.
"""

from __future__ import annotations

from dataclasses import dataclass

from capsule.lang import names
from capsule.lang.model import Clause

ENFORCED, PARTIAL, AUDIT_ONLY, OBSERVED, NOT_NEEDED = (
    "enforced",
    "partial",
    "audit only",
    "observed",
    "nothing to enforce",
)


@dataclass(frozen=True)
class Line:
    """One clause of the policy and how this backend handles it."""

    ref: str  # file:line
    rule: str  # effect area ops object, as written
    blocking: bool  # deny or kill (after an escalate's fallback)
    status: str
    mechanism: str
    note: str = ""
    # the ops of a blocking clause that nothing enforces: not full enforcement, even
    # when the other ops make the line `partial`
    unenforced: tuple[str, ...] = ()

    @property
    def how(self) -> str:
        """The mechanism, or the status with its mechanisms."""
        if self.status == ENFORCED:
            return self.mechanism
        return self.status + (f" ({self.mechanism})" if self.mechanism else "")

    def render(self) -> str:
        text = f"{self.ref:<22} {self.rule:<44} {self.how}"
        return text + (f" -- {self.note}" if self.note else "")


def describe(clause: Clause) -> str:
    rule = clause.rule
    ops = ",".join(sorted(rule.ops))
    parts = [str(rule.effect), rule.area, ops]
    if len(clause.object):
        parts.append(str(clause.object))
    if not rule.subject.is_any:
        parts.append(f"when {rule.subject}")
    if rule.after is not None:
        parts.append(f"after {rule.after.name}")
    return " ".join(parts)


@dataclass
class Report:
    backend: str
    detail: str  # e.g. "Landlock ABI 7, seccomp, cgroup sock_addr"
    lines: list[Line]
    protection: list[str]  # the self-protection measures in force

    def audit_only_denials(self) -> list[Line]:
        """Blocking clauses with at least one op that nothing enforces."""
        return [
            line
            for line in self.lines
            if line.blocking and (line.status == AUDIT_ONLY or line.unenforced)
        ]

    def render(self, verbose: bool = False) -> str:
        """The report for a terminal: one line per rule, its notes numbered once
        below; `verbose` gives one line per clause with every note in full."""
        out = [f"enforcement coverage (backend {self.backend}: {self.detail}):"]
        if verbose:
            out += ["  " + line.render() for line in self.lines]
        else:
            out += _compact(self.lines)
        if not self.lines:
            out.append("  (the policy has no rules)")
        if self.protection:
            out.append("self-protection:")
            items = self.protection if verbose else map(_shorten, self.protection)
            out += ["  " + item for item in items]
        return "\n".join(out)

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "detail": self.detail,
            "rules": [line.__dict__ for line in self.lines],
            "self_protection": self.protection,
        }


# -- the compact report ----------------------------------------------------------------

_LIST_SHOWN = 3  # entries of a long list shown in the compact report


def _compact(lines: list[Line]) -> list[str]:
    """One line per rule (its clauses grouped); each distinct note once, numbered."""
    rules: dict[str, list[Line]] = {}
    for line in lines:
        rules.setdefault(line.ref, []).append(line)
    notes: dict[str, int] = {}
    rows = []
    for ref, group in rules.items():
        hows = list(dict.fromkeys(line.how for line in group))
        marks = []
        for line in group:
            for part in filter(None, line.note.split("; ")):
                marks.append(notes.setdefault(part, len(notes) + 1))
        marks = sorted(set(marks))
        how = "; ".join(hows) + (f" [{','.join(map(str, marks))}]" if marks else "")
        rows.append((ref, _head(group), how))
    ref_w = max((len(r[0]) for r in rows), default=0)
    head_w = min(max((len(r[1]) for r in rows), default=0), 40)
    out = [f"  {ref:<{ref_w}} {head:<{head_w}} {how}" for ref, head, how in rows]
    if notes:
        out.append("notes (capsule -v enforce shows them per object):")
        out += [f"  [{n}] {text}" for text, n in notes.items()]
    return out


def _head(group: list[Line]) -> str:
    """The rule without its objects: the words its clauses share, ops as written."""
    words = [line.rule.split(" ") for line in group]
    shared = []
    for column in zip(*words):
        if any(word != column[0] for word in column):
            break
        shared.append(column[0])
    if len(group) == 1:
        shared = words[0]
    elif shared and shared[-1] in _FIELD_WORDS:
        shared.pop()  # "path" with the objects left out
    if len(shared) >= 3 and shared[1] in names.AREAS:
        ops = shared[2].split(",")
        if len(ops) > 1 and set(ops) == set(names.AREAS[shared[1]]):
            shared[2] = "*"
    text = " ".join(shared)
    return text + (f" ({len(group)} objects)" if len(group) > 1 else "")


_FIELD_WORDS = {field for fields in names.FIELDS.values() for field in fields}


def _shorten(item: str) -> str:
    """A protection measure with a long list cut to its first entries."""
    head, sep, tail = item.partition(": ")
    entries = tail.split(", ")
    if not sep or len(entries) <= _LIST_SHOWN + 1:
        return item
    shown = ", ".join(entries[:_LIST_SHOWN])
    return f"{head}: {shown} and {len(entries) - _LIST_SHOWN} more"
