"""Enrichment: turn the kernel's terse events into ones a person can read.

The kernel sends numbers (pids, fds, sockaddrs, device numbers, signal numbers); user
space adds the process tree with executable, argv, cwd, user and start time, fd paths,
address:port, names, the cgroup or container, and marks writes to persistence paths.

A process is keyed by (pid, start time), never by pid alone: a pid that is reused
during a run starts a new entry, so its events never borrow an earlier owner's argv.
"""

import ipaddress
import logging
import os
import pwd
import re
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from capsule.lang.names import AREAS
from capsule.runtime import names

log = logging.getLogger(__name__)

PROC = Path("/proc")


# -- clocks -----------------------------------------------------------------------


def _boot_to_monotonic_ns() -> int:
    """What to subtract from a CLOCK_BOOTTIME reading to get CLOCK_MONOTONIC.

    /proc/<pid>/stat gives start times since boot (suspend included); events carry
    CLOCK_MONOTONIC, which stops during suspend.
    """
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


# -- the process table ------------------------------------------------------------


@dataclass
class Proc:
    """One process incarnation: a pid from its start until its exit."""

    pid: int
    start_ns: int
    ppid: int = 0
    parent: "Proc | None" = None
    comm: str = ""
    exe: str | None = None
    argv: list[str] | None = None
    cwd: str | None = None
    uid: int | None = None
    exit_ns: int | None = None
    fds: dict[int, str] = field(default_factory=dict)

    _context: dict | None = None

    def context(self) -> dict:
        """The keys enrichment adds to each of this process's events (cached)."""
        if self._context is None:
            self._context = {
                "proc_start_ns": self.start_ns,
                "depth": self.depth,
                "exe": self.exe,
                "argv": self.argv,
                "cwd": self.cwd,
            }
        return self._context

    def changed(self) -> None:
        self._context = None

    @property
    def depth(self) -> int:
        """How many traced ancestors this process has (0 for the traced command)."""
        depth, node = 0, self.parent
        while node is not None:
            depth, node = depth + 1, node.parent
        return depth


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, ppid, start ticks since boot) from /proc/<pid>/stat, or None if gone."""
    try:
        text = (
            (PROC / str(pid) / "stat").read_bytes().decode("utf-8", "surrogateescape")
        )
    except OSError:
        return None
    # comm is in parentheses and may itself contain ") ", so split at the last one
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    return head.partition("(")[2], int(fields[1]), int(fields[19])


def _read_argv(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]] or None


def snapshot_process(pid: int) -> Proc | None:
    """Read what /proc knows about a live process; None if it has already gone."""
    stat_fields = _read_stat(pid)
    if stat_fields is None:
        return None
    comm, ppid, ticks = stat_fields
    start_ns = ticks * _TICK_NS - _boot_to_monotonic_ns()
    base = PROC / str(pid)
    try:
        uid = (base).stat().st_uid
    except OSError:
        uid = None
    return Proc(
        pid=pid,
        start_ns=start_ns,
        ppid=ppid,
        comm=comm,
        uid=uid,
        exe=_readlink(base / "exe"),
        argv=_read_argv(pid),
        cwd=_readlink(base / "cwd"),
    )


class ProcessTable:
    """Every process seen in a run, keyed by (pid, start time)."""

    def __init__(self) -> None:
        self._by_pid: dict[int, list[Proc]] = {}

    def __iter__(self):
        for incarnations in self._by_pid.values():
            yield from incarnations

    def _add(self, proc: Proc) -> Proc:
        self._by_pid.setdefault(proc.pid, []).append(proc)
        return proc

    def get(self, pid: int, ts_ns: int) -> Proc | None:
        """The incarnation of `pid` that was alive at `ts_ns`."""
        for proc in reversed(self._by_pid.get(pid, ())):
            if proc.start_ns <= ts_ns:
                return proc
        return None

    def latest(self, pid: int) -> Proc | None:
        incarnations = self._by_pid.get(pid)
        return incarnations[-1] if incarnations else None

    def add_root(self, pid: int) -> Proc:
        """Register the traced command itself, read from /proc before it runs."""
        proc = snapshot_process(pid) or Proc(pid=pid, start_ns=time.monotonic_ns())
        proc.parent = None
        return self._add(proc)

    def fork(self, parent: Proc | None, child_pid: int, ts_ns: int) -> Proc:
        """A new process: it starts with its parent's image, cwd and fds."""
        child = Proc(pid=child_pid, start_ns=ts_ns, parent=parent)
        if parent is not None:
            child.ppid, child.comm, child.uid = parent.pid, parent.comm, parent.uid
            child.exe, child.argv, child.cwd = parent.exe, parent.argv, parent.cwd
            child.fds = dict(parent.fds)
        return self._add(child)

    def seen(self, pid: int, ppid: int, ts_ns: int) -> Proc:
        """A process first met through one of its events (its fork was not seen)."""
        proc = snapshot_process(pid)
        if proc is None or proc.start_ns > ts_ns:  # gone, or pid already reused
            proc = Proc(pid=pid, start_ns=ts_ns, ppid=ppid)
        proc.parent = self.get(ppid, ts_ns)
        return self._add(proc)

    def live_pids(self) -> set[int]:
        return {p.pid for p in self if p.exit_ns is None}


# -- users, cgroups, devices ------------------------------------------------------


class UserNames:
    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, uid: int) -> str:
        if uid not in self._cache:
            try:
                self._cache[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._cache[uid] = str(uid)
        return self._cache[uid]


def cgroup2_mount() -> Path | None:
    """Where the unified (v2) cgroup hierarchy is mounted, hybrid layouts included."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        pre, _, post = line.partition(" - ")
        if post.split()[:1] == ["cgroup2"]:
            return Path(pre.split()[4])
    return None


_CONTAINER_PATTERNS = (
    re.compile(r"docker-([0-9a-f]{12,64})\.scope"),
    re.compile(r"/docker/([0-9a-f]{12,64})"),
    re.compile(r"libpod-([0-9a-f]{12,64})\.scope"),
    re.compile(r"cri-containerd-([0-9a-f]{12,64})\.scope"),
    re.compile(r"/kubepods[^ ]*?/pod[^/]+/([0-9a-f]{12,64})"),
    re.compile(r"lxc\.payload\.([^/]+)"),
)


def container_of(cgroup_path: str) -> str | None:
    """A short container id from a cgroup path, or None outside known runtimes."""
    for pattern in _CONTAINER_PATTERNS:
        match = pattern.search(cgroup_path)
        if match:
            return match.group(1)[:12]
    return None


class CgroupNames:
    """cgroup id -> path below the v2 mount; a cgroup2 id is its directory's inode."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root or cgroup2_mount()
        self._paths: dict[int, str] = {}

    def _rescan(self) -> None:
        if self._root is None:
            return
        for dirpath, _dirs, _files in os.walk(self._root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            self._paths[ino] = "/" + os.path.relpath(dirpath, self._root).lstrip(".")

    def __call__(self, cgroup_id: int) -> str | None:
        if cgroup_id and cgroup_id not in self._paths:
            self._rescan()  # a cgroup made during the run
            self._paths.setdefault(cgroup_id, None)
        return self._paths.get(cgroup_id)


# driver names from /proc/devices -> the device class a policy speaks of
_DEVICE_CLASSES = (
    (
        "tty",
        re.compile(
            r"^(tty\w*|/dev/tty|/dev/console|/dev/ptmx|/dev/vc/\d+|pts|ptm|vcs)$"
        ),
    ),
    ("gpu", re.compile(r"^(drm|nvidia\w*|kfd|dri|accel)$")),
    ("usb", re.compile(r"^(usb\w*|usbmon|usb_device|hidraw)$")),
    (
        "disk",
        re.compile(r"^(sd|nvme|blkext|virtblk|device-mapper|md|sr|loop|zram|mmc|dm)$"),
    ),
)
# devices that live under the shared misc major (10) have fixed minors
_MISC_MINORS = {232: "kvm", 200: "tun"}
MISC_MAJOR = 10
# majors fixed by the kernel's device list, known even before a driver loads
_FIXED_MAJORS = {4: "tty", 5: "tty", 180: "usb", 189: "usb", 195: "gpu", 226: "gpu"}


def _proc_devices() -> tuple[dict[int, str], dict[int, str]]:
    char, block, table = {}, {}, None
    try:
        lines = Path("/proc/devices").read_text().splitlines()
    except OSError:
        return char, block
    for line in lines:
        if line.startswith("Character"):
            table = char
        elif line.startswith("Block"):
            table = block
        elif line.strip() and table is not None:
            major, _, name = line.strip().partition(" ")
            table.setdefault(int(major), name)
    return char, block


class DeviceClasses:
    """major:minor -> kvm, tun, gpu, disk, tty, usb or None."""

    def __init__(self) -> None:
        self._char, self._block = _proc_devices()

    def __call__(self, major: int, minor: int, block: bool = False) -> str | None:
        if block:
            return "disk"
        if major == MISC_MAJOR:
            return _MISC_MINORS.get(minor)
        if 136 <= major <= 143:  # Unix98 pty slaves span eight majors
            return "tty"
        if major in _FIXED_MAJORS:
            return _FIXED_MAJORS[major]
        driver = self._char.get(major, "")
        for name, pattern in _DEVICE_CLASSES:
            if pattern.match(driver):
                return name
        return None


def split_dev(dev: int) -> tuple[int, int]:
    """The kernel's internal dev_t (12-bit major, 20-bit minor) -> (major, minor)."""
    return dev >> 20, dev & 0xFFFFF


# -- addresses --------------------------------------------------------------------


def format_sockaddr(family: int, addr: bytes | str | int, port: int) -> str:
    """ "127.0.0.1:80", "[::1]:443", "/run/x.sock"; IPv4-mapped IPv6 shown as IPv4."""
    if family == socket.AF_UNIX:
        text = (
            addr.decode("utf-8", "surrogateescape") if isinstance(addr, bytes) else addr
        )
        return text.rstrip("\0") or "(unnamed)"
    if family == socket.AF_INET:
        ip = ipaddress.IPv4Address(addr[:4] if isinstance(addr, bytes) else addr)
        return f"{ip}:{port}"
    if family == socket.AF_INET6:
        ip6 = ipaddress.IPv6Address(addr[:16] if isinstance(addr, bytes) else addr)
        if ip6.ipv4_mapped is not None:
            return f"{ip6.ipv4_mapped}:{port}"
        return f"[{ip6}]:{port}"
    return f"family {family}"


# -- persistence paths ------------------------------------------------------------

_HOME = r"(?:/root|/home/[^/]+)"
PERSIST_PATTERNS = (
    (
        "shell-rc",
        re.compile(
            _HOME + r"/\.(?:bashrc|bash_profile|bash_login|bash_logout|profile|zshrc|"
            r"zprofile|zshenv|zlogin)$"
        ),
    ),
    ("shell-rc", re.compile(r"/etc/(?:profile|bash\.bashrc|zsh/\w+|environment)$")),
    ("shell-rc", re.compile(r"/etc/profile\.d/[^/]+$")),
    (
        "cron",
        re.compile(r"/etc/(?:crontab|cron\.(?:d|hourly|daily|weekly|monthly)/[^/]+)$"),
    ),
    ("cron", re.compile(r"/var/spool/cron/(?:.+/)?[^/]+$")),
    ("systemd", re.compile(r"/(?:etc|usr/lib|lib|run)/systemd/(?:system|user)/.+$")),
    ("systemd", re.compile(_HOME + r"/\.config/systemd/user/.+$")),
    ("authorized-keys", re.compile(_HOME + r"/\.ssh/authorized_keys2?$")),
    (
        "authorized-keys",
        re.compile(r"/etc/ssh/(?:sshd_config(?:\.d/.+)?|authorized_keys.*)$"),
    ),
    ("ld-preload", re.compile(r"/etc/ld\.so\.(?:preload|conf(?:\.d/.+)?)$")),
    ("init", re.compile(r"/etc/(?:rc\.local|init\.d/[^/]+|rc\d\.d/[^/]+)$")),
)
# the file opens the kernel may fold repeats of into a `repeat` event
OPEN_OPS = frozenset({"read", "write", "create"})
# the file operations that leave something behind at the target path
PERSIST_OPS = frozenset(
    {"write", "create", "rename", "link", "symlink", "truncate", "chmod"}
)


def persistence_class(path: str) -> str | None:
    """Which persistence mechanism a path belongs to, or None."""
    for name, pattern in PERSIST_PATTERNS:
        if pattern.match(path):
            return name
    return None


# -- the enricher -----------------------------------------------------------------

# kind-specific fields of capsule/events/schema.py that enrichment reads
SOCKET_FAMILY = "family"


class Enricher:
    """Adds context to decoded events, in the order the kernel sent them."""

    def __init__(self, cgroups: CgroupNames | None = None) -> None:
        self.procs = ProcessTable()
        self.users = UserNames()
        self.cgroups = cgroups or CgroupNames()
        self.devices = DeviceClasses()
        self._cgroup_cache: dict[int, dict | None] = {}
        # per thread, its last open event: (ts_ns, path), which a repeat event names
        self._last_open: dict[int, tuple[int, str]] = {}
        self._resolvers = {
            area: getattr(self, "_resolve_" + area, _no_names) for area in AREAS
        }

    def add_root(self, pid: int) -> Proc:
        return self.procs.add_root(pid)

    def enrich(self, event: dict) -> list[dict]:
        """The event with its context, plus any event derived from it.

        This runs for every event, so lookups are cached and the common path is flat.
        """
        proc = self._track(event)
        event.update(proc.context())
        event["user"] = self.users(event.get("uid", 0))
        cgroup_id = event.get("cgroup_id", 0)
        cgroup = self._cgroup_cache.get(cgroup_id) or self._cgroup_context(cgroup_id)
        if cgroup:
            event.update(cgroup)
        if event.get("error"):
            event["error_name"] = names.errno_name(event["error"])
        if "syscall" in event:
            event["syscall_name"] = names.syscall_name(event["syscall"])
        area = event["area"]
        self._resolvers.get(area, _no_names)(event, proc)
        if area == "file" and event["op"] in PERSIST_OPS:
            derived = self._persistence(event)
            if derived:
                return [event, derived]
        return [event]

    def _cgroup_context(self, cgroup_id: int) -> dict | None:
        if cgroup_id not in self._cgroup_cache:
            path = self.cgroups(cgroup_id)
            self._cgroup_cache[cgroup_id] = (
                {"cgroup": path, "container": container_of(path)} if path else None
            )
        return self._cgroup_cache[cgroup_id]

    # the process tree follows fork, exec and exit
    def _track(self, event: dict) -> Proc:
        pid, ts = event["pid"], event["ts_ns"]
        proc = self.procs.get(pid, ts)
        if proc is None or proc.exit_ns is not None and proc.exit_ns < ts:
            proc = self.procs.seen(pid, event.get("ppid", 0), ts)
        if event.get("comm"):
            proc.comm = event["comm"]
        if event.get("area") == "process":
            handler = getattr(self, "_on_" + event.get("op", ""), None)
            if handler is not None:
                handler(event, proc)
        return proc

    def _on_fork(self, event: dict, proc: Proc) -> None:
        child_pid = event.get("child_pid")
        if child_pid and child_pid != proc.pid:
            child = self.procs.fork(proc, child_pid, event["ts_ns"])
            event["child_start_ns"] = child.start_ns

    def _on_exec(self, event: dict, proc: Proc) -> None:
        filename = event.get("filename") or ""
        proc.exe = event.get("exe_path") or filename or proc.exe
        proc.argv = event.get("argv") or _read_argv(proc.pid) or [filename]
        proc.cwd = _readlink(PROC / str(proc.pid) / "cwd") or proc.cwd
        proc.fds = {fd: path for fd, path in proc.fds.items() if fd <= 2}
        proc.changed()

    def _on_exit(self, event: dict, proc: Proc) -> None:
        if event.get("tid", proc.pid) == proc.pid:
            proc.exit_ns = event["ts_ns"]
        # the decoder splits the wait status; dicts made elsewhere may carry only it
        status = event.get("exit_code", 0)
        event.setdefault("exit_status", status >> 8 & 0xFF)
        signal_number = event.setdefault("exit_signal", status & 0x7F)
        if signal_number:
            event["exit_signal_name"] = names.signal_name(signal_number)

    # numbers -> names, per area
    def _resolve_file(self, event: dict, proc: Proc) -> None:
        op = event.get("op")
        if op in OPEN_OPS and event.get("path"):
            self._last_open[event.get("tid", 0)] = (event["ts_ns"], event["path"])
        elif op == "repeat":
            self._resolve_repeat(event)
        if not event.get("path") and isinstance(event.get("fd"), int):
            self._resolve_fd(event, proc)
        elif event.get("fd", -1) >= 0 and event.get("path"):
            # remembered, so that a later fd-only event needs no /proc lookup
            proc.fds[event["fd"]] = event["path"]

    def _resolve_repeat(self, event: dict) -> None:
        """A repeat event names its file through the open event it repeats: the last
        open event of its thread, which the kernel sent just before the run began."""
        ts, path = self._last_open.get(event.get("tid", 0), (None, None))
        if path is not None and ts == event.get("first_ns"):
            event["path"] = path

    def _resolve_network(self, event: dict, proc: Proc) -> None:
        self._resolve_address(event)

    def _resolve_ipc(self, event: dict, proc: Proc) -> None:
        if SOCKET_FAMILY in event:
            self._resolve_address(event)
        if event.get("target_pid"):
            self._resolve_target(event)

    def _resolve_signal(self, event: dict, proc: Proc) -> None:
        event["signal_name"] = names.signal_name(event.get("sig", 0))
        self._resolve_target(event)

    def _resolve_target(self, event: dict) -> None:
        target = self.procs.get(event.get("target_pid", 0), event["ts_ns"])
        event["target_comm"] = target.comm if target else None

    def _resolve_creds(self, event: dict, proc: Proc) -> None:
        if event.get("op") in ("capset", "setid-exec"):
            event["caps"] = names.capability_names(event.get("cap_effective", 0))

    def _resolve_namespace(self, event: dict, proc: Proc) -> None:
        flags = event.get("ns_flags") or event.get("clone_flags") or 0
        if flags:
            event["namespaces"] = names.namespace_names(flags)
        if event.get("op") == "setrlimit":
            event["resource_name"] = names.rlimit_name(event.get("resource", -1))

    def _resolve_memory(self, event: dict, proc: Proc) -> None:
        if event.get("op") == "wx":
            event["prot_text"] = names.prot_text(event.get("prot", 0))

    @staticmethod
    def _resolve_address(event: dict) -> None:
        addr, port = event.get("addr"), event.get("port", 0)
        if addr or port:
            event["address"] = format_sockaddr(event[SOCKET_FAMILY], addr or "", port)

    @staticmethod
    def _resolve_fd(event: dict, proc: Proc) -> None:
        fd = event["fd"]
        if fd < 0:
            return
        path = proc.fds.get(fd) or _readlink(PROC / str(proc.pid) / "fd" / str(fd))
        if path:
            event["fd_path"] = path

    def _resolve_device(self, event: dict, proc: Proc) -> None:
        major, minor = event.get("major", 0), event.get("minor", 0)
        block = stat.S_ISBLK(event.get("mode", 0))
        event["device"] = f"{major}:{minor}"
        event["device_class"] = self.devices(major, minor, block)
        if event.get("op") == "ioctl":
            event["ioctl_name"] = names.ioctl_name(event.get("cmd", 0))

    # a write to a persistence path is also a system/persist event
    @staticmethod
    def _persistence(event: dict) -> dict | None:
        path = event.get("new_path") or event.get("path") or ""
        kind = persistence_class(path)
        if kind is None:
            return None
        event["persist"] = kind
        derived = dict(
            event, area="system", op="persist", derived_from="file/" + event["op"]
        )
        derived["path"] = path
        return derived


def _no_names(event: dict, proc: Proc) -> None:
    pass
