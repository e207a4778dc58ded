"""Network rules at the cgroup sock_addr hooks: TCP, UDP, Fast Open, IPv6, ranks."""

from __future__ import annotations

import struct

import pytest

from capsule.runtime import btf
from capsule.runtime.compat import sockguard
from capsule.runtime.compat.cgroup import cgroup2_root

from enforce_helpers import needs_kernel

pytestmark = [
    needs_kernel,
    pytest.mark.skipif(cgroup2_root() is None, reason="needs a cgroup v2 mount"),
]

PROBE = """
import socket, sys
def tcp(addr, port, family=socket.AF_INET):
    s = socket.socket(family)
    try:
        s.connect((addr, port))
    except OSError as e:
        return e.errno
def udp_sendto(addr, port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b'x', (addr, port))
    except OSError as e:
        return e.errno
def udp_sendmsg(addr, port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendmsg([b'x'], [], 0, (addr, port))
    except OSError as e:
        return e.errno
def tcp_fastopen(addr, port):
    s = socket.socket()
    try:
        s.sendto(b'hello', socket.MSG_FASTOPEN, (addr, port))
    except OSError as e:
        return e.errno
print(CALLS)
"""


def _probe(calls: str) -> str:
    return PROBE.replace("CALLS", calls)


@pytest.mark.parametrize(
    "call",
    [
        "tcp('127.0.0.2', 80)",
        "udp_sendto('127.0.0.2', 53)",
        "udp_sendmsg('127.0.0.2', 53)",
        "tcp_fastopen('127.0.0.2', 80)",
        "tcp('::ffff:127.0.0.2', 80, socket.AF_INET6)",
    ],
)
def test_denied_address(enforce, py, call):
    run = enforce(
        "deny network connect,send addr 127.0.0.2\n", [py, "-c", _probe(call)]
    )
    assert run.stdout.strip() == "1", run.stdout  # EPERM from the hook
    event = run.events[0]
    assert (event["area"], event["verdict"]) == ("network", "deny")
    assert event["rule"].endswith("policy.cap:1") and event["addr"] == "127.0.0.2"


def test_other_addresses_pass(enforce, py):
    run = enforce(
        "deny network connect,send addr 127.0.0.2\n",
        [py, "-c", _probe("tcp('127.0.0.1', 1), udp_sendto('127.0.0.3', 9)")],
    )
    assert run.stdout.strip() == "111 None"  # refused by nobody listening; sent
    assert not run.events


def test_port_and_protocol_classes(enforce, py):
    policy = (
        "deny network connect port 22\n"
        "allow network connect addr 127.0.0.5 port 22 protocol tcp\n"
    )
    calls = "tcp('127.0.0.4', 22), tcp('127.0.0.5', 22), tcp('127.0.0.4', 23)"
    run = enforce(policy, [py, "-c", _probe(calls)])
    assert run.stdout.strip() == "1 111 111"


def test_priority_beats_the_longer_prefix(enforce, py):
    policy = (
        "deny network connect addr 127.0.0.0/8 priority 5\n"
        "allow network connect addr 127.0.0.7\n"
    )
    run = enforce(policy, [py, "-c", _probe("tcp('127.0.0.7', 1)")])
    assert run.stdout.strip() == "1"


def test_default_deny_with_an_allowed_block(enforce, py):
    policy = "default network deny\nallow network connect addr 127.0.0.0/8\n"
    run = enforce(
        policy,
        [py, "-c", _probe("tcp('127.0.0.9', 1), tcp('::1', 1, socket.AF_INET6)")],
    )
    assert run.stdout.strip() == "111 1"
    assert run.events[0]["rule"] == "default:network"


def test_kill(enforce, py):
    run = enforce(
        "kill network connect addr 127.0.0.2\n",
        [
            py,
            "-c",
            _probe("tcp('127.0.0.2', 80)") + "\nimport time\n"
            "time.sleep(5)\nprint('survived')",
        ],
    )
    assert run.exit_code == 128 + 9 and "survived" not in run.stdout


def test_event_layout_matches_the_object(tmp_path):
    """The Python decoder and the C struct must agree: compare with the BTF."""
    members = btf.read_object_btf(sockguard.object_path()).flat_members("sock_event")
    offset = 0
    for name, code in zip(
        sockguard.EVENT_FIELDS, sockguard.EVENT.format[1:].replace("16s", "s")
    ):
        size = struct.calcsize("=16s" if code == "s" else "=" + code)
        assert members[name] == (offset, size), name
        offset += size
