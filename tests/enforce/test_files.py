"""File rules through Landlock: the translation, then real denials in a real child."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import pytest

from capsule.lang.model import Effect, Location, ObjectPattern, PathGlob, Policy, Rule
from capsule.runtime.compat import files
from capsule.runtime.compat.landlock import FS

from enforce_helpers import needs_kernel


def _rule(line: int, effect: str, ops: str, path: str, priority: int = 0) -> Rule:
    return Rule(
        Location("t.cap", line, 1),
        Effect(effect),
        None,
        "file",
        frozenset(ops.split(",")),
        (ObjectPattern({"path": PathGlob.parse(path)}),),
        priority=priority,
    )


@pytest.fixture
def tree(tmp_path):
    for name in ("pub/a", "secret/key", "secret/sub/deep", "work/out"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return tmp_path


def _grants(tree, *rules, rights=FS.READ_FILE | FS.READ_DIR):
    policy = files.landlock_policy(Policy(rules=tuple(rules)))
    return files.translate(policy, rights)


class TestTranslate:
    def test_deny_subtree_splits_its_parents(self, tree):
        out = _grants(tree, _rule(1, "deny", "read", f"{tree}/secret/"))
        assert FS.READ_FILE & out.grants[f"{tree}/pub"]
        assert f"{tree}/secret" not in out.grants
        assert f"{tree}/secret/key" not in out.grants
        assert tree.as_posix() in out.split[FS.READ_FILE]
        assert "/" not in out.grants  # a grant on / would cover the secret too

    def test_allow_inside_deny_is_granted(self, tree):
        out = _grants(
            tree,
            _rule(1, "deny", "read", f"{tree}/secret/"),
            _rule(2, "allow", "read", f"{tree}/secret/sub/"),
        )
        assert FS.READ_FILE & out.grants[f"{tree}/secret/sub"]
        assert f"{tree}/secret/key" not in out.grants

    def test_priority_beats_specificity(self, tree):
        out = _grants(
            tree,
            _rule(1, "deny", "read", f"{tree}/secret/", priority=5),
            _rule(2, "allow", "read", f"{tree}/secret/sub/"),
        )
        assert f"{tree}/secret/sub" not in out.grants

    def test_glob_in_the_middle_expands_existing_matches(self, tree):
        out = _grants(tree, _rule(1, "deny", "read", f"{tree}/*/key"))
        assert f"{tree}/secret/key" not in out.grants
        assert FS.READ_FILE & out.grants[f"{tree}/secret/sub"]
        assert f"{tree}/secret" in out.split[FS.READ_FILE]

    def test_trailing_globstar_denies_the_directory_too(self, tree):
        # D/** leaves D itself allowed, but a grant on D would cover D/**: over-approx
        out = _grants(tree, _rule(1, "deny", "read", f"{tree}/secret/**"))
        assert f"{tree}/secret" not in out.grants

    @pytest.mark.parametrize(
        "pattern,reason",
        [
            ("/**/.env", "'**' inside a pattern"),
            ("/a/**/b", "'**' inside a pattern"),
        ],
    )
    def test_deep_glob_is_not_landlock(self, pattern, reason):
        clause = _rule(1, "deny", "read", pattern).clauses()[0]
        assert reason in files.landlock_limit(clause)

    def test_symlinks_are_never_granted(self, tree):
        (tree / "link").symlink_to(tree / "secret")
        out = _grants(tree, _rule(1, "deny", "read", f"{tree}/secret/"))
        assert f"{tree}/link" not in out.grants

    def test_handled_rights_follow_the_denied_ops(self):
        policy = Policy(rules=(_rule(1, "deny", "write", "/etc/**"),))
        handled = files.handled_rights(policy, FS(0xFFFF))
        assert handled == FS.WRITE_FILE


@needs_kernel
class TestDenials:
    def test_open_gets_eacces(self, enforce, tree, py):
        code = (
            f"import os\nopen('{tree}/pub/a').read()\n"
            f"try:\n open('{tree}/secret/key')\nexcept OSError as e:\n"
            f" print('errno', e.errno)\n"
        )
        run = enforce(f"deny file read {tree}/secret/\n", [py, "-c", code])
        assert run.exit_code == 0, run.stdout
        assert f"errno {errno.EACCES}" in run.stdout

    def test_allowed_write_elsewhere_and_denied_write_here(self, enforce, tree):
        run = enforce(
            f"deny file write {tree}/secret/**\n",
            [
                "sh",
                "-c",
                f"echo x >> {tree}/work/out && echo ok1; "
                f"echo x >> {tree}/secret/key || echo denied2",
            ],
        )
        assert "ok1" in run.stdout and "denied2" in run.stdout
        assert (tree / "secret/key").read_text() == "secret/key"

    def test_exit_status_is_the_commands(self, enforce):
        assert enforce("deny system mount\n", ["sh", "-c", "exit 7"]).exit_code == 7

    def test_default_deny_with_an_allow_list(self, enforce, tree, py):
        policy = (
            f"default file deny\nallow file read,exec /usr/\n"
            f"allow file read,exec /lib/\n"
            f"allow file read,exec /etc/\nallow file read,exec /root/\n"
            f"allow file read,exec {tree}/pub/\nallow file read,write /dev/\n"
            f"allow file read,write,create,truncate {tree}/out.txt\n"
            f"allow file read,exec /work/\n"
        )
        code = (
            f"open('{tree}/pub/a').read()\n"
            f"try:\n open('{tree}/work/out')\nexcept OSError as e:\n print('denied')\n"
        )
        run = enforce(policy, [py, "-c", code])
        assert "denied" in run.stdout, run.stdout


@needs_kernel
class TestDenialEvents:
    def test_denial_names_the_rule(self, enforce, tree):
        run = enforce(f"deny file read {tree}/secret/\n", ["cat", f"{tree}/secret/key"])
        event = run.verdicts("file", "read")[0]
        assert event["verdict"] == "deny" and event["path"] == f"{tree}/secret/key"
        assert (
            event["rule"].endswith("policy.cap:1") and event["error_name"] == "EACCES"
        )

    def test_relative_path_through_cwd(self, enforce, tree):
        run = enforce(
            f"deny file write {tree}/secret/**\n",
            ["sh", "-c", f"cd {tree}/secret && echo x >> key"],
        )
        assert run.verdicts("file", "write")[0]["path"] == f"{tree}/secret/key"

    def test_kill_rule_kills_after_the_denial(self, enforce, tree, py):
        code = (
            f"import time\ntry:\n open('{tree}/secret/key')\nexcept OSError:\n"
            " time.sleep(5)\nprint('survived')\n"
        )
        run = enforce(f"kill file read {tree}/secret/\n", [py, "-c", code])
        assert run.exit_code == 128 + 9 and "survived" not in run.stdout
        assert run.verdicts("file", "read")[0]["verdict"] == "kill"
        assert run.coverage.lines[0].status == "enforced"

    def test_over_approximation_is_named_as_such(self, enforce, tree):
        run = enforce(f"deny file read {tree}/secret/\n", ["ls", str(tree)])
        event = run.verdicts("file", "read")[0]
        assert event["rule"] == "landlock:over-approximation"

    def test_record_layout_matches_the_object(self):
        import struct

        from capsule.runtime import btf
        from capsule.runtime.compat import denials

        members = btf.read_object_btf(denials.object_path()).flat_members("denial")
        sizes = {
            "ts_ns": 8,
            "ret": 8,
            "args": 32,
            "pid": 4,
            "tid": 4,
            "nr": 4,
            "pad": 4,
            "comm": 16,
            "path": denials.PATH_LEN,
            "path2": denials.PATH_LEN,
            "base": denials.PATH_LEN,
            "base2": denials.PATH_LEN,
        }
        offset = 0
        for name in denials.FIELDS:
            assert members[name] == (offset, sizes[name]), name
            offset += sizes[name]
        assert offset == denials.RECORD.size == struct.calcsize(denials.RECORD.format)


@needs_kernel
def test_trace_observes_audit_rules_on_files(enforce, tree):
    policy = f"audit file read {tree}/pub/a\n"
    quiet = enforce(policy, ["cat", f"{tree}/pub/a"])
    assert quiet.coverage.lines[0].status == "audit only"
    run = enforce(policy, ["cat", f"{tree}/pub/a"], trace=True)
    assert run.coverage.lines[0].status == "observed"
    audits = [e for e in run.events if e.get("verdict") == "audit"]
    assert audits and audits[0]["path"] == f"{tree}/pub/a"
    assert audits[0]["rule"].endswith("policy.cap:1")


@needs_kernel
def test_run_as_another_user_keeps_the_sandbox(enforce, tree):
    from capsule.runtime.session import RunAs

    out = Path(tempfile.mkdtemp(prefix="capsule-user-")) / "out.txt"
    out.touch()
    out.chmod(0o666)  # the user writes its output here
    out.parent.chmod(0o755)
    run = enforce(
        "deny namespace unshare\n",
        ["sh", "-c", "id -u; unshare -U true"],
        out=out,
        run_as=RunAs.lookup("nobody"),
    )
    shutil.rmtree(out.parent)
    assert run.stdout.splitlines()[0] == "65534"
    assert run.verdicts("namespace", "unshare")[0]["verdict"] == "deny"


@needs_kernel
def test_without_denial_reports_the_rule_still_holds(enforce, tree):
    run = enforce(
        f"deny file read {tree}/secret/\n",
        ["cat", f"{tree}/secret/key"],
        report_denials=False,
    )
    assert run.exit_code != 0 and "Permission denied" in run.stdout
    assert not run.events
    assert "denials are not reported" in run.coverage.lines[0].note
