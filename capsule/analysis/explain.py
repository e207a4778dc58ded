"""`capsule explain`: which rule decides one event, and which rules it overrode.

The decision is semantics.decide's, the same one the kernel programs are generated
from. z3 then decides the same event from the match-set encodings that `check` and
`diff` use; if the two ever disagree, one of the encodings is wrong, and explain
says so instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from capsule.analysis import encode
from capsule.analysis.conflicts import DEFAULT_LIMITS, Limits, clause_text
from capsule.analysis.eventtext import format_event
from capsule.analysis.matchset import SymbolicEvent
from capsule.lang import semantics
from capsule.lang.model import Clause, Event, Policy


@dataclass(frozen=True)
class Explanation:
    event: Event
    decision: semantics.Decision
    # True: z3 picks the same winner and the same overridden clauses; False: it does
    # not (a bug, shown to the user); None: z3 could not finish (reason in `note`)
    z3_agrees: bool | None
    note: str = ""


def explain(
    policy: Policy, event: Event, limits: Limits = DEFAULT_LIMITS
) -> Explanation:
    decision = semantics.decide(policy, event)
    agrees, note = cross_check(policy, event, decision, limits)
    return Explanation(event, decision, agrees, note)


def cross_check(policy, event, decision, limits) -> tuple[bool | None, str]:
    """Decide `event` again with z3 and compare with `decision`."""
    clauses = list(policy.clauses(event.area))
    if not clauses:
        return decision.clause is None, ""
    ranked = sorted(clauses, key=semantics.precedence, reverse=True)
    sym = SymbolicEvent(event.area, clauses, ancestor_slots=len(event.ancestors))
    matched = [sym.matches(c) for c in ranked]
    winner = sym.decision(ranked, -1, lambda c: ranked.index(c))
    outcome = encode.solve(sym.fix(event), limits.timeout_ms, limits.rlimit)
    if isinstance(outcome, encode.Undecided):
        return None, f"z3 could not finish ({outcome.reason})"
    if isinstance(outcome, encode.Unsat):
        return False, "z3 found the event impossible"
    model = outcome.model
    index = model.eval(winner, model_completion=True).as_long()
    z3_winner = ranked[index] if index >= 0 else None
    z3_matching = [
        c for c, m in zip(ranked, matched) if z3.is_true(model.eval(m, True))
    ]
    expected = [decision.clause, *decision.overridden] if decision.clause else []
    if z3_winner != decision.clause or z3_matching != expected:
        found = z3_winner.rule.ref if z3_winner else "the default"
        return False, f"z3 decides by {found}"
    return True, ""


def render_text(result: Explanation) -> str:
    decision = result.decision
    lines = [f"event: {format_event(result.event)}"]
    if decision.clause is None:
        lines.append(f"decision: {decision.effect} (the {result.event.area} default)")
    else:
        lines.append(f"decision: {decision.effect} by {_clause_line(decision.clause)}")
    if decision.effect != decision.enforced:
        lines.append(f"enforced now: {decision.enforced}")
    if decision.overridden:
        lines.append("overrides:")
        lines += [f"  {_clause_line(c)}" for c in decision.overridden]
    lines.append(f"z3 cross-check: {_agreement(result)}")
    return "\n".join(lines) + "\n"


def _clause_line(clause: Clause) -> str:
    return f"{clause.rule.ref} ({clause_text(clause)})"


def _agreement(result: Explanation) -> str:
    if result.z3_agrees is True:
        return "agrees"
    if result.z3_agrees is None:
        return f"undecided: {result.note}"
    return f"DISAGREES: {result.note} (a bug in Capsule; please report it)"


def to_json(result: Explanation) -> dict:
    decision = result.decision
    return {
        "event": format_event(result.event),
        "effect": str(decision.effect),
        "enforced": str(decision.enforced),
        "rule": _clause_json(decision.clause) if decision.clause else None,
        "default": decision.clause is None,
        "overridden": [_clause_json(c) for c in decision.overridden],
        "z3": {True: "agrees", False: "disagrees", None: "undecided"}[result.z3_agrees],
        "z3_note": result.note,
    }


def _clause_json(clause: Clause) -> dict:
    return {"rule": clause.rule.ref, "text": clause_text(clause)}
