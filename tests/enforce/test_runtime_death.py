"""When the runtime dies, the agent's tree dies with it and the timeline stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capsule.runtime.compat.cgroup import cgroup2_root
from capsule.runtime.store import RunReader

from enforce_helpers import needs_kernel

pytestmark = [
    needs_kernel,
    pytest.mark.skipif(cgroup2_root() is None, reason="needs a cgroup v2 mount"),
]

POLICY = "deny network connect addr 10.1.2.3\n"

# the agent: one denied connect, then a grandchild that leaves the session and the
# process tree (setsid, double fork); both write their pids and run on
AGENT = """
import os, socket, sys, time
out = sys.argv[1]
s = socket.socket()
try:
    s.connect(("10.1.2.3", 80))
except OSError as e:
    print("connect", e.errno, flush=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(out + "/grandchild", "w").write(str(os.getpid()))
        while True:
            time.sleep(0.1)
    os._exit(0)
open(out + "/agent", "w").write(str(os.getpid()))
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def start(tmp_path):
    """Start `capsule enforce` with the agent above; give its pids once both run.

    Whatever is still running at the end is killed, so that a failing test leaves
    nothing behind.
    """
    started: list = []

    def run() -> tuple[subprocess.Popen, int, int]:
        policy = tmp_path / "p.cap"
        policy.write_text(POLICY)
        pids = tmp_path / "pids"
        pids.mkdir()
        code = "from capsule.cli.main import run; run()"
        with open(tmp_path / "stderr", "wb") as err:  # CMD inherits it: no pipe
            runtime = subprocess.Popen(
                [sys.executable, "-c", code, "enforce", "--no-timeline", "-o",
                 str(tmp_path / "run"), str(policy), "--",
                 sys.executable, "-c", AGENT, str(pids)],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # the test's own signals stay out of it
            )  # fmt: skip
        started.append(runtime)
        deadline = time.monotonic() + 60
        while not ((pids / "agent").exists() and (pids / "grandchild").exists()):
            if runtime.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the agent did not start: {_stderr(tmp_path)}")
            time.sleep(0.05)
        time.sleep(0.5)  # a few polls: the denial reaches the store's writer
        found = [int((pids / name).read_text()) for name in ("agent", "grandchild")]
        started.extend(found)
        return runtime, found[0], found[1]

    yield run
    for item in started:
        if isinstance(item, subprocess.Popen):
            item.kill()
            item.wait()
        elif _alive(item):
            os.kill(item, signal.SIGKILL)


def _stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr").read_text(errors="replace")


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _denials(run: Path) -> list[dict]:
    return [e for e in RunReader(run).events() if e.get("verdict") == "deny"]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_tree_dies_with_the_runtime(start, signum):
    runtime, agent, grandchild = start()
    assert _alive(agent) and _alive(grandchild)
    runtime.send_signal(signum)
    runtime.wait(timeout=30)
    left = _wait_dead([agent, grandchild], within_s=5)
    assert left == [], f"still running after {signum.name}: {left}"
    assert runtime.returncode == (-9 if signum == signal.SIGKILL else 128 + signum)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_events_before_the_death_are_in_the_store(start, tmp_path, signum):
    runtime, agent, grandchild = start()
    runtime.send_signal(signum)
    runtime.wait(timeout=30)
    _wait_dead([agent, grandchild], within_s=5)  # the watchdog, done with the tree
    denied = _denials(tmp_path / "run")
    assert [(e["area"], e["op"], e["pid"]) for e in denied] == [
        ("network", "connect", agent)
    ]


def test_sighup_warns_that_compat_cannot_reload_and_keeps_enforcing(start, tmp_path):
    runtime, agent, grandchild = start()
    runtime.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "SIGHUP" not in _stderr(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a few polls: an exit would have begun
    assert runtime.poll() is None and _alive(agent) and _alive(grandchild)
    [line] = [ln for ln in _stderr(tmp_path).splitlines() if "SIGHUP" in ln]
    assert "reload is not supported by the compat backend" in line
    runtime.send_signal(signal.SIGTERM)  # still the same run: it ends as one
    runtime.wait(timeout=30)
    assert runtime.returncode == 128 + signal.SIGTERM
    assert _wait_dead([agent, grandchild], within_s=5) == []


def test_sigterm_closes_the_store_with_a_summary(start, tmp_path):
    runtime, _, _ = start()
    runtime.send_signal(signal.SIGTERM)
    runtime.wait(timeout=30)
    summary = RunReader(tmp_path / "run").meta().get("summary", {})
    assert summary.get("exit_code") == 143 and summary.get("denied") == 1
    assert "SIGTERM" in _stderr(tmp_path)


def test_the_agent_cannot_kill_the_watchdog(enforce):
    # the pattern's brackets keep pgrep from matching this very shell
    run = enforce(
        "deny system chroot\n",
        [
            "sh",
            "-c",
            (
                "for p in $(pgrep -f 'compat[.]watchdog'); do "
                "kill -9 $p && echo killed || echo refused; done"
            ),
        ],
    )
    assert "refused" in run.stdout and "killed" not in run.stdout
