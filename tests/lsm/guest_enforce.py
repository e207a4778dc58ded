"""Guest side of the lsm-backend test: `capsule enforce --backend lsm` on an artifact.

Usage: guest_enforce.py CAPSULE ARTIFACT DIR. Makes DIR/secret and DIR/ok, then runs
`CAPSULE enforce --backend lsm --json` with an agent that reads both and waits. While
the agent waits (the programs are attached), this process, outside the agent's
cgroup, reads DIR/secret itself. Prints one line `RESULT <json>` for the host test.
"""

import errno
import json
import subprocess
import sys
import time
from pathlib import Path

WAIT_S = 240.0  # software emulation on a loaded 2-core host: Python starts slowly
# the agent: the allowed read, the denied one, then a pause for the outside reader
AGENT = """
import errno, os, sys, time
d = sys.argv[1]
for name in ("ok", "secret"):
    try:
        with open(os.path.join(d, name)) as f:
            print(f"agent: {name}: ok {f.read().strip()}", flush=True)
    except OSError as err:
        print(f"agent: {name}: {errno.errorcode[err.errno]}", flush=True)
open(os.path.join(d, "agent-waiting"), "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(os.path.join(d, "outside-done")):
    if time.monotonic() > deadline:
        sys.exit(4)
    time.sleep(0.05)
sys.exit(3)
"""


def ensure_cgroup2() -> None:
    root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.procs").exists():
        subprocess.run(["mount", "-t", "cgroup2", "none", str(root)], check=False)


def read_outside(path: Path) -> str:
    try:
        return "ok " + path.read_text().strip()
    except OSError as err:
        return errno.errorcode[err.errno]


def main(capsule: str, artifact: str, directory: str) -> int:
    ensure_cgroup2()
    work = Path(directory)
    work.mkdir(parents=True, exist_ok=True)
    (work / "secret").write_text("s3cret\n")
    (work / "ok").write_text("fine\n")
    run = work / "run"
    argv = [capsule, "enforce", "--backend", "lsm", "--json", "-o", str(run)]
    argv += [artifact, "--", sys.executable, "-c", AGENT, str(work)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outside, deadline = "agent never waited", time.monotonic() + WAIT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if (work / "agent-waiting").exists():
            outside = read_outside(work / "secret")
            (work / "outside-done").touch()
            break
        time.sleep(0.05)
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    jsonl = run / "events.jsonl"
    lines = jsonl.read_text().splitlines() if jsonl.exists() else []
    events = [json.loads(line) for line in lines]
    result = {
        "rc": proc.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
        "outside": outside,
        "events": events,
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
