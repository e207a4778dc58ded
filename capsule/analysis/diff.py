"""Semantic diff of two policies: which events they decide differently, per area.

For each area, both policies' decisions become z3 terms over one symbolic event
(an if-chain over the ranked clauses, as semantics.decide picks the winner). z3 is
asked for an event where the terms differ; each answer is one kind of change
(operation, old outcome, new outcome), which is then blocked to find the next.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import z3

from capsule.analysis import encode, sampler
from capsule.analysis.conflicts import (
    DEFAULT_LIMITS,
    Limits,
    clause_outcome,
    decision_outcome,
    outcome_of,
    subject_keys,
)
from capsule.analysis.eventtext import format_event
from capsule.analysis.matchset import SymbolicEvent
from capsule.analysis.prefilter import PairIndex
from capsule.lang import names, semantics
from capsule.lang.model import Clause, Event, Policy

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
            return (
                "now allowed"
                if self.new[0].value == "allow"
                else (f"now {_PAST[self.new[0].value]} (no longer blocked)")
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


def diff(old: Policy, new: Policy, limits: Limits = DEFAULT_LIMITS) -> PolicyDiff:
    """Compare two policies area by area."""
    return PolicyDiff([_diff_area(old, new, area, limits) for area in names.AREAS])


def _diff_area(old: Policy, new: Policy, area: str, limits: Limits) -> AreaDiff:
    result = AreaDiff(area)
    scope = _Scope(old, new, area)
    if scope.changed:
        _diff_changed(old, new, scope, limits, result)
    if scope.default_changed and result.undecided is None:
        _diff_unmatched(old, new, scope, limits, result)
    return result


def _diff_changed(old, new, scope, limits: Limits, result: AreaDiff) -> None:
    """The kinds of change among events that match a changed clause."""
    area = scope.area
    sym = SymbolicEvent(area, scope.clauses)
    codes: dict = {}
    old_term = _decision_term(sym, old, area, scope.old, codes)
    new_term = _decision_term(sym, new, area, scope.new, codes)
    focus = z3.Or(*[sym.matches(c) for c in scope.changed])
    base = [*sym.domain(scope.clauses), focus, old_term != new_term]
    subject = subject_keys(scope.clauses)
    blocked: list[z3.BoolRef] = []
    # cheap witnesses first: candidate events of the changed clauses, pinned in z3
    for event in scope.candidates():
        change = _change(old, new, event, subject, candidate=True)
        if change is None or _kind(change) in {_kind(c) for c in result.changes}:
            continue
        pinned = encode.solve(
            [*base, *sym.fix(event)], limits.timeout_ms, limits.rlimit
        )
        if isinstance(pinned, encode.Sat):
            change = _change(old, new, sym.witness(pinned.model), subject)
            result.changes.append(change)
            blocked.append(_block(sym, change, codes, old_term, new_term))
    # then z3 finds the remaining kinds of change, one by one, until none is left
    while True:
        outcome = encode.solve([*base, *blocked], limits.timeout_ms, limits.rlimit)
        if isinstance(outcome, encode.Undecided):
            result.undecided = outcome.reason
            return
        if isinstance(outcome, encode.Unsat):
            return
        change = _change(old, new, sym.witness(outcome.model), subject)
        if change is None:
            result.undecided = "internal error: a witness did not replay"
            return
        result.changes.append(change)
        blocked.append(_block(sym, change, codes, old_term, new_term))


def _diff_unmatched(old, new, scope, limits: Limits, result: AreaDiff) -> None:
    """With different defaults, every operation that has an event no clause matches
    changes from one default to the other; find one such event per operation."""
    found = {_kind(c) for c in result.changes}
    for op in names.AREAS[scope.area]:
        clauses = [c for c in scope.all if op in c.rule.ops]
        sym = SymbolicEvent(scope.area, clauses)
        query = [*sym.domain(clauses), sym.op_in({op})]
        query += [z3.Not(sym.matches(c)) for c in clauses]
        event = next(
            (e for e in sampler.neutral_events(scope.area, op)
             if not any(c.matches(e) for c in clauses)),
            None,
        )  # fmt: skip
        if event is not None:
            query += sym.fix(event)  # pinned: z3 only confirms the candidate
        outcome = encode.solve(query, limits.timeout_ms, limits.rlimit)
        if isinstance(outcome, encode.Undecided):
            result.undecided = outcome.reason
            return
        if isinstance(outcome, encode.Sat):
            change = _change(old, new, sym.witness(outcome.model), ())
            if change is not None and _kind(change) not in found:
                result.changes.append(change)


def _kind(change: Change) -> tuple:
    return (change.op, change.old, change.new)


class _Scope:
    """The clauses of one area that a difference can involve.

    A decision depends only on which clauses match (their precedence and outcome),
    not on where they are written. So an event decided differently must match a
    clause that one policy has and the other lacks (`changed`), unless the area's
    default changed. Only the changed clauses and the clauses that may meet them
    (the prefilter) enter the z3 terms; the others cannot match such an event.

    If the default changed, the events that match no clause at all change too
    (from one default to the other); every other event is decided by the same
    clauses in both policies.
    """

    def __init__(self, old: Policy, new: Policy, area: str):
        self.area = area
        old_all, new_all = list(old.clauses(area)), list(new.clauses(area))
        old_keys, new_keys = {_key(c) for c in old_all}, {_key(c) for c in new_all}
        self.changed = [c for c in old_all if _key(c) not in new_keys]
        self.changed += [c for c in new_all if _key(c) not in old_keys]
        defaults = [
            outcome_of(p.default(area), p.default_fallbacks.get(area))
            for p in (old, new)
        ]
        self.default_changed = defaults[0] != defaults[1]
        everything = old_all + new_all
        index = PairIndex(everything)
        wanted = {id(c) for c in self.changed}
        near = {j for i, c in enumerate(everything) if id(c) in wanted
                for j in [i, *index.partners(i)]}  # fmt: skip
        self.old = [c for i, c in enumerate(old_all) if i in near]
        self.new = [c for i, c in enumerate(new_all) if len(old_all) + i in near]
        self.clauses = self.old + self.new
        self.all = old_all + [c for c in new_all if _key(c) not in old_keys]

    def candidates(self):
        """A few candidate events per changed clause."""
        for clause in self.changed:
            yield from itertools.islice(sampler.candidates([clause]), 8)


def _key(clause: Clause) -> tuple:
    """What a clause decides with: everything but where it is written."""
    rule = clause.rule
    after = rule.after.name if rule.after else None
    return (rule.ops, clause.object, rule.subject, after, rule.priority,
            rule.effect, rule.enforced)  # fmt: skip


def _decision_term(sym, policy, area, clauses, codes) -> z3.ArithRef:
    def code(outcome) -> int:
        return codes.setdefault(outcome, len(codes))

    default = outcome_of(policy.default(area), policy.default_fallbacks.get(area))
    ranked = sorted(clauses, key=semantics.precedence, reverse=True)
    return sym.decision(ranked, code(default), lambda c: code(clause_outcome(c)))


def _change(old, new, event: Event, subject, candidate=False) -> Change | None:
    """The change `event` shows, or None if both policies decide it alike (an
    internal error for a witness from z3; common for a mere candidate)."""
    before, after = semantics.decide(old, event), semantics.decide(new, event)
    if decision_outcome(before) == decision_outcome(after):
        if not candidate:
            log.error(
                "internal error: diff witness %s decides alike", format_event(event)
            )
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
        same = "no event is decided differently"
        return f"{old_name} and {new_name} are equivalent: {same}\n"
    lines = []
    for area in result.areas:
        if area.equivalent:
            continue
        lines.append(f"{area.area}:")
        for change in area.changes:
            rules = (
                f"[{change.old_rule or 'default'} -> {change.new_rule or 'default'}]"
            )
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
