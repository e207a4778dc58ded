"""`capsule enforce --backend lsm` in the LSM VM: the artifact's programs deny inside
the agent's cgroup only, the command's status comes back, and the timeline and the
run's JSON name the denied path and the deciding rule. In the same run, SIGHUP reloads
the policy while the agent opens the denied file in a tight loop: no open gets through
during a swap, a broken policy keeps the old programs, and the new rules take effect."""

import json
import shutil
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
SECOND = f"{WORK}/second"
POLICY = f"""\
default file allow
deny file read {SECRET}
"""
RELOADED = POLICY + f"deny file read {SECOND}\n"  # policy2.cap:3
BROKEN = POLICY + f"deny file frobnicate {SECOND}\n"
CAPSULE = str(Path(sys.executable).parent / "capsule")


@guest_job("enforce_lsm")
def _enforce_job(workdir: Path, loader: Path) -> vm.GuestCommand:
    built = _build(workdir, "policy.cap", POLICY)
    reloaded = _build(workdir, "policy2.cap", RELOADED)
    # an artifact whose manifest names a policy that does not check
    broken = workdir / "broken"
    shutil.copytree(reloaded, broken)
    (workdir / "broken.cap").write_text(BROKEN)
    manifest = json.loads((broken / artifact.MANIFEST).read_text())
    manifest["sources"] = [str(workdir / "broken.cap")]
    (broken / artifact.MANIFEST).write_text(json.dumps(manifest))
    # the guest cannot write build/: the probe object `enforce` loads is made here
    build.compile_bpf(doctor.PROBES)
    argv = [sys.executable, str(HERE / "guest_enforce.py"), CAPSULE]
    argv += [str(built), str(reloaded), str(broken), WORK]
    return vm.GuestCommand("enforce_lsm", argv, 420)


def _build(workdir: Path, name: str, text: str) -> Path:
    source = workdir / name
    source.write_text(text)
    policy, diagnostics = load_policy([str(source)])
    assert not [d for d in diagnostics if d.is_error], diagnostics
    return artifact.build(policy, workdir / name.removesuffix(".cap")).directory


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


def _agent(run: dict) -> list[str]:
    return [ln for ln in run["stdout"].splitlines() if ln.startswith("agent:")]


def test_agent_is_denied_the_file_and_allowed_the_other(run: dict) -> None:
    agent = _agent(run)
    assert agent[:2] == ["agent: ok: ok fine", "agent: secret: EPERM"], run["stderr"]
    assert agent[2] == "agent: second: ok two"  # before any reload


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
    assert {e["path"] for e in denied} == {SECRET, SECOND}, run["stderr"][-3000:]
    assert denied[0]["path"] == SECRET and denied[0]["rule"].endswith("policy.cap:2")
    [second] = [e for e in denied if e["path"] == SECOND]
    assert second["rule"].endswith("policy2.cap:3")  # named by the reloaded policy
    assert SECRET in run["stderr"]  # the live timeline
    summary = _summary(run)
    assert summary["exit_code"] == 3 and summary["denied"] == run["secret_events"] + 1
    rules = {rule.rsplit("/", 1)[-1] for rule in summary["by_rule"]}
    assert rules == {"policy.cap:2", "policy2.cap:2", "policy2.cap:3"}


# -- reload ----------------------------------------------------------------------------


def test_every_reload_finished(run: dict) -> None:
    assert [name for name, done, _ in run["reloads"] if done] == [
        "reloaded",
        "broken",
        "initial",
        "reloaded",
    ], (run["reloads"], run["stderr"])


def test_no_open_of_the_denied_file_got_through_a_reload(run: dict) -> None:
    [hammer] = [ln for ln in _agent(run) if ln.startswith("agent: hammer:")]
    opened, tries = map(int, hammer.split()[2::2][:2])
    assert tries > 0 and opened == 0, hammer


def test_the_reloaded_policy_denies_the_second_file(run: dict) -> None:
    assert _agent(run)[-1] == "agent: second after reload: EPERM", run["stderr"]


def test_a_broken_reload_is_one_error_line_and_keeps_enforcing(run: dict) -> None:
    errors = [ln for ln in run["stderr"].splitlines() if "failed to reload" in ln]
    assert len(errors) == 1, run["stderr"]
    assert "broken.cap:3:" in errors[0] and "still enforcing" in errors[0]
    assert "Traceback" not in run["stderr"]


def test_the_run_store_lists_the_reloads(run: dict) -> None:
    hashes = [reload["policy_sha256"] for reload in run["meta_reloads"]]
    assert len(hashes) == 3 and hashes[0] == hashes[2] != hashes[1]
    targets = [Path(reload["artifact"]).name for reload in run["meta_reloads"]]
    assert targets == ["policy2", "policy", "policy2"]
    for short in hashes:
        assert f"policy reloaded: {short[:12]}" in run["stderr"]
