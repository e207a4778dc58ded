"""What valid policies mean once parsed and resolved."""

from pathlib import Path

import pytest

from capsule.lang import load_policy
from capsule.lang.loader import load_source
from capsule.lang.model import Effect, PathGlob
from capsule.lang.names import AREAS


def resolve(text):
    policy, diags = load_source(text, "policy.cap")
    assert [f"{d.code}: {d.message}" for d in diags] == []
    return policy


def test_rules_span_lines_and_comments_are_ignored():
    policy = resolve(
        "deny file   # what\n  read, write\n  /etc/  # where\n  message 'x'\n".replace(
            "'x'", '"x"'
        )
    )
    rule = policy.rules[0]
    assert rule.ops == {"read", "write"}
    assert rule.message == "x"
    assert rule.text == 'deny file # what read, write /etc/ # where message "x"'


def test_star_and_any_name_every_operation_of_the_area():
    policy = resolve("deny memory *\ndeny device any\n")
    assert policy.rules[0].ops == set(AREAS["memory"])
    assert policy.rules[1].ops == set(AREAS["device"])
    assert policy.rules[0].objects == ()


def test_variables_expand_with_a_suffix_and_lists_flatten():
    policy = resolve(
        "let home = [/home/a, /home/b]\nlet more = [$home, /srv]\n"
        "deny file read ${home}/.ssh/, $more/**\n"
    )
    globs = [o["path"].text for o in policy.rules[0].objects]
    assert globs == [
        "/home/a/.ssh/",
        "/home/b/.ssh/",
        "/home/a/**",
        "/home/b/**",
        "/srv/**",
    ]


def test_quoted_values_are_literal_text():
    policy = resolve(
        'deny file read "$not_a_name/x", "/My Documents/"\n'.replace(
            "$not_a_name", "/$dollar"
        )
    )
    assert [o["path"].text for o in policy.rules[0].objects] == [
        "/$dollar/x",
        "/My Documents/",
    ]


def test_escaped_characters_are_literal_in_globs():
    policy = resolve(r"deny file read /odd\#name, /star\*" + "\n")
    assert policy.rules[0].objects[0]["path"].matches("/odd#name")
    assert policy.rules[0].objects[1]["path"].matches("/star*")
    assert not policy.rules[0].objects[1]["path"].matches("/starx")


def test_defaults_per_area_override_the_default_for_all():
    policy = resolve("default deny\ndefault file, process allow\n")
    assert policy.default("file") is Effect.ALLOW
    assert policy.default("network") is Effect.DENY
    assert resolve("").default("network") is Effect.ALLOW


def test_escalate_falls_back_to_audit_unless_told():
    policy = resolve("escalate network connect\nescalate(kill) network bind\n")
    assert [r.enforced for r in policy.rules] == [Effect.AUDIT, Effect.KILL]


def test_metadata_is_kept_on_the_rule():
    policy = resolve(
        'kill file read ~/.ssh/ message "keys" severity critical tags [a, "b c"]'
        " priority -3\n"
    )
    rule = policy.rules[0]
    assert (rule.message, rule.severity, rule.tags, rule.priority) == (
        "keys",
        "critical",
        ("a", "b c"),
        -3,
    )


def test_taints_inline_and_named():
    policy = resolve(
        "taint keys = file read ~/.ssh/\n"
        "deny network send after keys\n"
        "deny network connect after file read /etc/shadow\n"
    )
    named, inline = policy.rules[0].after, policy.rules[1].after
    assert named.name == "keys" and named.ops == {"read"}
    assert inline.name == "file read /etc/shadow"
    assert {t.name for t in policy.taints} == {"keys", "file read /etc/shadow"}


def test_subject_conditions_take_alternatives():
    policy = resolve(
        "allow file read /x when exe /usr/bin/python3*, /usr/bin/node "
        "ancestor /usr/bin/make uid 1000-1999 cgroup /agent.slice/\n"
    )
    subject = policy.rules[0].subject
    assert [g.text for g in subject.exe] == ["/usr/bin/python3*", "/usr/bin/node"]
    assert subject.ancestor == (PathGlob("/usr/bin/make"),)
    assert (subject.uid[0].lo, subject.uid[0].hi) == (1000, 1999)


def test_signal_is_both_an_area_and_a_field():
    policy = resolve("deny signal send signal SIGKILL, 15 target /usr/sbin/*\n")
    assert [o["signal"].value for o in policy.rules[0].objects] == [
        "SIGKILL",
        "SIGTERM",
    ]


def test_settings_are_kept():
    assert resolve('set name = "x y"\nset mode = monitor\n').settings == {
        "name": "x y",
        "mode": "monitor",
    }


def test_includes_are_relative_and_loaded_once(tmp_path: Path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.cap").write_text('include "b.cap"\nlet a = /a\n')
    (tmp_path / "lib" / "b.cap").write_text("let b = /b\n")
    (tmp_path / "main.cap").write_text(
        'include "lib/a.cap"\ninclude "lib/b.cap"\ndeny file read $a, $b\n'
    )
    policy, diags = load_policy([str(tmp_path / "main.cap")])
    assert diags == []
    assert [Path(f).name for f in policy.files] == ["main.cap", "a.cap", "b.cap"]


def test_names_in_included_files_may_go_unused(tmp_path: Path):
    (tmp_path / "lib.cap").write_text("let spare = /x\n")
    (tmp_path / "main.cap").write_text('include "lib.cap"\n')
    _, diags = load_policy([str(tmp_path / "main.cap")])
    assert diags == []


EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "policies").glob("*.cap"))


def test_there_are_at_least_six_example_policies():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policies_have_no_findings(path):
    policy, diags = load_policy([str(path)])
    assert [f"{d.location}: {d.message}" for d in diags] == []
    assert policy.rules


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policies_pass_capsule_check_with_conflict_analysis(path):
    from capsule.cli.check import conflict_findings

    policy, diags = load_policy([str(path)])
    findings = conflict_findings(policy)
    assert [
        f"{d.location}: {d.message}" for d in findings if d.severity != "note"
    ] == []
