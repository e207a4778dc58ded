"""`capsule enforce`: run a command with the policy enforced from its first instruction.

The steps: choose a backend from what the kernel can load; plan the enforcement and
show its coverage; create the agent's cgroup and attach the cgroup hooks; fork the
command, held before exec, and place it in the cgroup; release it into the sandbox
shim, which restricts itself (Landlock, seccomp) and only then executes the command;
answer seccomp notifications and stream every denial, audit and kill into the
timeline until the process tree has exited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from capsule.cli import exitcodes
from capsule.errors import CapsuleError
from capsule.events.schema import FLAGS
from capsule.lang.model import Effect, Policy
from capsule.runtime.compat.cgroup import AgentCgroup, cgroup2_root
from capsule.runtime.compat.coverage import Report
from capsule.runtime.compat.plan import CompatPlan, Options, build_plan
from capsule.runtime.compat.seccomp import Supervisor
from capsule.runtime.compat.syscalls import Verdict, make_decider
from capsule.runtime.compat.watchdog import Watchdog
from capsule.runtime.escalation import (
    DEFAULT_ACTION,
    Escalator,
    Recent,
    escalate_rules,
    load_classifier,
    wants_classifier,
)
from capsule.runtime.session import RunAs, exit_code_of, spawn_held
from capsule.runtime.store import RunStore

log = logging.getLogger(__name__)

REQUIRE_LEVELS = ("best-effort", "full")
DEFAULT_REQUIRE = "best-effort"
BACKENDS = ("auto", "lsm", "compat")
POLL_S = 0.1
HANDSHAKE_S = 30.0
TRACER_LAG_S = 0.25  # how long an escalation waits for the tracer to catch up
# the runtime's own end: the tree is killed and the timeline kept, as for Ctrl-C
EXIT_SIGNALS = (signal.SIGTERM,)
# a reload: the lsm backend swaps the policy; compat warns and keeps enforcing
RELOAD_SIGNAL = signal.SIGHUP
COMPAT_NO_RELOAD = (
    "SIGHUP: reload is not supported by the compat backend (Landlock cannot be "
    "relaxed once applied): still enforcing the policy the run started with; "
    "restart the run, or use the lsm backend, to change it"
)
_VERDICT_FLAGS = {
    "deny": FLAGS["DENIED"],
    "kill": FLAGS["DENIED"] | FLAGS["KILLED"],
    "audit": FLAGS["AUDIT"],
    "escalate": FLAGS["AUDIT"],
}


# -- choosing a backend ----------------------------------------------------------------


@dataclass
class Capabilities:
    """What `capsule doctor`'s probes found, as the backends need it."""

    lsm: tuple[bool, str]
    landlock: tuple[bool, str]
    seccomp_notify: tuple[bool, str]
    cgroup_hooks: tuple[bool, str]  # cgroup sock_addr, for network rules
    raw_tp: tuple[bool, str]  # for reporting Landlock's denials


def probe() -> Capabilities:
    """Load doctor's tiny probe programs: what loads here is what enforce may use."""
    from capsule.runtime import build, doctor

    found = {
        c.feature: c for c in (doctor.check_landlock(), doctor.check_seccomp_notify())
    }
    try:
        found.update(
            (c.feature, c)
            for c in doctor.probe_programs(build.compile_bpf(doctor.PROBES))
        )
    except CapsuleError as err:
        log.warning("BPF probes could not run: %s", err.message)

    def status(name: str) -> tuple[bool, str]:
        check = found.get(name)
        if check is None:
            return False, "not probed"
        return check.status == doctor.OK, check.detail

    return Capabilities(
        status("lsm"),
        status("landlock"),
        status("seccomp_notify"),
        status("cgroup_sock_addr"),
        status("raw_tp"),
    )


def select_backend(requested: str, caps: Capabilities) -> str:
    """The backend to use; `auto` prefers lsm and falls back to compat."""
    lsm_ok, lsm_why = caps.lsm
    if requested == "lsm" and not lsm_ok:
        raise CapsuleError(
            f"failed to select the lsm backend: BPF LSM: {lsm_why}",
            hint="use --backend compat (Landlock, seccomp, cgroup hooks)",
        )
    if requested == "lsm" or (requested == "auto" and lsm_ok):
        log.info("backend lsm (%s)", lsm_why)
        return "lsm"  # capsule/runtime/lsm.py
    for name, (ok, why) in (
        ("Landlock", caps.landlock),
        ("seccomp user notification", caps.seccomp_notify),
    ):
        if not ok:
            raise CapsuleError(
                f"failed to select the compat backend: {name}: {why}",
                hint="see `capsule doctor`",
            )
    log.info("backend compat (%s); lsm unavailable: %s", caps.landlock[1], lsm_why)
    return "compat"


# -- the run ---------------------------------------------------------------------------


@dataclass
class EnforceResult:
    command: list[str]
    exit_code: int
    directory: Path
    verdicts: Counter = field(default_factory=Counter)  # deny/audit/kill -> count
    rules: Counter = field(default_factory=Counter)  # file:line -> count
    duration_s: float = 0.0
    exec_error: str | None = None
    escalations: Counter = field(default_factory=Counter)  # risky/harmless/error
    switched_to: str | None = None  # the stricter policy, after a `switch`

    def summary(self) -> dict:
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "exec_error": self.exec_error,
            "duration_s": round(self.duration_s, 3),
            "denied": self.verdicts["deny"],
            "killed": self.verdicts["kill"],
            "audited": self.verdicts["audit"],
            "by_rule": dict(self.rules.most_common()),
            "escalations": dict(self.escalations),
            "switched_to": self.switched_to,
            "store": str(self.directory / "run.db"),
            "jsonl": str(self.directory / "events.jsonl"),
        }


@dataclass
class EnforceRequest:
    policy: Policy
    policy_files: list[str]
    command: list[str]
    directory: Path
    require: str = DEFAULT_REQUIRE
    self_protect: bool = True
    on_event: Callable[[dict], None] | None = None
    on_coverage: Callable[[Report], None] | None = None
    on_start: Callable[[int], None] | None = None  # the run's t0 (CLOCK_MONOTONIC ns)
    caps: Capabilities | None = None  # None: probe now
    report_denials: bool = True  # Landlock's refusals into the timeline (raw_tp)
    trace: bool = False  # also run the tracer: the whole timeline, more audits
    run_as: RunAs | None = None  # --user
    task: str = ""  # the agent's declared task, for the escalation classifier
    models: Path | None = None  # a directory with both models; None: the shipped ones
    workspace: str = field(default_factory=os.getcwd)  # CMD's working directory


def switch_policy_file(policy: Policy) -> str | None:
    """The stricter policy that a risky escalation switches to, if any."""
    if policy.settings.get("escalate-action") != "switch":
        return None
    return policy.settings.get("escalate-policy")


def plan(request: EnforceRequest, cgroup: bool, reports: bool = True) -> CompatPlan:
    return build_plan(request.policy, _options(request, cgroup, reports))


def _options(request: EnforceRequest, cgroup: bool, reports: bool) -> Options:
    protected = list(request.policy_files) + [str(request.directory)]
    strict = switch_policy_file(request.policy)
    if strict:
        protected.append(strict)
    return Options(
        protected=protected,
        self_protect=request.self_protect,
        cgroup=cgroup,
        tracer=request.trace and cgroup,
        landlock_reports=reports,
        user=None
        if request.run_as is None
        else {
            "name": request.run_as.name,
            "uid": request.run_as.uid,
            "gid": request.run_as.gid,
            "home": request.run_as.home,
        },
    )


def switch_plan(
    request: EnforceRequest, compat: CompatPlan, cgroup: bool, reports: bool
) -> CompatPlan | None:
    """The stricter policy's plan; its seccomp needs are merged into `compat`'s filter.

    The filter is loaded once, before CMD runs, so it must already send the syscalls
    that the stricter policy decides to the supervisor.
    """
    from capsule.lang import load_policy

    path = switch_policy_file(request.policy)
    if path is None:
        return None
    strict, diagnostics = load_policy([path])
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        first = errors[0]
        raise CapsuleError(
            f"failed to load escalate-policy {path}: {first.location}: "
            f"{first.message} [{first.code}]",
            hint=f"run `capsule check {path}`",
        )
    strict_plan = build_plan(strict, _options(request, cgroup, reports))
    merge_filter(compat, strict_plan)
    return strict_plan


def merge_filter(base: CompatPlan, extra: CompatPlan) -> None:
    """Notify `base`'s supervisor of every syscall that `extra` needs to decide."""
    for name, matches in extra.filter.notify.items():
        have = base.filter.notify.get(name)
        if have is None:
            base.filter.notify[name] = list(matches)
        elif have and matches:
            have.extend(matches)
        else:
            base.filter.notify[name] = []  # one of them wants every call
        base.owner.setdefault(name, extra.owner[name])
    for name, err in extra.filter.errno.items():
        base.filter.errno.setdefault(name, err)


def check_require(report: Report, require: str) -> None:
    missing = report.audit_only_denials()
    if require == "full" and missing:
        refs = ", ".join(line.ref for line in missing)
        raise CapsuleError(
            f"failed to start with --require full: {len(missing)} deny "
            f"rule(s) would be audit only ({refs})",
            hint="see the coverage report above, or use the lsm backend",
        )


class _Signalled(Exception):
    """SIGTERM reached the runtime: unwind to the cleanup, which kills."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class BackendRun:
    """What every backend's run shares: the store's start, the exit signals, and
    the guarantee that the cleanup (which kills the tree) runs whatever happens.

    A backend sets `request`, `result`, `store` and `stopping`, and provides
    `_cleanup()` and `_on_reload_signal` (SIGHUP).
    """

    def _start_store(self, backend: str, **meta) -> None:
        request = self.request
        self.store = RunStore(request.directory)
        t0_ns = time.monotonic_ns()  # every source's ts_ns is on this clock
        if request.on_start is not None:
            request.on_start(t0_ns)  # the live timeline counts from here too
        self.store.set_meta(
            command=request.command,
            started_at=time.time(),
            t0_ns=t0_ns,
            backend=backend,
            task=request.task,
            **meta,
        )

    def _guarded(self, body: Callable[[], None], started: float) -> EnforceResult:
        """Run `body` with the exit signals caught; always clean up after it."""
        previous: dict = {}
        try:
            previous = self._catch_exit_signals()
            body()
        except _Signalled as stop:
            name = signal.Signals(stop.signum).name
            log.warning("%s: killing the agent's tree and keeping the timeline", name)
            self.result.exit_code = 128 + stop.signum
        finally:
            self.stopping = True
            self.result.duration_s = time.monotonic() - started
            self._cleanup()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.result

    def _catch_exit_signals(self) -> dict:
        """SIGTERM unwinds into the cleanup instead of orphaning CMD."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers; the watchdog remains
        previous = {
            signum: signal.signal(signum, self._on_exit_signal)
            for signum in EXIT_SIGNALS
        }
        previous[RELOAD_SIGNAL] = signal.signal(RELOAD_SIGNAL, self._on_reload_signal)
        return previous

    def _on_exit_signal(self, signum: int, _frame) -> None:
        if not self.stopping:  # once cleaning up, finish that: it kills the tree
            self.stopping = True
            raise _Signalled(signum)

    def _on_reload_signal(self, _signum: int, _frame) -> None:
        raise NotImplementedError


class CompatRun(BackendRun):
    """One command under the compat backend, from planning to the last event."""

    def __init__(self, request: EnforceRequest) -> None:
        self.request = request
        self.result = EnforceResult(
            request.command, exitcodes.CAPSULE_FAILED, request.directory
        )
        self.cgroup: AgentCgroup | None = None
        self.net = None
        self.denials = None
        self.devices = None
        self.observer = None
        self.supervisor: Supervisor | None = None
        self.store: RunStore | None = None
        self.escalator = None
        self.recent = None
        self.strict: CompatPlan | None = None  # where `switch` goes
        self.policy = request.policy  # the policy in force (changes on `switch`)
        self.escalating: dict[str, Effect] = {}  # rule or default:area -> fallback
        self.triggers: list[tuple[dict, str, str]] = []  # escalations to submit
        self.traced_ns = 0  # the newest event the tracer has delivered
        self.root_pid: int | None = None
        self.watchdog: Watchdog | None = None  # kills the tree if we die (SIGKILL)
        self.stopping = False  # in the cleanup: an exit signal no longer unwinds
        # the supervisor decides on its own thread; its events wait here for the main
        # thread, which alone writes the store and the timeline
        self.pending: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.batch: list[dict] | None = None  # events of the poll in progress

    def run(self) -> EnforceResult:
        started = time.monotonic()
        request = self.request
        caps = request.caps or probe()
        self.bpf = _bpf_modules() if caps.cgroup_hooks[0] or caps.raw_tp[0] else None
        self.caps = caps
        want_cgroup = (
            cgroup2_root() is not None and self.bpf is not None and caps.cgroup_hooks[0]
        )
        reports = (
            request.report_denials
            and self.bpf is not None
            and caps.raw_tp[0]
            and cgroup2_root() is not None
        )
        self.reports = reports
        compat = plan(request, cgroup=want_cgroup, reports=reports)
        self.strict = switch_plan(request, compat, want_cgroup, reports)
        self.policy = compat.policy
        if request.on_coverage:
            request.on_coverage(compat.report)
        check_require(compat.report, request.require)
        # a missing or damaged model stops the run here, before CMD exists
        classifier = None
        if wants_classifier(request.policy):
            classifier = load_classifier(request.models)

        self._start_store("compat", coverage=compat.report.to_json())

        def body() -> None:
            if classifier is not None:
                self._start_escalation(classifier)
            self._run(compat)

        return self._guarded(body, started)

    def _on_reload_signal(self, _signum: int, _frame) -> None:
        log.warning(COMPAT_NO_RELOAD)

    def _run(self, compat: CompatPlan) -> None:
        # the agent's cgroup and its hooks are in place before the command exists
        if self.bpf is not None and cgroup2_root() is not None:
            sockguard, denials = self.bpf
            self.cgroup = AgentCgroup(f"run-{os.getpid()}-{time.monotonic_ns()}")
            self.watchdog = _start_watchdog(self.cgroup)
            if compat.network is not None:
                self.net = sockguard.SockGuard(
                    compat.network, self.cgroup, self._report
                )
            if compat.handled and self.reports:
                self.denials = denials.DenialWatcher(
                    compat.visible, compat.handled, self.cgroup, self._report
                )
            if compat.devices is not None:
                from capsule.runtime.compat.devices import DeviceGuard

                self.devices = DeviceGuard(compat.devices, self.cgroup, self._report)
            if self.request.trace:
                from capsule.runtime.compat.observe import Observer

                self.observer = Observer(self.cgroup.path, compat.policy)
        else:
            log.warning(
                "no agent cgroup: if capsule is killed (SIGKILL), CMD keeps running "
                "with Landlock only; mount cgroup2 and let BPF load to guard it"
            )
        plan_fd = _plan_memfd(compat.child_plan())
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        os.set_inheritable(child_sock.fileno(), True)
        argv = _shim_argv(plan_fd, child_sock.fileno(), self.request.command)
        pid, go_w, err_r = spawn_held(argv, None)
        self.root_pid = pid
        os.close(plan_fd)
        child_sock.close()
        try:
            if self.cgroup is not None:
                self.cgroup.add(pid)
            if self.observer is not None:
                self.observer.add_root(pid)
            os.write(go_w, b"x")  # released into the shim, which sandboxes itself
        finally:
            os.close(go_w)
        notify_fd = _receive_notify_fd(parent_sock)
        if notify_fd is not None:
            decider = make_decider(compat.policy, compat.owner, self._report_verdict)
            self.supervisor = Supervisor(notify_fd, decider)
            self.owner = compat.owner
            self.supervisor.start()
        status = self._wait(pid)
        self.result.exit_code = exit_code_of(status)
        _read_exec_error(err_r, self.result)

    def _wait(self, pid: int) -> int:
        status = None
        while True:
            self._poll(int(POLL_S * 1000))
            if status is None:
                done, raw = os.waitpid(pid, os.WNOHANG)
                status = raw if done else None
            if status is not None and not (self.cgroup and self.cgroup.pids()):
                return status

    def _poll(self, timeout_ms: int) -> None:
        readers = [r for r in (self.net, self.denials, self.devices) if r is not None]
        if not readers:
            time.sleep(timeout_ms / 1000)
        # the sources deliver with different delays (ring buffers, the supervisor's
        # queue, the tracer): a poll's events are recorded in the order they happened
        self.batch = []
        try:
            for reader in readers:
                reader.poll(timeout_ms // len(readers))
            if self.observer is not None:
                for event in self.observer.poll(0):
                    self.traced_ns = max(self.traced_ns, event.get("ts_ns", 0))
                    self.batch.append(event)
            while not self.pending.empty():
                self._report(self.pending.get())
        finally:  # also when an exit signal unwinds: what was read is kept
            batch, self.batch = self.batch, None
            for event in sorted(batch, key=lambda e: e.get("ts_ns", 0)):
                self._record(event)
        if self.escalator is not None:
            self._submit_escalations()
        if self.store is not None:
            # to the writer at once, not per 4096: a runtime killed now keeps them
            self.store.flush()

    def _report_verdict(self, verdict: Verdict) -> None:
        """Called on the supervisor's thread: only queue the event."""
        event = dict(verdict.event)
        event["verdict"] = str(verdict.effect)
        event["rule"] = verdict.rule
        event["ts_ns"] = time.monotonic_ns()
        self.pending.put(event)

    def _report(self, event: dict) -> None:
        """Every denial, audit and kill passes here: into the store and the timeline."""
        event.setdefault("ts_ns", time.monotonic_ns())
        event.setdefault("comm", _comm(event.get("pid")))
        if self.batch is not None:
            self.batch.append(event)  # recorded in time order at the end of the poll
        else:
            self._record(event)

    def _record(self, event: dict) -> None:
        if self.recent is not None:
            self._escalate(event)
        verdict = event.get("verdict")
        if verdict:
            # a kill rule whose caller had exited (or could not be killed) denied
            # the operation but killed nothing: only kills delivered count as kills
            undelivered = verdict == "kill" and event.get("killed") is False
            counted = "deny" if undelivered else verdict
            event["flags"] = event.get("flags", 0) | _VERDICT_FLAGS.get(counted, 0)
            self.result.verdicts[counted] += 1
            self.result.rules[event.get("rule") or "?"] += 1
        if self.store is not None:
            self.store.add(event)
        if self.request.on_event is not None:
            self.request.on_event(event)

    # -- escalations

    def _start_escalation(self, classifier) -> None:
        settings = self.request.policy.settings
        self.escalating = _escalating(self.policy)
        self.recent = Recent(self.request.workspace)
        self.escalator = Escalator(
            classifier,
            settings.get("escalate-action", DEFAULT_ACTION),
            self.request.task,
            self.request.workspace,
            deliver=self.pending.put,
            tree=self._tree,
            kill_tree=self._kill_tree,
        )

    def _tree(self) -> tuple[Path | None, list[int]]:
        if self.cgroup is None:
            return None, []
        return self.cgroup.path, self.cgroup.pids()

    def _kill_tree(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill_all()
            return
        # no agent cgroup (no cgroup v2 or no BPF here): only CMD itself is known
        log.warning("no agent cgroup: killing CMD only, not its children")
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(self.root_pid, signal.SIGKILL)

    def _escalate(self, event: dict) -> None:
        """Main thread: grow the window; queue an escalation; take in its verdict."""
        outcome = event.get("escalation")
        if outcome is not None:
            self._verdict_in(event, outcome)
            return
        self.recent.add(event)
        key = self._escalation_key(event)
        if key is not None:
            # submitted at the end of the poll: the window then also holds what the
            # other readers saw happen before this event (the tracer lags the hooks)
            self.triggers.append((event, key, self._fallback(event, key)))

    def _submit_escalations(self, force: bool = False) -> None:
        """Hand over the triggers whose window is complete.

        The tracer's ring buffer lags the hooks that decide: an escalation waits
        until the tracer has delivered an event at least as recent as its trigger,
        or for TRACER_LAG_S at most, so that the window holds what led up to it.
        """
        now, waiting = time.monotonic_ns(), []
        for trigger in self.triggers:
            event, key, fallback = trigger
            ts = event.get("ts_ns", 0)
            lagging = self.observer is not None and self.traced_ns < ts
            if lagging and not force and now - ts < TRACER_LAG_S * 1e9:
                waiting.append(trigger)
                continue
            self.escalator.submit(event, key, fallback, self.recent)
        self.triggers = waiting

    def _escalation_key(self, event: dict) -> str | None:
        rule, area = event.get("rule"), event.get("area")
        if rule in self.escalating:
            return rule
        if self.policy.settings.get("escalate-ambiguous") != "on" or not area:
            return None
        if rule == f"default:{area}":
            return rule
        if rule is None and "verdict" not in event and _undecided(self.policy, event):
            return f"default:{area}"  # a traced event that no rule matches
        return None

    def _fallback(self, event: dict, key: str) -> str:
        if key in self.escalating:
            return str(self.escalating[key])
        return str(event.get("verdict") or self.policy.default(event["area"]))

    def _verdict_in(self, event: dict, outcome: dict) -> None:
        self.escalator.done(event["rule"])
        self.result.escalations[outcome.get("verdict", "error")] += 1
        action = outcome.get("action")
        if action in ("alert", "kill", "switch"):
            log.warning(
                "escalation of %s (%s): risky, score %.3f; action %s",
                event["rule"],
                f"{event['area']} {event['op']}",
                outcome["score"],
                action,
            )
        if action == "switch" and self.result.switched_to is None:
            self._switch()

    def _switch(self) -> None:
        """Decide with the stricter policy from now on, where the backend can."""
        strict = self.strict
        if strict is None:
            return
        if self.supervisor is not None:
            decider = make_decider(strict.policy, self.owner, self._report_verdict)
            self.supervisor.replace_decider(decider)
        if strict.network is not None and self.cgroup is not None and self.bpf:
            sockguard, _ = self.bpf
            # the new programs are attached before the old ones go: no gap
            fresh = sockguard.SockGuard(strict.network, self.cgroup, self._report)
            if self.net is not None:
                self.net.poll(0)
                self.net.close()
            self.net = fresh
        if self.observer is not None:
            self.observer.policy = strict.policy
        self.policy = strict.policy
        self.escalating = _escalating(strict.policy)
        self.result.switched_to = switch_policy_file(self.request.policy)
        log.warning("switched to the stricter policy %s", self.result.switched_to)

    def _cleanup(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.escalator is not None:
            # the last triggers and verdicts, before the cgroup goes
            self._poll(0)
            self._submit_escalations(force=True)
            self.escalator.close()
            for name in ("coalesced", "dropped"):
                if getattr(self.escalator, name):
                    self.result.escalations[name] = getattr(self.escalator, name)
        self._poll(0)
        for reader in (self.net, self.denials, self.devices, self.observer):
            if reader is not None:
                reader.close()
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.cgroup.remove()
        if self.watchdog is not None:
            self.watchdog.disarm()  # only now: the tree is gone
        if self.store is not None:
            self.store.set_meta(finished_at=time.time(), summary=self.result.summary())
            self.store.close()




def _start_watchdog(cgroup: AgentCgroup) -> Watchdog:
    try:
        return Watchdog(cgroup.path)
    except OSError as err:
        raise CapsuleError(
            f"failed to start the watchdog: {err.strerror or err}",
            hint="without it, a killed runtime would leave CMD running unguarded",
        ) from err


def _bpf_modules():
    """The modules that load BPF, or None where libbpf cannot be used."""
    try:
        from capsule.runtime.compat import denials, sockguard
    except (ImportError, OSError) as err:
        log.warning(
            "network rules are audit only, and Landlock denials are not reported: %s",
            err,
        )
        return None
    return sockguard, denials


def _plan_memfd(plan: dict) -> int:
    import json

    fd = os.memfd_create("capsule-plan", 0)  # inheritable: the shim reads it
    os.write(fd, json.dumps(plan).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd


def _shim_argv(plan_fd: int, sock_fd: int, command: list[str]) -> list[str]:
    # a private mount namespace: the read-only binds of protected paths stay inside it
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "capsule.runtime.compat.shim",
        str(plan_fd),
        str(sock_fd),
        "--",
        *command,
    ]


def _receive_notify_fd(sock: socket.socket) -> int | None:
    sock.settimeout(HANDSHAKE_S)
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 16, 1)
    except (OSError, TimeoutError):
        msg, fds = b"", []
    finally:
        sock.close()
    if msg != b"ready":
        return None  # the shim failed; it said why on stderr and exits 125
    return fds[0] if fds else None


def _read_exec_error(err_r: int, result: EnforceResult) -> None:
    data = os.read(err_r, 512).decode(errors="replace")
    os.close(err_r)
    if data:
        code, _, reason = data.partition(" ")
        result.exit_code = int(code)
        result.exec_error = reason


def _comm(pid: int | None) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _escalating(policy: Policy) -> dict[str, Effect]:
    """Rule (file:line) or default:<area> -> the fallback that decides at once."""
    found = escalate_rules(policy)
    for area, effect in policy.defaults.items():
        if effect is Effect.ESCALATE:
            found[f"default:{area}"] = policy.default_fallbacks.get(area, Effect.AUDIT)
    return found


def _undecided(policy: Policy, event: dict) -> bool:
    """True when no rule matches the event: only the area's default decides it."""
    from capsule.lang.semantics import decide
    from capsule.runtime.compat.observe import policy_event

    try:
        return decide(policy, policy_event(event)).clause is None
    except (KeyError, TypeError, ValueError):
        return False
