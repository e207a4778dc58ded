"""Landlock's refusals as timeline events, each with the rule that decided it.

The raw_tp program in bpf/compat/denials.bpf.c reports file syscalls of the agent's
cgroup that failed with EACCES, EPERM or EXDEV, with their path arguments. Here each
report becomes the policy's (area, op, path), is decided again with the one
rule-combining semantics, and is named by the winning rule. A refusal that no rule
explains comes from Landlock's over-approximation (a split directory), and says so.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import struct
from collections.abc import Callable

from capsule.lang.model import Effect, Event, Policy
from capsule.lang.semantics import decide
from capsule.runtime import build, libbpf
from capsule.runtime.compat import files, kills
from capsule.runtime.compat.cgroup import AgentCgroup
from capsule.runtime.compat.landlock import FS
from capsule.runtime.names import syscall_name
from capsule.runtime.ringbuf import RingBuffer

log = logging.getLogger(__name__)

SOURCE = build.BPF_DIR / "compat" / "denials.bpf.c"
RINGBUF_SIZE = 256 * 1024
PATH_LEN = 256
# struct denial in denials.bpf.c; a test compares it with the object's BTF
RECORD = struct.Struct(f"=Qq4QIIII16s{PATH_LEN}s{PATH_LEN}s{PATH_LEN}s{PATH_LEN}s")
FIELDS = (
    "ts_ns",
    "ret",
    "args",
    "pid",
    "tid",
    "nr",
    "pad",
    "comm",
    "path",
    "path2",
    "base",
    "base2",
)
OVER_APPROXIMATION = "landlock:over-approximation"
_AT_FDCWD = -100
_PROC_ROOT = re.compile(r"/proc/(?:self|thread-self|\d+)/root(?:/+|\Z)")
_AT_REMOVEDIR = 0x200
_O_CREAT, _O_TRUNC = 0o100, 0o1000


def _open_ops(flags: int) -> list[str]:
    access = flags & 3
    ops = ["read"] if access in (0, 2) else []
    ops += ["write"] if access in (1, 2) else []
    ops += ["create"] if flags & _O_CREAT else []
    ops += ["truncate"] if flags & _O_TRUNC else []
    return ops


def candidates(name: str, args: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """(area, op, which path) that the refused syscall could have been."""
    if name in ("open", "openat", "creat", "openat2"):
        flags = {"open": args[1], "openat": args[2], "creat": 0o1101}.get(name)
        ops = _open_ops(flags) if flags is not None else ["read", "write"]
        return [("file", op, "path") for op in ops]
    if name in ("execve", "execveat"):
        return [("file", "exec", "path"), ("process", "exec", "path")]
    simple = {
        "truncate": "truncate",
        "mkdir": "mkdir",
        "mkdirat": "mkdir",
        "rmdir": "rmdir",
        "unlink": "delete",
        "mknod": "create",
        "mknodat": "create",
    }
    if name in simple:
        return [("file", simple[name], "path")]
    if name == "unlinkat":
        return [("file", "rmdir" if args[2] & _AT_REMOVEDIR else "delete", "path")]
    if name in ("rename", "renameat", "renameat2"):
        return [("file", "rename", "both")]
    if name in ("link", "linkat"):
        return [("file", "link", "both")]
    if name in ("symlink", "symlinkat"):
        return [("file", "symlink", "path2")]
    return []


def _dirfd(name: str, args: tuple[int, ...], second: bool) -> int:
    if not name.endswith("at") and name not in ("openat2", "renameat2", "execveat"):
        return _AT_FDCWD
    index = 2 if second and name != "symlinkat" else (1 if second else 0)
    value = args[index] & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def resolve(pid: int, path: str, dirfd: int, base: str = "") -> str:
    """The absolute path the caller meant; `base` is the directory the program found
    for a relative path (else /proc is asked, which fails once the caller is gone)."""
    if base and not path.startswith("/"):
        path = os.path.join(base, path)
    root = _PROC_ROOT.match(path)
    if root:  # the caller's root is ours: the same tree, read-only binds aside
        path = "/" + path[root.end() :]
    if path.startswith("/proc/self/"):
        path = f"/proc/{pid}/" + path[len("/proc/self/") :]
    if not path.startswith("/"):
        base = f"/proc/{pid}/cwd" if dirfd == _AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
        try:
            path = os.path.join(os.readlink(base), path)
        except OSError:
            return path
    parent, leaf = os.path.split(os.path.normpath(path))
    return (
        os.path.join(os.path.realpath(parent), leaf) if leaf else os.path.realpath(path)
    )


class DenialWatcher:
    """Reads the reports of one run and turns them into deny (or kill) events."""

    def __init__(
        self,
        policy: Policy,
        handled: FS,
        cgroup: AgentCgroup,
        report: Callable[[dict], None],
    ) -> None:
        self.policy = policy
        self.handled = handled
        self.report = report
        self.obj = libbpf.BpfObject(build.compile_bpf(SOURCE))
        self.link = None
        self.ring = None
        try:
            cgroup_id = os.stat(cgroup.path).st_ino  # a cgroup v2 id is its inode
            self.obj.set_rodata("targ_cgroup_id", struct.pack("=Q", cgroup_id))
            self.obj.load()
            self.ring = RingBuffer(self.obj.map("denials").fd, RINGBUF_SIZE)
            self.link = self.obj.program("report_denial").attach()
        except Exception:
            self.close()
            raise

    def poll(self, timeout_ms: int) -> None:
        for record in self.ring.poll(timeout_ms):
            values = RECORD.unpack_from(record)
            raw = dict(zip(FIELDS, values[:2] + (values[2:6],) + values[6:]))
            event = self.to_event(raw)
            if event is not None:
                self.report(event)

    def to_event(self, raw: dict) -> dict | None:
        name = syscall_name(raw["nr"])
        pid, args = raw["pid"], raw["args"]
        path = resolve(
            pid, _text(raw["path"]), _dirfd(name, args, False), _text(raw["base"])
        )
        path2 = _text(raw["path2"])
        path2 = (
            resolve(pid, path2, _dirfd(name, args, True), _text(raw["base2"]))
            if path2
            else None
        )
        if name in ("execve", "execveat") and raw["ret"] == -errno.EPERM:
            # Landlock refuses an exec with EACCES; EPERM is the seccomp supervisor's
            # (memory fileless-exec), which records that refusal itself
            return None
        decided = self._decide(name, args, path, path2)
        if decided is None:
            return None  # not Landlock's doing (a permission bit, a read-only mount)
        verdict, rule, area, op = decided
        killed = kills.outcome(pid) if verdict is Effect.KILL else {}
        event = killed | {
            "ts_ns": raw["ts_ns"],
            "pid": pid,
            "tid": raw["tid"],
            "comm": _text(raw["comm"]),
            "area": area,
            "op": op,
            "syscall": name,
            "path": path if name not in ("symlink", "symlinkat") else path2,
            "error": -raw["ret"],
            "error_name": errno.errorcode.get(-raw["ret"]),
            "verdict": str(verdict),
            "rule": rule,
        }
        if path2 and name not in ("symlink", "symlinkat"):
            event["new_path"] = path2
        return event

    def _decide(self, name, args, path, path2) -> tuple[Effect, str, str, str] | None:
        """(effect, rule, area, op) of the refusal; None when Landlock did not refuse.

        Each candidate op is decided on the path as named and as Landlock saw it (its
        symbolic links resolved); a blocking rule names the refusal before an area's
        default does. Only a refusal that no rule explains is Landlock's
        over-approximation.
        """
        handled, found = False, []
        for area, op, which in candidates(name, args):
            for key, value in _named_paths(which, path, path2):
                blocking = self._blocking(area, op, key, value)
                if blocking is not None:
                    found.append((*blocking, area, op))
            for entry in files.OP_RIGHTS.get((area, op), []):
                handled |= bool(entry[0] & self.handled)
        if found:
            # a rule of the policy before an area's default, then the strongest
            return max(found, key=_precedence)
        if not handled:
            return None
        for area, op, which in candidates(name, args):
            for key, value in _named_paths(which, path, path2):
                entries = self._blocking_entries(area, op, key, value)
                if entries is not None:
                    return (*entries, area, op)
        area, op, _ = candidates(name, args)[0]
        return Effect.DENY, OVER_APPROXIMATION, area, op

    def _blocking(
        self, area: str, op: str, key: str, path: str
    ) -> tuple[Effect, str] | None:
        """The blocking verdict and rule for the path, named or resolved, if any."""
        for value in dict.fromkeys([path, _resolved(path)]):
            decision = decide(self.policy, Event(area, op, {key: value}))
            clause = decision.clause
            effect = files.enforced(clause.rule) if clause else decision.enforced
            if effect.blocks:
                return effect, clause.rule.ref if clause else f"default:{area}"
        return None

    def _blocking_entries(
        self, area: str, op: str, key: str, path: str
    ) -> tuple[Effect, str] | None:
        """A rule that blocks every entry of the directory `path` (`D/**`, `D/*`):
        Landlock cannot grant D without granting them, so it refuses D as well."""
        directory = _resolved(path)
        if not os.path.isdir(directory):
            return None
        # no file name holds a NUL: only a pattern that covers any entry matches it
        probe = Event(area, op, {key: os.path.join(directory, "\0")})
        decision = decide(self.policy, probe)
        clause = decision.clause
        if clause is not None and files.enforced(clause.rule).blocks:
            return files.enforced(clause.rule), clause.rule.ref
        return None

    def close(self) -> None:
        if self.link is not None:
            self.link.destroy()
            self.link = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.obj.close()


def _precedence(found: tuple[Effect, str, str, str]) -> tuple[bool, int]:
    effect, rule, _, _ = found
    return not rule.startswith("default:"), effect.rank


def _named_paths(which: str, path: str, path2: str | None) -> list[tuple[str, str]]:
    """(policy field, path) for each path of the refused call that its op concerns."""
    if which == "both":
        return [("path", path)] + ([("to", path2)] if path2 else [])
    return [("path", path2 if which == "path2" and path2 else path)]


def _resolved(path: str) -> str:
    """The path with every symbolic link resolved, the last one included: the file
    Landlock checked (a link to a denied file is refused as that file)."""
    try:
        return os.path.realpath(path) if path.startswith("/") else path
    except (OSError, ValueError):
        return path


def _text(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def object_path():
    return build.compile_bpf(SOURCE)
