"""Closed vocabularies of the policy language: areas, operations, fields and names.

These tables are the single source for the parser's checks, the docs and the other
packages (codegen maps capability and signal names to numbers with them).
"""

from types import MappingProxyType

# area -> operations the tracer observes (docs/architecture.md, "Areas and operations")
AREAS = MappingProxyType(
    {
        "process": ("exec", "fork", "exit", "setsid"),
        "network": ("connect", "bind", "listen", "accept", "send"),
        "file": (
            "read", "write", "create", "delete", "rename", "link", "symlink",
            "mkdir", "rmdir", "chmod", "chown", "truncate", "exec",
        ),
        "creds": ("setuid", "setgid", "capset", "setid-exec"),
        "memory": ("wx", "memfd", "fileless-exec", "module-load", "bpf"),
        "ipc": (
            "pipe", "unix-connect", "unix-send", "shm", "msgq", "sem", "ptrace",
            "vm-write",
        ),
        "device": ("open", "ioctl"),
        "system": ("mount", "umount", "chroot", "pivot-root", "persist"),
        "namespace": ("unshare", "setns", "clone", "cgroup-move", "setrlimit"),
        "signal": ("send",),
    }
)  # fmt: skip

# field kinds: how a field's text is parsed into a pattern
PATH, CIDR, PORT, ID = "path", "cidr", "port", "id"
CAPABILITY, SIGNAL, NAMESPACE = "capability", "signal", "namespace"
PROTOCOL, FSTYPE, MOUNT_FLAG, DEVICE = "protocol", "fstype", "mount-flag", "device"

# area -> object field -> field kind
FIELDS = MappingProxyType(
    {
        "process": {"path": PATH},
        "network": {"addr": CIDR, "port": PORT, "protocol": PROTOCOL},
        "file": {"path": PATH, "to": PATH},
        "creds": {"uid": ID, "gid": ID, "cap": CAPABILITY, "path": PATH},
        "memory": {"path": PATH},
        "ipc": {"path": PATH, "target": PATH},
        "device": {"dev": DEVICE, "path": PATH},
        "system": {"path": PATH, "fstype": FSTYPE, "flags": MOUNT_FLAG},
        "namespace": {"ns": NAMESPACE, "path": PATH},
        "signal": {"signal": SIGNAL, "target": PATH},
    }
)

# area -> the field a value without a field name belongs to (creds has none)
DEFAULT_FIELD = MappingProxyType(
    {
        "process": "path",
        "network": "addr",
        "file": "path",
        "memory": "path",
        "ipc": "path",
        "device": "dev",
        "system": "path",
        "namespace": "ns",
        "signal": "signal",
    }
)

# subject condition -> field kind
SUBJECT_FIELDS = MappingProxyType(
    {"exe": PATH, "ancestor": PATH, "uid": ID, "cgroup": PATH}
)

# linux/capability.h
CAPABILITIES = MappingProxyType(
    {
        name: number
        for number, name in enumerate(
            (
                "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID "
                "SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN "
                "NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE "
                "SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
                "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
                "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
                "PERFMON BPF CHECKPOINT_RESTORE"
            ).split()
        )
    }
)

# x86_64 signal numbers (asm/signal.h); SIGRTMIN/SIGRTMAX as the kernel numbers them
SIGNALS = MappingProxyType(
    {
        "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7,
        "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13,
        "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19,
        "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
        "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
        "RTMIN": 32, "RTMAX": 64,
    }
)  # fmt: skip
SIGNAL_ALIASES = MappingProxyType({"IOT": "ABRT", "POLL": "IO", "CLD": "CHLD"})

# linux/sched.h CLONE_NEW* flags, by the names /proc/PID/ns uses
NAMESPACES = MappingProxyType(
    {
        "mnt": 0x00020000,
        "uts": 0x04000000,
        "ipc": 0x08000000,
        "user": 0x10000000,
        "pid": 0x20000000,
        "net": 0x40000000,
        "cgroup": 0x02000000,
        "time": 0x00000080,
    }
)

# protocol name -> IP protocol number ("raw" is any SOCK_RAW socket)
PROTOCOLS = MappingProxyType(
    {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "raw": 255}
)

# linux/mount.h MS_* flags, by the names mount(8) uses
MOUNT_FLAGS = MappingProxyType(
    {
        "ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16,
        "remount": 32, "mandlock": 64, "dirsync": 128, "nosymfollow": 256,
        "noatime": 1024, "nodiratime": 2048, "bind": 4096, "move": 8192,
        "rec": 16384, "silent": 32768, "unbindable": 1 << 17, "private": 1 << 18,
        "slave": 1 << 19, "shared": 1 << 20, "relatime": 1 << 21,
        "strictatime": 1 << 24, "lazytime": 1 << 25,
    }
)  # fmt: skip

# device class -> (major, minor or None for every minor); Documentation/admin-guide/
# devices.txt. Character and block numbers are not told apart.
DEVICE_CLASSES = MappingProxyType(
    {
        "mem": ((1, 1), (1, 2), (1, 4)),  # /dev/mem, /dev/kmem, /dev/port
        "null": ((1, 3), (1, 5), (1, 7)),  # null, zero, full
        "random": ((1, 8), (1, 9)),
        "kmsg": ((1, 11),),
        "tty": ((4, None), (5, 0), (5, 1), (5, 2), (136, None)),
        "input": ((13, None),),
        "kvm": ((10, 232),),
        "tun": ((10, 200),),
        "fuse": ((10, 229),),
        "loop": ((7, None), (10, 237)),
        "disk": ((8, None), (259, None), (253, None), (179, None), (3, None)),
        "gpu": ((226, None), (195, None)),
        "sound": ((116, None), (14, None)),
        "video": ((81, None),),
        "usb": ((189, None),),
        "hidraw": ((241, None),),
    }
)

SEVERITIES = ("info", "low", "medium", "high", "critical")

# setting -> allowed values (None: any string)
SETTINGS = MappingProxyType(
    {
        "name": None,
        "description": None,
        "mode": ("enforce", "monitor"),
        "taint-scope": ("process", "tree"),
        # what a risky escalation verdict does to the process tree (docs/language.md)
        "escalate-action": ("alert", "kill", "switch"),
        "escalate-policy": None,  # the stricter policy file that `switch` moves to
        "escalate-ambiguous": ("off", "on"),  # escalate what only a default decides
    }
)


def canonical_capability(text: str) -> str | None:
    """Return CAP_X for `cap_x`, `CAP_X` or `x`, or None if it names no capability."""
    name = text.upper().removeprefix("CAP_")
    return f"CAP_{name}" if name in CAPABILITIES else None


def canonical_signal(text: str) -> str | None:
    """Return SIGX for `SIGX`, `sigx`, `X` or a number, or None if unknown."""
    if text.isascii() and text.isdigit() and len(text) < 4:
        number = int(text)
        names = [n for n, v in SIGNALS.items() if v == number]
        return f"SIG{names[0]}" if names else None
    name = text.upper().removeprefix("SIG")
    name = SIGNAL_ALIASES.get(name, name)
    return f"SIG{name}" if name in SIGNALS else None


def signal_number(name: str) -> int:
    """Number of a canonical signal name such as SIGKILL."""
    return SIGNALS[name.removeprefix("SIG")]


def capability_number(name: str) -> int:
    """Number of a canonical capability name such as CAP_SYS_ADMIN."""
    return CAPABILITIES[name.removeprefix("CAP_")]
