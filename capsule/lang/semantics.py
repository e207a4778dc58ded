"""The one rule-combining semantics: check, explain, codegen and the runtime all
decide through the keys defined here (docs/architecture.md, "Rule combining").

Among the clauses that match an event, the one with the greatest precedence key
`(priority, object specificity, subject specificity, effect rank)` wins. If none
matches, the area's default decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from capsule.lang.model import (
    DEFAULT_FALLBACK,
    After,
    Clause,
    Effect,
    Event,
    ObjectPattern,
    Policy,
    Subject,
)

TAINT_SPECIFICITY = 16  # an `after` condition weighs as much as one literal character


def object_specificity(obj: ObjectPattern) -> int:
    """The sum of the field patterns' specificities; any object is 0.

    Per field: a path glob counts 16 per literal character minus 1 per wildcard
    (and 2 for `~` or a trailing slash), an address its IPv6 prefix length (IPv4
    /24 = 120), a port or id range its bits minus log2 of its width, a name 16, a
    device class 8, a device number 16 (12 with any minor).
    """
    return sum(pattern.specificity() for pattern in obj.values())


def subject_specificity(subject: Subject, after: After | None = None) -> int:
    """Per condition the least specific alternative, summed, plus a taint's weight."""
    total = 0
    for alternatives in (subject.exe, subject.ancestor, subject.uid, subject.cgroup):
        if alternatives:
            total += min(p.specificity() for p in alternatives)
    return total + (TAINT_SPECIFICITY if after is not None else 0)


def specificity(clause: Clause) -> tuple[int, int]:
    """(object specificity, subject specificity) of a clause."""
    rule = clause.rule
    return (
        object_specificity(clause.object),
        subject_specificity(rule.subject, rule.after),
    )


def order_key(clause: Clause) -> tuple[int, int, int]:
    """The precedence key without the effect: clauses that overlap, differ in
    effect and tie here are a contradiction."""
    return (clause.rule.priority, *specificity(clause))


def precedence(clause: Clause) -> tuple[int, int, int, int]:
    """The full key; the greatest key among matching clauses wins."""
    return (*order_key(clause), clause.rule.effect.rank)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one event.

    `effect` is the winning clause's effect or the area default; `enforced` is what
    the kernel does now (an escalate's fallback). `overridden` holds the other
    matching clauses, strongest first.
    """

    effect: Effect
    clause: Clause | None
    overridden: tuple[Clause, ...] = ()
    fallback: Effect | None = None

    @property
    def enforced(self) -> Effect:
        if self.effect is Effect.ESCALATE:
            return self.fallback or DEFAULT_FALLBACK
        return self.effect

    @property
    def is_default(self) -> bool:
        return self.clause is None


def matching_clauses(policy: Policy, event: Event) -> list[Clause]:
    """Every clause of the policy that matches the event, strongest first."""
    found = [c for c in policy.clauses(event.area) if c.matches(event)]
    found.sort(key=precedence, reverse=True)
    return found


def decide(policy: Policy, event: Event) -> Decision:
    """The reference decision for one event under one policy."""
    found = matching_clauses(policy, event)
    if not found:
        effect = policy.default(event.area)
        return Decision(effect, None, (), policy.default_fallbacks.get(event.area))
    winner = found[0]
    return Decision(winner.rule.effect, winner, tuple(found[1:]), winner.rule.fallback)


def taints_set_by(policy: Policy, event: Event) -> frozenset[str]:
    """The taints an event gives its process (added after the event is decided)."""
    return frozenset(t.name for t in policy.taints if t.triggered_by(event))
