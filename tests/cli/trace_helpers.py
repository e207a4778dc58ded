"""Run the real `capsule trace` and read what it stored; shared by the trace tests."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from capsule.runtime.store import RunReader

REPO = Path(__file__).resolve().parents[2]
CAPSULE = [str(Path(sys.executable).parent / "capsule")]  # the installed entry point

# loud: a skipped kernel test must never read as a pass
needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="SKIPPED: tracing needs root to load BPF programs; run these tests as root",
)


@dataclass
class Traced:
    """One finished `capsule trace` run."""

    returncode: int
    stdout: str
    stderr: str
    directory: Path

    @property
    def events(self) -> list[dict]:
        return list(RunReader(self.directory).events())

    @property
    def summary(self) -> dict:
        return RunReader(self.directory).meta()["summary"]

    def where(self, area: str, op: str, **fields) -> list[dict]:
        return [
            e
            for e in self.events
            if e["area"] == area
            and e["op"] == op
            and all(e.get(k) == v for k, v in fields.items())
        ]

    def exec_of(self, program: str) -> dict:
        """The first exec of `program`: argv[0] ends with it, or the script's name does
        (for a #! script the kernel puts the interpreter in argv[0])."""
        for event in self.where("process", "exec"):
            argv0 = (event.get("argv") or [""])[0]
            script = os.path.basename(event.get("script") or "")
            if argv0.endswith(program) or script == program:
                return event
        raise AssertionError(f"no exec of {program} in {self.directory}")


def trace(
    directory: Path, *command: str, options=(), cwd=None, env=None, timeout=120
) -> Traced:
    """`capsule trace -o DIR --no-timeline [options] -- command`, run for real."""
    argv = [
        *CAPSULE,
        "trace",
        "-o",
        str(directory),
        "--no-timeline",
        *options,
        "--",
        *command,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    return Traced(done.returncode, done.stdout, done.stderr, directory)


def capsule(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CAPSULE, *args], capture_output=True, text=True, timeout=60, **kwargs
    )


def summary_json(stdout: str) -> dict:
    """The --json summary: the last JSON object on stdout (CMD may print first)."""
    start = stdout.rindex("\n{\n") + 1 if "\n{\n" in stdout else stdout.index("{")
    return json.loads(stdout[start:])
