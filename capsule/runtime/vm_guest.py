"""Runs inside the LSM test VM: executes a batch of commands and reports each one.

This file is started by `capsule.runtime.vm` as the guest's only program. It imports
nothing from capsule, so it runs with any Python 3 the guest can see. Each result is
one line on stdout, `MARKER <json>`, because the console is the only channel back to
the host (the host filesystem is read-only inside the guest).
"""

import json
import os
import subprocess
import sys
import time

MARKER = "@@capsule-vm@@"
DONE = "@@capsule-vm-done@@"

# writable places the guest needs: bpffs for pinned objects, a tmpfs for test files
_MOUNTS = (
    ("bpf", "/sys/fs/bpf", "bpf"),
    ("tmpfs", "/run/capsule", "tmpfs"),
)


def _emit(record: dict) -> None:
    sys.stdout.write(f"{MARKER} {json.dumps(record, separators=(',', ':'))}\n")
    sys.stdout.flush()


def _prepare() -> dict:
    state = {"kernel": os.uname().release, "mounts": {}}
    for source, target, fstype in _MOUNTS:
        os.makedirs(target, exist_ok=True)
        rc = subprocess.run(["mount", "-t", fstype, source, target]).returncode
        state["mounts"][target] = rc == 0 or os.path.ismount(target)
    # loopback for network tests; the guest has no other interface
    subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True)
    try:
        with open("/sys/kernel/security/lsm") as lsm:
            state["lsm"] = lsm.read().strip().split(",")
    except OSError:
        state["lsm"] = []
    return state


def _run(index: int, command: dict) -> dict:
    started = time.monotonic()
    record = {"index": index, "name": command["name"]}
    try:
        done = subprocess.run(
            command["argv"],
            capture_output=True,
            timeout=command["timeout"],
            cwd=command.get("cwd") or "/run/capsule",
            env={**os.environ, **command.get("env", {})},
        )
        record.update(returncode=done.returncode, timed_out=False)
        record.update(stdout=done.stdout.decode(errors="replace"))
        record.update(stderr=done.stderr.decode(errors="replace"))
    except subprocess.TimeoutExpired as expired:
        record.update(returncode=None, timed_out=True, stdout="", stderr=str(expired))
    except OSError as err:
        record.update(returncode=None, timed_out=False, stdout="", stderr=str(err))
    record["seconds"] = round(time.monotonic() - started, 3)
    return record


def main(batch_path: str) -> int:
    with open(batch_path) as batch_file:
        batch = json.load(batch_file)
    _emit({"guest": _prepare()})
    for index, command in enumerate(batch["commands"]):
        _emit(_run(index, command))
    sys.stdout.write(f"{DONE}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
