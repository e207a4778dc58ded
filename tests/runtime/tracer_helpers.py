"""Run a command under a live Tracer and collect the events of its process tree."""

from __future__ import annotations

import os
import sys
import time

import pytest

ROOT_REASON = "BPF tracing needs root (CAP_BPF + CAP_PERFMON); run the tests as root"


def require_root() -> None:
    if os.geteuid() != 0:
        print(f"SKIPPED: {ROOT_REASON}", file=sys.stderr)
        pytest.skip(ROOT_REASON)


def run_traced(
    tracer, argv: list[str], timeout: float = 20.0, env: dict | None = None
) -> list[dict]:
    """Start argv blocked on a pipe, track it, release it; return its tree's events."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: wait for the tracer, then exec
        os.close(ready_w)
        os.read(ready_r, 1)
        try:
            os.execvpe(argv[0], argv, env or os.environ)
        finally:
            os._exit(127)
    os.close(ready_r)
    tracer.track_pid(pid)
    os.write(ready_w, b"x")
    os.close(ready_w)
    return collect(tracer, pid, timeout)


def collect(tracer, pid: int, timeout: float) -> list[dict]:
    """The events of pid's tree until it exited, was reaped and the ring is drained."""
    events, tree, deadline = [], {pid}, time.monotonic() + timeout
    reaped = False
    while time.monotonic() < deadline:
        for ev in tracer.poll(50):
            if ev["pid"] in tree:
                events.append(ev)
                if ev["op"] == "fork" and ev["area"] == "process":
                    tree.add(ev["child_pid"])
        if not reaped and os.waitpid(pid, os.WNOHANG)[0] == pid:
            reaped = True
            deadline = min(deadline, time.monotonic() + 0.3)  # drain what is left
    assert reaped, f"pid {pid} did not finish within {timeout}s"
    return events


def of_kind(events: list[dict], kind: str, **fields) -> list[dict]:
    return [
        e
        for e in events
        if e["kind"] == kind and all(e.get(k) == v for k, v in fields.items())
    ]


def one(events: list[dict], kind: str, **fields) -> dict:
    found = of_kind(events, kind, **fields)
    assert found, f"no {kind} event with {fields}; kinds seen: " + ", ".join(
        sorted({e["kind"] for e in events})
    )
    return found[0]
