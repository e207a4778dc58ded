"""Operations only a syscall shows: seccomp entries, and the supervisor's decisions.

mount, ptrace, unshare, the setuid family and the like have no Landlock right and no
cgroup hook. The child's seccomp filter sends these syscalls to the supervisor, which
reads the arguments, builds the policy Event and decides with the one rule-combining
semantics, subject conditions included. A syscall whose rules all have no object and
no subject condition gets its errno in the filter itself, with no round trip.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from capsule.lang import names
from capsule.lang.model import (
    ANY_OBJECT,
    DEFAULT_FALLBACK,
    Clause,
    Effect,
    Event,
    Policy,
)
from capsule.lang.semantics import Decision, decide
from capsule.runtime.compat import kills
from capsule.runtime.compat.files import enforced
from capsule.runtime.compat.seccomp import (
    AUDIT_ARCH_X86_64,
    NEW_SYSCALLS,
    PROT_EXEC,
    PROT_WRITE,
    X32_SYSCALL_BIT,
    ArgMatch,
    FilterPlan,
    Notification,
    read_string,
)

log = logging.getLogger(__name__)

_WX = [ArgMatch(2, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC)]
_NEW_MOUNT_API = [
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "mount_setattr",
]

# (area, op) -> {syscall: arguments that must match for the call to concern the op}
SYSCALLS: dict[tuple[str, str], dict[str, list[ArgMatch]]] = {
    ("system", "mount"): {"mount": [], **{name: [] for name in _NEW_MOUNT_API}},
    ("system", "umount"): {"umount2": []},
    ("system", "chroot"): {"chroot": []},
    ("system", "pivot-root"): {"pivot_root": []},
    ("ipc", "ptrace"): {"ptrace": []},
    ("ipc", "vm-write"): {"process_vm_writev": []},
    ("ipc", "pipe"): {"pipe": [], "pipe2": []},
    ("ipc", "shm"): {"shmget": [], "shmat": []},
    ("ipc", "msgq"): {"msgget": [], "msgsnd": []},
    ("ipc", "sem"): {"semget": [], "semop": []},
    ("namespace", "unshare"): {"unshare": []},
    ("namespace", "setns"): {"setns": []},
    ("namespace", "setrlimit"): {"setrlimit": [], "prlimit64": []},
    ("creds", "setuid"): {
        n: [] for n in ("setuid", "setreuid", "setresuid", "setfsuid")
    },
    ("creds", "setgid"): {
        n: [] for n in ("setgid", "setregid", "setresgid", "setfsgid", "setgroups")
    },
    ("creds", "capset"): {"capset": []},
    ("memory", "memfd"): {"memfd_create": []},
    ("memory", "module-load"): {"init_module": [], "finit_module": []},
    ("memory", "bpf"): {"bpf": []},
    ("memory", "wx"): {"mmap": _WX, "mprotect": _WX, "pkey_mprotect": _WX},
    ("process", "setsid"): {"setsid": []},
    ("memory", "fileless-exec"): {"execve": [], "execveat": []},
    ("signal", "send"): {
        n: []
        for n in (
            "kill",
            "tkill",
            "tgkill",
            "rt_sigqueueinfo",
            "rt_tgsigqueueinfo",
            "pidfd_send_signal",
        )
    },
}
# File metadata has no Landlock right, so these calls go to the supervisor, which
# resolves the path they name. Extended attributes count as `file chmod` (an xattr such
# as security.capability grants privileges, as a mode bit does); setting times counts
# as `file write`.
_XATTR = ("setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr")
SYSCALLS[("file", "chmod")] = {
    n: []
    for n in ("chmod", "fchmod", "fchmodat", "fchmodat2", *_XATTR)
    + ("fremovexattr", "setxattrat", "removexattrat")
}
SYSCALLS[("file", "chown")] = {n: [] for n in ("chown", "fchown", "lchown", "fchownat")}
SYSCALLS[("file", "write")] = {
    n: [] for n in ("utime", "utimes", "futimesat", "utimensat")
}
METADATA_OPS = {("file", "chmod"), ("file", "chown"), ("file", "write")}

# Host administration that no policy operation names and no agent needs: denied with
# EPERM (and recorded) whenever self-protection is on.
HOST_ADMIN = (
    "sethostname",
    "setdomainname",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "swapon",
    "swapoff",
    "acct",
    "iopl",
    "ioperm",
    "quotactl",
    "lookup_dcookie",
    "perf_event_open",
)
HOST_ADMIN_OWNER = ("system", "host-admin")
HOST_ADMIN_RULE = "builtin:host-admin"
# a syscall of another ABI: the filter sends it to the supervisor, which kills
FOREIGN_ABI_OWNER = ("system", "32-bit-syscall")
FOREIGN_ABI_RULE = "builtin:32-bit-syscall"

# clone with a CLONE_NEW* flag: one filter entry per flag, as the filter can only
# compare masked values for equality
SYSCALLS[("namespace", "clone")] = {
    "clone": [ArgMatch(0, flag, flag) for flag in names.NAMESPACES.values()]
}


def _enforced(decision: Decision) -> Effect:
    return decision.enforced or DEFAULT_FALLBACK


def needs_notify(policy: Policy, area: str, op: str) -> bool:
    """True unless every clause of the op is unconditional (one static verdict)."""
    for clause in policy.clauses(area):
        rule = clause.rule
        if op not in rule.ops:
            continue
        if clause.object != ANY_OBJECT or not rule.subject.is_any:
            return True
        if rule.effect in (Effect.AUDIT, Effect.KILL, Effect.ESCALATE):
            return True  # these need the event (and the kill) from the supervisor
    return False


def static_verdict(policy: Policy, area: str, op: str) -> Decision:
    return decide(policy, Event(area, op, {}))


def filter_plan(
    policy: Policy, host_admin: bool = False
) -> tuple[FilterPlan, dict[str, tuple[str, str]]]:
    """The seccomp filter for the ops that have rules, and syscall -> (area, op).

    Every syscall that a rule may deny goes to the supervisor, even when its verdict
    is fixed: the supervisor names the deciding rule in the timeline, which an errno
    in the filter could not. These syscalls are rare, so the round trip is cheap.
    """
    plan = FilterPlan()
    owner: dict[str, tuple[str, str]] = {}
    for (area, op), syscalls in SYSCALLS.items():
        relevant = any(op in c.rule.ops for c in policy.clauses(area))
        if not relevant and not policy.default(area).blocks:
            continue
        if not needs_notify(policy, area, op):
            if not _enforced(static_verdict(policy, area, op)).blocks:
                continue  # allowed whatever the arguments: nothing to filter
        for name, matches in syscalls.items():
            owner[name] = (area, op)
            plan.notify.setdefault(name, []).extend(matches)
    if owner.get("clone") == ("namespace", "clone"):
        # clone3 passes its flags in memory that a filter cannot read: make the C
        # library fall back to clone, whose flags the filter sees
        plan.errno["clone3"] = errno.ENOSYS
    if host_admin:
        for name in HOST_ADMIN:  # notified, not an errno: the denial is recorded
            owner[name] = HOST_ADMIN_OWNER
            plan.notify[name] = []
    return plan, owner


# -- the supervisor's side -------------------------------------------------------------


@dataclass
class Verdict:
    """A decision on one notified syscall, ready for the timeline."""

    event: dict
    effect: Effect
    rule: str | None


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def _ppid_uid(pid: int) -> tuple[int, int | None]:
    ppid, uid = 0, None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("PPid:"):
                    ppid = int(line.split()[1])
                elif line.startswith("Uid:"):
                    uid = int(line.split()[1])
    except OSError:
        pass
    return ppid, uid


def _ancestors(pid: int) -> tuple[str, ...]:
    found, seen = [], set()
    ppid, _ = _ppid_uid(pid)
    while ppid > 1 and ppid not in seen:
        seen.add(ppid)
        exe = _exe(ppid)
        if exe:
            found.append(exe)
        ppid, _ = _ppid_uid(ppid)
    return tuple(found)


def _uid_args(values: tuple[int, ...]) -> list[dict]:
    # (uid_t)-1 means "leave unchanged": not a uid the call sets
    return [{"uid": v} for v in values if v & 0xFFFFFFFF != 0xFFFFFFFF]


def _ns_flags(flags: int) -> list[dict]:
    return [{"ns": name} for name, bit in names.NAMESPACES.items() if flags & bit]


def _mount_flags(flags: int) -> set[str]:
    return {name for name, bit in names.MOUNT_FLAGS.items() if flags & bit}


_AT_EMPTY_PATH = 0x1000
_FD_PATH = re.compile(r"/(?:proc/(self|thread-self|\d+)|dev)/fd/(\d+)\Z")


def fileless_target(syscall: str, note: Notification) -> str | None:
    """What an exec runs when it has no path in a file system (a memfd, a deleted
    file), through execveat(fd, "", AT_EMPTY_PATH) or /proc/self/fd/N; else None."""
    a, pid = note.args, note.pid
    path = read_string(pid, a[1] if syscall == "execveat" else a[0])
    if syscall == "execveat" and not path and a[4] & _AT_EMPTY_PATH:
        link = f"/proc/{pid}/fd/{a[0] & 0xFFFFFFFF}"
    else:
        match = _FD_PATH.match(path or "")
        if not match:
            return None
        link = f"/proc/{pid}/fd/{match.group(2)}"
    try:
        target = os.readlink(link)
    except OSError:
        return None
    if target.startswith("/memfd:") or target.endswith(" (deleted)"):
        return target
    return None


_AT_FDCWD = 0xFFFFFF9C  # -100 as the 32-bit int the kernel reads
_AT_SYMLINK_NOFOLLOW = 0x100

# syscall -> (dirfd argument, or None: relative to the cwd; path argument, or None:
# the fd form; flags argument, or None; follows a final symbolic link by default)
_METADATA_ARGS = {
    "chmod": (None, 0, None, True),
    "fchmod": (0, None, None, True),
    "fchmodat": (0, 1, None, True),
    "fchmodat2": (0, 1, 3, True),
    "chown": (None, 0, None, True),
    "lchown": (None, 0, None, False),
    "fchown": (0, None, None, True),
    "fchownat": (0, 1, 4, True),
    "utime": (None, 0, None, True),
    "utimes": (None, 0, None, True),
    "futimesat": (0, 1, None, True),
    "utimensat": (0, 1, 3, True),
    "setxattr": (None, 0, None, True),
    "lsetxattr": (None, 0, None, False),
    "fsetxattr": (0, None, None, True),
    "removexattr": (None, 0, None, True),
    "lremovexattr": (None, 0, None, False),
    "fremovexattr": (0, None, None, True),
    "setxattrat": (0, 1, 2, True),
    "removexattrat": (0, 1, 2, True),
}


def _fd_path(pid: int, fd: int) -> str | None:
    """The path behind the caller's descriptor (its cwd for AT_FDCWD)."""
    fd &= 0xFFFFFFFF
    link = f"/proc/{pid}/cwd" if fd == _AT_FDCWD else f"/proc/{pid}/fd/{fd}"
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return target.removesuffix(" (deleted)")


def metadata_paths(syscall: str, note: Notification) -> list[str] | None:
    """The file a chmod/chown/utime/xattr call changes: as named, and with its
    symbolic links resolved (both are decided; the stronger verdict wins)."""
    dirfd_arg, path_arg, flags_arg, follow = _METADATA_ARGS[syscall]
    a, pid = note.args, note.pid
    name = ""
    if path_arg is not None and a[path_arg]:
        name = read_string(pid, a[path_arg])
        if name is None:
            return None
    if not name:  # the fd form, a NULL path (utimensat) or AT_EMPTY_PATH
        target = _fd_path(pid, a[dirfd_arg]) if dirfd_arg is not None else None
        return [target] if target else None
    base = _fd_path(pid, _AT_FDCWD if dirfd_arg is None else a[dirfd_arg])
    if base is None:
        return None
    named = os.path.normpath(os.path.join(base, name))
    if flags_arg is not None and a[flags_arg] & _AT_SYMLINK_NOFOLLOW:
        follow = False
    if follow:
        resolved = os.path.realpath(os.path.join(base, name))
    else:
        head, tail = os.path.split(os.path.join(base, name))
        resolved = os.path.join(os.path.realpath(head), tail)
    return list(dict.fromkeys([named, resolved]))


# where the new mode, owner or attribute name is, for the timeline
_MODE_ARG = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2}
_OWNER_ARGS = {"chown": 1, "fchown": 1, "lchown": 1, "fchownat": 2}
_XATTR_NAME_ARG = {"setxattrat": 3, "removexattrat": 3}


def metadata_details(syscall: str, note: Notification) -> dict:
    """The new mode, owner or the attribute's name: what the call would change."""
    a = note.args
    if syscall in _MODE_ARG:
        return {"arg": a[_MODE_ARG[syscall]] & 0o7777}
    if syscall in _OWNER_ARGS:
        i = _OWNER_ARGS[syscall]
        uid, gid = (v & 0xFFFFFFFF for v in a[i : i + 2])
        return {"owner_uid": uid, "owner_gid": gid}  # 4294967295: unchanged
    if "xattr" in syscall:
        return {"xattr": read_string(note.pid, a[_XATTR_NAME_ARG.get(syscall, 1)])}
    return {}


def _fields(syscall: str, note: Notification) -> list[dict] | None:
    """The policy fields of the call; one dict per value the call sets; None when the
    arguments cannot be read (then only rules without objects can allow it)."""
    a, pid = note.args, note.pid
    if syscall in _METADATA_ARGS:
        paths = metadata_paths(syscall, note)
        return None if paths is None else [{"path": p} for p in paths]
    if syscall == "mount":
        return [
            {
                "path": read_string(pid, a[1]),
                "fstype": read_string(pid, a[2]),
                "flags": _mount_flags(a[3]),
            }
        ]
    if syscall in ("umount2", "chroot", "pivot_root"):
        return [{"path": read_string(pid, a[0])}]
    if syscall in ("ptrace", "process_vm_writev"):
        if syscall == "ptrace":
            target = _ppid_uid(pid)[0] if a[0] == 0 else a[1]  # 0: PTRACE_TRACEME
        else:
            target = a[0]
        return [{"target": _exe(target & 0xFFFFFFFF)}]
    if syscall in ("unshare", "clone"):
        return _ns_flags(a[0]) or [{}]
    if syscall == "setns":
        return _ns_flags(a[1]) or None
    if syscall in ("setuid", "setfsuid", "setreuid", "setresuid"):
        count = {"setuid": 1, "setfsuid": 1, "setreuid": 2, "setresuid": 3}[syscall]
        return _uid_args(a[:count]) or [{}]
    if syscall in ("setgid", "setfsgid", "setregid", "setresgid"):
        count = {"setgid": 1, "setfsgid": 1, "setregid": 2, "setresgid": 3}[syscall]
        return [{"gid": u["uid"]} for u in _uid_args(a[:count])] or [{}]
    if syscall in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        target, sig = (
            (a[1], a[2]) if syscall in ("tgkill", "rt_tgsigqueueinfo") else (a[0], a[1])
        )
        target = target & 0xFFFFFFFF
        if target == 0 or target >= 0x80000000:  # a process group or everyone
            return None
        return [{"signal": sig & 0xFF, "target": _exe(target)}]
    return None


def _unreadable_blocks(policy: Policy, area: str, op: str) -> Clause | None:
    """A blocking clause with an object: with unreadable arguments it may match."""
    for clause in policy.clauses(area):
        if op in clause.rule.ops and enforced(clause.rule).blocks:
            return clause
    return None


def make_decider(
    policy: Policy, owner: dict[str, tuple[str, str]], report: Callable[[Verdict], None]
) -> Callable[[Notification], int | None]:
    """The supervisor's callback: decide, report the event, answer the kernel."""
    from capsule.runtime.names import syscall_name

    by_number = {nr: name for name, nr in NEW_SYSCALLS.items()}

    def decide_one(note: Notification) -> int | None:
        if note.foreign:
            return _foreign_abi(note, report)
        syscall = by_number.get(note.nr) or syscall_name(note.nr)
        area, op = owner.get(syscall, ("system", "?"))
        if (area, op) == HOST_ADMIN_OWNER:
            verdict = Verdict(
                _base(area, op, syscall, note), Effect.DENY, HOST_ADMIN_RULE
            )
        else:
            verdict = _decide(policy, area, op, syscall, note)
        if verdict.effect is Effect.KILL:
            verdict.event |= kills.outcome(note.pid)  # before the report: it says so
        if verdict.effect is not Effect.ALLOW:
            report(verdict)
        return errno.EPERM if verdict.effect.blocks else None

    return decide_one


def _foreign_abi(note: Notification, report: Callable[[Verdict], None]) -> int:
    """An int 0x80 or x32 syscall: the agent never needs one, and its numbers would
    slip past every rule. Killed and recorded, whatever the policy says."""
    from capsule.runtime.names import syscall_name

    abi = "x32" if note.arch == AUDIT_ARCH_X86_64 else "32-bit"
    nr = note.nr & ~X32_SYSCALL_BIT
    syscall = _i386_name(nr) if abi == "32-bit" else syscall_name(nr)
    event = _base(*FOREIGN_ABI_OWNER, syscall, note)
    event |= {"abi": abi, "syscall_nr": nr} | kills.outcome(note.pid)
    report(Verdict(event, Effect.KILL, FOREIGN_ABI_RULE))
    return errno.ENOSYS  # the caller is already dead: it never sees this


def _i386_name(nr: int) -> str:
    # a generated table of names only: no import of the ml package's code
    from capsule.ml.i386_syscalls import I386_SYSCALLS

    return I386_SYSCALLS.get(nr, str(nr))


def _base(area: str, op: str, syscall: str, note: Notification) -> dict:
    """The event keys every supervisor decision carries."""
    _, uid = _ppid_uid(note.pid)
    return {
        "area": area,
        "op": op,
        "pid": note.pid,
        "syscall": syscall,
        "exe": _exe(note.pid),
        "uid": uid,
        "comm": _comm(note.pid),
    }


def _decide(
    policy: Policy, area: str, op: str, syscall: str, note: Notification
) -> Verdict:
    base = _base(area, op, syscall, note)
    if syscall in _METADATA_ARGS:
        base |= metadata_details(syscall, note)
    subject = dict(exe=base["exe"], ancestors=_ancestors(note.pid), uid=base["uid"])
    if op == "fileless-exec":
        target = fileless_target(syscall, note)
        if target is None:
            return Verdict(base, Effect.ALLOW, None)  # an ordinary exec
        base["path"] = target
        field_sets = [{"path": target}]
    else:
        field_sets = _fields(syscall, note)
    if field_sets is None:
        clause = _unreadable_blocks(policy, area, op)
        if clause is not None:
            return Verdict(base, enforced(clause.rule), clause.rule.ref)
        field_sets = [{}]
    strongest: tuple[Effect, str | None, dict] = (Effect.ALLOW, None, {})
    for fields in field_sets:
        decision = decide(policy, Event(area, op, fields, **subject))
        effect = _enforced(decision)
        if decision.effect in (Effect.AUDIT, Effect.ESCALATE) and not effect.blocks:
            effect = Effect.AUDIT  # allowed, and recorded
        if effect.rank >= strongest[0].rank:
            ref = decision.clause.rule.ref if decision.clause else f"default:{area}"
            strongest = (effect, ref, fields)
    event = base | {EVENT_KEYS.get(k, k): _plain(v) for k, v in strongest[2].items()}
    return Verdict(event, strongest[0], strongest[1])


# policy field -> event key, where the policy's name is taken by the event header
EVENT_KEYS = {
    "uid": "new_uid",
    "gid": "new_gid",
    "flags": "mount_flags",
    "target": "target_exe",
    "signal": "sig",
    "to": "new_path",
}


def _plain(value):
    return sorted(value) if isinstance(value, set) else value

