"""The lsm backend's host side: its coverage report, --require full, the backend
choice and the rule each kernel event is attributed to. Loading and enforcing run in
the LSM VM (tests/lsm/test_enforce_lsm.py)."""

from __future__ import annotations

import pytest
from enforce_helpers import load, write_policy

from capsule.codegen import artifact, ir
from capsule.errors import CapsuleError
from capsule.runtime import lsm
from capsule.runtime.enforce import Capabilities, select_backend

POLICY = """\
default file allow
deny file read /srv/secret
deny ipc ptrace
audit system persist
"""
YES, NO = (True, "ok"), (False, "load refused: Operation not permitted (EPERM)")


@pytest.fixture
def policy(tmp_path):
    return load(write_policy(tmp_path, POLICY))


def _report(policy):
    return lsm.coverage_report(policy, artifact.manifest(ir.lower(policy), "x86_64"))


def test_coverage_names_the_hook_or_not_enforced_in_kernel(policy) -> None:
    lines = {line.ref.rsplit(":", 1)[1]: line for line in _report(policy).lines}
    assert (lines["2"].status, lines["2"].mechanism) == ("enforced", "lsm file_open")
    assert lines["3"].status == lsm.NOT_IN_KERNEL and lines["3"].blocking
    assert "ipc ptrace" in lines["3"].note
    assert lines["4"].status == lsm.NOT_IN_KERNEL and not lines["4"].blocking
    assert "not enforced in kernel" in _report(policy).render()


def test_require_full_refuses_an_unsupported_deny(policy) -> None:
    report = _report(policy)
    lsm.check_require(report, "best-effort")
    with pytest.raises(CapsuleError, match=r"1 deny or kill rule\(s\) not enforced"):
        lsm.check_require(report, "full")


@pytest.mark.parametrize(
    ("requested", "lsm_status", "chosen"),
    [("auto", YES, "lsm"), ("lsm", YES, "lsm"), ("auto", NO, "compat")],
)
def test_backend_choice_follows_the_probe(requested, lsm_status, chosen) -> None:
    caps = Capabilities(lsm_status, YES, YES, YES, YES)
    assert select_backend(requested, caps) == chosen


@pytest.mark.parametrize(
    ("raw", "verdict", "rule"),
    [
        ({"area": "file", "op": "read", "path": "/srv/secret", "flags": 2}, "deny", 2),
        (
            {"area": "file", "op": "read", "path": "/srv/other", "flags": 0},
            None,
            "default:file",
        ),
        (
            {"area": "file", "op": "read", "path": "/srv/sec", "flags": 3},
            "deny",
            "default:file (path too long)",
        ),
    ],
)
def test_events_name_the_deciding_rule(policy, raw, verdict, rule) -> None:
    event = lsm.to_event(raw, policy)
    assert event["verdict"] == verdict
    if isinstance(rule, int):  # the policy's line
        assert event["rule"].endswith(f"policy.cap:{rule}")
    else:
        assert event["rule"] == rule


# -- reload (SIGHUP): everything before the kernel is involved runs on the host --------


def _lsm_run(tmp_path, source, artifact_dir=None, require="best-effort"):
    from capsule.runtime.enforce import EnforceRequest

    request = EnforceRequest(
        policy=load(source),
        policy_files=[str(source)],
        command=["true"],
        directory=tmp_path / "run",
        require=require,
    )
    return lsm.LsmRun(request, artifact_dir)


@pytest.mark.parametrize("from_artifact", [False, True])
def test_a_broken_reload_keeps_the_old_programs(tmp_path, caplog, from_artifact):
    source = write_policy(tmp_path, POLICY)
    built = artifact.build(load(source), tmp_path / "art") if from_artifact else None
    run = _lsm_run(tmp_path, source, built.directory if built else None)
    old = run.policy
    run.obj, run.links, run.policy_sha256 = "old-object", ["old-link"], "ab" * 32
    source.write_text("default file allow\ndeny file frobnicate /srv/secret\n")
    assert run.reload() is False
    assert (run.obj, run.links, run.policy) == ("old-object", ["old-link"], old)
    assert run.reloads == []
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    line = record.getMessage()
    assert "\n" not in line
    assert line.startswith("failed to reload the policy: ")
    assert f"{source}:2:" in line and line.endswith("still enforcing abababababab")


def test_a_reload_that_needs_full_coverage_keeps_the_old_programs(tmp_path, caplog):
    source = write_policy(tmp_path, "default file allow\ndeny file read /srv/a\n")
    run = _lsm_run(tmp_path, source, require="full")
    source.write_text("default file allow\ndeny file read /srv/a\ndeny ipc ptrace\n")
    assert run.reload() is False
    assert "1 deny or kill rule(s) not enforced in kernel" in caplog.text


def test_a_reload_compiles_the_changed_policy(tmp_path) -> None:
    from capsule.codegen.ir import policy_hash

    source = write_policy(tmp_path, "default file allow\ndeny file read /srv/a\n")
    built = artifact.build(load(source), tmp_path / "art")
    run = _lsm_run(tmp_path, source, built.directory)
    # unchanged sources: the given artifact itself is loaded again
    _, directory, _ = run.prepare_reload()
    assert directory == built.directory
    source.write_text(source.read_text() + "deny file read /srv/b\n")
    policy, directory, manifest = run.prepare_reload()
    assert directory == tmp_path / "run" / "artifact-1"
    assert manifest["policy_sha256"] == policy_hash(policy)
    assert manifest["policy_sha256"] != built.manifest["policy_sha256"]
    assert b"/srv/b".hex() in (directory / artifact.MAPS).read_text()
