"""The agent's own cgroup v2: the scope of the cgroup hooks, and a way to see the tree.

Every process the agent starts is born in its parent's cgroup, so once the command's
first process is placed here (before it executes anything), the whole tree is too.
The agent cannot move itself out: /sys/fs/cgroup is read-only in its mount namespace.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from pathlib import Path

from capsule.errors import CapsuleError

log = logging.getLogger(__name__)

UNIFIED = Path("/sys/fs/cgroup/unified")
CGROUP2_MAGIC = 0x63677270


def cgroup2_root() -> Path | None:
    """Where cgroup v2 is mounted: /sys/fs/cgroup/unified (hybrid) or /sys/fs/cgroup."""
    for candidate in (UNIFIED, Path("/sys/fs/cgroup")):
        if (candidate / "cgroup.procs").exists() and (
            candidate / "cgroup.threads"
        ).exists():
            return candidate
    return None


class AgentCgroup:
    """A cgroup created for one run, removed at the end."""

    def __init__(self, name: str) -> None:
        root = cgroup2_root()
        if root is None:
            raise CapsuleError(
                "failed to create the agent's cgroup: no cgroup v2 mount",
                hint="mount cgroup2, e.g. at /sys/fs/cgroup/unified",
            )
        self.path = root / "capsule" / name
        try:
            self.path.mkdir(parents=True)
        except OSError as err:
            raise CapsuleError(
                f"failed to create cgroup {self.path}: {err.strerror}"
            ) from err

    def fd(self) -> int:
        """An O_RDONLY directory fd, as BPF_PROG_ATTACH wants."""
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def add(self, pid: int) -> None:
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as err:
            raise CapsuleError(
                f"failed to move pid {pid} into {self.path}: {err.strerror}"
            ) from err

    def pids(self) -> list[int]:
        return cgroup_pids(self.path)

    def kill_all(self) -> None:
        """End whatever is left of the tree (cgroup.kill, or one SIGKILL each)."""
        kill_cgroup(self.path)

    def remove(self, wait_s: float = 2.0) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                break
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    log.warning(
                        "failed to remove cgroup %s: %s", self.path, err.strerror
                    )
                    return
                time.sleep(0.02)
        try:
            self.path.parent.rmdir()  # the shared "capsule" parent, when it is empty
        except OSError:
            pass


def cgroup_pids(path: Path) -> list[int]:
    """The processes in the cgroup at `path`; none when it is gone."""
    try:
        text = (path / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(line) for line in text.split()]


def kill_cgroup(path: Path, wait_s: float = 0.0) -> bool:
    """SIGKILL every process in the cgroup at `path`; True when it is then empty.

    cgroup.kill (Linux 5.14+) kills the whole cgroup at once, forks in flight
    included. Without it, one SIGKILL per listed pid, repeated while `wait_s`
    lasts, because a process can fork between the read of cgroup.procs and its kill.
    A process that leaves with setsid or a double fork is still in the cgroup.
    """
    deadline = time.monotonic() + wait_s
    try:
        (path / "cgroup.kill").write_text("1\n")
        has_kill = True
    except OSError:
        has_kill = False
    while True:
        pids = cgroup_pids(path)
        if not pids:
            return True
        if not has_kill:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
