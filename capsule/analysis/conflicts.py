"""Conflict findings of `capsule check`: contradictions, shadowed, redundant, partly
overridden and unmatchable rules, and rules that only restate the default.

Each clause's match set is a z3 formula (matchset.py). Clauses are ranked as
semantics.matching_clauses ranks them (precedence key, then source order); "higher"
means earlier in that ranking. Only pairs that the prefilter lets through are
examined, and a question reaches z3 only when no candidate event (sampler.py)
answers it. Every finding carries a witness event read from a z3 model, and before
it is reported the witness is replayed through semantics.decide: a witness that does
not show the finding is a bug, and is logged and dropped rather than printed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import z3

from capsule.analysis import encode, sampler
from capsule.analysis.eventtext import format_event
from capsule.analysis.matchset import SymbolicEvent
from capsule.analysis.prefilter import PairIndex, may_overlap
from capsule.lang import names, semantics
from capsule.lang.diagnostics import ERROR, NOTE, WARNING, Diagnostic, Related
from capsule.lang.model import Clause, Effect, Event, Policy

log = logging.getLogger(__name__)

CONTRADICTION = "contradiction"
SHADOWED = "shadowed-rule"
REDUNDANT = "redundant-rule"
PARTLY_OVERRIDDEN = "partly-overridden"
EQUALS_DEFAULT = "equals-default"
UNMATCHABLE = "unmatchable-rule"
UNDECIDED = "undecided"

CODES = {
    CONTRADICTION: "overlapping rules with different effects that only effect orders",
    SHADOWED: "a rule that higher-precedence rules always override",
    REDUNDANT: "a rule whose removal changes no decision",
    PARTLY_OVERRIDDEN: "part of a rule's match set is decided by another rule",
    EQUALS_DEFAULT: "a rule that only restates its area's default",
    UNMATCHABLE: "a rule that no event can match",
    UNDECIDED: "z3 could not decide a question within its limits",
}


@dataclass(frozen=True)
class Limits:
    """Per-query solver limits (see encode.py for why there are two)."""

    timeout_ms: int = encode.TIMEOUT_MS
    rlimit: int = encode.RLIMIT


DEFAULT_LIMITS = Limits()


# Two workers: the target machine has two cores. Fixed, not os.cpu_count(), so that
# every machine splits the work, and thus builds its z3 terms, the same way.
JOBS = 2
# Below this many clauses a second process costs more than it saves.
PARALLEL_MIN_CLAUSES = 200


def analyze(
    policy: Policy, limits: Limits = DEFAULT_LIMITS, jobs: int = JOBS
) -> list[Diagnostic]:
    """All conflict findings of `policy`, sorted by location.

    With jobs > 1 and a large policy, forked worker processes take every jobs-th
    clause each; the findings are the same, only sooner.
    """
    count = sum(1 for _ in policy.clauses())
    if jobs > 1 and count >= PARALLEL_MIN_CLAUSES and _can_fork():
        found = _analyze_forked(policy, limits, jobs)
    else:
        found = _analyze_share(policy, limits, 0, 1)
    return sorted(found, key=Diagnostic.sort_key)


def _analyze_share(policy, limits, share: int, shares: int) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for area in names.AREAS:
        clauses = list(policy.clauses(area))
        if clauses:
            found += _AreaAnalysis(policy, area, clauses, limits).run(share, shares)
    return found


_FORKED: tuple | None = None  # what a forked worker analyzes (set before the fork)


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _analyze_forked(policy, limits, jobs: int) -> list[Diagnostic]:
    import multiprocessing

    # fork, not spawn: the policy (with its mapping proxies) need not be pickled,
    # and the workers skip re-importing z3
    global _FORKED
    _FORKED = (policy, limits, jobs)
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            shares = pool.map(_worker, range(jobs))
    finally:
        _FORKED = None
    encode.stats["queries"] += sum(queries for _, queries in shares)
    return [diag for found, _ in shares for diag in found]


def _worker(share: int) -> tuple[list[Diagnostic], int]:
    policy, limits, jobs = _FORKED
    before = encode.stats["queries"]
    found = _analyze_share(policy, limits, share, jobs)
    return found, encode.stats["queries"] - before


def outcome_of(effect: Effect, fallback: Effect | None):
    """What a decision does, for comparing decisions: the effect and, for
    escalate, the effect enforced until the classifier answers."""
    return (effect, fallback) if effect is Effect.ESCALATE else (effect, None)


def clause_outcome(clause: Clause):
    return outcome_of(clause.rule.effect, clause.rule.enforced)


def decision_outcome(decision: semantics.Decision):
    return outcome_of(decision.effect, decision.enforced)


def describe(clause: Clause) -> str:
    """`coding.cap:12 (deny file read /home/*/.ssh/**)`."""
    return f"{clause.rule.ref} ({clause_text(clause)})"


def clause_text(clause: Clause) -> str:
    rule = clause.rule
    every_op = rule.ops >= set(names.AREAS[rule.area])
    words = [
        str(rule.effect),
        rule.area,
        "*" if every_op else ",".join(sorted(rule.ops)),
    ]
    default = names.DEFAULT_FIELD.get(rule.area)
    for field, pattern in clause.object.items():
        words.append(str(pattern) if field == default else f"{field} {pattern}")
    if not rule.subject.is_any:
        words.append(f"when {rule.subject}")
    if rule.after is not None:
        words.append(f"after {rule.after.name}")
    if rule.priority:
        words.append(f"priority {rule.priority}")
    return " ".join(words)


class _AreaAnalysis:
    """The findings of one area: its clauses share one symbolic event."""

    def __init__(self, policy: Policy, area: str, clauses: list[Clause], limits):
        self.policy, self.area, self.limits = policy, area, limits
        # strongest first; sort is stable, so ties keep source order as decide does
        self.ranked = sorted(clauses, key=semantics.precedence, reverse=True)
        self.index = PairIndex(self.ranked)
        self.sym = SymbolicEvent(area, clauses)
        self.default = outcome_of(
            policy.default(area), policy.default_fallbacks.get(area)
        )
        self._match: dict[int, z3.BoolRef] = {}
        self._partners: dict[int, list[int]] = {}
        self._rule_order = {id(rule): n for n, rule in enumerate(policy.rules)}
        self.findings: list[Diagnostic] = []

    def run(self, share: int = 0, shares: int = 1) -> list[Diagnostic]:
        """Findings of the clauses whose rank index is `share` modulo `shares`."""
        for i in range(share, len(self.ranked), shares):
            try:
                self._check_clause(i)
            except encode.EncodeError as err:
                self._unencodable(i, err)
        return self.findings

    def _check_clause(self, i: int) -> None:
        partners = self._partners[i] = self.index.partners(i)
        if not self._can_match(i):
            return
        higher = [j for j in partners if j < i]
        lower = [j for j in partners if j > i]
        tied = self._check_pairs(i, higher, tied_only=True)
        if self._check_shadowed(i, higher, tied):
            return
        self._check_redundant(i, higher, lower)
        self._check_pairs(i, higher, tied_only=False)

    # -- queries -------------------------------------------------------------------

    def match(self, i: int) -> z3.BoolRef:
        if i not in self._match:
            self._match[i] = self.sym.matches(self.ranked[i])
        return self._match[i]

    def solve(self, involved: list[int], constraints) -> encode.Outcome:
        clauses = [self.ranked[j] for j in involved]
        return encode.solve(
            [*self.sym.domain(clauses), *constraints],
            timeout_ms=self.limits.timeout_ms,
            rlimit=self.limits.rlimit,
        )

    def decides(self, i: int, higher: list[int]) -> list[z3.BoolRef]:
        """Clause i matches and no higher candidate does: clause i decides."""
        return [self.match(i), *[z3.Not(self.match(j)) for j in higher]]

    def witness(self, outcome: encode.Sat) -> Event:
        return self.sym.witness(outcome.model)

    def ask(self, involved, constraints, positives, accept) -> encode.Outcome | Event:
        """Try candidate events first (exact, cheap); ask z3 only if none fits.

        Returns the candidate Event, or z3's outcome.
        """
        event = sampler.find([self.ranked[j] for j in positives], accept)
        if event is not None:
            return event
        return self.solve(involved, constraints)

    def witnessed(self, involved, constraints, positives, accept):
        """Like `ask`, but a "sat" comes back as an Event read from a z3 model.

        A candidate is pinned into the query, so that z3 gives the model; one that
        the language's matcher accepts must satisfy the z3 encoding too, and if it
        does not, the encodings disagree (a bug): that is logged and z3 decides
        the query on its own.

        Returns an Event, Unsat or Undecided.
        """
        found = self.ask(involved, constraints, positives, accept)
        if isinstance(found, Event):
            # no domain: the pinned values are a real event already
            pinned = encode.solve(
                [*constraints, *self.sym.fix(found)],
                self.limits.timeout_ms, self.limits.rlimit,
            )  # fmt: skip
            if not isinstance(pinned, encode.Unsat):
                found = pinned
            else:
                log.error(
                    "internal error: z3 rejects candidate %s", format_event(found)
                )
                found = self.solve(involved, constraints)
        return self.witness(found) if isinstance(found, encode.Sat) else found

    def py_decides(self, i: int, higher: list[int]):
        clause, above = self.ranked[i], [self.ranked[j] for j in higher]
        return lambda e: clause.matches(e) and not any(h.matches(e) for h in above)

    def py_without(self, event: Event, lower: list[int]):
        """The outcome for `event` from the `lower` clauses or the default."""
        for j in lower:
            if self.ranked[j].matches(event):
                return clause_outcome(self.ranked[j])
        return self.default

    # -- unmatchable ------------------------------------------------------------------

    def _can_match(self, i: int) -> bool:
        """False, with a finding, if no event matches clause i at all (say, it names
        a field that none of its operations carries)."""
        outcome = self.ask([i], [self.match(i)], [i], lambda e: True)
        if isinstance(outcome, encode.Undecided):
            self._undecided(i, "matches any event", outcome)
        if not isinstance(outcome, encode.Unsat):
            return True
        clause = self.ranked[i]
        message = f"rule at {describe(clause)} matches no event, so it never decides"
        self.findings.append(Diagnostic(WARNING, UNMATCHABLE, message, clause.rule.loc))
        return False

    # -- shadowed --------------------------------------------------------------------

    def _check_shadowed(self, i: int, higher: list[int], tied: set) -> bool:
        if not higher:
            return False
        outcome = self.ask(
            [i, *higher], self.decides(i, higher), [i], self.py_decides(i, higher)
        )
        if isinstance(outcome, encode.Undecided):
            self._undecided(i, "shadowed", outcome)
            return False
        if not isinstance(outcome, encode.Unsat):
            return False
        event = self.witnessed([i], [self.match(i)], [i], lambda e: True)
        if isinstance(event, encode.Undecided):
            self._undecided(i, "shadowed", event)
            return False
        if not isinstance(event, Event):
            return False  # matches nothing at all
        decision = semantics.decide(self.near(i), event)
        clause = self.ranked[i]
        if decision.clause is None or decision.clause == clause:
            return self._bad_witness(SHADOWED, clause, event)
        winner = decision.clause
        if winner in tied:
            return True  # already an error: the contradiction says it all
        self._report(
            WARNING, SHADOWED, clause,
            f"rule at {describe(clause)} is shadowed by {describe(winner)}",
            event, [winner],
        )  # fmt: skip
        return True

    # -- redundant and equal to the default ------------------------------------------

    def _check_redundant(self, i: int, higher: list[int], lower: list[int]) -> None:
        clause = self.ranked[i]
        mine = clause_outcome(clause)
        if mine != self.default and not self._same_outcome(lower, mine):
            return  # nothing below could decide as this clause does
        codes = _Codes()
        without = self.sym.decision(
            [self.ranked[j] for j in lower], codes(self.default),
            lambda c: codes(clause_outcome(c)),
        )  # fmt: skip
        differs = without != codes(mine)
        decides = self.py_decides(i, higher)
        outcome = self.ask(
            [i, *higher, *lower], [*self.decides(i, higher), differs], [i],
            lambda e: decides(e) and self.py_without(e, lower) != mine,
        )  # fmt: skip
        if isinstance(outcome, encode.Undecided):
            self._undecided(i, "redundant", outcome)
            return
        if isinstance(outcome, encode.Unsat):
            self._report_redundant(i, higher, lower)

    def _same_outcome(self, lower: list[int], mine) -> bool:
        return any(clause_outcome(self.ranked[j]) == mine for j in lower)

    def _report_redundant(self, i: int, higher: list[int], lower: list[int]) -> None:
        clause = self.ranked[i]
        event = self.witnessed(
            [i, *higher], self.decides(i, higher), [i], self.py_decides(i, higher)
        )
        if isinstance(event, encode.Undecided):
            self._undecided(i, "redundant", event)
        if not isinstance(event, Event):
            return
        rest = _without(self.near(i), clause)
        after = semantics.decide(rest, event)
        if decision_outcome(after) != clause_outcome(clause):
            self._bad_witness(REDUNDANT, clause, event)
            return
        if after.clause is None:
            message = (
                f"rule at {describe(clause)} only restates the {self.area} default "
                f"({self.policy.default(self.area)})"
            )
            self._report(NOTE, EQUALS_DEFAULT, clause, message, event, [])
            return
        message = (
            f"rule at {describe(clause)} is redundant: without it "
            f"{describe(after.clause)} decides the same"
        )
        self._report(WARNING, REDUNDANT, clause, message, event, [after.clause])

    # -- contradictions and partial overrides -----------------------------------------

    def _check_pairs(self, i: int, higher: list[int], tied_only: bool) -> set:
        """Report contradictions (tied_only) or partial overrides by higher clauses
        with another outcome; return the clauses reported."""
        clause = self.ranked[i]
        key = semantics.order_key(clause)
        reported = set()
        for j in higher:
            other = self.ranked[j]
            tied = semantics.order_key(other) == key
            if clause_outcome(other) == clause_outcome(clause) or tied != tied_only:
                continue
            if not self._overlaps(i, j):
                continue
            # clauses above j matter only where they meet j too
            above = [k for k in higher if k < j and may_overlap(self.ranked[k], other)]
            query = [self.match(i), *self.decides(j, above)]
            decides = self.py_decides(j, above)
            outcome = self.witnessed([i, j, *above], query, [i, j], decides)
            if isinstance(outcome, encode.Undecided):
                self._undecided(i, f"overlaps {other.rule.ref}", outcome)
            elif isinstance(outcome, Event):
                self._report_pair(i, j, outcome, tied)
                reported.add(other)
        return reported

    def near(self, i: int) -> Policy:
        """The policy cut down to the rules that can meet clause i (in source order).

        semantics.decide gives the same decision on it for any event that clause i
        matches, since the prefilter never leaves out a clause that shares an event
        with it, and it is far cheaper to replay witnesses on.
        """
        rules = {
            id(c.rule): c.rule
            for c in (self.ranked[k] for k in [i, *self._partners[i]])
        }
        ordered = sorted(rules.values(), key=lambda r: self._rule_order[id(r)])
        return replace(self.policy, rules=tuple(ordered))

    def _overlaps(self, i: int, j: int) -> bool:
        """Do clauses i and j share an event at all? Cheap, and usually decisive."""
        pair = [self.ranked[i], self.ranked[j]]
        if sampler.find(pair, lambda e: True) is not None:
            return True
        return not isinstance(
            self.solve([i, j], [self.match(i), self.match(j)]), encode.Unsat
        )

    def _report_pair(self, i: int, j: int, event: Event, tied: bool) -> None:
        clause, other = self.ranked[i], self.ranked[j]
        decision = semantics.decide(self.near(i), event)
        if decision.clause != other or clause not in decision.overridden:
            self._bad_witness(
                CONTRADICTION if tied else PARTLY_OVERRIDDEN, clause, event
            )
            return
        if tied:
            message = (
                f"rules at {describe(other)} and {describe(clause)} overlap with "
                f"different effects and only the effect orders them "
                f"({other.rule.effect} wins); give one a priority"
            )
            self._report(ERROR, CONTRADICTION, clause, message, event, [other])
            return
        message = (
            f"rule at {describe(clause)} is partly overridden by {describe(other)}"
        )
        self._report(NOTE, PARTLY_OVERRIDDEN, clause, message, event, [other])

    # -- reporting ---------------------------------------------------------------------

    def _report(self, severity, code, clause, message, event, others) -> None:
        shown = format_event(event, subject_keys([clause, *others]))
        related = tuple(
            Related(o.rule.loc, f"{_related_role(code)}: {clause_text(o)}")
            for o in others
        )
        self.findings.append(
            Diagnostic(
                severity, code, f"{message}: e.g. {shown}", clause.rule.loc, related
            )
        )

    def _undecided(self, i: int, question: str, outcome: encode.Undecided) -> None:
        clause = self.ranked[i]
        message = (
            f"undecided: z3 could not tell whether rule at {describe(clause)} "
            f"{'is ' if question in ('shadowed', 'redundant') else ''}{question} "
            f"({outcome.reason})"
        )
        self.findings.append(Diagnostic(WARNING, UNDECIDED, message, clause.rule.loc))

    def _unencodable(self, i: int, err: encode.EncodeError) -> None:
        clause = self.ranked[i]
        message = (
            f"undecided: rule at {describe(clause)} or a rule it meets cannot be "
            f"encoded for z3 ({err})"
        )
        self.findings.append(Diagnostic(WARNING, UNDECIDED, message, clause.rule.loc))

    def _bad_witness(self, code: str, clause: Clause, event: Event) -> bool:
        log.error(
            "internal error: witness %s does not show %s of %s; finding dropped",
            format_event(event), code, clause.rule.ref,
        )  # fmt: skip
        return False


class _Codes:
    """Small integer codes for decision outcomes, made on demand."""

    def __init__(self):
        self._codes: dict = {}

    def __call__(self, outcome) -> int:
        return self._codes.setdefault(outcome, len(self._codes))


def _without(policy: Policy, clause: Clause) -> Policy:
    """The policy with one clause removed (its rule keeps its other objects)."""
    rules = []
    for rule in policy.rules:
        if rule is not clause.rule:
            rules.append(rule)
            continue
        objects = rule.objects or ()
        kept = tuple(o for k, o in enumerate(objects) if k != clause.index)
        if kept:
            rules.append(replace(rule, objects=kept))
    return replace(policy, rules=tuple(rules))


def subject_keys(clauses: list[Clause]) -> tuple[str, ...]:
    """The subject keys that some of `clauses` test: the ones a witness must show."""
    keys = []
    for clause in clauses:
        subject = clause.rule.subject
        keys += [k for k in ("exe", "uid", "cgroup", "ancestor") if getattr(subject, k)]
        if clause.rule.after is not None:
            keys.append("taint")
    return tuple(dict.fromkeys(keys))


def _related_role(code: str) -> str:
    return {
        SHADOWED: "shadowing rule",
        REDUNDANT: "decides the same without it",
        CONTRADICTION: "conflicting rule",
        PARTLY_OVERRIDDEN: "overriding rule",
    }.get(code, "related rule")
