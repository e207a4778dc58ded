"""Conflict findings: a table of small policies with the findings each must give, and
a replay of every printed witness through semantics.decide."""

import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from analysis_rules import policy, rule

from capsule.analysis import conflicts, sampler
from capsule.analysis.conflicts import Limits, analyze
from capsule.analysis.eventtext import parse_event
from capsule.lang import load_policy, semantics

R = rule

# name -> (policy, expected {(code, line)}, defaults)
CASES = {
    "issue example: deny below an allow of higher priority is shadowed": (
        [R(5, "allow", "file", "read", "/home/**", priority=1),
         R(12, "deny", "file", "read", "/home/*/.ssh/**")],
        {("shadowed-rule", 12)},
    ),
    "exception inside a broader rule is fine (only partly overridden)": (
        [R(5, "allow", "file", "read", "/home/**"),
         R(12, "deny", "file", "read", "/home/*/.ssh/**")],
        {("partly-overridden", 5), ("equals-default", 5)},
    ),
    "same pattern, different effect: contradiction": (
        [R(1, "deny", "file", "write", "/etc/**"),
         R(2, "allow", "file", "write", "/etc/**")],
        {("contradiction", 2)},
    ),
    "mirror-image globs tie in specificity and overlap: contradiction": (
        [R(1, "deny", "file", "read", "/tmp/a*"),
         R(2, "allow", "file", "read", "/tmp/*a")],
        {("contradiction", 2), ("equals-default", 2)},
    ),
    "different operations never conflict": (
        [R(1, "deny", "file", "write", "/etc/**"),
         R(2, "allow", "file", "read", "/etc/**")],
        {("equals-default", 2)},
    ),
    "prefix boundary: /tmp* and /tmp/** are disjoint": (
        [R(1, "deny", "file", "read", "/tmp*"),
         R(2, "deny", "file", "read", "/tmp/**", priority=5)],
        set(),
    ),
    "the directory itself keeps a trailing-slash rule alive": (
        [R(1, "deny", "file", "read", "/tmp/"),
         R(2, "allow", "file", "read", "/tmp/**")],
        {("partly-overridden", 1)},
    ),
    "a ** rule does not cover the directory itself: no shadowing": (
        [R(1, "allow", "file", "read", "/srv/**", priority=3),
         R(2, "deny", "file", "read", "/srv/")],
        {("partly-overridden", 2)},
    ),
    "unicode paths": (
        [R(1, "allow", "file", "read", "/home/**", priority=1),
         R(2, "deny", "file", "read", "/home/*/Résumé ☃/**")],
        {("shadowed-rule", 2)},
    ),
    "regex metacharacters are literal: f.o does not cover fxo": (
        [R(1, "deny", "file", "read", "/a/f.o/**"),
         R(2, "deny", "file", "read", "/a/f[x]o/**"),
         R(3, "allow", "file", "read", "/a/fxo/**", priority=1)],
        {("equals-default", 3)},
    ),
    "a narrower duplicate deny is redundant": (
        [R(1, "deny", "file", "write", "/etc/**"),
         R(2, "deny", "file", "write", "/etc/passwd")],
        {("redundant-rule", 2)},
    ),
    "IPv4-mapped IPv6 is the same block: contradiction": (
        [R(1, "deny", "network", "connect", {"addr": "10.0.0.0/8"}),
         R(2, "allow", "network", "connect", {"addr": "::ffff:10.0.0.0/104"})],
        {("contradiction", 2)},
    ),
    "nested CIDRs: the narrower one overrides part of the wider": (
        [R(1, "deny", "network", "connect", {"addr": "10.0.0.0/8"}),
         R(2, "allow", "network", "connect", {"addr": "10.1.0.0/16"})],
        {("partly-overridden", 1)},
    ),
    "disjoint CIDRs": (
        [R(1, "deny", "network", "connect", {"addr": "10.0.0.0/8"}),
         R(2, "deny", "network", "connect", {"addr": "11.0.0.0/8"})],
        set(),
    ),
    "port ranges: 22 inside 1-1023": (
        [R(1, "deny", "network", "connect", {"port": "1-1023"}),
         R(2, "allow", "network", "connect", {"port": "22"})],
        {("partly-overridden", 1)},
    ),
    "port ranges that touch at one end overlap": (
        [R(1, "deny", "network", "connect", {"port": "1000-2000"}),
         R(2, "allow", "network", "connect", {"port": "2000-3000"})],
        {("contradiction", 2), ("equals-default", 2)},
    ),
    "subject: one exe is covered by a glob of exes with the same effect": (
        [R(1, "deny", "file", "read", "/srv/**", exe=["/usr/bin/cat"]),
         R(2, "deny", "file", "read", "/srv/**", exe=["/usr/bin/*"])],
        {("redundant-rule", 1)},
    ),
    "subject: uid 0 is more specific than uid 0-999": (
        [R(1, "allow", "file", "read", "/srv/**", uid=["0-999"]),
         R(2, "deny", "file", "read", "/srv/**", uid=["0"])],
        {("partly-overridden", 1), ("equals-default", 1)},
    ),
    "subject: an ancestor rule and an exe rule overlap": (
        [R(1, "deny", "process", "exec", "/usr/bin/curl",
           ancestor=["/usr/bin/python3"]),
         R(2, "allow", "process", "exec", "/usr/bin/curl", exe=["/usr/bin/python3"])],
        {("contradiction", 2), ("equals-default", 2)},
    ),
    "taint: an after-rule is more specific than the same rule without it": (
        [R(1, "allow", "network", "connect", {"addr": "0.0.0.0/0"}),
         R(2, "deny", "network", "connect", {"addr": "0.0.0.0/0"}, after="secret")],
        {("partly-overridden", 1), ("equals-default", 1)},
    ),
    "taint: a higher priority rule shadows the tainted one": (
        [R(1, "allow", "network", "connect", {"addr": "0.0.0.0/0"}, priority=2),
         R(2, "deny", "network", "connect", {"addr": "0.0.0.0/0"}, after="secret")],
        {("shadowed-rule", 2)},
    ),
    "capabilities are names: different names never meet": (
        [R(1, "deny", "creds", "capset", {"cap": "CAP_SYS_ADMIN"}),
         R(2, "allow", "creds", "capset", {"cap": "CAP_NET_RAW"})],
        {("equals-default", 2)},
    ),
    "signals: same name, different effects": (
        [R(1, "deny", "signal", "send", "SIGKILL"),
         R(2, "audit", "signal", "send", "KILL")],
        {("contradiction", 2)},
    ),
    "device class against a device number inside it": (
        [R(1, "deny", "device", "open", "disk"),
         R(2, "allow", "device", "open", "8:0")],
        {("partly-overridden", 1)},
    ),
    "a field the operation never carries: the rule matches nothing": (
        [R(1, "deny", "file", "read", {"to": "/etc/**"}),
         R(2, "deny", "file", "rename", {"to": "/etc/**"})],
        {("unmatchable-rule", 1)},
    ),
    "a rule equal to a default deny": (
        [R(1, "deny", "memory", "bpf")],
        {("equals-default", 1)},
        {"memory": "deny"},
    ),
}  # fmt: skip


def _case(name):
    rules, expected, *rest = CASES[name]
    return policy(*rules, **(rest[0] if rest else {})), expected


@pytest.mark.parametrize("name", list(CASES))
def test_findings_table(name):
    pol, expected = _case(name)
    found = {(d.code, d.location.line) for d in analyze(pol)}
    assert found == expected


def test_issue_example_wording():
    pol, _ = _case("issue example: deny below an allow of higher priority is shadowed")
    [diag] = analyze(pol)
    assert diag.severity == "warning"
    assert diag.message.startswith(
        "rule at coding.cap:12 (deny file read /home/*/.ssh/**) is shadowed by "
        "coding.cap:5 (allow file read /home/** priority 1): e.g. file read /home/"
    )
    assert diag.related[0].location.line == 5


def test_contradiction_is_an_error_naming_both_rules():
    pol, _ = _case("same pattern, different effect: contradiction")
    [diag] = analyze(pol)
    assert diag.is_error
    assert "coding.cap:1 (deny file write /etc/**)" in diag.message
    assert "coding.cap:2 (allow file write /etc/**)" in diag.message


def _clause_at(pol, line):
    return next(c for c in pol.clauses() if c.rule.loc.line == line)


def _without(pol, line):
    rules = tuple(r for r in pol.rules if r.loc.line != line)
    return dataclasses.replace(pol, rules=rules)


def _replay(pol, diag):
    """Parse the printed witness and check with semantics.decide that it shows
    exactly what the finding claims."""
    event = parse_event(diag.message.rsplit(": e.g. ", 1)[1])
    clause = _clause_at(pol, diag.location.line)
    decision = semantics.decide(pol, event)
    assert clause.matches(event)
    if diag.code in ("shadowed-rule", "partly-overridden", "contradiction"):
        other = _clause_at(pol, diag.related[0].location.line)
        assert decision.clause == other
        assert clause in decision.overridden
        if diag.code != "shadowed-rule":  # a duplicate shadows with the same effect
            assert decision.effect != clause.rule.effect
        tied = semantics.order_key(other) == semantics.order_key(clause)
        if decision.effect != clause.rule.effect:
            assert tied == (diag.code == "contradiction")
    elif diag.code in ("redundant-rule", "equals-default"):
        assert decision.clause == clause
        before = semantics.decide(_without(pol, clause.rule.loc.line), event)
        assert before.effect == decision.effect
        assert (before.clause is None) == (diag.code == "equals-default")
    else:
        pytest.fail(f"unexpected finding {diag.code}")


def test_unmatchable_rule_has_no_witness():
    pol, _ = _case("a field the operation never carries: the rule matches nothing")
    [diag] = analyze(pol)
    assert diag.message == (
        "rule at coding.cap:1 (deny file read to /etc/**) matches no event, "
        "so it never decides"
    )


@pytest.mark.parametrize("name", list(CASES))
def test_every_printed_witness_replays(name):
    pol, _ = _case(name)
    for diag in analyze(pol):
        if diag.code != "unmatchable-rule":
            _replay(pol, diag)


def test_undecided_is_reported_never_silent():
    pol, _ = _case("same pattern, different effect: contradiction")
    found = analyze(pol, Limits(rlimit=1))
    assert found, "an undecided query must not read as 'no conflict'"
    assert all(d.code == conflicts.UNDECIDED for d in found)
    assert all("undecided" in d.message for d in found)


def test_findings_are_reproducible():
    pol, _ = _case("unicode paths")
    assert analyze(pol) == analyze(pol)


# -- a generated policy of the benchmark, checked end to end ------------------------


def _generated_policy(tmp_path, size):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.bench_conflicts import generate

    path = tmp_path / "generated.cap"
    path.write_text(generate(size))
    pol, diags = load_policy([str(path)])
    assert not [d for d in diags if d.is_error]
    return pol


def test_generated_policy_findings_replay_and_hold(tmp_path):
    pol = _generated_policy(tmp_path, 120)
    found = analyze(pol)
    codes = {d.code for d in found}
    assert {"shadowed-rule", "partly-overridden", "equals-default"} <= codes
    assert "undecided" not in codes
    for diag in found:
        _replay(pol, diag)
        if diag.code in ("shadowed-rule", "redundant-rule", "equals-default"):
            _claim_holds_on_samples(pol, diag)


def _claim_holds_on_samples(pol, diag):
    """z3 proved a universal claim; check it on every sampled event of the rule."""
    clause = _clause_at(pol, diag.location.line)
    rest = _without(pol, clause.rule.loc.line)
    for event in itertools.islice(sampler.candidates([clause]), 40):
        if not clause.matches(event):
            continue
        decision = semantics.decide(pol, event)
        if diag.code == "shadowed-rule":
            assert decision.clause != clause
        else:
            assert semantics.decide(rest, event).effect == decision.effect


@pytest.mark.parametrize(
    "name",
    [
        "subject: one exe is covered by a glob of exes with the same effect",
        "subject: an ancestor rule and an exe rule overlap",
        "taint: a higher priority rule shadows the tainted one",
        "IPv4-mapped IPv6 is the same block: contradiction",
    ],
)
def test_starved_solver_reports_undecided_for_conditions(name):
    pol, expected = _case(name)
    found = analyze(pol, Limits(rlimit=1))
    lines = {line for _, line in expected}
    assert {d.location.line for d in found if d.code == conflicts.UNDECIDED} >= lines
    assert not {d.code for d in found} & {"shadowed-rule", "redundant-rule"}


def test_forked_workers_find_the_same(tmp_path):
    pol = _generated_policy(tmp_path, 260)

    def summary(found):
        return sorted(
            (d.code, d.location.line, tuple(r.location.line for r in d.related))
            for d in found
        )

    assert summary(analyze(pol, jobs=2)) == summary(analyze(pol, jobs=1))


def test_unencodable_rule_is_undecided_not_silent():
    pol = policy(
        R(1, "deny", "file", "read", "/data/\U0010ffff/**"),
        R(2, "allow", "file", "read", "/data/**"),
    )
    found = analyze(pol)
    assert [(d.code, d.location.line) for d in found] == [
        ("undecided", 1),
        ("undecided", 2),
    ]
    assert all("cannot be encoded for z3" in d.message for d in found)


# -- random small policies ------------------------------------------------------------

_GLOBS = ["/a/**", "/a/*", "/a/b", "/a/", "/a/b*", "/a/*b", "/a/**/c", "/a*", "~/.x/**"]
_RULES = st.tuples(
    st.sampled_from(["allow", "deny", "audit"]),
    st.sampled_from(["read", "write", "read,write"]),
    st.sampled_from(_GLOBS),
    st.sampled_from([0, 0, 1]),
    st.sampled_from([None, "/usr/bin/*", "/usr/bin/cat", "~/bin/*"]),
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(_RULES, min_size=2, max_size=4), st.sampled_from(["allow", "deny"]))
def test_random_policies_findings_replay(rules, default):
    built = [
        R(
            n + 1,
            effect,
            "file",
            ops,
            glob,
            priority=prio,
            **({"exe": [exe]} if exe else {}),
        )
        for n, (effect, ops, glob, prio, exe) in enumerate(rules)
    ]
    pol = policy(*built, file=default)
    for diag in analyze(pol):
        assert diag.code != "undecided"
        if diag.code != "unmatchable-rule":
            _replay(pol, diag)
        if diag.code in ("shadowed-rule", "redundant-rule", "equals-default"):
            _claim_holds_on_samples(pol, diag)


_NET_RULES = st.tuples(
    st.sampled_from(["allow", "deny", "kill"]),
    st.sampled_from(
        [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "::ffff:10.0.0.0/104",
            "0.0.0.0/0",
            "10.1.2.3/32",
            "2001:db8::/32",
            "::/0",
        ]
    ),
    st.sampled_from([None, "22", "1-1023", "0-65535"]),
    st.sampled_from([0, 0, 2]),
    st.sampled_from([None, "secret"]),
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(_NET_RULES, min_size=2, max_size=4))
def test_random_network_policies_findings_replay(rules):
    built = []
    for n, (effect, addr, port, prio, taint) in enumerate(rules):
        obj = {"addr": addr, **({"port": port} if port else {})}
        built.append(R(n + 1, effect, "network", "connect", obj, priority=prio,
                       after=taint))  # fmt: skip
    pol = policy(*built)
    for diag in analyze(pol):
        assert diag.code != "undecided"
        if diag.code != "unmatchable-rule":
            _replay(pol, diag)
        if diag.code in ("shadowed-rule", "redundant-rule", "equals-default"):
            _claim_holds_on_samples(pol, diag)
