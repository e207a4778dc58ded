"""Taking events in through the raw fast path: exact accounting under a storm, and
the Span format that keeps every record decodable later."""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from pathlib import Path

import pytest
from tracer_helpers import require_root

from capsule.events import schema
from capsule.runtime.ringbuf import DISCARD_BIT, Span

# benchmarks/ is not a package on the test path: load the storm driver from its file
_PATH = Path(__file__).parents[2] / "benchmarks" / "bench_ingest.py"
_SPEC = importlib.util.spec_from_file_location("bench_ingest", _PATH)
bench_ingest = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_ingest"] = bench_ingest  # dataclasses look their module up
_SPEC.loader.exec_module(bench_ingest)


def _ring_record(payload: bytes, flags: int = 0) -> bytes:
    """A record as the kernel lays it out: u32 length|flags, u32 page offset, payload,
    padded to 8 bytes."""
    padded = payload + b"\0" * (-len(payload) % 8)
    return struct.pack("<II", len(payload) | flags, 0) + padded


def test_span_records_skip_discarded_and_padding():
    setsid = bytearray(schema.struct_size(schema.LAYOUTS["simple"]))
    struct.pack_into("<HHI", setsid, 0, 4, 0, len(setsid))  # kind 4: proc_setsid
    data = (
        _ring_record(bytes(setsid))
        + _ring_record(b"discarded", DISCARD_BIT)
        + _ring_record(b"x" * 13)
    )
    records = [bytes(r) for r in Span(data, count=2, discarded=1).records()]
    assert records == [bytes(setsid), b"x" * 13]
    assert schema.decode(records[0])["kind"] == "proc_setsid"


def test_empty_span_has_no_records():
    assert list(Span(b"", 0).records()) == []


# each (ring bytes, events): the 256 KiB ring fills within the first few thousand
# events, so drops are certain there; the 64 MiB ring may or may not drop under load
STORMS = [(256 << 10, 200_000), (64 << 20, 400_000)]


@pytest.mark.bpf
@pytest.mark.parametrize(("ring_bytes", "events"), STORMS)
def test_storm_accounting_is_exact(ring_bytes, events):
    require_root()
    r = bench_ingest.run_storm(
        producers=2, events=events, syscall="setsid", ring_bytes=ring_bytes
    )

    assert r.produced == events
    assert r.taken_in + r.drops + r.missed == r.produced, r
    # everything taken in decodes, and is what the producers made
    assert r.decode_errors == 0 and r.kinds == {"proc_setsid": r.taken_in}, r.kinds
    assert len(r.pids) == 2 and os.getpid() not in r.pids
    if ring_bytes < 1 << 20:
        assert r.drops > 0 and r.taken_in > 0, r


@pytest.mark.bpf
def test_storm_of_opens_with_nobody_reading_is_accounted():
    require_root()
    r = bench_ingest.run_storm(
        producers=1, events=50_000, syscall="open", ring_bytes=4 << 20, mode="drain"
    )

    # 4 MiB holds ~6,700 opens of 632 bytes: the rest must show up as drops
    assert r.taken_in + r.drops + r.missed == r.produced == 50_000, r
    assert 0 < r.taken_in < 10_000 and r.kinds == {"file_read": r.taken_in}, r
