"""The kernel side of `capsule trace`: load bpf/trace.bpf.c and read its events.

Interface (kept stable; the session, enrichment and timeline writers build on it):

    with Tracer(cgroup_path=None) as tracer:
        tracer.start()              # compile (cached), load, attach
        tracer.track_pid(pid)       # pid and every later descendant are in scope
        events = tracer.poll(100)   # list[dict], see capsule/events/schema.py
        span = tracer.poll_raw(100) # fast path: raw records (a Span), decoded later
        events = tracer.decode(span)          # ... into dicts, as poll() gives them
        arrays = tracer.columns(Span.join(spans))  # ... or numpy arrays per layout
        tracer.wait(50)             # until wakeup_bytes are unread, or 50 ms
        tracer.stats()              # {"events", "drops", "missed", "decode_errors"}
    # close() detaches everything

`Tracer(cgroup_path=...)` scopes to that cgroup (v2) and its descendants instead of a
process tree; track_pid() then has no effect. A tracked pid's children are added by the
kernel in sched_process_fork, before they run, so nothing they do is missed; to see a
command from its first instruction, call track_pid() while it is still blocked before
exec (the session holds it on a pipe).

Accounting: every event the kernel produced is either taken in (`events`, whether by
poll() or poll_raw()) or counted in the kernel (`drops`: the ring was full or the
syscall's arguments could not be stashed; `missed`: a hook was skipped because it was
already running on that CPU). poll() decodes each record as it arrives, about 5 us per
event; poll_raw() only copies the committed span of the ring, so taking events in keeps
up with the kernel and decoding can happen later, in batches or not at all.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Self

from capsule.errors import CapsuleError
from capsule.events import schema
from capsule.runtime import build
from capsule.runtime.ringbuf import SPAN_MAX, RingBuffer, Span

if TYPE_CHECKING:
    from capsule.runtime import libbpf

log = logging.getLogger(__name__)

SOURCE = build.BPF_DIR / "trace.bpf.c"
# 64 MiB holds ~760,000 small events (80 bytes) or ~100,000 opens: about half a second
# of a storm on this 2-core host, enough to ride out the reader waiting for a CPU; at
# 8 MiB a 2-process setsid storm lost 8-17 % to drops (docs/performance.md, "Ingest")
RING_SIZE = 64 << 20
# the reader is woken once this much is unread, else it finds records on its next poll
# timeout: woken per record, it took an open/close storm a few records at a time with
# 2.5-3x the CPU (docs/performance.md, "Tracing overhead on syscall storms")
WAKEUP_BYTES = 256 << 10
# a thread's opens identical to its last open event (same file, flags, fd) within this
# long of it are counted in the kernel and sent as one `file_repeat` event, not one
# event each: an open/close storm then costs the kernel no ring record and no path
# walk, and user space almost nothing (docs/performance.md, "Folding repeated
# opens"); 0: every open is an event
FOLD_NS = 100_000_000
# the programs attached at start; exit_* handlers are reached by tail call only
HOOKS = (
    "handle_sys_enter",
    "handle_sys_exit",
    "handle_fork",
    "handle_exec",
    "handle_exit",
    "handle_cgroup_attach",
)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_S64 = struct.Struct("<q")


class Tracer:
    """Observe one process tree (or one cgroup) through the ring buffer."""

    def __init__(
        self,
        cgroup_path: str | Path | None = None,
        ring_size: int = RING_SIZE,
        wakeup_bytes: int = WAKEUP_BYTES,
        fold_ns: int = FOLD_NS,
    ):
        self.cgroup_path = Path(cgroup_path) if cgroup_path else None
        self.ring_size = ring_size
        self.wakeup_bytes = min(wakeup_bytes, ring_size // 8)  # a small ring fills fast
        self.fold_ns = fold_ns
        self._obj: libbpf.BpfObject | None = None
        self._links: list[libbpf.Link] = []
        self._ring: RingBuffer | None = None
        self._events = 0
        self._decode_errors = 0

    def start(self) -> None:
        """Compile (cached), load, configure the scope and attach the hooks."""
        if self._obj is not None:
            raise CapsuleError("failed to start the tracer: it is already started")
        if self.cgroup_path and not _is_cgroup2_dir(self.cgroup_path):
            raise CapsuleError(
                f"failed to scope to cgroup {self.cgroup_path}: "
                "not a cgroup v2 directory",
                hint="pass a directory under the cgroup2 mount",
            )
        from capsule.runtime import libbpf  # the ctypes layer loads only when used

        obj_path = build.compile_bpf(SOURCE)
        self._obj = obj = libbpf.BpfObject(obj_path)
        obj.set_rodata("targ_cgroup", b"\x01" if self.cgroup_path else b"\x00")
        obj.set_rodata("targ_self", _U32.pack(os.getpid()))
        obj.set_rodata("targ_wakeup_bytes", _U32.pack(self.wakeup_bytes))
        obj.set_rodata("targ_fold_ns", _U64.pack(self.fold_ns))
        obj.map("events").set_max_entries(self.ring_size)
        obj.load()

        if self.cgroup_path:
            self._set_scope_cgroup(obj)
        for name in HOOKS:
            self._links.append(obj.program(name).attach())
        self._ring = RingBuffer(
            obj.map("events").fd, self.ring_size, edge_triggered=self.wakeup_bytes > 0
        )
        log.info(
            "tracer attached %d hooks (%s)",
            len(self._links),
            f"cgroup {self.cgroup_path}" if self.cgroup_path else "process tree",
        )

    def _set_scope_cgroup(self, obj: libbpf.BpfObject) -> None:
        fd = os.open(self.cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            obj.map("scope_cgroup").update(_U32.pack(0), _U32.pack(fd))
        finally:
            os.close(fd)

    def track_pid(self, pid: int) -> None:
        """Put pid's process (and, from now on, its descendants) in scope."""
        self._require_started().map("tracked").update(_U32.pack(pid), _U32.pack(1))

    def untrack_pid(self, pid: int) -> None:
        self._require_started().map("tracked").delete(_U32.pack(pid))

    def poll(self, timeout_ms: int) -> list[dict]:
        """Decoded events available now, else those arriving within timeout_ms."""
        return self.decode(self.poll_raw(timeout_ms))

    def poll_raw(self, timeout_ms: int, max_bytes: int = SPAN_MAX) -> Span:
        """The records available now (else within timeout_ms) as one undecoded Span of
        at most about max_bytes; `decode(span)` or `columns(span)` reads them."""
        span = self._require_ring().poll_span(timeout_ms, max_bytes)
        self._events += span.count
        return span

    def unread(self) -> int:
        """Bytes in the ring not taken in yet (records still being written count)."""
        return self._require_ring().available()

    def wait(self, timeout_ms: int) -> None:
        """Sleep until the kernel wakes the reader (wakeup_bytes unread, or with
        wakeup_bytes 0 any new record) or timeout_ms has passed."""
        self._require_ring().wait(timeout_ms)

    def _require_ring(self) -> RingBuffer:
        if self._ring is None:
            raise CapsuleError("failed to poll the tracer: it is not started")
        return self._ring

    def decode(self, span: Span) -> list[dict]:
        """The span's events as dicts; an undecodable record is counted and logged."""
        events = []
        for record in span.records():
            try:
                events.append(schema.decode(record))
            except schema.DecodeError as exc:
                self._decode_errors += 1
                log.warning("dropped an undecodable event: %s", exc)
        return events

    def columns(self, span: Span) -> dict:
        """The span's events as one numpy structured array per layout (see
        `schema.columns`); records that do not decode are counted in decode_errors."""
        import numpy as np

        starts, lengths = span.offsets()
        arrays, bad = schema.columns(
            span.data, np.array(starts, np.int64), np.array(lengths, np.int64)
        )
        self._decode_errors += bad
        return arrays

    def stats(self) -> dict:
        """Counters: events taken in from the ring (decoded or not); events lost in the
        kernel, either because the ring was full (`drops`, which also counts folded
        opens whose repeat event is not sent yet: their thread is still in its run) or
        because a hook was skipped while it was already running on that CPU (`missed`);
        records that did not decode (`decode_errors`, a subset of `events`)."""
        drops = missed = 0
        if self._obj is not None and self._obj.loaded:
            values = self._obj.map("drops").lookup_percpu(_U32.pack(0), 8)
            drops = sum(_U64.unpack(v)[0] for v in values)
            values = self._obj.map("unsent_folds").lookup_percpu(_U32.pack(0), 8)
            drops += max(0, sum(_S64.unpack(v)[0] for v in values))
            missed = sum(p.recursion_misses() for p in self._obj.programs())
        return {
            "events": self._events,
            "drops": drops,
            "missed": missed,
            "decode_errors": self._decode_errors,
        }

    def close(self) -> None:
        for link in self._links:
            link.destroy()
        self._links.clear()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def _require_started(self) -> libbpf.BpfObject:
        if self._obj is None or not self._obj.loaded:
            raise CapsuleError("failed to use the tracer: it is not started")
        return self._obj

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cgroup2_mount() -> Path | None:
    """Where cgroup v2 is mounted (the unified hierarchy of a hybrid layout too)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[:1] == ["cgroup2"]:
            return Path(pre.split()[4])
    return None


def _is_cgroup2_dir(path: Path) -> bool:
    mount = cgroup2_mount()
    path = path.resolve()
    inside = mount is not None and (path == mount or mount in path.parents)
    return inside and (path / "cgroup.procs").exists()
