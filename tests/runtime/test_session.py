"""The session's process handling: hold before exec, exit codes, --user.

These tests give the session a recorder in place of the tracer. It loads nothing and
returns no events, so they check only what the session does with the process; the
events the kernel sends are checked in tests/cli/test_trace.py.
"""

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from capsule.errors import CapsuleError
from capsule.runtime.session import RunAs, Session, exit_code_of
from capsule.runtime.ringbuf import Span
from capsule.runtime.store import RunReader


class Recorder:
    """Stands where the tracer stands; remembers what the tracked pid was running."""

    def __init__(self) -> None:
        self.cmdline_at_track = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self):
        pass

    def track_pid(self, pid):
        self.cmdline_at_track = Path(f"/proc/{pid}/cmdline").read_bytes()

    wakeup_bytes = 0

    def unread(self):
        return 0

    def wait(self, timeout_ms):
        pass

    def poll_raw(self, timeout_ms, max_bytes=0):
        return Span(b"", 0)

    def decode(self, span):
        return []

    def stats(self):
        return {"drops": 0}


def run(argv, tmp_path, run_as=None):
    recorder = Recorder()
    result = Session(argv, tmp_path / "run", lambda: recorder, run_as=run_as).run()
    return result, recorder


def test_command_is_held_until_tracking_is_in_place(tmp_path):
    result, recorder = run(["/bin/true"], tmp_path)
    assert b"/bin/true" not in recorder.cmdline_at_track  # not yet exec'd
    assert result.exit_code == 0


@pytest.mark.parametrize(
    "argv, code",
    [
        (["/bin/true"], 0),
        (["/bin/false"], 1),
        (["sh", "-c", "exit 7"], 7),
        (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
        (["no-such-command-capsule-test"], 127),
        (["/etc/os-release"], 126),  # a file without an x bit
    ],
)
def test_exit_codes_as_a_shell_reports_them(tmp_path, argv, code):
    result, _ = run(argv, tmp_path)
    assert result.exit_code == code


def test_exec_error_is_reported(tmp_path):
    result, _ = run(["no-such-command-capsule-test"], tmp_path)
    assert "No such file" in result.exec_error


def test_summary_is_stored(tmp_path):
    result, _ = run(["sh", "-c", "exit 3"], tmp_path)
    meta = RunReader(tmp_path / "run").meta()
    assert meta["command"] == ["sh", "-c", "exit 3"]
    assert meta["summary"]["exit_code"] == 3
    assert meta["summary"]["drops"] == 0


def test_waitstatus():
    assert exit_code_of(0) == 0
    assert exit_code_of(5 << 8) == 5
    assert exit_code_of(signal.SIGKILL) == 137


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_user_drops_privileges(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="capsule-user-"))  # pytest's tmp is 0700
    shared.chmod(0o777)
    out = shared / "id"
    nobody = RunAs.lookup("nobody")
    result, _ = run(["sh", "-c", f"id -u > {out}; id -G >> {out}"], tmp_path, nobody)
    assert result.exit_code == 0
    uid, groups = out.read_text().split("\n")[:2]
    assert int(uid) == nobody.uid
    assert "0" not in groups.split()
    shutil.rmtree(shared)


@pytest.mark.parametrize("user", ["no-such-user-capsule", "4294967296"])
def test_unknown_user(user):
    with pytest.raises(CapsuleError, match="failed to find user"):
        RunAs.lookup(user)
