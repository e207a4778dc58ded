"""`capsule enforce` as a user runs it: coverage first, refusals, exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enforce_helpers import needs_kernel


def capsule(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "from capsule.cli.main import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def policy(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / "p.cap"
        path.write_text(text)
        return path

    return write


@needs_kernel
class TestRun:
    def test_coverage_comes_before_the_command(self, tmp_path, policy):
        path = policy("deny namespace unshare\n")
        marker = tmp_path / "ran"
        res = capsule(
            "enforce",
            "-o",
            str(tmp_path / "run"),
            str(path),
            "--",
            "sh",
            "-c",
            f"echo started >&2; touch {marker}; exit 4",
            cwd=tmp_path,
        )
        assert res.returncode == 4, res.stderr
        assert res.stderr.index("enforcement coverage") < res.stderr.index("started")
        assert f"{path}:1" in res.stderr and "seccomp notification" in res.stderr
        assert marker.exists()

    def test_require_full_refuses_an_audit_only_deny(self, tmp_path, policy):
        path = policy("deny process fork\n")
        marker = tmp_path / "ran"
        res = capsule(
            "enforce",
            "--require",
            "full",
            "-o",
            str(tmp_path / "run"),
            str(path),
            "--",
            "touch",
            str(marker),
            cwd=tmp_path,
        )
        assert res.returncode == 125
        assert "audit only" in res.stderr  # the report says which rule, before refusing
        assert (
            f"failed to start with --require full: 1 deny rule(s) would be audit "
            f"only ({path}:1)" in res.stderr
        )
        assert not marker.exists()

    def test_best_effort_is_the_default_and_starts(self, tmp_path, policy):
        path = policy("deny process fork\n")
        res = capsule(
            "enforce",
            "-o",
            str(tmp_path / "run"),
            str(path),
            "--",
            "true",
            cwd=tmp_path,
        )
        assert res.returncode == 0 and "audit only" in res.stderr

    def test_json_summary_counts_denials_by_rule(self, tmp_path, policy):
        path = policy("deny namespace unshare\n")
        res = capsule(
            "enforce",
            "--json",
            "--no-timeline",
            "-o",
            str(tmp_path / "run"),
            str(path),
            "--",
            "unshare",
            "-m",
            "true",
            cwd=tmp_path,
        )
        summary = json.loads(res.stdout)
        assert summary["denied"] == 1 and summary["by_rule"] == {f"{path}:1": 1}
        assert res.returncode == summary["exit_code"] != 0

    @pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
    def test_coverage_compact_by_default_full_with_v_and_json(
        self, tmp_path, policy, verbose
    ):
        # two objects, one note each: one line by default, two (with notes) with -v
        path = policy("kill file read /nothing-a/, /nothing-b/\n")
        res = capsule(
            *(["-v"] if verbose else []),
            "enforce",
            "--json",
            "-o",
            str(tmp_path / "run"),
            str(path),
            "--",
            "true",
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        rules = [line for line in res.stderr.splitlines() if "p.cap:1" in line]
        if verbose:
            assert len(rules) == 2 and all(" -- kill: the runtime" in r for r in rules)
        else:
            assert len(rules) == 1 and "(2 objects)" in rules[0]
            assert rules[0].split()[:2] == [f"{path}:1", "kill"]
            assert rules[0].endswith(" landlock [1]")
            assert "  [1] kill: the runtime sends SIGKILL" in res.stderr
        coverage = json.loads(res.stdout)["coverage"]  # every detail, either way
        assert [r["rule"] for r in coverage["rules"]] == [
            "kill file read path /nothing-a/",
            "kill file read path /nothing-b/",
        ]
        assert all("kill: the runtime" in r["note"] for r in coverage["rules"])

    def test_missing_command_is_127(self, tmp_path, policy):
        path = policy("deny namespace unshare\n")
        res = capsule(
            "enforce",
            "-o",
            str(tmp_path / "run"),
            str(path),
            "--",
            "no-such-command-here",
            cwd=tmp_path,
        )
        assert res.returncode == 127


class TestErrors:
    @pytest.mark.parametrize(
        "args,message",
        [
            (["--require", "most"], "failed to parse --require 'most'"),
            (["--backend", "ebpf"], "failed to parse --backend 'ebpf'"),
        ],
    )
    def test_bad_options(self, tmp_path, policy, args, message):
        path = policy("deny namespace unshare\n")
        res = capsule("enforce", *args, str(path), "--", "true", cwd=tmp_path)
        assert res.returncode == 64 and message in res.stderr
        assert "Traceback" not in res.stderr

    def test_policy_error_is_shown_with_its_location(self, tmp_path, policy):
        path = policy("deny file reed /etc\n")
        res = capsule("enforce", str(path), "--", "true", cwd=tmp_path)
        assert res.returncode == 1
        assert f"{path}:1:" in res.stderr and "Traceback" not in res.stderr

    def test_missing_policy(self, tmp_path):
        res = capsule("enforce", str(tmp_path / "none.cap"), "--", "true", cwd=tmp_path)
        assert res.returncode == 125
        assert "failed to read" in res.stderr and "no such file" in res.stderr


@needs_kernel
def test_lsm_backend_refused_with_the_probe_result(tmp_path, policy):
    from capsule.runtime.enforce import probe

    if probe().lsm[0]:
        pytest.skip("BPF LSM programs load here: the lsm backend is not refused")
    res = capsule(
        "enforce",
        "--backend",
        "lsm",
        str(policy("deny system mount\n")),
        "--",
        "true",
        cwd=tmp_path,
    )
    assert res.returncode == 125
    assert "failed to select the lsm backend: BPF LSM: load refused" in res.stderr
    assert "--backend compat" in res.stderr


@needs_kernel
def test_artifact_is_enforced_and_a_stale_one_refused(tmp_path, policy):
    # a file rule too: the LSM code generator wants at least one kernel hook
    path = policy(f"deny file read {tmp_path}/nothing/\ndeny namespace unshare\n")
    artifact = tmp_path / "artifact"
    built = capsule("compile", str(path), "-o", str(artifact), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    res = capsule(
        "enforce",
        "-o",
        str(tmp_path / "run"),
        str(artifact),
        "--",
        "unshare",
        "-m",
        "true",
        cwd=tmp_path,
    )
    assert res.returncode != 0 and f"[DENY] {path}:2" in res.stderr
    assert str(artifact) in res.stderr  # read-only for the agent too
    path.write_text("deny namespace setns\n")
    stale = capsule("enforce", str(artifact), "--", "true", cwd=tmp_path)
    assert stale.returncode == 125 and "changed since it was compiled" in stale.stderr


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("policy.bpf.o", b"\x7fELF" + b"\xff" * 60, "not a valid BPF ELF object"),
        ("manifest.json", b'{"format": ', "invalid JSON at line 1 column 12"),
    ],
    ids=["object", "manifest"],
)
def test_damaged_artifact_is_one_line_naming_the_file(
    tmp_path, policy, name, content, message
):
    path = policy("deny file read /nothing/\ndeny namespace unshare\n")
    artifact = tmp_path / "artifact"
    built = capsule("compile", str(path), "-o", str(artifact), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (artifact / name).write_bytes(content)
    marker = tmp_path / "ran"
    res = capsule("enforce", str(artifact), "--", "touch", str(marker), cwd=tmp_path)
    assert res.returncode == 125
    first = res.stderr.splitlines()[0]
    assert first.startswith(f"capsule: error: failed to read {artifact / name}: ")
    assert message in first and "Traceback" not in res.stderr
    assert not marker.exists()
