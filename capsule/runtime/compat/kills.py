"""The SIGKILL of a `kill` rule, and whether it reached a live process.

A kill rule's denial is seen after the fact (a ring buffer, a denial report), and by
then the caller may have exited: kill(2) on a pid that is gone fails, and on a zombie
it succeeds without killing anything. The summary counts only kills that reached a
live process, so each kill says whether it did.
"""

from __future__ import annotations

import os
import signal

EXITED = "the process had already exited"


def kill(pid: int) -> str | None:
    """SIGKILL `pid`: None when delivered to a live process, else why not.

    A pidfd pins the process between the check of its state and the signal, so a
    reused pid is never killed in its place.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return EXITED
    except OSError as err:
        return f"failed to kill {pid}: {err.strerror or err}"
    try:
        if _exiting(pid):
            return EXITED  # an exiting process or a zombie takes it: no kill
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return EXITED
    except OSError as err:
        return f"failed to kill {pid}: {err.strerror or err}"
    finally:
        os.close(pidfd)
    return None


def outcome(pid: int) -> dict:
    """The event keys that say whether the kill of `pid` was delivered."""
    failure = kill(pid)
    if failure is None:
        return {"killed": True}
    return {"killed": False, "kill_error": failure}


_PF_EXITING = 0x4  # include/linux/sched.h: set as the process starts to exit


def _exiting(pid: int) -> bool:
    """True when the process is gone, a zombie, or already on its way out."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return True
    # the command name in parentheses may itself hold spaces and parentheses;
    # after it: state, ppid, pgrp, session, tty_nr, tpgid, flags
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 7:
        return True
    return fields[0] in ("Z", "X") or bool(int(fields[6]) & _PF_EXITING)
