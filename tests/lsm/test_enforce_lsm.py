"""`capsule enforce --backend lsm` in the LSM VM: the artifact's programs deny inside
the agent's cgroup only, the command's status comes back, and the timeline and the
run's JSON name the denied path and the deciding rule."""

import json
import sys
from pathlib import Path

import pytest
from lsm_harness import HERE, guest_job

from capsule.codegen import artifact
from capsule.lang import load_policy
from capsule.runtime import build, doctor, vm

pytestmark = [pytest.mark.lsm, pytest.mark.slow]
WORK = "/run/capsule/enforce-lsm"
SECRET = f"{WORK}/secret"
POLICY = f"""\
default file allow
deny file read {SECRET}
"""
CAPSULE = str(Path(sys.executable).parent / "capsule")


@guest_job("enforce_lsm")
def _enforce_job(workdir: Path, loader: Path) -> vm.GuestCommand:
    source = workdir / "policy.cap"
    source.write_text(POLICY)
    policy, diagnostics = load_policy([str(source)])
    assert not [d for d in diagnostics if d.is_error], diagnostics
    built = artifact.build(policy, workdir / "artifact")
    # the guest cannot write build/: the probe object `enforce` loads is made here
    build.compile_bpf(doctor.PROBES)
    argv = [sys.executable, str(HERE / "guest_enforce.py"), CAPSULE]
    return vm.GuestCommand("enforce_lsm", [*argv, str(built.directory), WORK], 300)


@pytest.fixture(scope="module")
def run(lsm_vm: vm.GuestRun) -> dict:
    result = lsm_vm.results["enforce_lsm"]
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise AssertionError(f"no result from the guest:\n{result.stdout}{result.stderr}")


def _summary(run: dict) -> dict:
    text = run["stdout"]
    return json.loads(text[text.index("\n{") + 1 :] if "\n{" in text else text)


def test_agent_is_denied_the_file_and_allowed_the_other(run: dict) -> None:
    agent = [ln for ln in run["stdout"].splitlines() if ln.startswith("agent:")]
    assert agent == ["agent: ok: ok fine", "agent: secret: EPERM"], run["stderr"]


def test_command_status_is_the_exit_status(run: dict) -> None:
    assert run["rc"] == 3, run["stderr"]


def test_process_outside_the_scope_still_reads_the_file(run: dict) -> None:
    assert run["outside"] == "ok s3cret", run["stderr"]


def test_coverage_is_printed_before_the_command(run: dict) -> None:
    err = run["stderr"]
    assert "enforcement coverage (backend lsm" in err
    assert err.index("enforcement coverage") < err.index(SECRET)


def test_timeline_and_json_name_the_denied_path_and_rule(run: dict) -> None:
    denied = [e for e in run["events"] if e.get("verdict") == "deny"]
    assert [e["path"] for e in denied] == [SECRET], run["events"]
    assert denied[0]["rule"].endswith("policy.cap:2")
    assert SECRET in run["stderr"]  # the live timeline
    summary = _summary(run)
    assert summary["exit_code"] == 3 and summary["denied"] == 1
    assert [rule.rsplit("/", 1)[-1] for rule in summary["by_rule"]] == ["policy.cap:2"]
