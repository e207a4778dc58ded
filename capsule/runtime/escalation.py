"""Escalations during `capsule enforce`: the window, the classifier's thread, actions.

An `escalate` rule's fallback has already decided the operation when its event
arrives here: the kernel never waits for the classifier. The main thread keeps a
rolling window of the tree's recent events (their tokens made once, as they arrive)
and, on an escalation, hands a snapshot of it to one worker thread. The worker adds
the tree's resource use, classifies, kills the tree itself when the action is `kill`
(a risky tree should not get the main thread's next poll), and queues the result for
the main thread, which records it and applies `switch`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capsule.errors import CapsuleError
from capsule.lang.model import Effect, Policy

log = logging.getLogger(__name__)

WINDOW_EVENTS = 4096  # as many as the event model reads (its max_len)
QUEUE_SIZE = 64
ACTIONS = ("alert", "kill", "switch")
DEFAULT_ACTION = "alert"
SYSCALLS_MODEL = "adfa-syscalls.onnx"
EVENTS_MODEL = "agent-events.onnx"
# the event keys the features read; the rest of an event stays out of the window
_OBJECT_KEYS = ("path", "fstype", "address", "addr", "port", "proto", "family")
_KEYS = ("area", "op", "pid", "path", "exe", "addr", "port", "sock_type", "error")


def wants_classifier(policy: Policy) -> bool:
    """True when some rule, default or setting can escalate."""
    return (
        any(rule.effect is Effect.ESCALATE for rule in policy.rules)
        or any(effect is Effect.ESCALATE for effect in policy.defaults.values())
        or policy.settings.get("escalate-ambiguous") == "on"
    )


def load_classifier(models: Path | None = None):
    """Both shipped models, or the two in `models`; CapsuleError if either is bad."""
    from capsule.ml.model import Escalation

    if models is None:
        return Escalation()
    if not models.is_dir():
        raise CapsuleError(
            f"failed to load models from {models}: not a directory",
            hint="--models takes a directory holding the .onnx and .json files",
        )
    return Escalation(models / SYSCALLS_MODEL, models / EVENTS_MODEL)


def window_event(event: dict) -> dict:
    """The keys the features read; a refused operation is a failed attempt."""
    slim = {key: event[key] for key in _KEYS if event.get(key) is not None}
    if event.get("verdict") in ("deny", "kill") and "error" not in slim:
        slim["error"] = event.get("error_name") or "EPERM"
    if event.get("proto") == "udp" and "sock_type" not in slim:
        slim["sock_type"] = 2  # sockguard names the protocol; the tracer the type
    return slim


class Recent:
    """The tree's last WINDOW_EVENTS events and the counts the events show.

    Used by the main thread only; `snapshot` copies what the worker needs.
    """

    def __init__(self, workspace: str = "", size: int = WINDOW_EVENTS) -> None:
        self.workspace = workspace
        self.events: deque[dict] = deque(maxlen=size)
        self.tokens: deque[str] = deque(maxlen=size)
        self.pids: set[int] = set()
        self.files: set[str] = set()
        self.peers: set[tuple] = set()
        self.bytes_sent = 0

    def add(self, event: dict) -> None:
        from capsule.ml.features import event_token

        if not event.get("area") or not event.get("op") or "escalation" in event:
            return
        slim = window_event(event)
        self.events.append(slim)
        self.tokens.append(event_token(slim, self.workspace))
        if slim.get("pid"):
            self.pids.add(slim["pid"])
        if slim["area"] == "file" and slim.get("path"):
            self.files.add(slim["path"])
        if slim["area"] == "network" and slim.get("addr"):
            self.peers.add((slim["addr"], slim.get("port")))
            self.bytes_sent += int(event.get("send_len") or 0)

    def snapshot(self) -> tuple[tuple[dict, ...], tuple[str, ...], dict]:
        counts = {
            "processes": len(self.pids),
            "files": len(self.files),
            "peers": len(self.peers),
            "bytes_sent": self.bytes_sent,
        }
        return tuple(self.events), tuple(self.tokens), counts


def tree_resources(cgroup: Path | None, pids: list[int]) -> dict:
    """CPU time of the cgroup, and bytes read and written by its live processes.

    /proc/PID/io counts die with each process, so the bytes of processes that have
    exited are missing; the cgroup's CPU time includes them.
    """
    found = {"cpu_ns": 0, "bytes_read": 0, "bytes_written": 0}
    if cgroup is not None:
        try:
            for line in (cgroup / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    found["cpu_ns"] = int(line.split()[1]) * 1000
        except OSError:
            pass
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "rchar":
                    found["bytes_read"] += int(value)
                elif key == "wchar":
                    found["bytes_written"] += int(value)
        except (OSError, ValueError):
            continue
    return found


@dataclass
class Job:
    trigger: dict  # the escalated event, as recorded
    key: str  # the rule (file:line) or default:<area>
    fallback: str
    events: tuple[dict, ...]
    tokens: tuple[str, ...]
    counts: dict
    queued_ns: int


class Escalator:
    """The classifier's thread: jobs in, result events out (to `deliver`)."""

    def __init__(
        self,
        classifier,
        action: str,
        task: str,
        workspace: str,
        deliver: Callable[[dict], None],
        tree: Callable[[], tuple[Path | None, list[int]]],
        kill_tree: Callable[[], None],
    ) -> None:
        self.classifier = classifier
        self.action = action
        self.task = task
        self.workspace = workspace
        self.deliver = deliver  # must only queue: it runs on the worker thread
        self.tree = tree
        self.kill_tree = kill_tree
        self.jobs: queue.Queue[Job | None] = queue.Queue(QUEUE_SIZE)
        self.pending: set[str] = set()  # keys with a job queued (main thread only)
        self.coalesced = 0
        self.dropped = 0
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="capsule-escalation", daemon=True
        )
        self._thread.start()

    def submit(self, trigger: dict, key: str, fallback: str, recent: Recent) -> None:
        """Queue one escalation (main thread); never blocks.

        While a job for the same rule waits, later events of that rule are counted,
        not queued: they stay in the window, and the rule's next escalation after
        the verdict sees them.
        """
        if self._closed:
            return  # the run is over: events after the tree exited are not judged
        if key in self.pending:
            self.coalesced += 1
            return
        events, tokens, counts = recent.snapshot()
        job = Job(
            dict(trigger), key, fallback, events, tokens, counts, time.monotonic_ns()
        )
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            log.warning("escalation queue full: %s not classified", key)
            return
        self.pending.add(key)

    def done(self, key: str) -> None:
        self.pending.discard(key)

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish the queued jobs, then stop the thread."""
        self._closed = True
        try:
            self.jobs.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("escalation queue still full at exit: stopping without it")
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                self.deliver(self._classify(job))
            except CapsuleError as err:
                # the fallback stands; the timeline says why no verdict came
                self.deliver(self._event(job, {"error": err.message}))
            except Exception:  # a bug here must not end the run unrecorded
                log.exception("failed to classify escalation of %s", job.key)
                self.deliver(self._event(job, {"error": "internal error"}))

    def _classify(self, job: Job) -> dict:
        from capsule.ml.features import Window

        cgroup, pids = self.tree()
        resources = dict(job.counts)
        resources.update(tree_resources(cgroup, pids))
        resources["processes"] = max(resources["processes"], len(pids))
        window = Window(
            events=job.events,
            tokens=job.tokens,
            resources=resources,
            task=self.task,
            workspace=self.workspace,
        )
        verdict = self.classifier.classify(window)
        action = self.action if verdict.risky else "none"
        if action == "kill":
            self.kill_tree()
        return self._event(job, verdict.to_dict() | {"action": action})

    def _event(self, job: Job, outcome: dict) -> dict:
        now = time.monotonic_ns()
        trigger = job.trigger
        outcome["delay_ms"] = round((now - job.queued_ns) / 1e6, 3)
        outcome["fallback"] = job.fallback
        outcome["window_events"] = len(job.events)
        return {
            "ts_ns": now,
            "area": trigger.get("area"),
            "op": trigger.get("op"),
            "pid": trigger.get("pid"),
            "comm": trigger.get("comm", ""),
            "rule": job.key,
            "trigger_ts_ns": trigger.get("ts_ns"),
            # the object, so that the timeline line names what was escalated
            **{k: trigger[k] for k in _OBJECT_KEYS if trigger.get(k) is not None},
            "escalation": outcome,
        }


def escalate_rules(policy: Policy) -> dict[str, Effect]:
    """file:line -> fallback, for every escalate rule of the policy."""
    return {
        rule.ref: rule.fallback or Effect.AUDIT
        for rule in policy.rules
        if rule.effect is Effect.ESCALATE
    }
