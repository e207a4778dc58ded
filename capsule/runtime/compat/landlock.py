"""Landlock: create a ruleset, add path and port rules, restrict the calling process.

This is minimal syscall glue over ctypes, kept in this one module. The PyPI `landlock`
package (1.0.0.dev5) only knows `handled_access_fs`: it has no TCP port rules (ABI 4),
no scoping of signals and abstract unix sockets (ABI 6) and no audit flags (ABI 7), and
it reads errno even when a call succeeded. Capsule needs all of those, and Python has no
`syscall()` of its own, so the three Landlock syscalls are called through libc here.
The shim's capability drop (prctl, capget/capset) is the same kind of glue and lives
here too, so that the sandbox has one place that calls the kernel through ctypes.
"""

import ctypes
import enum
import errno
import os
from dataclasses import dataclass, field

from capsule.errors import CapsuleError

# x86_64 and every other architecture share these numbers (added in 5.13)
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38


class FS(enum.IntFlag):
    """File system access rights; a right on a directory covers all beneath it."""

    EXECUTE = 1 << 0
    WRITE_FILE = 1 << 1
    READ_FILE = 1 << 2
    READ_DIR = 1 << 3
    REMOVE_DIR = 1 << 4
    REMOVE_FILE = 1 << 5
    MAKE_CHAR = 1 << 6
    MAKE_DIR = 1 << 7
    MAKE_REG = 1 << 8
    MAKE_SOCK = 1 << 9
    MAKE_FIFO = 1 << 10
    MAKE_BLOCK = 1 << 11
    MAKE_SYM = 1 << 12
    REFER = 1 << 13  # ABI 2
    TRUNCATE = 1 << 14  # ABI 3
    IOCTL_DEV = 1 << 15  # ABI 5


class Net(enum.IntFlag):
    """TCP port rights (ABI 4)."""

    BIND_TCP = 1 << 0
    CONNECT_TCP = 1 << 1


class Scope(enum.IntFlag):
    """IPC scoping (ABI 6): no reaching processes outside the sandbox."""

    ABSTRACT_UNIX_SOCKET = 1 << 0
    SIGNAL = 1 << 1


class RestrictFlag(enum.IntFlag):
    """landlock_restrict_self() flags for audit logging (ABI 7)."""

    LOG_SAME_EXEC_OFF = 1 << 0
    LOG_NEW_EXEC_ON = 1 << 1
    LOG_SUBDOMAINS_OFF = 1 << 2


# the rights each ABI version added; a ruleset may only name rights the kernel knows
_FS_BY_ABI = {
    1: FS(0x1FFF),
    2: FS.REFER,
    3: FS.TRUNCATE,
    5: FS.IOCTL_DEV,
}
_NET_ABI = 4
_SCOPE_ABI = 6

FILE_RIGHTS = FS.EXECUTE | FS.WRITE_FILE | FS.READ_FILE | FS.TRUNCATE | FS.IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel declares it __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(what: str, *args) -> int:
    ret = _libc.syscall(*args)
    if ret < 0:
        err = ctypes.get_errno()
        raise CapsuleError(f"failed to {what}: {os.strerror(err)}", exit_code=125)
    return ret


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    ret = _libc.syscall(
        _SYS_CREATE_RULESET,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_CREATE_RULESET_VERSION),
    )
    if ret < 0:
        return 0
    return ret


def fs_rights(abi: int) -> FS:
    """Every file system right that a kernel of this ABI version handles."""
    rights = FS(0)
    for version, added in _FS_BY_ABI.items():
        if abi >= version:
            rights |= added
    return rights


def net_rights(abi: int) -> Net:
    return Net.BIND_TCP | Net.CONNECT_TCP if abi >= _NET_ABI else Net(0)


def scopes(abi: int) -> Scope:
    return Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL if abi >= _SCOPE_ABI else Scope(0)


@dataclass
class Ruleset:
    """What to restrict (handled rights) and what stays allowed (rules).

    A handled right is denied everywhere except beneath a path rule that grants it.
    """

    handled_fs: FS = FS(0)
    handled_net: Net = Net(0)
    scoped: Scope = Scope(0)
    paths: list[tuple[str, FS]] = field(default_factory=list)
    ports: list[tuple[int, Net]] = field(default_factory=list)

    def allow_path(self, path: str, rights: FS) -> None:
        self.paths.append((path, rights & self.handled_fs))

    def allow_port(self, port: int, rights: Net) -> None:
        self.ports.append((port, rights & self.handled_net))


def restrict_self(ruleset: Ruleset, flags: RestrictFlag = RestrictFlag(0)) -> None:
    """Enforce the ruleset on the calling thread and on everything it executes.

    Sets no_new_privs first, as Landlock requires without CAP_SYS_ADMIN; it also keeps
    a set-user-ID program from gaining privilege that the sandbox did not grant.

    Raises:
        CapsuleError: a syscall failed (for example an unknown right for this ABI).
    """
    attr = _RulesetAttr(
        int(ruleset.handled_fs), int(ruleset.handled_net), int(ruleset.scoped)
    )
    fd = _syscall(
        "create Landlock ruleset",
        _SYS_CREATE_RULESET,
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
        ctypes.c_uint32(0),
    )
    try:
        for path, rights in ruleset.paths:
            _add_path_rule(fd, path, rights)
        for port, rights in ruleset.ports:
            _add_port_rule(fd, port, rights)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise CapsuleError(f"failed to set no_new_privs: {os.strerror(err)}")
        _syscall(
            "restrict the process with Landlock",
            _SYS_RESTRICT_SELF,
            fd,
            ctypes.c_uint32(int(flags)),
        )
    finally:
        os.close(fd)


def _add_path_rule(ruleset_fd: int, path: str, rights: FS) -> None:
    if not rights:
        return
    try:
        # O_PATH: the rule needs the inode, not the right to read it
        path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return  # nothing there to grant; what appears later stays denied
        raise CapsuleError(f"failed to open {path} for a Landlock rule: {err.strerror}")
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS  # the kernel refuses directory rights on a file
        if not rights:
            return
        attr = _PathBeneathAttr(int(rights), path_fd)
        _syscall(
            f"add Landlock rule for {path}",
            _SYS_ADD_RULE,
            ruleset_fd,
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_uint32(0),
        )
    finally:
        os.close(path_fd)


def _add_port_rule(ruleset_fd: int, port: int, rights: Net) -> None:
    if not rights:
        return
    attr = _NetPortAttr(int(rights), port)
    _syscall(
        f"add Landlock rule for port {port}",
        _SYS_ADD_RULE,
        ruleset_fd,
        ctypes.c_int(_RULE_NET_PORT),
        ctypes.byref(attr),
        ctypes.c_uint32(0),
    )


# -- capabilities: what even root inside the sandbox can never hold again -------------

_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_CAP_VERSION_3 = 0x20080522


def drop_capabilities(caps: list[int]) -> None:
    """Take `caps` out of the bounding and inheritable sets, and clear the ambient set.

    After execve a root program's permitted set is its inheritable set plus the
    bounding set, so once both lack a capability no process of the sandbox gets it
    back. A capability this kernel does not know (EINVAL) is skipped.
    """
    for cap in caps:
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise CapsuleError(
                    f"failed to drop capability {cap}: {os.strerror(err)}"
                )
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable}
    _syscall("read capabilities", _SYS_CAPGET, header, data)
    for cap in caps:
        data[3 * (cap // 32) + 2] &= ~(1 << (cap % 32)) & 0xFFFFFFFF
    _syscall("clear inheritable capabilities", _SYS_CAPSET, header, data)
