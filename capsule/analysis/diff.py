"""Semantic diff of two policies: which events they decide differently, per area.

For each area, both policies' decisions become z3 terms over one symbolic event
(an if-chain over the ranked clauses, as semantics.decide picks the winner). z3 is
asked for an event where the terms differ; each answer is one kind of change
(operation, old outcome, new outcome), which is then blocked to find the next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import z3

from capsule.analysis import encode
from capsule.analysis.conflicts import Limits, clause_outcome, decision_outcome
from capsule.analysis.conflicts import outcome_of, subject_keys
from capsule.analysis.eventtext import format_event
from capsule.analysis.matchset import SymbolicEvent
from capsule.lang import names, semantics
from capsule.lang.model import Event, Policy

log = logging.getLogger(__name__)

_PAST = {"allow": "allowed", "audit": "audited", "escalate": "escalated",
         "deny": "denied", "kill": "killed"}  # fmt: skip


@dataclass(frozen=True)
class Change:
    """One kind of change with an event that shows it."""

    area: str
    op: str
    old: tuple  # outcome_of(...)
    new: tuple
    event: Event
    subject: tuple[str, ...]  # the subject keys worth showing
    old_rule: str | None  # file:line of the deciding rule, None for the default
    new_rule: str | None

    @property
    def label(self) -> str:
        old_blocks, new_blocks = self.old[0].blocks, self.new[0].blocks
        if old_blocks and not new_blocks:
            return "now allowed" if self.new[0].value == "allow" else (
                f"now {_PAST[self.new[0].value]} (no longer blocked)"
            )
        return f"now {_PAST[self.new[0].value]}"

    def text(self) -> str:
        shown = format_event(self.event, self.subject)
        return f"{self.label}: {shown} (was {_outcome_text(self.old)})"


@dataclass
class AreaDiff:
    area: str
    changes: list[Change] = field(default_factory=list)
    undecided: str | None = None  # z3's reason, if it could not finish

    @property
    def equivalent(self) -> bool:
        return not self.changes and self.undecided is None


@dataclass
class PolicyDiff:
    areas: list[AreaDiff]

    @property
    def equivalent(self) -> bool:
        return all(a.equivalent for a in self.areas)

    @property
    def undecided(self) -> bool:
        return any(a.undecided for a in self.areas)


def diff(old: Policy, new: Policy, limits: Limits = Limits()) -> PolicyDiff:
    """Compare two policies area by area."""
    return PolicyDiff([_diff_area(old, new, area, limits) for area in names.AREAS])


def _diff_area(old: Policy, new: Policy, area: str, limits: Limits) -> AreaDiff:
    result = AreaDiff(area)
    old_clauses, new_clauses = list(old.clauses(area)), list(new.clauses(area))
    everything = old_clauses + new_clauses
    sym = SymbolicEvent(area, everything)
    codes: dict = {}
    old_term = _decision_term(sym, old, area, old_clauses, codes)
    new_term = _decision_term(sym, new, area, new_clauses, codes)
    blocked: list[z3.BoolRef] = []
    while True:
        query = [*sym.domain(everything), old_term != new_term, *blocked]
        outcome = encode.solve(query, limits.timeout_ms, limits.rlimit)
        if isinstance(outcome, encode.Undecided):
            result.undecided = outcome.reason
            return result
        if isinstance(outcome, encode.Unsat):
            return result
        change = _change(old, new, sym.witness(outcome.model), subject_keys(everything))
        if change is None:
            result.undecided = "internal error: a witness did not replay"
            return result
        result.changes.append(change)
        blocked.append(_block(sym, change, codes, old_term, new_term))


def _decision_term(sym, policy, area, clauses, codes) -> z3.ArithRef:
    def code(outcome) -> int:
        return codes.setdefault(outcome, len(codes))

    default = outcome_of(policy.default(area), policy.default_fallbacks.get(area))
    ranked = sorted(clauses, key=semantics.precedence, reverse=True)
    return sym.decision(ranked, code(default), lambda c: code(clause_outcome(c)))


def _change(old: Policy, new: Policy, event: Event, subject) -> Change | None:
    before, after = semantics.decide(old, event), semantics.decide(new, event)
    if decision_outcome(before) == decision_outcome(after):
        log.error("internal error: diff witness %s decides alike", format_event(event))
        return None
    return Change(
        event.area, event.op, decision_outcome(before), decision_outcome(after), event,
        subject,
        before.clause.rule.ref if before.clause else None,
        after.clause.rule.ref if after.clause else None,
    )  # fmt: skip


def _block(sym, change: Change, codes, old_term, new_term) -> z3.BoolRef:
    """Rule out this kind of change, so the next query finds another."""
    return z3.Not(
        z3.And(
            sym.op == sym.ops.index(change.op),
            old_term == codes[change.old],
            new_term == codes[change.new],
        )
    )


def _outcome_text(outcome) -> str:
    effect, fallback = outcome
    return f"{effect} (enforcing {fallback})" if fallback else str(effect)


def render_text(result: PolicyDiff, old_name: str, new_name: str) -> str:
    """Human-readable diff; one line per kind of change."""
    if result.equivalent:
        return f"{old_name} and {new_name} are equivalent: no event is decided differently\n"
    lines = []
    for area in result.areas:
        if area.equivalent:
            continue
        lines.append(f"{area.area}:")
        for change in area.changes:
            rules = f"[{change.old_rule or 'default'} -> {change.new_rule or 'default'}]"
            lines.append(f"  {change.text()} {rules}")
        if area.undecided:
            lines.append(f"  undecided: z3 could not finish ({area.undecided})")
    return "\n".join(lines) + "\n"


def to_json(result: PolicyDiff) -> dict:
    return {
        "equivalent": result.equivalent,
        "undecided": result.undecided,
        "areas": [
            {
                "area": a.area,
                "equivalent": a.equivalent,
                "undecided": a.undecided,
                "changes": [
                    {
                        "label": c.label,
                        "op": c.op,
                        "event": format_event(c.event, c.subject),
                        "old": _outcome_text(c.old),
                        "new": _outcome_text(c.new),
                        "old_rule": c.old_rule,
                        "new_rule": c.new_rule,
                    }
                    for c in a.changes
                ],
            }
            for a in result.areas
            if not a.equivalent
        ],
    }
