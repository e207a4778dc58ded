"""Kill the agent's tree when the runtime dies, whatever killed it.

`python -m capsule.runtime.compat.watchdog PIPE_FD CGROUP` blocks on the read end of
a pipe whose only write end the runtime holds (close-on-exec, so neither the shim
nor the agent has it). A runtime that ends normally writes one byte first and the
watchdog leaves the tree alone; EOF with no byte means the runtime is gone, SIGKILL
included, and the watchdog kills every process in CGROUP before it exits. Without
it, a dead runtime leaves the agent running with no network hooks, no kills and no
timeline.

The watchdog is started before CMD, in the runtime's cgroup and in a session of its
own: a Ctrl-C or a hangup on the runtime's terminal does not reach it, and the
agent cannot signal it, because Landlock scopes the agent's signals to its sandbox.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from capsule.runtime.compat.cgroup import kill_cgroup

log = logging.getLogger(__name__)

DISARM = b"d"  # the runtime's goodbye: it has ended the tree itself
KILL_WAIT_S = 5.0


def watch(pipe_fd: int, cgroup: Path) -> int:
    """Wait for the runtime; 0 when it disarmed us, 1 when it died and we killed."""
    try:
        word = os.read(pipe_fd, 1)
    except OSError:
        word = b""
    if word == DISARM:
        return 0
    emptied = kill_cgroup(cgroup, wait_s=KILL_WAIT_S)
    try:
        cgroup.rmdir()
    except OSError:
        pass  # still busy, or the runtime's cleanup got there first
    sys.stderr.write(
        "capsule: error: the runtime died; the watchdog killed the agent's tree"
        + ("" if emptied else f" (processes left in {cgroup})")
        + "\n"
    )
    return 1


class Watchdog:
    """The runtime's side: start the watchdog, and disarm it when done."""

    def __init__(self, cgroup: Path) -> None:
        read_fd, self._write_fd = os.pipe()  # both close-on-exec
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(read_fd), str(cgroup)],
                pass_fds=(read_fd,),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # no terminal signals, no group kill
            )
        except OSError:
            os.close(self._write_fd)
            raise
        finally:
            os.close(read_fd)
        log.info("watchdog %d guards %s", self.process.pid, cgroup)

    def disarm(self) -> None:
        """The tree is ended: let the watchdog exit without touching it."""
        if self._write_fd < 0:
            return
        try:
            os.write(self._write_fd, DISARM)
        except OSError:
            pass  # it died: nothing is waiting for the byte
        os.close(self._write_fd)
        self._write_fd = -1
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("watchdog %d did not exit; leaving it", self.process.pid)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        sys.stderr.write("usage: watchdog PIPE_FD CGROUP\n")
        return 2
    # only the pipe ends the watch: the runtime's terminal and the agent have no say
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    return watch(int(argv[0]), Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
