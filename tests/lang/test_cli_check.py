"""`capsule check`: formats, exit codes and the conflict-analysis hook."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capsule.cli import exitcodes
from capsule.cli.main import app, run
from capsule.lang.diagnostics import WARNING, Diagnostic

CLEAN = "default file deny\nallow file read /usr/\n"
BAD = "deny file reed /x\ndeny network connect addr 10.0.0.1/8\n"
WARNS = "let spare = /x\nallow file read /usr/\n"


@pytest.fixture
def runner():
    from capsule.cli import commands  # noqa: F401  (registers `check`)

    return CliRunner()


@pytest.fixture
def write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def _write(name, text):
        Path(name).write_text(text)
        return name

    return _write


def check(runner, *args):
    return runner.invoke(app, ["check", "--no-conflicts", *args])


def test_clean_policy_exits_0_and_prints_nothing(runner, write):
    result = check(runner, write("p.cap", CLEAN))
    assert result.exit_code == exitcodes.OK
    assert result.stdout == ""


def test_errors_exit_1_with_rendered_text(runner, write):
    result = check(runner, write("p.cap", BAD))
    assert result.exit_code == exitcodes.POLICY_ERRORS
    assert result.stdout.splitlines()[0] == (
        "p.cap:1:11: error: unknown operation 'reed' for area file; "
        "did you mean 'read'? [unknown-operation]"
    )
    assert "[bad-cidr]" in result.stdout


def test_warnings_exit_0_but_3_under_strict(runner, write):
    name = write("p.cap", WARNS)
    assert check(runner, name).exit_code == exitcodes.OK
    assert check(runner, "--strict", name).exit_code == exitcodes.STRICT_WARNINGS


def test_each_file_is_its_own_policy(runner, write):
    # the same name in two files is no duplicate: they are separate policies
    a, b = (
        write("a.cap", "let x = /a\ndeny file read $x\n"),
        write("b.cap", "let x = /b\ndeny file read $x\n"),
    )
    assert check(runner, a, b).exit_code == exitcodes.OK


def test_json_lists_every_diagnostic(runner, write):
    result = check(runner, "--format", "json", write("p.cap", BAD))
    doc = json.loads(result.stdout)
    assert [(d["line"], d["col"], d["code"]) for d in doc["diagnostics"]] == [
        (1, 11, "unknown-operation"),
        (2, 27, "bad-cidr"),
    ]


def test_sarif_is_2_1_0_with_rules_results_and_regions(runner, write):
    result = check(runner, "--format", "sarif", write("p.cap", BAD))
    log = json.loads(result.stdout)
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    run_ = log["runs"][0]
    rule_ids = [r["id"] for r in run_["tool"]["driver"]["rules"]]
    assert rule_ids == ["bad-cidr", "unknown-operation"]
    first = run_["results"][0]
    assert first["ruleId"] == "unknown-operation"
    assert rule_ids[first["ruleIndex"]] == first["ruleId"]
    assert first["level"] == "error"
    location = first["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "p.cap", "uriBaseId": "%SRCROOT%"}
    assert location["region"] == {"startLine": 1, "startColumn": 11}


def test_conflict_findings_are_added_when_the_policy_is_clean(
    runner, write, monkeypatch
):
    import capsule.analysis.conflicts as conflicts

    seen = []

    def analyze(policy):
        seen.append(policy)
        rule = policy.rules[0]
        return [Diagnostic(WARNING, "shadowed-rule", "never wins", rule.loc)]

    monkeypatch.setattr(conflicts, "analyze", analyze)
    result = runner.invoke(app, ["check", write("p.cap", CLEAN)])
    assert len(seen) == 1
    assert "p.cap:2:1: warning: never wins [shadowed-rule]" in result.stdout
    result = runner.invoke(app, ["check", write("bad.cap", BAD)])
    assert len(seen) == 1  # not run on a policy with errors


def test_missing_conflict_module_is_a_logged_skip(runner, write, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "capsule.analysis.conflicts", None)
    result = runner.invoke(app, ["check", write("p.cap", CLEAN)])
    assert result.exit_code == exitcodes.OK
    assert "conflict analysis skipped" in caplog.text


def test_internal_error_exits_2_with_one_line(write, monkeypatch, capsys):
    import capsule.analysis.conflicts as conflicts

    def broken(policy):
        raise RuntimeError("boom")

    monkeypatch.setattr(conflicts, "analyze", broken)
    monkeypatch.setattr(sys, "argv", ["capsule", "check", write("p.cap", CLEAN)])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == exitcodes.INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "capsule: internal error: RuntimeError('boom')" in err
    assert "Traceback" not in err


def test_exit_code_reaches_the_shell_through_run(write, monkeypatch):
    monkeypatch.setattr(
        sys, "argv", ["capsule", "check", "--no-conflicts", write("p.cap", BAD)]
    )
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == exitcodes.POLICY_ERRORS
