"""seccomp: the filter the sandboxed child loads, and the supervisor that answers it.

The filter has three kinds of entries. A syscall that a rule denies outright gets an
errno; a syscall whose verdict depends on its arguments or on who calls it goes to the
supervisor (user notification), which decides with the policy's rule-combining and
answers with an errno or "continue"; a few syscalls can be matched on their flags in
the filter itself, so only the interesting calls are notified (W+X mmap/mprotect).
"""

import errno
import fcntl
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# include/uapi/linux/seccomp.h: _IOWR('!', 0, struct seccomp_notif) and friends
_NOTIF_SIZE = 80
_RESP_SIZE = 24
_IOCTL_NOTIF_RECV = 0xC0502100
_IOCTL_NOTIF_SEND = 0xC0182101
_IOCTL_NOTIF_ID_VALID = 0x40082102
_FLAG_CONTINUE = 1
_NOTIF = struct.Struct("=QII iI Q 6Q")  # id pid flags | nr arch ip args[6]
_RESP = struct.Struct("=QqiI")  # id val error flags
_NOTIFY_FD_LINK = "anon_inode:seccomp notify"

# syscalls newer than the installed headers or libseccomp, by number; numbers from 424
# on are the same on every architecture
NEW_SYSCALLS = {"fchmodat2": 452, "setxattrat": 463, "removexattrat": 466}

PROT_WRITE = 0x2
PROT_EXEC = 0x4

# include/uapi/linux/audit.h: the ABI of a notified syscall
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000


@dataclass
class ArgMatch:
    """Match `arg & mask == value` in the filter itself (libseccomp MASKED_EQ)."""

    index: int
    mask: int
    value: int


@dataclass
class FilterPlan:
    """What the child loads: plain data, so that it crosses the exec as JSON."""

    errno: dict[str, int] = field(default_factory=dict)  # syscall -> errno
    notify: dict[str, list[ArgMatch]] = field(default_factory=dict)  # [] = always
    kill: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "errno": self.errno,
            "notify": {
                name: [[m.index, m.mask, m.value] for m in args]
                for name, args in self.notify.items()
            },
            "kill": self.kill,
        }

    @classmethod
    def from_json(cls, data: dict) -> "FilterPlan":
        notify = {n: [ArgMatch(*m) for m in a] for n, a in data["notify"].items()}
        return cls(errno=data["errno"], notify=notify, kill=data["kill"])

    def empty(self) -> bool:
        return not (self.errno or self.notify or self.kill)


def load_filter(plan: FilterPlan) -> int | None:
    """Load the filter into the calling process; return the notification fd, if any.

    Needs no_new_privs or CAP_SYS_ADMIN; Landlock sets the former first.
    """
    import pyseccomp as sc  # the shim imports it before Landlock applies

    flt = sc.SyscallFilter(sc.ALLOW)
    if plan.notify:
        # a syscall of another ABI (int 0x80, x32) has numbers the rules do not
        # know: instead of a silent SIGSYS it goes to the supervisor, which records
        # it and kills the caller; the call never runs (without a supervisor the
        # kernel fails it with ENOSYS)
        flt.set_attr(sc.Attr.ACT_BADARCH, sc.NOTIFY)
    for name in plan.kill:
        flt.add_rule(sc.KILL_PROCESS, NEW_SYSCALLS.get(name, name))
    for name, err in plan.errno.items():
        flt.add_rule(sc.ERRNO(err), NEW_SYSCALLS.get(name, name))
    for name, matches in plan.notify.items():
        # the matches are alternatives (any one notifies): one filter rule each, as
        # the arguments of a single rule must all match
        number = NEW_SYSCALLS.get(name, name)
        if not matches:
            flt.add_rule(sc.NOTIFY, number)
        for m in matches:
            flt.add_rule(
                sc.NOTIFY, number, sc.Arg(m.index, sc.MASKED_EQ, m.mask, m.value)
            )
    flt.load()
    if not plan.notify:
        return None
    return _find_notify_fd()


def _find_notify_fd() -> int:
    # libseccomp keeps the listener fd inside the filter context; its Python binding
    # has no getter, so the fd is found by what it is: the kernel names it.
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == _NOTIFY_FD_LINK:
                return int(name)
        except OSError:
            continue
    raise OSError(errno.ENOENT, "no seccomp notification fd after loading the filter")


@dataclass
class Notification:
    """One syscall that waits for the supervisor's answer."""

    id: int
    pid: int
    nr: int
    args: tuple[int, ...]
    arch: int = AUDIT_ARCH_X86_64  # AUDIT_ARCH_I386 for an int 0x80 syscall

    @property
    def foreign(self) -> bool:
        """A 32-bit (int 0x80) or x32 syscall: not one of the filter's numbers."""
        return self.arch != AUDIT_ARCH_X86_64 or bool(self.nr & X32_SYSCALL_BIT)


# decide(notification) -> None to let the syscall run, or an errno to fail it with
Decider = Callable[[Notification], int | None]


class Supervisor:
    """Answers the sandbox's notifications on a thread until the fd closes.

    When the supervisor is gone the kernel fails every notified syscall with ENOSYS,
    so a crash here fails closed.
    """

    def __init__(self, fd: int, decide: Decider):
        self._fd = fd
        self._decide = decide
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(
            target=self._run, name="seccomp-supervisor", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def replace_decider(self, decide: Decider) -> None:
        """Decide the next notifications with `decide` (one assignment: atomic)."""
        self._decide = decide

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._stop_r, self._stop_w, self._fd):
            os.close(fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = dict(poller.poll())
            if self._stop_r in ready:
                return
            events = ready.get(self._fd, 0)
            if events & select.POLLIN:
                self._answer_one()
            elif events & (select.POLLHUP | select.POLLERR):
                return  # every process that held the filter has exited

    def _answer_one(self) -> None:
        buf = bytearray(_NOTIF_SIZE)
        try:
            fcntl.ioctl(self._fd, _IOCTL_NOTIF_RECV, buf, True)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.EINTR):
                return  # the caller died or was interrupted before we read it
            raise
        fields = _NOTIF.unpack(buf)
        note = Notification(
            id=fields[0],
            pid=fields[1],
            nr=fields[3],
            args=tuple(fields[6:12]),
            arch=fields[4],
        )
        try:
            err = self._decide(note)
        except Exception:  # a bug in deciding must not let the call through
            log.exception("failed to decide on syscall %d; denying it", note.nr)
            err = errno.EPERM
        self._respond(note.id, err)

    def _respond(self, note_id: int, err: int | None) -> None:
        if err is None:
            resp = _RESP.pack(note_id, 0, 0, _FLAG_CONTINUE)
        else:
            resp = _RESP.pack(note_id, 0, -err, 0)
        try:
            fcntl.ioctl(self._fd, _IOCTL_NOTIF_SEND, bytearray(resp), True)
        except OSError as err2:
            if err2.errno != errno.ENOENT:  # ENOENT: the caller is gone
                raise

    def still_valid(self, note_id: int) -> bool:
        """True while the notified syscall still waits: checks a /proc read was safe."""
        try:
            fcntl.ioctl(self._fd, _IOCTL_NOTIF_ID_VALID, struct.pack("=Q", note_id))
        except OSError:
            return False
        return True


def read_string(pid: int, address: int, limit: int = 4096) -> str | None:
    """A NUL-terminated string from the caller's memory, or None if unreadable."""
    if address == 0:
        return None
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(address)
            data = mem.read(limit)
    except (OSError, OverflowError, ValueError):
        return None
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
