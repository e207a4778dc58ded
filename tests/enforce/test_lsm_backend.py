"""The lsm backend's host side: its coverage report, --require full, the backend
choice and the rule each kernel event is attributed to. Loading and enforcing run in
the LSM VM (tests/lsm/test_enforce_lsm.py)."""

from __future__ import annotations

import pytest
from conftest import load, write_policy

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
