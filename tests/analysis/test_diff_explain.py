"""`diff` and `explain` in the library: semantic differences with replayed witnesses,
and explanations that agree with semantics.decide and with z3."""

import sys
from pathlib import Path

import pytest
from analysis_rules import policy, rule

from capsule.analysis import diff, explain
from capsule.analysis.conflicts import Limits
from capsule.analysis.eventtext import format_event, parse_event
from capsule.errors import CapsuleError
from capsule.lang import load_policy, semantics

R = rule
BASE = [
    R(1, "deny", "network", "connect", {"addr": "10.0.0.0/8"}),
    R(2, "deny", "file", "read", "~/.ssh/**"),
    R(3, "allow", "file", "read", "/home/*/.ssh/known_hosts"),
]


def test_a_policy_is_equivalent_to_itself():
    result = diff.diff(policy(*BASE), policy(*BASE))
    assert result.equivalent
    assert "are equivalent" in diff.render_text(result, "a.cap", "b.cap")


def test_reordering_rules_is_equivalent():
    assert diff.diff(policy(*BASE), policy(*reversed(BASE))).equivalent


def test_equivalent_although_written_differently():
    # an IPv4 block and its IPv4-mapped IPv6 form are the same addresses
    old = policy(R(1, "deny", "network", "connect", {"addr": "10.0.0.0/8"}))
    new = policy(R(1, "deny", "network", "connect", {"addr": "::ffff:10.0.0.0/104"}))
    assert diff.diff(old, new).equivalent


# (old rules, new rules, expected (area, label) pairs)
DIFF_CASES = [
    (BASE, [R(1, "deny", "network", "connect", {"addr": "10.0.0.0/8", "port": "1-21"}),
            *BASE[1:]],
     {("network", "now allowed")}),
    (BASE, [*BASE, R(4, "kill", "file", "write", "/etc/shadow")],
     {("file", "now killed")}),
    (BASE, BASE[:2], {("file", "now denied")}),  # known_hosts no longer allowed
    ([R(1, "deny", "file", "read", "/tmp/**")], [R(1, "deny", "file", "read", "/tmp/")],
     {("file", "now denied")}),  # only /tmp itself changes
]  # fmt: skip


@pytest.mark.parametrize("old,new,expected", DIFF_CASES)
def test_diff_finds_each_change_with_a_replaying_witness(old, new, expected):
    old_policy, new_policy = policy(*old), policy(*new)
    result = diff.diff(old_policy, new_policy)
    assert not result.equivalent
    found = {(c.area, c.label) for a in result.areas for c in a.changes}
    assert found == expected
    for area in result.areas:
        for change in area.changes:
            event = parse_event(format_event(change.event))
            before = semantics.decide(old_policy, event)
            after = semantics.decide(new_policy, event)
            assert (before.effect, after.effect) == (change.old[0], change.new[0])


def test_diff_text_names_the_witness_and_the_rules():
    old = policy(*BASE)
    new = policy(R(1, "deny", "network", "connect",
                   {"addr": "10.0.0.0/8", "port": "1-21"}),
                 *BASE[1:])  # fmt: skip
    text = diff.render_text(diff.diff(old, new), "old.cap", "new.cap")
    assert text.startswith("network:\n  now allowed: network connect 10.")
    assert "(was deny) [coding.cap:1 -> default]" in text


def test_a_changed_default_is_a_difference():
    result = diff.diff(policy(*BASE), policy(*BASE, memory="deny"))
    assert {(c.area, c.label) for a in result.areas for c in a.changes} == {
        ("memory", "now denied")
    }


def test_diff_that_z3_cannot_finish_is_undecided_not_equivalent():
    old = policy(*BASE)
    new = policy(*BASE[:2])
    result = diff.diff(old, new, Limits(rlimit=1))
    assert result.undecided and not result.equivalent


EXPLAIN_CASES = [
    ("file read /home/a/.ssh/id_rsa exe=/usr/bin/cat", "deny", 2, []),
    ("file read /root/.ssh/id_rsa", "deny", 2, []),
    ("file read /home/a/.ssh/known_hosts", "allow", 3, [2]),
    ("file read /home/a/notes", "allow", None, []),
    ("network connect 10.0.0.5:22", "deny", 1, []),
    ("network connect [::ffff:10.0.0.5]:22", "deny", 1, []),
    ("network connect [2001:db8::1]:22", "allow", None, []),
]


@pytest.mark.parametrize("text,effect,line,overridden", EXPLAIN_CASES)
def test_explain_agrees_with_decide_and_z3(text, effect, line, overridden):
    result = explain.explain(policy(*BASE), parse_event(text))
    assert str(result.decision.effect) == effect
    winner = result.decision.clause
    assert (winner.rule.loc.line if winner else None) == line
    assert [c.rule.loc.line for c in result.decision.overridden] == overridden
    assert result.z3_agrees is True, result.note


def test_explain_text():
    result = explain.explain(
        policy(*BASE), parse_event("file read /home/a/.ssh/known_hosts")
    )
    assert explain.render_text(result) == (
        "event: file read /home/a/.ssh/known_hosts\n"
        "decision: allow by coding.cap:3 (allow file read /home/*/.ssh/known_hosts)\n"
        "overrides:\n"
        "  coding.cap:2 (deny file read ~/.ssh/**)\n"
        "z3 cross-check: agrees\n"
    )


def test_explain_subject_and_taint_conditions():
    pol = policy(
        R(1, "allow", "network", "connect", {"addr": "0.0.0.0/0"}),
        R(2, "deny", "network", "connect", {"addr": "0.0.0.0/0"}, after="secret"),
        R(3, "kill", "network", "connect", {"addr": "0.0.0.0/0"}, after="secret",
          exe=["/usr/bin/curl"], priority=1),
    )  # fmt: skip
    cases = {
        "network connect 1.2.3.4:443": 1,
        "network connect 1.2.3.4:443 taint=secret": 2,
        "network connect 1.2.3.4:443 taint=secret exe=/usr/bin/curl": 3,
    }
    for text, line in cases.items():
        result = explain.explain(pol, parse_event(text))
        assert result.decision.clause.rule.loc.line == line
        assert result.z3_agrees is True


BAD_EVENTS = [
    ("", "expected AREA OP"),
    ("files read /x", "unknown area 'files'"),
    ("file reed /x", "area file has no operation 'reed'"),
    ("file read x", "word 3 'x': a path must be absolute and normalized"),
    ("file read /a/../b", "a path must be absolute and normalized"),
    ("file read /x /y", "word 4 '/y': expected FIELD=VALUE"),
    ("file read /x colour=red", "area file has no field 'colour'"),
    ("network connect 10.0.0.300", "'10.0.0.300' is not an IP address"),
    ("network connect 10.0.0.1:70000", "expected a number in 0-65535"),
    ("file read /x uid=-1", "expected a number"),
    ("file read '/x", "No closing quotation"),
]


@pytest.mark.parametrize("text,message", BAD_EVENTS)
def test_bad_event_text_is_one_clear_error(text, message):
    with pytest.raises(CapsuleError) as info:
        parse_event(text)
    assert message in info.value.message
    assert info.value.message.startswith("failed to parse event")


ROUND_TRIPS = [
    "file rename /a/b to=/c/d exe=/usr/bin/mv uid=1000",
    "network connect '[2001:db8::1]:443' protocol=tcp",
    "file read '/home/a/My Documents/x' ancestor=/usr/bin/bash ancestor=/sbin/init",
    "device open 8:0 path=/dev/sda",
    "system mount /mnt flags=bind,ro fstype=ext4",
    "signal send SIGKILL target=/usr/bin/x taint=secret",
]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_event_text_round_trips(text):
    event = parse_event(text)
    assert parse_event(format_event(event)) == event
    assert format_event(event) == text


def _generated(tmp_path, name, transform):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.bench_conflicts import generate

    lines = generate(300).splitlines()
    path = tmp_path / name
    path.write_text("\n".join(transform(lines)) + "\n")
    pol, diags = load_policy([str(path)])
    assert not [d for d in diags if d.is_error]
    return pol


def test_diff_of_a_large_policy_finds_a_one_rule_change(tmp_path):
    old = _generated(tmp_path, "old.cap", lambda lines: lines)
    secrets = next(n for n, line in enumerate(old.rules) if "secrets/**" in line.text)
    removed = old.rules[secrets].text
    new = _generated(
        tmp_path, "new.cap", lambda lines: [x for x in lines if x != removed]
    )
    result = diff.diff(old, new)
    changes = [c for a in result.areas for c in a.changes]
    assert {(c.area, c.op, c.label) for c in changes} == {
        ("file", "read", "now allowed"),
        ("file", "write", "now allowed"),
    }
    for change in changes:
        assert change.old_rule == old.rules[secrets].ref
        assert semantics.decide(old, change.event).clause.rule.text == removed


def test_reordered_large_policy_is_equivalent(tmp_path):
    def reorder(lines):
        header = [
            x for x in lines if not x.split(" ", 1)[0] in {"allow", "deny", "audit"}
        ]
        rules = [x for x in lines if x not in header]
        return header + rules[::-1]

    old = _generated(tmp_path, "old.cap", lambda lines: lines)
    new = _generated(tmp_path, "new.cap", reorder)
    assert diff.diff(old, new).equivalent


def test_changed_default_spares_operations_a_rule_covers_whole():
    rules = [R(1, "audit", "memory", "bpf"), R(2, "deny", "memory", "wx", "/usr/**")]
    result = diff.diff(policy(*rules), policy(*rules, memory="deny"))
    changes = {(c.op, c.label) for a in result.areas for c in a.changes}
    # bpf: the audit rule decides every event, whatever the default
    assert changes == {
        ("wx", "now denied"),
        ("memfd", "now denied"),
        ("fileless-exec", "now denied"),
        ("module-load", "now denied"),
    }
    assert not result.undecided
