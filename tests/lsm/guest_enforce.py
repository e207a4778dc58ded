"""Guest side of the lsm-backend test: `capsule enforce --backend lsm` on an artifact.

Usage: guest_enforce.py CAPSULE ARTIFACT RELOADED BROKEN DIR. Makes DIR/secret, DIR/ok
and DIR/second, points the link DIR/artifact at ARTIFACT and runs `CAPSULE enforce
--backend lsm --json DIR/artifact` with an agent that reads them and waits. While the
agent waits (the programs are attached), this process, outside the agent's cgroup,
reads DIR/secret itself.

Then the agent opens DIR/secret in a tight loop while this process reloads the policy
several times: it points the link at another artifact and sends SIGHUP, and waits for
the runtime's line about that reload (RELOADS: RELOADED also denies DIR/second, BROKEN
names a policy that does not check). The agent counts the opens that succeeded and
finally reads DIR/second again. Prints one line `RESULT <json>` for the host test.
"""

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

WAIT_S = 240.0  # software emulation on a loaded 2-core host: Python starts slowly
RELOAD_S = 90.0  # one reload: the policy checked, the object loaded and attached
# (artifact, the runtime's line that says the reload is done); the last one stays
RELOADS = (
    ("reloaded", "policy reloaded: "),
    ("broken", "failed to reload the policy: "),
    ("initial", "policy reloaded: "),
    ("reloaded", "policy reloaded: "),
)
KEEP_LINES = 20  # of the hammer's many timeline lines and events, the result keeps
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
def read(name):
    try:
        with open(os.path.join(d, name)) as f:
            return "ok " + f.read().strip()
    except OSError as err:
        return errno.errorcode[err.errno]
print("agent: second: " + read("second"), flush=True)
# the hammer: the denied file in a tight loop, across every reload
secret, stop = os.path.join(d, "secret"), os.path.join(d, "stop")
opened = tries = 0
open(os.path.join(d, "hammering"), "w").close()
deadline = time.monotonic() + 600
while not os.path.exists(stop) and time.monotonic() < deadline:
    for _ in range(500):
        try:
            os.close(os.open(secret, os.O_RDONLY))
            opened += 1
        except OSError:
            pass
    tries += 500
print(f"agent: hammer: {opened} of {tries} opens succeeded", flush=True)
time.sleep(2)  # the runtime empties the ring buffer: the next event has room
print("agent: second after reload: " + read("second"), flush=True)
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


def point(link: Path, target: str) -> None:
    """Repoint the artifact link in one step, as a deployment would."""
    new = link.with_name(link.name + ".new")
    new.unlink(missing_ok=True)
    new.symlink_to(target)
    os.replace(new, link)


def wait_for(path: Path, proc: subprocess.Popen, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while proc.poll() is None and time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def reload(proc, link, errlog, artifacts, outcomes) -> None:
    """Each reload in turn: repoint, SIGHUP, wait for the runtime's line about it."""
    for name, expect in RELOADS:
        seen = errlog.read_text(errors="replace").count(expect)
        point(link, artifacts[name])
        started = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        done = False
        while proc.poll() is None and time.monotonic() - started < RELOAD_S:
            if errlog.read_text(errors="replace").count(expect) > seen:
                done = True
                break
            time.sleep(0.1)
        outcomes.append([name, done, round(time.monotonic() - started, 2)])


def trimmed(text: str, noisy: str) -> str:
    """The text without the hammer's repeated lines beyond the first few."""
    lines = text.splitlines(keepends=True)
    kept, noise = [], 0
    for line in lines:
        noise += noisy in line
        if noisy not in line or noise <= KEEP_LINES:
            kept.append(line)
    return "".join(kept)


def stored_reloads(db: Path) -> list:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM run WHERE key = 'reloads'").fetchone()
    return json.loads(row[0]) if row else []


def main(
    capsule: str, artifact: str, reloaded: str, broken: str, directory: str
) -> int:
    ensure_cgroup2()
    work = Path(directory)
    work.mkdir(parents=True, exist_ok=True)
    (work / "secret").write_text("s3cret\n")
    (work / "ok").write_text("fine\n")
    (work / "second").write_text("two\n")
    artifacts = {"initial": artifact, "reloaded": reloaded, "broken": broken}
    link = work / "artifact"
    point(link, artifact)
    run, errlog = work / "run", work / "stderr"
    argv = [capsule, "enforce", "--backend", "lsm", "--json", "-o", str(run)]
    argv += [str(link), "--", sys.executable, "-c", AGENT, str(work)]
    with open(errlog, "wb") as err:  # a file: read while the run goes on
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
    outside, outcomes = "agent never waited", []
    if wait_for(work / "agent-waiting", proc, WAIT_S):
        outside = read_outside(work / "secret")
        (work / "outside-done").touch()
        if wait_for(work / "hammering", proc, WAIT_S):
            reload(proc, link, errlog, artifacts, outcomes)
    (work / "stop").touch()
    try:
        out, _ = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    jsonl = run / "events.jsonl"
    lines = jsonl.read_text().splitlines() if jsonl.exists() else []
    events = [json.loads(line) for line in lines]
    secret = str(work / "secret")
    hammered = [e for e in events if e.get("path") == secret]
    result = {
        "rc": proc.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": trimmed(errlog.read_text(errors="replace"), secret),
        "outside": outside,
        "reloads": outcomes,
        "events": hammered[:KEEP_LINES]
        + [e for e in events if e.get("path") != secret],
        "secret_events": len(hammered),
        "meta_reloads": stored_reloads(run / "run.db"),
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
