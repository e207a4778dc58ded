"""Run every benchmark, one after another: `python -m benchmarks [NAME ...]`.

Each `bench_<name>.py` is its own script with its own options and prints its own
results; this runner only sequences them, so one slow or failing benchmark does not
hide the others. The exit status is 1 when any benchmark missed its target or failed.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    unknown = sorted(set(names) - set(available))
    if unknown:
        print(f"benchmarks: unknown benchmark {', '.join(unknown)}; "
              f"choose from {', '.join(available)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or available:
        print(f"== benchmarks.bench_{name}", flush=True)
        status = subprocess.call([sys.executable, "-m", f"benchmarks.bench_{name}"],
                                 cwd=HERE.parent)
        if status:
            failed.append(name)
    if failed:
        print(f"benchmarks: missed a target or failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
