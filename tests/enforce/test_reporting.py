"""What the timeline and the summary say about refusals: the deciding rule, the
operation, the order of events from different sources, and kills that happened."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from capsule.runtime.compat import kills
from capsule.runtime.compat.denials import OVER_APPROXIMATION
from capsule.runtime.store import RunReader
from capsule.runtime.timeline import render
from enforce_helpers import needs_kernel

pytestmark = needs_kernel


@pytest.fixture
def secret(tmp_path):
    """A directory with a key, and a symbolic link to the key from outside it."""
    directory = tmp_path / "sec"
    directory.mkdir()
    (directory / "key").write_text("not a real key\n")
    (tmp_path / "link").symlink_to(directory / "key")
    return directory


def _file_events(run):
    return [e for e in run.events if e["area"] == "file"]


# -- which rule a Landlock refusal is attributed to


@pytest.mark.parametrize(
    "how",
    ["by-name", "through-a-symlink", "the-directory-itself"],
)
def test_refusal_is_attributed_to_the_deny_rule(enforce, py, secret, how):
    target = {
        "by-name": f"open('{secret}/key').read()",
        "through-a-symlink": f"open('{secret.parent}/link').read()",
        "the-directory-itself": f"import os; os.listdir('{secret}')",
    }[how]
    run = enforce(f"deny file read {secret}/**\n", [py, "-c", target])
    assert run.exit_code != 0
    events = _file_events(run)
    assert [(e["op"], e["verdict"]) for e in events] == [("read", "deny")], events
    assert events[0]["rule"].endswith("policy.cap:1"), events


def test_refusal_no_rule_explains_is_the_over_approximation(enforce, py, secret):
    # `secret` is split (its key is denied): a new entry in it is denied too
    code = f"open('{secret}/new', 'w')"
    run = enforce(f"deny file write {secret}/key\n", [py, "-c", code])
    assert run.exit_code != 0
    events = _file_events(run)
    assert events and {e["rule"] for e in events} == {OVER_APPROXIMATION}, events


def test_kill_rule_on_process_exec_is_shown_as_process_exec(enforce, tmp_path):
    tool = tmp_path / "tool"
    shutil.copy("/bin/true", tool)
    run = enforce(f"kill process exec {tool}\n", ["sh", "-c", f"{tool}; sleep 1"])
    refused = [e for e in run.events if e.get("verdict")]
    assert [(e["area"], e["op"]) for e in refused] == [("process", "exec")], refused
    assert refused[0]["rule"].endswith("policy.cap:1")
    line = render(refused[0], refused[0]["ts_ns"]).plain
    assert "process   exec" in line and f"{tool} = EACCES [" in line


# -- one event per refusal


@pytest.mark.parametrize("via", ["execveat", "proc-fd"])
def test_memfd_exec_is_one_event(enforce, py, via):
    target = "fd" if via == "execveat" else "f'/proc/self/fd/{fd}'"
    code = (
        "import os\nfd = os.memfd_create('x', 0)\n"
        "os.write(fd, open('/bin/true', 'rb').read())\n"
        f"os.execve({target}, ['true'], {{}})\n"
    )
    # a file default that denies: Landlock's reporter sees the failed exec as well
    policy = (
        "deny memory fileless-exec\ndefault file deny\n"
        "allow file * /usr/, /lib/, /lib64/, /etc/, /tmp/, /proc/, /dev/, /bin/, "
        f"/sys/, /root/, {os.path.dirname(os.path.dirname(py))}/\n"
    )
    run = enforce(policy, [py, "-c", code])
    assert run.exit_code != 0
    refused = [e for e in run.events if e.get("verdict")]
    assert [(e["area"], e["op"]) for e in refused] == [("memory", "fileless-exec")]
    assert run.summary["denied"] == 1 and run.summary["by_rule"] == {
        refused[0]["rule"]: 1
    }


# -- kills


def _reaped_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_kill_of_a_caller_that_had_exited_is_not_counted(tmp_path, secret):
    # Landlock's report is read after the fact: here its caller is gone by then
    from capsule.runtime.compat.denials import DenialWatcher
    from capsule.runtime.compat.landlock import FS
    from capsule.runtime.enforce import CompatRun, EnforceRequest
    from enforce_helpers import load, write_policy

    policy = load(write_policy(tmp_path, f"kill file read {secret}/\n"))
    watcher = DenialWatcher.__new__(DenialWatcher)  # the decoding half, no BPF
    watcher.policy, watcher.handled = policy, FS.READ_FILE
    pid = _reaped_pid()
    raw = {
        "ts_ns": time.monotonic_ns(),
        "ret": -13,
        "args": (0xFFFFFF9C, 0, 0, 0),
        "pid": pid,
        "tid": pid,
        "nr": 257,  # openat
        "comm": b"reader",
        "path": f"{secret}/key".encode(),
        "path2": b"",
        "base": b"",
        "base2": b"",
    }
    event = watcher.to_event(raw)
    assert (event["verdict"], event["killed"]) == ("kill", False)
    assert event["kill_error"] == kills.EXITED
    run = CompatRun(EnforceRequest(policy, [], ["true"], tmp_path / "run"))
    run._record(event)
    assert (run.result.summary()["killed"], run.result.summary()["denied"]) == (0, 1)
    line = render(event, event["ts_ns"]).plain
    assert "[DENY]" in line and "no kill: the process had already exited" in line


def test_kills_counted_are_the_kills_delivered(enforce, py, secret):
    # the reader may be gone (or not) when the runtime reads Landlock's report
    code = (
        "import os, time\npid = os.fork()\nif pid == 0:\n"
        f"    try: os.open('{secret}/key', os.O_RDONLY)\n"
        "    finally: os._exit(0)\n"
        "os.waitpid(pid, 0)\ntime.sleep(0.5)\nprint('parent alive')\n"
    )
    run = enforce(f"kill file read {secret}/\n", [py, "-c", code])
    assert run.exit_code == 0 and "parent alive" in run.stdout
    events = _file_events(run)
    assert len(events) == 1 and events[0]["verdict"] == "kill", events
    delivered = events[0]["killed"]
    assert run.summary["killed"] == int(delivered)
    assert run.summary["denied"] == int(not delivered)


def test_kill_that_happened_is_counted(enforce, py):
    code = "import ctypes; ctypes.CDLL(None).unshare(0x20000)"
    run = enforce("kill namespace unshare\n", [py, "-c", code])
    assert run.exit_code == 128 + signal.SIGKILL
    assert run.verdicts("namespace", "unshare")[0]["killed"] is True
    assert (run.summary["killed"], run.summary["denied"]) == (1, 0)


class TestKill:
    def test_a_live_process_is_killed(self):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        assert kills.kill(pid) is None
        assert os.waitpid(pid, 0)[1] == signal.SIGKILL

    def test_a_zombie_is_not_killed(self):
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        assert kills.kill(pid) == kills.EXITED
        assert os.waitpid(pid, 0)[1] == 7 << 8  # its own exit, not a signal

    def test_a_reaped_process_is_not_killed(self):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        assert kills.outcome(pid) == {"killed": False, "kill_error": kills.EXITED}


# -- time order and one clock


def test_events_from_different_sources_are_in_time_order(enforce, py, secret):
    # the supervisor decides the unshare first, then Landlock refuses the read: both
    # are usually read in the same poll, the ring buffer's first
    code = (
        "import ctypes\nctypes.CDLL(None).unshare(0x20000)\n"
        f"open('{secret}/key').read()\n"
    )
    seen = {}
    run = enforce(
        f"deny namespace unshare\ndeny file read {secret}/\n",
        [py, "-c", code],
        on_start=lambda t0: seen.setdefault("t0", t0),
    )
    refused = [(e["area"], e["op"]) for e in run.events if e.get("verdict")]
    assert refused == [("namespace", "unshare"), ("file", "read")], run.events
    times = [e["ts_ns"] for e in run.events]
    assert times == sorted(times) and times[0] >= seen["t0"]
    reader = RunReader(secret.parent / "run")
    assert reader.meta()["t0_ns"] == seen["t0"]
    stored = [e["ts_ns"] for e in reader.events()]
    assert stored == sorted(stored) and len(stored) == len(times)


# -- 32-bit syscalls

INT80_GETPID = (
    "import ctypes, mmap, struct\n"
    "code = b'\\xb8' + struct.pack('<I', 20) + b'\\xcd\\x80\\xc3'\n"  # int 0x80
    "page = mmap.mmap(-1, 4096, prot=7)\npage.write(code)\n"
    "addr = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
    "print('ran', ctypes.CFUNCTYPE(ctypes.c_long)(addr)(), flush=True)\n"
)


def test_32_bit_syscall_is_killed_and_recorded(enforce, py):
    run = enforce("deny system mount\n", [py, "-c", INT80_GETPID])
    assert run.exit_code == 128 + signal.SIGKILL and "ran" not in run.stdout
    events = run.verdicts("system", "32-bit-syscall")
    assert len(events) == 1, run.events
    event = events[0]
    assert (event["verdict"], event["rule"]) == ("kill", "builtin:32-bit-syscall")
    assert (event["syscall"], event["abi"], event["killed"]) == ("getpid", "32-bit", 1)
    assert run.summary["killed"] == 1
    line = render(event, event["ts_ns"]).plain
    assert "32-bit syscall blocked: getpid [KILL] builtin:32-bit-syscall" in line
