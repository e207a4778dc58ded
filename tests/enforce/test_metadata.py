"""chmod, chown, utime and xattrs under the compat backend: decided by the supervisor.

Landlock has no right for file metadata, so these calls go to the seccomp supervisor,
which resolves the path they name (through the caller's cwd, dirfd or fd) and decides
with the policy. A denied file keeps its mode, owner, times and attributes.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from enforce_helpers import needs_kernel

from capsule.errors import CapsuleError
from capsule.lang import load_policy
from capsule.runtime.compat.plan import Options, build_plan
from capsule.runtime.enforce import check_require
from capsule.runtime.store import RunReader


def _report(tmp_path, text: str):
    path = tmp_path / "p.cap"
    path.write_text(text)
    policy, diagnostics = load_policy([str(path)])
    assert not [d for d in diagnostics if d.is_error], diagnostics
    return build_plan(policy, Options(abi=7)).report, path


def test_require_full_refuses_a_rule_with_some_ops_audit_only(tmp_path):
    # `network *` includes listen and accept, which nothing in compat enforces
    report, path = _report(tmp_path, "kill network * addr 10.0.0.0/8\n")
    line = report.lines[0]
    assert line.status == "partial" and line.unenforced == ("accept", "listen")
    assert [x.ref for x in report.audit_only_denials()] == [f"{path}:1"]
    with pytest.raises(CapsuleError, match=f"would be audit only \\({path}:1\\)"):
        check_require(report, "full")


def test_file_star_on_credentials_is_fully_covered_now(tmp_path):
    report, _ = _report(tmp_path, "kill file * ~/.ssh/\n")
    line = report.lines[0]
    assert line.unenforced == () and "seccomp notification" in line.mechanism
    assert "landlock" in line.mechanism
    check_require(report, "full")  # starts


# Each case prints the errno name or "ok"; os.utime(fd) is futimens (utimensat on an
# fd), os.chmod(dir_fd=) is fchmodat, follow_symlinks=False is fchmodat2 on this libc.
PAYLOAD = textwrap.dedent(
    """
    import errno, json, os, sys
    target, name = sys.argv[1], sys.argv[2]
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    def try_(fn):
        try:
            fn()
            return "ok"
        except OSError as err:
            return errno.errorcode[err.errno]
    fd = os.open(target, os.O_RDONLY)
    dfd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
    base = os.path.basename(target)
    out = {
        "chmod": try_(lambda: os.chmod(target, 0o777)),
        "fchmod": try_(lambda: os.fchmod(fd, 0o777)),
        "fchmodat": try_(lambda: os.chmod(base, 0o777, dir_fd=dfd)),
        "chown": try_(lambda: os.chown(target, 65534, -1)),
        "fchown": try_(lambda: os.fchown(fd, 65534, -1)),
        "lchown": try_(lambda: os.lchown(target, 65534, -1)),
        "utimensat": try_(lambda: os.utime(target, (1, 1))),
        "futimens": try_(lambda: os.utime(fd, (2, 2))),
        "setxattr": try_(lambda: os.setxattr(target, "user.x", b"1")),
        "fsetxattr": try_(lambda: os.setxattr(fd, "user.y", b"1")),
        "link": try_(lambda: os.chmod(name, 0o4755)),
    }
    print(json.dumps(out))
    """
)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "ws").mkdir()
    key = tmp_path / "secret" / "id_rsa"
    key.write_text("key")
    key.chmod(0o600)
    mine = tmp_path / "ws" / "notes"
    mine.write_text("notes")
    mine.chmod(0o600)
    # a workspace name for the key: the supervisor must judge the file, not the name
    (tmp_path / "ws" / "alias").symlink_to(key)
    (tmp_path / "ws" / "self").symlink_to(mine)
    script = tmp_path / "ws" / "meta.py"
    script.write_text(PAYLOAD)
    return tmp_path


def _results(run) -> dict:
    return json.loads(run.stdout.strip().splitlines()[-1])


@needs_kernel
def test_metadata_of_a_denied_file_fails_and_is_recorded(enforce, py, tree):
    key = tree / "secret" / "id_rsa"
    before = os.stat(key)
    policy = f"deny file chmod, chown, write {tree}/secret/\n"
    run = enforce(policy, [py, str(tree / "ws" / "meta.py"), str(key), "ws/alias"])
    results = _results(run)
    assert set(results.values()) == {"EPERM"}, results
    after = os.stat(key)
    assert (after.st_mode, after.st_uid, after.st_mtime) == (
        before.st_mode,
        before.st_uid,
        before.st_mtime,
    )
    assert os.listxattr(key) == []
    # in run.db, each with its rule and the resolved path
    reader = RunReader(tree / "run" / "run.db")
    try:
        stored = [e for e in reader.events(areas=["file"]) if e["verdict"] == "deny"]
    finally:
        reader.close()
    syscalls = {e["syscall"] for e in stored}
    assert {"chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown"} <= syscalls
    assert {"utimensat", "setxattr", "fsetxattr"} <= syscalls
    for event in stored:
        assert event["rule"] == f"{tree}/policy.cap:1", event
        assert event["path"] == str(key), event
    ops = {(e["syscall"], e["op"]) for e in stored}
    assert ("setxattr", "chmod") in ops and ("utimensat", "write") in ops
    # what the call would have changed: the setuid bit, the owner, the attribute
    assert {e["arg"] for e in stored if e["syscall"] == "chmod"} == {0o777, 0o4755}
    assert {e["owner_uid"] for e in stored if e["op"] == "chown"} == {65534}
    assert {e["xattr"] for e in stored if "xattr" in e["syscall"]} == {
        "user.x",
        "user.y",
    }


@needs_kernel
def test_metadata_of_a_workspace_file_succeeds(enforce, py, tree):
    mine = tree / "ws" / "notes"
    policy = f"deny file chmod, chown, write {tree}/secret/\n"
    run = enforce(policy, [py, str(tree / "ws" / "meta.py"), str(mine), "ws/self"])
    results = _results(run)
    assert set(results.values()) == {"ok"}, results
    info = os.stat(mine)
    assert info.st_mode & 0o7777 == 0o4755 and info.st_uid == 65534
    assert os.getxattr(mine, "user.x") == b"1"
    assert not [e for e in run.events if e.get("verdict") == "deny"], run.events


@needs_kernel
def test_kill_rule_on_chmod_kills(enforce, py, tree):
    key = tree / "secret" / "id_rsa"
    code = f"import os; os.chmod({str(key)!r}, 0o644); print('survived')"
    run = enforce(f"kill file * {tree}/secret/\n", [py, "-c", code])
    assert "survived" not in run.stdout
    assert os.stat(key).st_mode & 0o777 == 0o600
    kills = [e for e in run.verdicts("file", "chmod") if e["verdict"] == "kill"]
    assert kills and kills[0]["rule"].endswith("policy.cap:1"), run.events
