"""The enforcement coverage report: every clause and what enforces it, or "audit only".

Shown before the command starts, so that a rule nothing can enforce is never a
surprise. `--require full` refuses to start when a deny or kill clause is audit only.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def render(self) -> str:
        how = (
            self.mechanism
            if self.status == ENFORCED
            else (self.status + (f" ({self.mechanism})" if self.mechanism else ""))
        )
        text = f"{self.ref:<22} {self.rule:<44} {how}"
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

    def render(self) -> str:
        out = [f"enforcement coverage (backend {self.backend}: {self.detail}):"]
        out += ["  " + line.render() for line in self.lines]
        if not self.lines:
            out.append("  (the policy has no rules)")
        if self.protection:
            out.append("self-protection:")
            out += ["  " + item for item in self.protection]
        return "\n".join(out)

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "detail": self.detail,
            "rules": [line.__dict__ for line in self.lines],
            "self_protection": self.protection,
        }
