"""How many events per second the tracer takes in, with exact accounting.

    sudo .venv/bin/python -m benchmarks.bench_ingest [--producers 2] [--events 2000000]
        [--syscall setsid|open] [--ring-mib 64] [--mode live|drain] [--json]

Producers (benchmarks/ingest_producer.c) each make N traced syscalls, one event each,
and report how many they made; only that loop is in the tracer's scope. The consumer
takes events in through `Tracer.poll_raw()` (raw spans of the ring) and keeps them in a
spool; after the clock stops, the spool is decoded in full to show that nothing taken
in is unreadable. The accounting check is

    unaccounted = produced - taken in - drops - missed   (must be 0)

Modes: `live` reads while the producers run (the rate is limited by how fast this
machine produces); `drain` lets the producers fill the ring with nobody reading, then
times taking the whole ring in (the consumer's own capacity).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from capsule.runtime import build
from capsule.runtime.ringbuf import Span
from capsule.runtime.tracer import Tracer

SOURCE = Path(__file__).with_name("ingest_producer.c")
TARGET = 500_000  # events/s taken in, with nothing unaccounted


@dataclass
class StormResult:
    producers: int
    syscall: str
    ring_bytes: int
    produced: int
    taken_in: int
    drops: int
    missed: int
    decoded: int
    decode_errors: int
    intake_wall_s: float
    intake_cpu_s: float
    decode_cpu_s: float
    columns_cpu_s: float
    columns_rows: int
    spans: int
    kinds: dict[str, int]
    pids: list[int]
    loadavg: tuple[float, float, float]

    @property
    def unaccounted(self) -> int:
        return self.produced - self.taken_in - self.drops - self.missed

    @property
    def events_per_s(self) -> float:
        return self.taken_in / self.intake_wall_s if self.intake_wall_s else 0.0

    @property
    def events_per_cpu_s(self) -> float:
        return self.taken_in / self.intake_cpu_s if self.intake_cpu_s else 0.0


def build_producer() -> Path:
    """Compile ingest_producer.c (clang -O2) unless the binary is newer."""
    binary = build.BUILD_DIR / "ingest_producer"
    if not binary.exists() or binary.stat().st_mtime < SOURCE.stat().st_mtime:
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(
            ["clang", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True
        )
        os.replace(tmp, binary)
    return binary


def _spawn(binary: Path, syscall: str, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [str(binary), syscall, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
    )


def run_storm(
    producers: int = 2,
    events: int = 1_000_000,
    syscall: str = "setsid",
    ring_bytes: int = 64 << 20,
    mode: str = "live",
) -> StormResult:
    """One storm: `events` traced syscalls split over `producers` processes."""
    binary = build_producer()
    per = events // producers
    procs = [_spawn(binary, syscall, per) for _ in range(producers)]
    spool = []
    try:
        with Tracer(ring_size=ring_bytes) as tracer:
            tracer.start()
            for proc in procs:
                tracer.track_pid(proc.pid)
            for proc in procs:  # go: only the loops are in scope from here
                proc.stdin.write(b"g")
            if mode == "drain":
                produced = _wait_reports(procs)
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            if mode == "live":
                produced = _consume_live(tracer, procs, spool)
            wall, cpu = _drain(tracer, spool, wall0, cpu0)
            for proc in procs:
                tracer.untrack_pid(proc.pid)
            decode0 = time.thread_time()
            kinds, pids = _decode_all(tracer, spool)
            decode_cpu = time.thread_time() - decode0
            columns0 = time.thread_time()
            rows = sum(len(a) for a in tracer.columns(Span.join(spool)).values())
            columns_cpu = time.thread_time() - columns0
            stats = tracer.stats()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.stdin.write(b"x")
            proc.wait()
    return StormResult(
        producers=producers,
        syscall=syscall,
        ring_bytes=ring_bytes,
        produced=produced,
        taken_in=stats["events"],
        drops=stats["drops"],
        missed=stats["missed"],
        decoded=sum(kinds.values()),
        decode_errors=stats["decode_errors"],
        intake_wall_s=wall,
        intake_cpu_s=cpu,
        decode_cpu_s=decode_cpu,
        columns_cpu_s=columns_cpu,
        columns_rows=rows,
        spans=len(spool),
        kinds=kinds,
        pids=pids,
        loadavg=os.getloadavg(),
    )


def _decode_all(tracer: Tracer, spool: list) -> tuple[dict[str, int], list[int]]:
    """Decode the whole spool: the kinds seen and the pids that sent them."""
    kinds: dict[str, int] = {}
    pids: set[int] = set()
    for span in spool:
        for event in tracer.decode(span):
            kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
            pids.add(event["pid"])
    return kinds, sorted(pids)


def _wait_reports(procs: list[subprocess.Popen]) -> int:
    return sum(int(proc.stdout.readline()) for proc in procs)


def _consume_live(tracer: Tracer, procs: list, spool: list) -> int:
    """Take spans in until every producer has reported its count."""
    pending = {proc.stdout.fileno(): proc for proc in procs}
    produced = 0
    while pending:
        span = tracer.poll_raw(5)
        if span.count:
            spool.append(span)
        for fd in [fd for fd in pending if _readable(fd)]:
            produced += int(pending.pop(fd).stdout.readline())
    return produced


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def _drain(tracer: Tracer, spool: list, wall0: float, cpu0: float):
    """Take in what is left; the clock stops at the last non-empty span."""
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    while True:
        span = tracer.poll_raw(50)
        if not span.count:
            return wall, cpu
        spool.append(span)
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0


def format_result(r: StormResult) -> str:
    return (
        f"producers={r.producers} syscall={r.syscall} ring={r.ring_bytes >> 20}MiB "
        f"produced={r.produced} taken_in={r.taken_in} drops={r.drops} "
        f"missed={r.missed} unaccounted={r.unaccounted}\n"
        f"  intake {r.events_per_s:,.0f} events/s wall over {r.intake_wall_s:.3f} s, "
        f"{r.events_per_cpu_s:,.0f} events per consumer CPU-second, {r.spans} spans\n"
        f"  decoded later: {r.decoded} events ({r.decode_errors} errors) in "
        f"{r.decode_cpu_s:.2f} CPU s (dicts), {r.columns_rows} rows in "
        f"{r.columns_cpu_s:.2f} CPU s (numpy columns); load average {r.loadavg[0]:.2f} "
        f"{r.loadavg[1]:.2f} {r.loadavg[2]:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_ingest", description=__doc__)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--syscall", choices=("setsid", "open"), default="setsid")
    parser.add_argument("--ring-mib", type=int, default=64)
    parser.add_argument("--mode", choices=("live", "drain"), default="live")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_ingest: needs root to load BPF programs", file=sys.stderr)
        return 1
    ok = True
    for _ in range(args.rounds):
        r = run_storm(
            args.producers, args.events, args.syscall, args.ring_mib << 20, args.mode
        )
        ok &= r.unaccounted == 0 and r.decoded == r.columns_rows == r.taken_in
        ok &= r.events_per_s >= TARGET
        if args.json:
            print(json.dumps(asdict(r) | {"unaccounted": r.unaccounted}))
        else:
            print(f"[{args.mode}] " + format_result(r))
    if not ok:
        print(f"bench_ingest: below {TARGET:,} events/s or not every event accounted")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
