"""By default the agent cannot reach Capsule: no ptrace, signal, bpf() or writes."""

from __future__ import annotations

import os

from enforce_helpers import needs_kernel

pytestmark = needs_kernel

POLICY = "deny system chroot\n"


def test_policy_and_run_directory_are_read_only(enforce, tmp_path):
    policy = tmp_path / "policy.cap"
    run = enforce(
        POLICY,
        [
            "sh",
            "-c",
            f"echo evil >> {policy} || echo policy-ro; "
            f"touch {tmp_path}/run/x || echo run-ro; "
            f"rm -f {policy} || echo policy-kept",
        ],
    )
    assert "policy-ro" in run.stdout and "run-ro" in run.stdout
    assert "policy-kept" in run.stdout
    assert policy.read_text() == POLICY


def test_cannot_signal_the_runtime(enforce):
    run = enforce(POLICY, ["sh", "-c", f"kill -STOP {os.getpid()} || echo refused"])
    assert "refused" in run.stdout


def test_cannot_ptrace_the_runtime(enforce, py):
    code = (
        "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True)\n"
        f"sys.exit(3 if libc.ptrace(16, {os.getpid()}, 0, 0) == -1 else 0)\n"
    )
    assert enforce(POLICY, [py, "-c", code]).exit_code == 3


def test_bpf_syscall_is_denied_and_named(enforce, py):
    code = (
        "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True)\n"
        "sys.exit(4 if libc.syscall(321, 0, 0, 0) == -1 and ctypes.get_errno() == 1 "
        "else 0)\n"
    )
    run = enforce(POLICY, [py, "-c", code])
    assert run.exit_code == 4
    assert run.verdicts("memory", "bpf")[0]["rule"] == "self-protection:1"


def test_cannot_leave_the_cgroup_tree(enforce):
    run = enforce(
        POLICY,
        ["sh", "-c", "echo $$ > /sys/fs/cgroup/unified/cgroup.procs || echo stayed"],
    )
    assert "stayed" in run.stdout


def test_without_self_protection_the_policy_is_writable(enforce, tmp_path):
    run = enforce(
        POLICY,
        ["sh", "-c", f"echo '# more' >> {tmp_path}/policy.cap"],
        self_protect=False,
    )
    assert run.exit_code == 0
    assert (tmp_path / "policy.cap").read_text().endswith("# more\n")
