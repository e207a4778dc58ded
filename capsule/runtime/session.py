"""A trace session: run one command under the tracer and record what its tree does.

The command is forked first and held on a pipe before `exec`, so the tracer already
follows its pid when it runs its first instruction. The session then pumps events
(enrich, store, show) until the whole process tree has exited and the ring buffer is
drained, and returns the command's exit code the way a shell reports it.
"""

import errno
import logging
import os
import pwd
import shutil
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from capsule.cli import exitcodes
from capsule.errors import CapsuleError
from capsule.events.schema import FLAGS
from capsule.runtime.enrich import Enricher, Proc, snapshot_process
from capsule.runtime.store import RunStore

log = logging.getLogger(__name__)

# the reader is woken when the tracer's ring holds WAKEUP_BYTES, else at this tick: the
# tick bounds how late a quiet event shows up in the live timeline
POLL_MS = 50
INTAKE_BYTES = 64 << 10  # small spans keep decoding close behind intake
DECODE_SLICE_S = 0.005  # decode for at most this long per turn, then read again
TRUNCATED = FLAGS["TRUNCATED"]
BTF_PATH = Path("/sys/kernel/btf/vmlinux")


@dataclass
class RunResult:
    """What a session reports at the end: the summary of the run."""

    command: list[str]
    exit_code: int
    directory: Path
    counts: Counter = field(default_factory=Counter)
    events: int = 0
    drops: int = 0
    truncated: int = 0
    duration_s: float = 0.0
    exec_error: str | None = None
    stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "exec_error": self.exec_error,
            "duration_s": round(self.duration_s, 3),
            "events": self.events,
            "per_area": dict(sorted(self.counts.items())),
            "drops": self.drops,
            "truncated": self.truncated,
            "store": str(self.directory / "run.db"),
            "jsonl": str(self.directory / "events.jsonl"),
            "tracer": self.stats,
        }


# -- what must be there before anything is loaded ------------------------------------


def preflight() -> None:
    """Fail with one line that names what is missing and how to fix it."""
    if os.geteuid() != 0:
        raise CapsuleError(
            "failed to start tracing: capsule trace needs root",
            hint="run it as root, e.g. `sudo capsule trace -- CMD`",
        )
    if not BTF_PATH.exists():
        raise CapsuleError(
            f"failed to start tracing: kernel BTF ({BTF_PATH}) is missing",
            hint="boot a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    if shutil.which("clang") is None:
        raise CapsuleError(
            "failed to start tracing: clang is not installed",
            hint="install it: `apt-get install clang` (or `make setup`)",
        )


@dataclass
class RunAs:
    """The user the command runs as (--user)."""

    uid: int
    gid: int
    name: str
    home: str

    @classmethod
    def lookup(cls, user: str) -> "RunAs":
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise CapsuleError(
                f"failed to find user {user!r}: no such user",
                hint="pass a name or uid from /etc/passwd",
            ) from None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir)


# -- the child ----------------------------------------------------------------------


def _child(argv: list[str], go_r: int, err_w: int, run_as: RunAs | None) -> None:
    """Runs in the forked child: wait for the go byte, drop privileges, exec."""
    try:
        if os.read(go_r, 1) != b"x":  # capsule gave up before tracing started
            os._exit(exitcodes.CAPSULE_FAILED)
        os.close(go_r)
        env = dict(os.environ)
        if run_as is not None:
            os.initgroups(run_as.name, run_as.gid)
            os.setgid(run_as.gid)
            os.setuid(run_as.uid)
            env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        code = (
            exitcodes.NOT_FOUND
            if err.errno == errno.ENOENT
            else exitcodes.NOT_EXECUTABLE
        )
        os.write(err_w, f"{code} {err.strerror}".encode())
        os._exit(code)
    finally:
        os._exit(exitcodes.CAPSULE_FAILED)


def spawn_held(argv: list[str], run_as: RunAs | None) -> tuple[int, int, int]:
    """Fork the command, held before exec. Returns (pid, go_w, err_r)."""
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        os.close(err_r)
        _child(argv, go_r, err_w, run_as)
    os.close(go_r)
    os.close(err_w)
    return pid, go_w, err_r


def move_to_cgroup(pid: int, cgroup: Path) -> None:
    """Put the held command into the traced cgroup, so that it is in scope."""
    try:
        (cgroup / "cgroup.procs").write_text(f"{pid}\n")
    except OSError as err:
        raise CapsuleError(
            f"failed to move the command into cgroup {cgroup}: {err.strerror}",
            hint="pass a cgroup v2 directory, e.g. one made with mkdir "
            "under the cgroup2 mount",
        ) from err


def exit_code_of(status: int) -> int:
    """The code a shell reports: the exit status, or 128 + the killing signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


# -- the session --------------------------------------------------------------------


class Session:
    """One traced command, from fork to the last drained event."""

    def __init__(
        self,
        argv: list[str],
        directory: Path,
        tracer_factory: Callable,
        run_as: RunAs | None = None,
        on_event: Callable | None = None,
        cgroup: Path | None = None,
    ) -> None:
        self.argv = argv
        self.cgroup = cgroup
        self.directory = directory
        self.tracer_factory = tracer_factory
        self.run_as = run_as
        self.on_event = on_event
        self.enricher = Enricher()
        self.root: Proc | None = None
        self.t0_ns = 0  # CLOCK_MONOTONIC when the command was released
        self.result = RunResult(
            command=argv, exit_code=exitcodes.CAPSULE_FAILED, directory=directory
        )

    def run(self) -> RunResult:
        store = RunStore(self.directory)
        started = time.monotonic()
        store.set_meta(
            command=self.argv,
            started_at=time.time(),
            user=self.run_as.name if self.run_as else None,
        )
        try:
            self._run_traced(store)
        finally:
            self.result.duration_s = time.monotonic() - started
            self._finish(store)
        return self.result

    def _run_traced(self, store: RunStore) -> None:
        pid, go_w, err_r = spawn_held(self.argv, self.run_as)
        released = False
        try:
            with self.tracer_factory() as tracer:
                tracer.start()
                tracer.track_pid(pid)
                if self.cgroup is not None:
                    move_to_cgroup(pid, self.cgroup)
                self.root = self.enricher.add_root(pid)
                # times in the run count from here, where the command is let go
                self.t0_ns = time.monotonic_ns()
                store.set_meta(t0_ns=self.t0_ns)
                os.write(go_w, b"x")  # release: tracking is already in place
                released = True
                os.close(go_w)
                status = self._pump(tracer, store, pid)
                self.result.stats = dict(tracer.stats())
        finally:
            if not released:
                os.close(go_w)  # the child reads EOF and exits without exec
                os.waitpid(pid, 0)
        self.result.exit_code = exit_code_of(status)
        self._read_exec_error(err_r)

    def _pump(self, tracer, store: RunStore, pid: int) -> int:
        status = None
        pending: deque = deque()  # spans taken in from the ring, not yet decoded
        interrupts = _InterruptCounter()
        with interrupts:
            while True:
                self._intake(tracer, store, pending)
                if status is None:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    status = status if done else None
                if status is not None and not self._tree_alive():
                    break
                if interrupts.count > 1:  # a second Ctrl-C: stop waiting for the tree
                    log.warning("interrupted: stopped before the process tree exited")
                    status = status if status is not None else _kill_and_wait(pid)
                    break
        self._drain(tracer, store, pending)
        return status

    def _intake(self, tracer, store: RunStore, pending: deque) -> None:
        """Empty the ring first and decode behind it: during a storm the kernel's ring
        only drops events when this reader stops copying, not when decoding is slow."""
        if not pending and tracer.unread() < tracer.wakeup_bytes:
            tracer.wait(POLL_MS)  # take a batch, not each event as it comes
        span = tracer.poll_raw(0, max_bytes=INTAKE_BYTES)
        if span.count:
            pending.append(span)
        deadline = time.monotonic() + DECODE_SLICE_S
        while pending and time.monotonic() < deadline:
            self._take(tracer.decode(pending.popleft()), store)

    def _drain(self, tracer, store: RunStore, pending: deque) -> None:
        """Read until the ring buffer is empty: the tree is gone, nothing more comes."""
        while (span := tracer.poll_raw(10)).count:
            pending.append(span)
        while pending:
            self._take(tracer.decode(pending.popleft()), store)

    def _take(self, events: list[dict], store: RunStore) -> None:
        for raw in events:
            for event in self.enricher.enrich(raw):
                store.add(event)
                self.result.counts[event["area"]] += 1
                if event.get("flags", 0) & TRUNCATED:
                    self.result.truncated += 1
                if self.on_event is not None:
                    self.on_event(event)

    def _tree_alive(self) -> bool:
        """Is any traced process still running? Checked against /proc, not only events,
        so that an exit event lost to a drop cannot keep the session waiting."""
        for proc in self.enricher.procs:
            if proc.exit_ns is not None or not _in_tree(proc, self.root):
                continue
            if _same_process_alive(proc):
                return True
        return False

    def _read_exec_error(self, err_r: int) -> None:
        data = os.read(err_r, 512).decode(errors="replace")
        os.close(err_r)
        if data:
            code, _, reason = data.partition(" ")
            self.result.exit_code = int(code)
            self.result.exec_error = reason

    def _finish(self, store: RunStore) -> None:
        result = self.result
        result.drops = int(result.stats.get("drops", 0))
        result.events = sum(result.counts.values())
        store.record_drops(result.drops, time.monotonic_ns())
        store.set_meta(finished_at=time.time(), summary=result.summary())
        store.close()


def _in_tree(proc: Proc, root: Proc | None) -> bool:
    # with --cgroup, other processes are traced too; only the command's tree is awaited
    node = proc
    while node is not None and node is not root:
        node = node.parent
    return node is root


def _same_process_alive(proc: Proc) -> bool:
    live = snapshot_process(proc.pid)
    if live is None:
        return False
    # /proc start times are in clock ticks; a pid reused later starts well after
    return abs(live.start_ns - proc.start_ns) < 50_000_000 and _not_zombie(proc.pid)


def _not_zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return text[text.rfind(b")") + 2 : text.rfind(b")") + 3] not in (b"Z", b"X")


def _kill_and_wait(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.waitpid(pid, 0)[1]


class _InterruptCounter:
    """Count SIGINTs instead of dying: the first goes to the command (same process
    group); capsule keeps recording until the tree exits, or until a second one."""

    def __init__(self) -> None:
        self.count = 0
        self._previous = None

    def _handle(self, _signum, _frame) -> None:
        self.count += 1

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)
