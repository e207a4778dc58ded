"""Operations that only seccomp sees: denied in the kernel, named in the timeline."""

from __future__ import annotations

import pytest

from enforce_helpers import needs_kernel

pytestmark = needs_kernel

# (policy, command, area, op): the command must fail, and the denial name rule line 1
CASES = [
    ("deny system mount", ["mount", "-t", "tmpfs", "none", "/mnt"], "system", "mount"),
    ("deny namespace unshare", ["unshare", "-m", "true"], "namespace", "unshare"),
    (
        "deny creds setuid",
        ["PY", "-c", "import os; os.setuid(1000)"],
        "creds",
        "setuid",
    ),
    (
        "deny creds setgid gid 0-999",
        ["PY", "-c", "import os; os.setgid(5)"],
        "creds",
        "setgid",
    ),
    (
        "deny memory memfd",
        ["PY", "-c", "import os; os.memfd_create('x')"],
        "memory",
        "memfd",
    ),
    (
        "deny ipc ptrace",
        [
            "PY",
            "-c",
            "import ctypes; l = ctypes.CDLL(None, use_errno=True); "
            "import sys; sys.exit(9 if l.ptrace(0, 0, 0, 0) == -1 else 0)",
        ],
        "ipc",
        "ptrace",
    ),
]


@pytest.mark.parametrize(
    "policy,command,area,op", CASES, ids=[c[0].replace(" ", "-") for c in CASES]
)
def test_denied_and_reported(enforce, py, policy, command, area, op):
    command = [py if part == "PY" else part for part in command]
    run = enforce(policy + "\n", command)
    assert run.exit_code != 0, run.stdout
    denials = run.verdicts(area, op)
    assert denials, run.events
    assert denials[0]["verdict"] == "deny"
    assert denials[0]["rule"].endswith("policy.cap:1")


def test_condition_on_the_object_lets_other_calls_through(enforce, py):
    code = "import os; os.setgid(5000); print('gid', os.getgid())"
    run = enforce("deny creds setgid gid 0-999\n", [py, "-c", code])
    assert run.exit_code == 0 and "gid 5000" in run.stdout
    assert not run.verdicts("creds", "setgid")


def test_subject_condition_is_decided_by_the_supervisor(enforce, py):
    code = "import os; os.setgid(5)"
    run = enforce(
        "deny creds setgid when exe /usr/bin/nothing-like-this\n", [py, "-c", code]
    )
    assert run.exit_code == 0


def test_kill_kills_the_caller(enforce, py):
    code = "import ctypes; ctypes.CDLL(None).unshare(0x20000)"
    run = enforce("kill namespace unshare\n", [py, "-c", code])
    assert run.exit_code == 128 + 9
    assert run.verdicts("namespace", "unshare")[0]["verdict"] == "kill"


def test_audit_is_recorded_and_allowed(enforce):
    run = enforce("audit namespace unshare\n", ["unshare", "-u", "true"])
    assert run.exit_code == 0
    assert run.verdicts("namespace", "unshare")[0]["verdict"] == "audit"


def test_wx_mapping_is_denied(enforce, py):
    code = (
        "import mmap\ntry:\n mmap.mmap(-1, 4096, prot=mmap.PROT_READ|mmap.PROT_WRITE|"
        "mmap.PROT_EXEC)\nexcept OSError as e:\n print('errno', e.errno)\n"
        "mmap.mmap(-1, 4096, prot=mmap.PROT_READ|mmap.PROT_WRITE)\nprint('rw ok')\n"
    )
    run = enforce("deny memory wx\n", [py, "-c", code])
    assert "errno 1" in run.stdout and "rw ok" in run.stdout
    assert run.verdicts("memory", "wx")


def test_abstract_unix_socket_outside_the_sandbox(enforce, py):
    import socket

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0capsule-test-abstract")
    server.listen(1)
    code = (
        "import socket\ns = socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect('\\0capsule-test-abstract')\n print('connected')\n"
        "except OSError as e:\n print('errno', e.errno)\n"
    )
    try:
        run = enforce("deny ipc unix-connect\n", [py, "-c", code])
    finally:
        server.close()
    assert "errno 1" in run.stdout, run.stdout


def test_signal_rule_on_the_target_executable(enforce):
    # the sleeping child is inside the sandbox, so Landlock's scope lets it be
    # signalled; the rule on its executable is what refuses
    script = (
        "sleep 5 & pid=$!; "  # wait until the child runs sleep, not still the shell
        'while [ "$(readlink /proc/$pid/exe)" != /usr/bin/sleep ]; do :; done; '
        "kill -TERM $pid || echo refused; kill -9 $pid"
    )
    run = enforce(
        "deny signal send signal TERM target /usr/bin/sleep\n", ["sh", "-c", script]
    )
    assert "refused" in run.stdout
    event = run.verdicts("signal", "send")[0]
    assert event["target_exe"] == "/usr/bin/sleep" and event["sig"] == 15
