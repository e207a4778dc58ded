"""`capsule diff`, `capsule explain` and the conflict findings of `capsule check`, run
through the command's real entry point on real .cap files (in-process: a fresh
interpreter per case would cost seconds each on a shared machine)."""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from capsule.cli import exitcodes
from capsule.cli.main import run

OLD = """\
# before the change
deny network connect addr 10.0.0.0/8
deny file read ~/.ssh/**
allow file read /home/*/.ssh/known_hosts
"""
NEW = """\
deny network connect addr 10.0.0.0/8 port 1-21
deny file read ~/.ssh/**
allow file read /home/*/.ssh/known_hosts
"""
CODING = """\
# coding agent
allow file read /home/** priority 1
deny file write /etc/**
allow file write /etc/**
deny file read /home/*/.ssh/**
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def capsule(capsys, monkeypatch):
    def invoke(*args, cwd):
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["capsule", *args])
        code = 0
        try:
            run()
        except SystemExit as exit_:
            code = exit_.code or 0
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return invoke


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name, text in {"old.cap": OLD, "new.cap": NEW, "coding.cap": CODING}.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "broken.cap").write_text("deny file reed /x\n")
    return tmp_path


def test_diff_of_equal_policies_exits_0(files, capsule):
    out = capsule("diff", "old.cap", "old.cap", cwd=files)
    assert out.returncode == exitcodes.OK
    assert (
        out.stdout
        == "old.cap and old.cap are equivalent: no event is decided differently\n"
    )


def test_diff_of_different_policies_exits_1_with_witness(files, capsule):
    out = capsule("diff", "old.cap", "new.cap", cwd=files)
    assert out.returncode == exitcodes.POLICY_ERRORS
    lines = out.stdout.splitlines()
    assert lines[0] == "network:"
    assert lines[1].startswith("  now allowed: network connect 10.")
    assert lines[1].endswith("(was deny) [old.cap:2 -> default]")


def test_diff_json(files, capsule):
    out = capsule("diff", "--json", "old.cap", "new.cap", cwd=files)
    data = json.loads(out.stdout)
    assert data["equivalent"] is False
    [area] = data["areas"]
    assert area["area"] == "network"
    assert area["changes"][0]["label"] == "now allowed"
    assert area["changes"][0]["old_rule"] == "old.cap:2"


def test_diff_with_a_broken_policy_is_one_error_line(files, capsule):
    out = capsule("diff", "old.cap", "broken.cap", cwd=files)
    assert out.returncode == exitcodes.POLICY_ERRORS
    assert "Traceback" not in out.stderr
    assert "capsule: error: failed to load policy broken.cap: 1 error(s)" in out.stderr


def test_explain_text(files, capsule):
    out = capsule("explain", "old.cap", "file", "read", "/home/a/.ssh/id_rsa",
               "exe=/usr/bin/cat", cwd=files)  # fmt: skip
    assert out.returncode == exitcodes.OK, out.stderr
    assert out.stdout == (
        "event: file read /home/a/.ssh/id_rsa exe=/usr/bin/cat\n"
        "decision: deny by old.cap:3 (deny file read ~/.ssh/**)\n"
        "z3 cross-check: agrees\n"
    )


def test_explain_json(files, capsule):
    out = capsule("explain", "--json", "old.cap", "file", "read",
               "/home/a/.ssh/known_hosts", cwd=files)  # fmt: skip
    data = json.loads(out.stdout)
    assert data["effect"] == "allow"
    assert data["rule"]["rule"] == "old.cap:4"
    assert [o["rule"] for o in data["overridden"]] == ["old.cap:3"]
    assert data["z3"] == "agrees"


def test_explain_bad_event_is_one_error_line(files, capsule):
    out = capsule("explain", "old.cap", "file", "reed", "/x", cwd=files)
    assert out.returncode != 0
    assert out.stderr.splitlines()[0].startswith(
        "capsule: error: failed to parse event 'file reed /x': area file has no "
        "operation 'reed'"
    )
    assert "Traceback" not in out.stderr


def test_check_reports_conflicts_with_witnesses(files, capsule):
    out = capsule("check", "coding.cap", cwd=files)
    assert out.returncode == exitcodes.POLICY_ERRORS  # the contradiction is an error
    text = out.stdout
    assert (
        "coding.cap:4:1: error: rules at coding.cap:3 (deny file write /etc/**) and "
        "coding.cap:4 (allow file write /etc/**) overlap with different effects"
    ) in text
    assert (
        "coding.cap:5:1: warning: rule at coding.cap:5 "
        "(deny file read /home/*/.ssh/**) "
        "is shadowed by coding.cap:2 (allow file read /home/** priority 1): "
        "e.g. file read /home/"
    ) in text


@pytest.mark.parametrize("words", [["file", "read"], ["file", "write", "exe=/bin/x"]])
def test_explain_file_op_without_a_path_is_a_usage_error(files, capsule, words):
    out = capsule("explain", "old.cap", *words, cwd=files)
    assert out.returncode == exitcodes.USAGE
    lines = out.stderr.splitlines()
    assert lines[0].startswith("capsule: error: failed to parse event")
    assert "needs a path" in lines[0]
    assert "Traceback" not in out.stderr
