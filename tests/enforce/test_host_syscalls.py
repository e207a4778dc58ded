"""Host administration is out of the agent's reach, even as root, with any policy.

The shim drops the host-administration capabilities from the bounding set before it
executes the command, and seccomp fails the host-administration syscalls with EPERM
(recorded under `builtin:host-admin`). Every probe here is harmless if it got through:
the hostname is set to itself in a UTS namespace of its own, reboot gets a bad magic,
and an address added to lo is removed again.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest
from enforce_helpers import needs_kernel

from capsule.runtime.compat.plan import DROPPED_CAPS

pytestmark = needs_kernel

PROBES = textwrap.dedent(
    """
    import ctypes, errno, json, os, socket
    libc = ctypes.CDLL(None, use_errno=True)
    def call(*args):
        ret = libc.syscall(*args)
        return "ok" if ret == 0 else errno.errorcode[ctypes.get_errno()]
    name = socket.gethostname().encode()
    with open("/proc/self/status") as status:
        bnd = [l for l in status if l.startswith("CapBnd:")][0].split()[1]
    print(json.dumps({
        "sethostname": call(170, name, len(name)),
        "reboot": call(169, 0, 0, 0, 0),  # bad magic: EINVAL if it got through
        "settimeofday": call(164, None, None),  # NULL, NULL changes nothing
        "bounding": int(bnd, 16),
    }))
    """
)


def test_host_admin_syscalls_fail_and_are_recorded(enforce, py):
    import json

    run = enforce("deny system mount\n", ["unshare", "--uts", py, "-c", PROBES])
    assert run.exit_code == 0, run.stdout
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["sethostname"] == "EPERM"
    assert results["reboot"] == "EPERM"
    assert results["settimeofday"] == "EPERM"
    for name, bit in DROPPED_CAPS.items():
        assert not results["bounding"] >> bit & 1, name
    assert results["bounding"] >> 21 & 1  # CAP_SYS_ADMIN stays: unshare needs it
    denials = run.verdicts("system", "host-admin")
    assert {e["syscall"] for e in denials} == {"sethostname", "reboot", "settimeofday"}
    assert {e["rule"] for e in denials} == {"builtin:host-admin"}
    assert {e["verdict"] for e in denials} == {"deny"}
    protection = "\n".join(run.coverage.protection)
    assert "CAP_NET_ADMIN" in protection and "sethostname" in protection


@pytest.fixture
def no_stray_address():
    yield
    # if the sandbox failed to stop it, take the address off again
    subprocess.run(
        ["ip", "addr", "del", "127.9.9.9/32", "dev", "lo"], capture_output=True
    )


def test_ip_addr_add_on_lo_fails(enforce, no_stray_address):
    run = enforce(
        "deny system mount\n", ["ip", "addr", "add", "127.9.9.9/32", "dev", "lo"]
    )
    assert run.exit_code != 0, run.stdout
    assert "Operation not permitted" in run.stdout
    shown = subprocess.run(
        ["ip", "addr", "show", "dev", "lo"], capture_output=True, text=True
    ).stdout
    assert "127.9.9.9" not in shown


def test_without_self_protection_nothing_is_dropped(enforce, py):
    code = (
        "bnd = [l for l in open('/proc/self/status') if l.startswith('CapBnd')]; "
        "print(int(bnd[0].split()[1], 16) >> 12 & 1)"
    )
    run = enforce("deny system mount\n", [py, "-c", code], self_protect=False)
    assert run.stdout.strip().splitlines()[-1] == "1"
