"""Fixtures for the compat backend: real Landlock, real seccomp, real cgroup hooks."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from enforce_helpers import load, write_policy


@dataclass
class Run:
    exit_code: int
    events: list[dict] = field(default_factory=list)
    coverage: object = None
    stdout: str = ""
    summary: dict = field(default_factory=dict)

    def verdicts(self, area: str, op: str) -> list[dict]:
        return [e for e in self.events if e["area"] == area and e["op"] == op]


@pytest.fixture
def enforce(tmp_path):
    """Run a command under a policy with the compat backend, in this process."""
    from capsule.runtime.enforce import CompatRun, EnforceRequest

    def run(
        policy_text: str, command: list[str], out: Path | None = None, **options
    ) -> Run:
        policy_path = write_policy(tmp_path, policy_text)
        out = out or tmp_path / "out.txt"
        # it exists before the sandbox: a split directory denies new files
        out.write_text("")
        events: list[dict] = []
        seen = {}
        request = EnforceRequest(
            policy=load(policy_path),
            policy_files=[str(policy_path)],
            command=["sh", "-c", 'exec "$@" > ' + str(out) + " 2>&1", "sh", *command],
            directory=tmp_path / "run",
            on_event=events.append,
            on_coverage=lambda report: seen.setdefault("report", report),
            **options,
        )
        result = CompatRun(request).run()
        text = out.read_text() if out.exists() else ""
        return Run(
            result.exit_code, events, seen.get("report"), text, result.summary()
        )

    return run


@pytest.fixture
def py():
    """The interpreter that test payloads run with."""
    return sys.executable
