"""Guest side of the deny-by-inode test: make two files, deny one, open both.

Usage: guest_deny_open.py LSM_RUN OBJ. Prints lsm_run's report; the probe's JSON
line says which opens the kernel refused.
"""

import os
import struct
import subprocess
import sys

SCRATCH = "/run/capsule/deny_open"


def kernel_dev(st_dev: int) -> int:
    # the kernel's dev_t is major << 20 | minor; stat() reports the user encoding
    return os.major(st_dev) << 20 | os.minor(st_dev)


def main(lsm_run: str, obj: str) -> int:
    os.makedirs(SCRATCH, exist_ok=True)
    secret, other = f"{SCRATCH}/secret", f"{SCRATCH}/other"
    for path in (secret, other):
        with open(path, "w") as out:
            out.write("data\n")
    info = os.stat(secret)
    key = struct.pack("<QQ", kernel_dev(info.st_dev), info.st_ino).hex()
    maps = f"{SCRATCH}/maps.txt"
    with open(maps, "w") as out:
        out.write(f"denied_inodes {key} {struct.pack('<I', 1).hex()}\n")
    probe = os.path.join(os.path.dirname(__file__), "probe.py")
    argv = [lsm_run, "-m", maps, obj, "--", sys.executable, probe, secret, other]
    return subprocess.run(argv).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
