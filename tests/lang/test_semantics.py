"""The rule-combining semantics (docs/architecture.md), through decide()."""

import pytest

from capsule.lang.loader import load_source
from capsule.lang.model import Effect, Event
from capsule.lang.semantics import decide, precedence, specificity, taints_set_by

POLICY = """
default file deny
default network escalate(deny)
let ws = /work

allow file * $ws/
deny file write, delete $ws/.git/**                        # more specific object
audit file read $ws/.git/config                             # still more specific
kill file * $ws/secret.key priority 5                       # priority first
allow file read /etc/hosts when exe /usr/bin/curl           # subject condition
deny file read /etc/hosts                                   # less specific subject
allow file read /usr/ when ancestor /usr/bin/make uid 1000-1999

allow network connect addr 10.0.0.0/8 port 443
deny network connect addr 10.1.0.0/16                       # 112 < 104 + 16
taint keys = file read ~/.ssh/
kill network send after keys priority 10
"""


@pytest.fixture(scope="module")
def policy():
    policy, diags = load_source(POLICY, "policy.cap")
    assert [d for d in diags if d.is_error] == []
    return policy


def event(area, op, exe=None, ancestors=(), uid=None, taints=(), **fields):
    return Event(area, op, fields, exe, tuple(ancestors), uid, None, frozenset(taints))


CASES = [
    # (event, effect, winning line or None for the default)
    (event("file", "write", path="/work/src/a.py"), Effect.ALLOW, 6),
    (event("file", "write", path="/work"), Effect.ALLOW, 6),
    (event("file", "write", path="/workshop/a"), Effect.DENY, None),
    (event("file", "write", path="/work/.git/HEAD"), Effect.DENY, 7),
    (event("file", "read", path="/work/.git/HEAD"), Effect.ALLOW, 6),
    (event("file", "read", path="/work/.git/config"), Effect.AUDIT, 8),
    (event("file", "read", path="/work/secret.key"), Effect.KILL, 9),
    (event("file", "read", path="/etc/hosts", exe="/usr/bin/curl"), Effect.ALLOW, 10),
    (event("file", "read", path="/etc/hosts", exe="/usr/bin/wget"), Effect.DENY, 11),
    (
        event(
            "file",
            "read",
            path="/usr/lib/x",
            ancestors=["/bin/sh", "/usr/bin/make"],
            uid=1000,
        ),
        Effect.ALLOW,
        12,
    ),
    (
        event("file", "read", path="/usr/lib/x", ancestors=["/usr/bin/make"], uid=0),
        Effect.DENY,
        None,
    ),
    (event("network", "connect", addr="10.2.0.1", port=443), Effect.ALLOW, 14),
    (event("network", "connect", addr="::ffff:10.2.0.1", port=443), Effect.ALLOW, 14),
    # field specificities add up: addr /8 (104) + one port (16) beat addr /16 (112)
    (event("network", "connect", addr="10.1.0.1", port=443), Effect.ALLOW, 14),
    (event("network", "connect", addr="10.1.0.1", port=80), Effect.DENY, 15),
    (event("network", "connect", addr="10.2.0.1", port=80), Effect.ESCALATE, None),
    (event("network", "send", addr="1.1.1.1", port=53), Effect.ESCALATE, None),
    (
        event("network", "send", addr="1.1.1.1", port=53, taints=["keys"]),
        Effect.KILL,
        17,
    ),
]


@pytest.mark.parametrize("ev, effect, line", CASES)
def test_decide(policy, ev, effect, line):
    decision = decide(policy, ev)
    assert decision.effect is effect
    assert (decision.clause.rule.loc.line if decision.clause else None) == line


def test_escalate_default_enforces_its_fallback(policy):
    decision = decide(policy, event("network", "connect", addr="8.8.8.8", port=80))
    assert decision.is_default and decision.enforced is Effect.DENY


def test_overridden_clauses_are_listed_strongest_first(policy):
    decision = decide(policy, event("file", "read", path="/work/.git/config"))
    assert [c.rule.loc.line for c in decision.overridden] == [6]
    decision = decide(policy, event("file", "write", path="/work/.git/config"))
    assert [c.rule.loc.line for c in decision.overridden] == [6]


def test_effect_rank_breaks_only_exact_ties():
    policy, _ = load_source(
        "allow file read /x\ndeny file read /x\naudit file read /x\n"
    )
    decision = decide(policy, event("file", "read", path="/x"))
    assert decision.effect is Effect.DENY
    assert [c.rule.effect for c in decision.overridden] == [Effect.AUDIT, Effect.ALLOW]


def test_precedence_key_orders_priority_then_specificity_then_effect(policy):
    clauses = {c.rule.loc.line: c for c in policy.clauses("file")}
    assert precedence(clauses[9])[0] == 5
    assert specificity(clauses[8]) > specificity(clauses[7]) > specificity(clauses[6])
    assert specificity(clauses[10])[1] > specificity(clauses[11])[1]


def test_taints_are_set_by_their_trigger(policy):
    assert taints_set_by(policy, event("file", "read", path="/root/.ssh/id_rsa")) == {
        "keys"
    }
    assert (
        taints_set_by(policy, event("file", "write", path="/root/.ssh/id_rsa")) == set()
    )


def test_missing_event_field_never_matches():
    policy, _ = load_source("default file allow\ndeny file rename to /etc/**\n")
    assert decide(policy, event("file", "rename", path="/tmp/x")).effect is Effect.ALLOW
    assert (
        decide(policy, event("file", "rename", path="/tmp/x", to="/etc/passwd")).effect
        is Effect.DENY
    )


def test_clause_per_object_in_the_cross_product():
    policy, diags = load_source(
        "deny network connect addr 10.0.0.0/8, ::1 port 22, 80-90 protocol tcp\n"
    )
    assert diags == []
    assert len(policy.rules[0].clauses()) == 4
