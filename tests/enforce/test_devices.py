"""Device rules at the cgroup device hook: by number, by class, whatever the path."""

from __future__ import annotations

import os

import pytest

from capsule.runtime import btf
from capsule.runtime.compat import devices

from enforce_helpers import needs_kernel

pytestmark = needs_kernel


@pytest.mark.parametrize(
    "rule", ["deny device open dev 1:5", "deny device open dev [1:7, 1:5]"]
)
def test_denied_by_number(enforce, rule):
    run = enforce(rule + "\n", ["head", "-c1", "/dev/zero"])
    assert run.exit_code != 0 and "Operation not permitted" in run.stdout
    event = run.verdicts("device", "open")[0]
    assert event["device"] == "1:5" and event["rule"].endswith("policy.cap:1")


def test_any_alias_of_the_node(enforce, tmp_path):
    alias = tmp_path / "myzero"
    os.mknod(alias, 0o666 | 0o020000, os.makedev(1, 5))
    run = enforce("deny device open dev 1:5\n", ["head", "-c1", str(alias)])
    assert run.exit_code != 0


def test_class_and_a_more_specific_allow(enforce):
    policy = "deny device open dev random\nallow device open dev 1:9\n"
    run = enforce(
        policy,
        [
            "sh",
            "-c",
            "head -c1 /dev/random >/dev/null || echo no8; "
            "head -c1 /dev/urandom >/dev/null && echo yes9",
        ],
    )
    assert "no8" in run.stdout and "yes9" in run.stdout


def test_event_layout_matches_the_object():
    members = btf.read_object_btf(devices.object_path()).flat_members("dev_event")
    offset = 0
    sizes = dict(zip(devices.EVENT_FIELDS, (8, 8, 4, 4, 4, 4, 4, 2, 1, 1, 16)))
    for name in devices.EVENT_FIELDS:
        assert members[name] == (offset, sizes[name]), name
        offset += sizes[name]
    assert offset == devices.EVENT.size
