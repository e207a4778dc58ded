"""Benchmark of the escalation classifier's latency per escalation.

    python -m benchmarks.bench_ml [--rounds 5] [--json]

Every ADFA-LD trace of the validation and test splits is one escalation window (up
to 4,096 system calls, the spec's max_len) for the syscall model, and every held-out
scenario pair (recording + task) one window for the event model. Each round
classifies every window once, in a shuffled order (seeded), through the same
Classifier.classify() call that enforcement makes: feature extraction plus ONNX
inference on one CPU thread. `classify` is the wall-clock latency the caller waits;
`classify_cpu` is the thread's CPU time for the same calls, which does not grow when
other processes crowd the CPUs; `inference_only` is session.run on a ready row.
Reports p50, p99 and max in milliseconds, the window lengths and the load average.
The exit status is 1 when a wall-clock p99 misses the 2 ms target.

With --end-to-end (root, compat backend), one real `capsule enforce` run of a child
that makes ESCALATIONS mounts against `escalate(deny) system mount`, spaced so that
each gets its own verdict: the denied mount's latency as the child saw it, and each
escalation's classify latency and queue-to-verdict delay.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

from capsule.ml import adfa, scenarios
from capsule.ml.features import Window, event_token
from capsule.ml.model import DEFAULT_MODEL, EVENTS_MODEL, Classifier

SEED = 0
TARGET_P99_MS = 2.0


def _percentiles(samples: list[float]) -> dict:
    values = np.array(samples)
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }


def _adfa_windows() -> list[Window]:
    traces = [t for t in adfa.load() if t.split in ("val", "test")]
    return [Window(syscalls=t.syscalls) for t in traces]


def _scenario_windows() -> list[Window]:
    # event tokens are made as events arrive, so the windows carry them already
    held_out = ("val", "test", "fresh")
    pairs = scenarios.pairs(scenarios.load_recordings())
    return [p.window for p in pairs if p.split in held_out]


def _tokens_per_event_us() -> float:
    events = [ev for _, evs in scenarios.load_recordings() for ev in evs]
    start = time.thread_time()
    for event in events:
        event_token(event, "/home/capsule-ml-scn/project")
    return (time.thread_time() - start) * 1e6 / len(events)


def run_model(classifier: Classifier, windows: list[Window], rounds: int) -> dict:
    """Time classify() (wall and CPU) and the bare inference over shuffled windows."""
    rows = [classifier.spec.vectorize(w)[None, :] for w in windows]
    order = list(range(len(windows)))
    rnd = random.Random(SEED)
    for window in windows[:50]:  # warm up the session and the allocator
        classifier.classify(window)

    end_to_end, cpu, inference = [], [], []
    for _ in range(rounds):
        rnd.shuffle(order)
        for i in order:
            cpu_start = time.thread_time()
            end_to_end.append(classifier.classify(windows[i]).latency_ms)
            cpu.append((time.thread_time() - cpu_start) * 1000.0)
            start = time.perf_counter()
            classifier.scores(rows[i])
            inference.append((time.perf_counter() - start) * 1000.0)
    lengths = [len(classifier.spec.tokens(w)) for w in windows]
    return {
        "model": classifier.path.name,
        "windows": len(windows),
        "rounds": rounds,
        "window_len": {"median": int(np.median(lengths)), "max": max(lengths)},
        "classify": _percentiles(end_to_end),
        "classify_cpu": _percentiles(cpu),
        "inference_only": _percentiles(inference),
    }


def run(rounds: int) -> dict:
    results = {
        "load_average_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "adfa": run_model(Classifier(DEFAULT_MODEL), _adfa_windows(), rounds),
        "events": run_model(Classifier(EVENTS_MODEL), _scenario_windows(), rounds),
        "event_token_us": _tokens_per_event_us(),
    }
    results["load_average_1m_end"] = os.getloadavg()[0]
    return results


ESCALATIONS = 20
_MOUNTS = """\
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
for _ in range({n}):
    start = time.perf_counter()
    libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
    print((time.perf_counter() - start) * 1000, flush=True)
    time.sleep(0.3)  # longer than the runtime's poll: no coalescing
"""


def run_end_to_end(n: int = ESCALATIONS) -> dict:
    """One enforce run; the child's mount latencies and the escalation records."""
    import tempfile
    from pathlib import Path

    from capsule.lang import load_policy
    from capsule.runtime.enforce import CompatRun, EnforceRequest

    with tempfile.TemporaryDirectory() as tmp:
        policy_path = Path(tmp) / "p.cap"
        policy_path.write_text("escalate(deny) system mount\n")
        out = Path(tmp) / "out.txt"
        out.write_text("")
        events: list[dict] = []
        code = _MOUNTS.format(n=n)
        request = EnforceRequest(
            policy=load_policy([str(policy_path)])[0],
            policy_files=[str(policy_path)],
            command=[
                "sh",
                "-c",
                f'exec "$@" > {out}',
                "sh",
                sys.executable,
                "-c",
                code,
            ],
            directory=Path(tmp) / "run",
            on_event=events.append,
            task="fix the failing unit tests",
        )
        CompatRun(request).run()
        denied = [float(line) for line in out.read_text().split()]
    outcomes = [e["escalation"] for e in events if "escalation" in e]
    return {
        "denied_mount": _percentiles(denied),
        "classify": _percentiles([o["latency_ms"] for o in outcomes]),
        "queued_to_verdict": _percentiles([o["delay_ms"] for o in outcomes]),
        "escalations": len(outcomes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--end-to-end", action="store_true", help="also one real enforce run (root)"
    )
    args = parser.parse_args(argv)
    result = run(args.rounds)
    if args.end_to_end:
        result["end_to_end"] = run_end_to_end()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    worst = max(result[k]["classify"]["p99_ms"] for k in ("adfa", "events"))
    return 0 if worst <= TARGET_P99_MS else 1


def _print(result: dict) -> None:
    print(
        f"load average {result['load_average_1m']:.1f} -> "
        f"{result['load_average_1m_end']:.1f} on {result['cpus']} CPUs "
        "(wall-clock figures include waiting for a CPU)"
    )
    for key in ("adfa", "events"):
        r = result[key]
        print(
            f"{r['model']}: {r['windows']} windows x {r['rounds']} rounds, length "
            f"median {r['window_len']['median']}, max {r['window_len']['max']}"
        )
        for name in ("classify", "classify_cpu", "inference_only"):
            p = r[name]
            print(
                f"{name:>15}: p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms  "
                f"max {p['max_ms']:.3f} ms"
            )
    print(f"event_token: {result['event_token_us']:.1f} us per event, as events arrive")
    e2e = result.get("end_to_end")
    if e2e:
        print(f"end to end (capsule enforce, {e2e['escalations']} escalations):")
        for name in ("denied_mount", "classify", "queued_to_verdict"):
            p = e2e[name]
            print(
                f"{name:>17}: p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms  "
                f"max {p['max_ms']:.3f} ms"
            )


if __name__ == "__main__":
    sys.exit(main())
