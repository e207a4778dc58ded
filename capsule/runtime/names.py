"""Names for the numbers that events carry: signals, errnos, syscalls, capabilities.

The standard library knows signals and errnos; syscall numbers come from the installed
kernel headers; the capability list is part of the kernel ABI and is spelled out here.
"""

import errno
import functools
import re
import signal
from pathlib import Path

_UNISTD_HEADERS = (
    Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    Path("/usr/include/asm/unistd_64.h"),
)

# include/uapi/linux/capability.h, in bit order; new bits are only ever appended
_CAPABILITIES = (
    "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap "
    "linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock "
    "ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin sys_boot "
    "sys_nice sys_resource sys_time sys_tty_config mknod lease audit_write "
    "audit_control setfcap mac_override mac_admin syslog wake_alarm block_suspend "
    "audit_read perfmon bpf checkpoint_restore"
).split()


ALL_CAPS = len(_CAPABILITIES)


def signal_name(number: int) -> str:
    """SIGTERM for 15; SIGRTMIN+3 for real-time signals; "signal 99" when unknown."""
    try:
        return signal.Signals(number).name
    except ValueError:
        pass
    if signal.SIGRTMIN < number <= signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    return f"signal {number}"


def errno_name(number: int) -> str:
    """ENOENT for 2 or -2 (syscalls return negated errnos)."""
    return errno.errorcode.get(abs(number), f"errno {abs(number)}")


def capability_name(bit: int) -> str:
    """CAP_SYS_ADMIN for 21."""
    if 0 <= bit < len(_CAPABILITIES):
        return "CAP_" + _CAPABILITIES[bit].upper()
    return f"cap {bit}"


def capability_names(mask: int) -> list[str]:
    """The names of the bits set in a capability mask, lowest bit first."""
    return [capability_name(bit) for bit in range(64) if mask >> bit & 1]


@functools.cache
def _syscall_table() -> dict[int, str]:
    pattern = re.compile(r"^#define __NR_(\w+)\s+(\d+)\s*$", re.M)
    for header in _UNISTD_HEADERS:
        try:
            text = header.read_text()
        except OSError:
            continue
        return {int(nr): name for name, nr in pattern.findall(text)}
    return {}


def syscall_name(number: int) -> str:
    """openat for 257 on x86_64; "syscall 999" when the headers do not know it."""
    return _syscall_table().get(number, f"syscall {number}")


# sched.h: the CLONE_NEW* bits that create or enter a namespace
_NAMESPACE_FLAGS = (
    (0x00020000, "mnt"),
    (0x02000000, "cgroup"),
    (0x04000000, "uts"),
    (0x08000000, "ipc"),
    (0x10000000, "user"),
    (0x20000000, "pid"),
    (0x40000000, "net"),
    (0x00000080, "time"),
)


def namespace_names(flags: int) -> list[str]:
    """["mnt", "net"] for CLONE_NEWNS | CLONE_NEWNET."""
    return [name for bit, name in _NAMESPACE_FLAGS if flags & bit]


@functools.cache
def _rlimits() -> dict[int, str]:
    import resource

    table: dict[int, str] = {}
    for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_")):
        table.setdefault(getattr(resource, name), name)  # NOFILE before its alias OFILE
    return table


def rlimit_name(number: int) -> str:
    """RLIMIT_NOFILE for 7."""
    return _rlimits().get(number, f"rlimit {number}")


def prot_text(prot: int) -> str:
    """ "rwx"-style text for mmap/mprotect protection bits."""
    import mmap

    bits = ((mmap.PROT_READ, "r"), (mmap.PROT_WRITE, "w"), (mmap.PROT_EXEC, "x"))
    return "".join(ch if prot & bit else "-" for bit, ch in bits)


# ioctl requests worth naming on a device timeline (tty, tun, kvm)
_IOCTLS = {
    0x5401: "TCGETS",
    0x5402: "TCSETS",
    0x5413: "TIOCGWINSZ",
    0x5412: "TIOCSTI",
    0x540E: "TIOCSCTTY",
    0x400454CA: "TUNSETIFF",
    0x800454D2: "TUNGETIFF",
    0xAE00: "KVM_GET_API_VERSION",
    0xAE01: "KVM_CREATE_VM",
    0xAE41: "KVM_CREATE_VCPU",
}


def ioctl_name(request: int) -> str:
    """TCGETS for 0x5401; the number in hex when it has no name here."""
    return _IOCTLS.get(request & 0xFFFFFFFF, f"{request:#x}")
