"""A BPF ring buffer read in Python, straight from its mmapped pages.

The kernel maps a ring-buffer map as: one read-write page holding the consumer position,
one read-only page holding the producer position, then the data area mapped twice in a
row, so that a record that wraps around the end can still be read as one slice. Each
record starts with an 8-byte header: its length, with a BUSY bit while the producer is
still writing and a DISCARD bit for discarded records, and the record is padded to 8
bytes.

Two ways to read. `read()` copies each record into its own bytes object. `read_span()`
is the fast path: it only walks the record headers to find where the committed records
end and copies that whole span with one slice, ring headers included, into a `Span`;
the records are cut out and decoded later, when someone wants them. Per record that is
a few integer operations instead of an object, which is what lets one Python thread
keep up with the kernel (docs/performance.md, "Ingest").
"""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Iterator
from dataclasses import dataclass

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
LENGTH_MASK = DISCARD_BIT - 1
HEADER_SIZE = 8
# one span at most: the consumer position moves on (and the kernel may reuse the space)
# after each span, so a long backlog is freed piece by piece rather than all at the end
SPAN_MAX = 1 << 20

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Span:
    """Committed ring-buffer records exactly as the kernel wrote them: each is an
    8-byte ring header (length and flag bits) and the record, padded to 8 bytes.
    `count` is the records kept, `discarded` those the producer discarded."""

    data: bytes
    count: int
    discarded: int = 0

    @classmethod
    def join(cls, spans: list[Span]) -> Span:
        """One span of many, in order: batched decoders pay their fixed cost once."""
        return cls(
            b"".join(s.data for s in spans),
            sum(s.count for s in spans),
            sum(s.discarded for s in spans),
        )

    def records(self) -> Iterator[memoryview]:
        """Each kept record (without its ring header), oldest first."""
        view, off, end = memoryview(self.data), 0, len(self.data)
        while off < end:
            header = _U32.unpack_from(view, off)[0]
            length = header & LENGTH_MASK
            if not header & DISCARD_BIT:
                yield view[off + HEADER_SIZE : off + HEADER_SIZE + length]
            off += (length + HEADER_SIZE + 7) & ~7

    def offsets(self) -> tuple[list[int], list[int]]:
        """Where each kept record starts in `data` (after its ring header), and its
        length: what batched decoders index with."""
        starts, lengths, off, end = [], [], 0, len(self.data)
        data = memoryview(self.data).cast("I") if end else ()
        while off < end:
            header = data[off >> 2]
            length = header & LENGTH_MASK
            if not header & DISCARD_BIT:
                starts.append(off + HEADER_SIZE)
                lengths.append(length)
            off += (length + HEADER_SIZE + 7) & ~7
        return starts, lengths


class RingBuffer:
    """Reads records from one BPF_MAP_TYPE_RINGBUF map given its fd and size."""

    def __init__(self, map_fd: int, size: int, edge_triggered: bool = False):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self._consumer = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._producer = mmap.mmap(
            map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._data = memoryview(self._producer)[page:]
        # the headers as 32-bit words: indexing a cast view is the cheapest read
        self._words = self._data.cast("I")
        self._cons = memoryview(self._consumer).cast("Q")
        self._prod = memoryview(self._producer)[:8].cast("Q")
        self._epoll = select.epoll()
        # edge-triggered, wait() returns when the kernel wakes the reader (or at the
        # timeout), not whenever something is unread: for producers that only wake
        # the reader once a batch has built up (BPF_RB_NO_WAKEUP)
        events = select.EPOLLIN | (select.EPOLLET if edge_triggered else 0)
        self._epoll.register(map_fd, events)

    def available(self) -> int:
        """Bytes written by the kernel and not read yet."""
        return self._prod[0] - self._cons[0]

    def read(self, max_records: int = 1 << 20) -> list[bytes]:
        """Every complete record available now, oldest first (no waiting)."""
        cons, prod = self._cons[0], self._prod[0]
        data, mask, out = self._data, self.mask, []
        while cons < prod and len(out) < max_records:
            off = cons & mask
            header = _U32.unpack_from(data, off)[0]
            if header & BUSY_BIT:  # the producer has not committed this one yet
                break
            length = header & LENGTH_MASK
            if not header & DISCARD_BIT:
                out.append(bytes(data[off + HEADER_SIZE : off + HEADER_SIZE + length]))
            cons += (length + HEADER_SIZE + 7) & ~7
        if cons != self._cons[0]:
            self._cons[0] = cons
        return out

    def read_span(self, max_bytes: int = SPAN_MAX) -> Span:
        """The committed records available now as one `Span` (no waiting).

        Stops at the first record the kernel is still writing (BUSY): records are
        committed out of order across CPUs, and the consumer position may only pass
        records that are complete. max_bytes bounds one span (default: the whole ring).
        """
        cons, prod = self._cons[0], self._prod[0]
        end = prod if max_bytes is None else min(prod, cons + max_bytes)
        words, mask = self._words, self.mask
        pos, count, discarded = cons, 0, 0
        while pos < end:
            header = words[(pos & mask) >> 2]
            if header & BUSY_BIT:
                break
            if header & DISCARD_BIT:
                discarded += 1
            count += 1
            pos += ((header & LENGTH_MASK) + HEADER_SIZE + 7) & ~7
        if pos == cons:
            return Span(b"", 0)
        start = cons & mask  # the double mapping makes a wrapped span contiguous
        span = Span(
            self._data[start : start + pos - cons].tobytes(),
            count - discarded,
            discarded,
        )
        self._cons[0] = pos  # the kernel may reuse the space from now on
        return span

    def wait(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms (-1: forever) for the kernel to signal new data.
        Level-triggered (the default), unread data counts as a signal."""
        self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Records available now, else wait up to timeout_ms for some."""
        records = self.read()
        if records or timeout_ms == 0:
            return records
        self.wait(timeout_ms)
        return self.read()

    def poll_span(self, timeout_ms: int, max_bytes: int = SPAN_MAX) -> Span:
        """`read_span()`, waiting up to timeout_ms when nothing is there yet."""
        span = self.read_span(max_bytes)
        if span.data or timeout_ms == 0:
            return span
        self.wait(timeout_ms)
        return self.read_span(max_bytes)

    def close(self) -> None:
        self._epoll.close()
        for view in (self._words, self._cons, self._prod, self._data):
            view.release()
        self._producer.close()
        self._consumer.close()
