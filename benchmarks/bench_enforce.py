"""Overhead of `capsule enforce` with the compat backend on open/close.

    sudo .venv/bin/python -m benchmarks.bench_enforce [--rounds N] [--scale X] [--json]

The open/close loop (benchmarks/openclose_cpu.c) runs unenforced, enforced, and
enforced with --no-report-denials, in turn, in one invocation; the loop times itself,
so the sandbox's start-up is not counted. It reports wall and CPU time: on a shared,
loaded machine wall time also counts waiting for a core, CPU time does not. The policy
makes every mechanism take part: a Landlock file rule (each open is checked against the
ruleset), seccomp rules, and a network rule on the cgroup hooks; the loop's file is
allowed. The goal on this host: a CPU-time ratio of at most 1.3.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_trace import BUILD, CAPSULE, REPO

GOAL = 1.3
POLICY = """\
deny file read,write {scratch}/secret/
deny file write /etc/**
deny system mount
deny namespace unshare
deny creds setuid uid 0
deny network connect addr 10.0.0.0/8
"""
MODES = {
    "unenforced": None,
    "enforced": "--report-denials",
    "no-report-denials": "--no-report-denials",
}


def build_loop() -> Path:
    source, binary = REPO / "benchmarks" / "openclose_cpu.c", BUILD / "openclose_cpu"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["clang", "-O2", "-Wall", "-o", str(binary), str(source)], check=True
        )
    return binary


def run(argv: list[str], flag: str | None, policy: Path, out_dir: Path) -> tuple:
    cmd = (
        argv
        if flag is None
        else [
            CAPSULE,
            "-q",
            "enforce",
            "--backend",
            "compat",
            "--no-timeline",
            "--json",
            flag,
            "-o",
            str(out_dir),
            str(policy),
            "--",
            *argv,
        ]
    )
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr}")
    for line in done.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["openclose"] and len(parts) == 4:
            return float(parts[2]), float(parts[3])
    raise RuntimeError(f"the loop printed no timing: {done.stdout!r}")


def measure(rounds: int, iterations: int) -> dict:
    loop = build_loop()
    times: dict[str, list[tuple]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        (scratch / "secret").mkdir()
        target = scratch / "allowed.txt"
        target.write_text("x")
        policy = scratch / "bench.cap"
        policy.write_text(POLICY.format(scratch=scratch))
        argv = [str(loop), str(iterations), str(target)]
        for i in range(rounds):
            for mode, flag in MODES.items():
                times[mode].append(run(argv, flag, policy, scratch / f"{mode}-{i}"))
    wall = {m: statistics.median(t[0] for t in v) for m, v in times.items()}
    cpu = {m: statistics.median(t[1] for t in v) for m, v in times.items()}
    result = {
        "workload": "openclose",
        "iterations": iterations,
        "rounds": rounds,
        "goal": GOAL,
    }
    for mode in MODES:
        result[mode] = {
            "wall_s": round(wall[mode], 4),
            "cpu_s": round(cpu[mode], 4),
            "wall_ratio": round(wall[mode] / wall["unenforced"], 3),
            "cpu_ratio": round(cpu[mode] / cpu["unenforced"], 3),
        }
    result["met"] = result["enforced"]["cpu_ratio"] <= GOAL
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.rounds, int(200_000 * args.scale))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for mode in MODES:
            r = result[mode]
            print(
                f"{mode:<18} wall {r['wall_s']:.3f}s ({r['wall_ratio']}x)  "
                f"cpu {r['cpu_s']:.3f}s ({r['cpu_ratio']}x)"
            )
        print(
            f"goal: cpu ratio <= {GOAL} enforced: "
            f"{'met' if result['met'] else 'NOT met'}"
        )
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
