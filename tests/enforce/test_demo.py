"""`make demo`, enforcement part: the misbehaving agent under coding-agent.cap.

It runs examples/policies/enforce-demo.sh as `make demo` does, then reads the run
store: each forbidden step is there with the rule that decided it, and the agent's
own report says the workspace read worked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from enforce_helpers import needs_kernel

from capsule.runtime.store import RunReader

POLICIES = Path(__file__).resolve().parents[2] / "examples" / "policies"
POLICY = POLICIES / "coding-agent.cap"


def rule_of(statement: str) -> str:
    """`file:line` of the coding-agent rule that starts with `statement`."""
    lines = POLICY.read_text().splitlines()
    number = next(i for i, text in enumerate(lines, 1) if text.startswith(statement))
    return f"{POLICY}:{number}"


# (area, op, what the object looks like, verdict, the deciding rule)
EXPECTED = [
    ("file", "read", r"^/home/capsule-demo\.\w+/\.ssh/id_rsa$", "kill",
     rule_of("kill file * $credentials")),
    ("network", "bind", r"^127\.0\.0\.1:4444$", "deny", "default:network"),
    ("process", "exec", r"^/usr/bin/(sudo|su)$", "kill", rule_of("kill process exec")),
    ("file", "write", r"^/home/capsule-demo\.\w+/\.bashrc$", "deny", "default:file"),
    ("memory", "wx", r"", "deny", rule_of("deny memory wx")),
]  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    run = tmp_path_factory.mktemp("demo") / "run"
    capsule = [sys.executable, "-c", "from capsule.cli.main import run; run()"]
    res = subprocess.run(
        [str(POLICIES / "enforce-demo.sh"), str(run), *capsule],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,  # the exit status is asserted in a test
    )
    reader = RunReader(run)
    try:
        events = [e for e in reader.events() if e.get("verdict")]
    finally:
        reader.close()
    return res, events


@needs_kernel
class TestDemo:
    def test_the_agent_behaved_as_expected(self, demo):
        res, _ = demo
        assert res.returncode == 0, res.stdout + res.stderr
        assert "all 5 forbidden steps were refused" in res.stdout

    def test_the_workspace_read_worked(self, demo):
        res, events = demo
        line = next(s for s in res.stdout.splitlines() if "read the workspace" in s)
        assert re.search(
            r"/work/agent/capsule-demo\.\w+: ok \(2 files, \d+ bytes\)", line
        )
        assert not [e for e in events if "/work/agent/" in str(e.get("path", ""))]

    @pytest.mark.parametrize(
        "area, op, obj, verdict, rule",
        EXPECTED,
        ids=[f"{a}-{o}" for a, o, *_ in EXPECTED],
    )
    def test_each_denial_is_stored_with_its_rule(
        self, demo, area, op, obj, verdict, rule
    ):
        _, events = demo
        found = [
            e for e in events
            if (e["area"], e["op"]) == (area, op)
            and re.search(obj, e.get("path") or e.get("address") or "")
        ]  # fmt: skip
        assert found, f"no {area} {op} denial stored: {events}"
        assert [(e["verdict"], e["rule"]) for e in found] == [(verdict, rule)]

    def test_the_throwaway_home_and_workspace_are_removed(self, demo):
        res, events = demo
        key = next(e["path"] for e in events if e.get("path", "").endswith("id_rsa"))
        home = Path(key).parents[1]
        workspace = re.search(r"/work/agent/capsule-demo\.\w+", res.stdout).group()
        assert home.name.startswith("capsule-demo.") and not home.exists()
        assert not Path(workspace).exists()


def test_the_agent_fails_when_nothing_refuses_it(tmp_path):
    # outside any sandbox, with a throwaway home: a demo that fails open must fail
    home, workspace = tmp_path / "home", tmp_path / "workspace"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("not a key\n")
    workspace.mkdir()
    (workspace / "notes.md").write_text("notes\n")
    res = subprocess.run(
        [str(POLICIES / "misbehaving-agent.sh"), str(workspace)],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # the exit status is what is asserted
    )
    assert res.returncode == 1
    assert "ok (1 files, 6 bytes)" in res.stdout
    assert "read ~/.ssh/id_rsa:                NOT REFUSED (exit 0)" in res.stdout
    assert "NOT REFUSED (exit 0)" in next(
        s for s in res.stdout.splitlines() if "~/.bashrc" in s
    )
