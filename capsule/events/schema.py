"""The one definition of every event the kernel sends to user space.

Both sides are generated from the tables below: `write_c_header()` writes the C header
that the BPF programs include (build/capsule_events.h), and `decode()` turns a raw
ring-buffer record into a dict with the header keys, `area`, `op` and the kind's own
fields. Many kinds share one layout (one C struct); the kind id says which operation
it was. Fields are ordered so that no struct has implicit padding, which the generator
checks, so the C and Python sides cannot disagree about offsets.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import posixpath
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PATH_MAX = 256  # bytes per path component buffer; longer paths carry TRUNCATED
ARGV_MAX = 512  # bytes of the NUL-separated argv kept per exec
UNIX_PATH_MAX = 108
COMM_LEN = 16

# flag bits of the common header
FLAGS = {
    "TRUNCATED": 1,
    "DENIED": 2,
    "KILLED": 4,
    "AUDIT": 8,
    "SCRIPT": 16,
    "ABSTRACT": 32,
}

_FORMATS = {
    "u8": "B",
    "u16": "H",
    "u32": "I",
    "u64": "Q",
    "s32": "i",
    "s64": "q",
    "char": "s",
}
_C_TYPES = {
    "u8": "__u8",
    "u16": "__u16",
    "u32": "__u32",
    "u64": "__u64",
    "s32": "__s32",
    "s64": "__s64",
    "char": "char",
}


@dataclass(frozen=True)
class Field:
    """One member of an event struct; `count` > 1 makes it an array (char: a string)."""

    name: str
    ctype: str
    count: int = 1
    doc: str = ""

    @property
    def size(self) -> int:
        return struct.calcsize(_FORMATS[self.ctype].replace("s", "c")) * self.count

    @property
    def align(self) -> int:
        return 1 if self.ctype == "char" else self.size // self.count


@dataclass(frozen=True)
class Layout:
    """A C struct `struct ev_<name>` that starts with the common header."""

    name: str
    fields: tuple[Field, ...]
    # (output key, dir field, name field): joined in user space into one absolute path
    paths: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Kind:
    id: int
    name: str
    area: str
    op: str
    layout: str
    doc: str = ""


def _f(name: str, ctype: str, count: int = 1, doc: str = "") -> Field:
    return Field(name, ctype, count, doc)


HEADER = (
    _f("kind", "u16"),
    _f("flags", "u16"),
    _f("size", "u32", doc="bytes in this record"),
    _f("ts_ns", "u64", doc="CLOCK_MONOTONIC"),
    _f("pid", "u32"),
    _f("tid", "u32"),
    _f("ppid", "u32"),
    _f("uid", "u32"),
    _f("gid", "u32"),
    _f("_pad0", "u32"),
    _f("cgroup_id", "u64"),
    _f("comm", "char", COMM_LEN),
)
_RET = (_f("ret", "s64", doc="syscall return value"), _f("syscall", "u32"))

LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout(
            "exec",
            (
                _f("argc", "u32"),
                _f("args_len", "u32"),
                _f("old_euid", "u32"),
                _f("_pad1", "u32"),
                _f(
                    "exe_path",
                    "char",
                    PATH_MAX,
                    "the file the kernel loaded (#!: the interpreter)",
                ),
                _f("filename", "char", PATH_MAX, "as passed to execve"),
                _f("cwd", "char", PATH_MAX, "set when filename is relative"),
                _f(
                    "interpreter",
                    "char",
                    PATH_MAX,
                    "the #! line's interpreter, for scripts",
                ),
                _f("argv", "char", ARGV_MAX),
            ),
        ),
        Layout(
            "fork",
            (_f("child_pid", "u32"), _f("_pad1", "u32"), _f("clone_flags", "u64")),
        ),
        Layout("exit", (_f("exit_code", "u32"), _f("_pad1", "u32"))),
        Layout("simple", _RET + (_f("_pad1", "u32"),)),
        Layout(
            "open",
            _RET
            + (
                _f("fd", "s32"),
                _f("open_flags", "u32"),
                _f("mode", "u32", doc="inode mode"),
                _f("major", "u32"),
                _f("minor", "u32"),
                _f("fmode", "u32"),
                _f("_pad1", "u32"),
                _f("ino", "u64"),
                _f("dir", "char", PATH_MAX),
                _f("name", "char", PATH_MAX),
            ),
            paths=(("path", "dir", "name"),),
        ),
        Layout(
            "repeat",
            _RET
            + (
                _f("fd", "s32"),
                _f("open_flags", "u32"),
                _f("count", "u32", doc="identical opens folded, not sent one by one"),
                _f("first_ns", "u64", doc="ts_ns of the open event they repeat"),
                _f("last_ns", "u64", doc="ts_ns of the last of them"),
            ),
        ),
        Layout(
            "ioctl",
            _RET
            + (
                _f("fd", "s32"),
                _f("cmd", "u32"),
                _f("mode", "u32", doc="inode mode"),
                _f("major", "u32"),
                _f("minor", "u32"),
                _f("arg", "u64"),
                _f("dir", "char", PATH_MAX),
            ),
            paths=(("path", "dir", ""),),
        ),
        Layout(
            "file",
            _RET
            + (
                _f("fd", "s32"),
                _f("arg", "u64", doc="mode, length or flags, per syscall"),
                _f("owner_uid", "u32"),
                _f("owner_gid", "u32"),
                _f("dir", "char", PATH_MAX),
                _f("name", "char", PATH_MAX),
            ),
            paths=(("path", "dir", "name"),),
        ),
        Layout(
            "file2",
            _RET
            + (
                _f("op_flags", "u32"),
                _f("dir", "char", PATH_MAX),
                _f("name", "char", PATH_MAX),
                _f("new_dir", "char", PATH_MAX),
                _f("new_name", "char", PATH_MAX),
            ),
            paths=(("path", "dir", "name"), ("new_path", "new_dir", "new_name")),
        ),
        Layout(
            "sock",
            _RET
            + (
                _f("fd", "s32"),
                _f("family", "u16"),
                _f("sock_type", "u16"),
                _f("protocol", "u16"),
                _f("port", "u16"),
                _f("path_len", "u32"),
                _f("_pad1", "u32"),
                _f("send_len", "u64"),
                _f("addr", "u8", 16),
                _f("unix_path", "char", UNIX_PATH_MAX),
                _f("_pad2", "u32"),
            ),
        ),
        Layout(
            "creds",
            _RET
            + (
                _f("arg0", "s32"),
                _f("arg1", "s32"),
                _f("arg2", "s32"),
                _f("new_uid", "u32"),
                _f("new_euid", "u32"),
                _f("new_suid", "u32"),
                _f("new_fsuid", "u32"),
                _f("new_gid", "u32"),
                _f("new_egid", "u32"),
                _f("new_sgid", "u32"),
                _f("new_fsgid", "u32"),
                _f("cap_effective", "u64"),
                _f("cap_permitted", "u64"),
                _f("cap_inheritable", "u64"),
            ),
        ),
        Layout(
            "mem",
            _RET
            + (
                _f("fd", "s32"),
                _f("addr", "u64"),
                _f("length", "u64"),
                _f("prot", "u32"),
                _f("mflags", "u32"),
                _f("dir", "char", PATH_MAX),
            ),
            paths=(("path", "dir", ""),),
        ),
        Layout(
            "ipc",
            _RET
            + (
                _f("target_pid", "s32"),
                _f("key", "s64"),
                _f("id", "s64"),
                _f("ipc_flags", "u64"),
                _f("request", "u64"),
                _f("fd0", "s32"),
                _f("fd1", "s32"),
                _f("name", "char", PATH_MAX),
            ),
        ),
        Layout(
            "mount",
            _RET
            + (
                _f("_pad1", "u32"),
                _f("mount_flags", "u64"),
                _f("fstype", "char", 32),
                _f("source", "char", PATH_MAX),
                _f("dir", "char", PATH_MAX),
                _f("name", "char", PATH_MAX),
            ),
            paths=(("path", "dir", "name"),),
        ),
        Layout(
            "ns",
            _RET
            + (
                _f("fd", "s32"),
                _f("ns_flags", "u64"),
                _f("target_pid", "s32"),
                _f("resource", "u32"),
                _f("rlim_cur", "u64"),
                _f("rlim_max", "u64"),
            ),
        ),
        Layout(
            "cgroup",
            (
                _f("target_pid", "u32"),
                _f("threadgroup", "u32"),
                _f("dst_cgroup_id", "u64"),
                _f("cgroup_path", "char", PATH_MAX),
            ),
        ),
        Layout(
            "signal",
            _RET
            + (
                _f("target_pid", "s32"),
                _f("target_tid", "s32"),
                _f("sig", "u32"),
            ),
        ),
    )
}

KINDS = (
    Kind(1, "proc_exec", "process", "exec", "exec"),
    Kind(2, "proc_fork", "process", "fork", "fork"),
    Kind(3, "proc_exit", "process", "exit", "exit"),
    Kind(4, "proc_setsid", "process", "setsid", "simple"),
    Kind(10, "net_connect", "network", "connect", "sock"),
    Kind(11, "net_bind", "network", "bind", "sock"),
    Kind(12, "net_listen", "network", "listen", "sock"),
    Kind(13, "net_accept", "network", "accept", "sock"),
    Kind(14, "net_send", "network", "send", "sock", "sendto/sendmsg with an address"),
    Kind(20, "file_read", "file", "read", "open"),
    Kind(21, "file_write", "file", "write", "open"),
    Kind(22, "file_create", "file", "create", "open"),
    Kind(23, "file_delete", "file", "delete", "file"),
    Kind(24, "file_rmdir", "file", "rmdir", "file"),
    Kind(25, "file_mkdir", "file", "mkdir", "file"),
    Kind(26, "file_chmod", "file", "chmod", "file"),
    Kind(27, "file_chown", "file", "chown", "file"),
    Kind(28, "file_truncate", "file", "truncate", "file"),
    Kind(29, "file_rename", "file", "rename", "file2"),
    Kind(30, "file_link", "file", "link", "file2", "new_path is the new link"),
    Kind(
        31,
        "file_symlink",
        "file",
        "symlink",
        "file2",
        "path is the link's content as written; new_path is the link",
    ),
    Kind(
        32,
        "file_exec",
        "file",
        "exec",
        "open",
        "an open for execution, from enforcement hooks; the tracer reports proc_exec",
    ),
    Kind(
        33,
        "file_repeat",
        "file",
        "repeat",
        "repeat",
        "opens by one thread identical to its last open event (same file, flags, fd), "
        "folded in the kernel into a count; the path is that event's",
    ),
    Kind(40, "cred_setuid", "creds", "setuid", "creds"),
    Kind(41, "cred_setgid", "creds", "setgid", "creds"),
    Kind(42, "cred_capset", "creds", "capset", "creds"),
    Kind(43, "cred_setid_exec", "creds", "setid-exec", "creds"),
    Kind(50, "mem_wx", "memory", "wx", "mem"),
    Kind(51, "mem_memfd", "memory", "memfd", "mem", "path holds memfd:<name>"),
    Kind(52, "mem_fileless_exec", "memory", "fileless-exec", "mem"),
    Kind(53, "mem_module_load", "memory", "module-load", "mem"),
    Kind(54, "mem_bpf", "memory", "bpf", "mem", "prot holds the bpf() command"),
    Kind(60, "ipc_pipe", "ipc", "pipe", "ipc"),
    Kind(61, "ipc_unix_connect", "ipc", "unix-connect", "sock"),
    Kind(62, "ipc_unix_send", "ipc", "unix-send", "sock"),
    Kind(63, "ipc_shm", "ipc", "shm", "ipc"),
    Kind(64, "ipc_msgq", "ipc", "msgq", "ipc"),
    Kind(65, "ipc_sem", "ipc", "sem", "ipc"),
    Kind(66, "ipc_ptrace", "ipc", "ptrace", "ipc"),
    Kind(67, "ipc_vm_write", "ipc", "vm-write", "ipc"),
    Kind(70, "dev_open", "device", "open", "open"),
    Kind(71, "dev_ioctl", "device", "ioctl", "ioctl", "ioctl on a device file"),
    Kind(80, "sys_mount", "system", "mount", "mount"),
    Kind(81, "sys_umount", "system", "umount", "file"),
    Kind(82, "sys_chroot", "system", "chroot", "file"),
    Kind(83, "sys_pivot_root", "system", "pivot-root", "file2"),
    Kind(90, "ns_unshare", "namespace", "unshare", "ns"),
    Kind(91, "ns_setns", "namespace", "setns", "ns"),
    Kind(92, "ns_clone", "namespace", "clone", "fork"),
    Kind(93, "ns_cgroup_move", "namespace", "cgroup-move", "cgroup"),
    Kind(94, "ns_setrlimit", "namespace", "setrlimit", "ns"),
    Kind(100, "sig_send", "signal", "send", "signal"),
)
KINDS_BY_ID = {kind.id: kind for kind in KINDS}


# -- layout arithmetic ------------------------------------------------------------


def layout_offsets(
    fields: tuple[Field, ...], start: int = 0
) -> list[tuple[Field, int]]:
    """Each field's offset; raises ValueError where C would insert padding."""
    offsets, off = [], start
    for fld in fields:
        if off % fld.align:
            raise ValueError(
                f"field {fld.name!r} at offset {off} is not {fld.align}-aligned"
            )
        offsets.append((fld, off))
        off += fld.size
    return offsets


def struct_size(layout: Layout) -> int:
    fld, off = layout_offsets(HEADER + layout.fields)[-1]
    size = off + fld.size
    if size % 8:
        raise ValueError(f"struct ev_{layout.name} size {size} is not a multiple of 8")
    return size


HEADER_SIZE = sum(f.size for f in HEADER)


# -- C header ---------------------------------------------------------------------


def _c_member(fld: Field) -> str:
    suffix = f"[{fld.count}]" if fld.count > 1 else ""
    return f"\t{_C_TYPES[fld.ctype]} {fld.name}{suffix};"


def c_header() -> str:
    """The text of build/capsule_events.h."""
    out = [
        "/* Generated by capsule/events/schema.py; do not edit. */",
        "#ifndef CAPSULE_EVENTS_H",
        "#define CAPSULE_EVENTS_H",
        "",
        f"#define CAPSULE_PATH_MAX {PATH_MAX}",
        f"#define CAPSULE_ARGV_MAX {ARGV_MAX}",
        f"#define CAPSULE_UNIX_PATH_MAX {UNIX_PATH_MAX}",
        "",
    ]
    out += [f"#define CAPSULE_F_{name} {bit}" for name, bit in FLAGS.items()]
    out += ["", "enum capsule_kind {"]
    out += [f"\tCK_{kind.name.upper()} = {kind.id}," for kind in KINDS]
    out += ["};", "", "struct capsule_hdr {"] + [_c_member(f) for f in HEADER] + ["};"]
    for layout in LAYOUTS.values():
        out += ["", f"struct ev_{layout.name} {{", "\tstruct capsule_hdr hdr;"]
        out += [_c_member(f) for f in layout.fields] + ["};"]
        out.append(
            f"_Static_assert(sizeof(struct ev_{layout.name}) == "
            f'{struct_size(layout)}, "ev_{layout.name} layout");'
        )
    out += [
        "",
        "/* every layout, so that the object's BTF describes each of them */",
        "union capsule_layouts {",
    ]
    out += [f"\tstruct ev_{name} {name};" for name in LAYOUTS] + [
        "};",
        "",
        "#endif",
        "",
    ]
    return "\n".join(out)


def write_c_header(path: Path) -> bool:
    """Write the header if its text changed; returns True when it was written."""
    text = c_header()
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent builds write their own
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


# -- Python decoders ----------------------------------------------------------------

_AF_INET, _AF_INET6, _AF_UNIX = 2, 10, 1
_SOCK_TYPES = {1: "tcp", 2: "udp", 3: "raw", 5: "seqpacket"}


def _text(raw: bytes) -> str:
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "backslashreplace")


def join_path(directory: str, name: str) -> str:
    """The normalized absolute path of `name` relative to `directory`."""
    if not name:
        return directory  # walked by the kernel: already absolute and normalized
    joined = name if name.startswith("/") or not directory else f"{directory}/{name}"
    norm = posixpath.normpath(joined)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def _fix_sock(event: dict) -> None:
    family, raw = event["family"], event["addr"]
    event["proto"] = _SOCK_TYPES.get(event["sock_type"], str(event["sock_type"]))
    if family == _AF_INET:
        event["addr"] = str(ipaddress.IPv4Address(raw[:4]))
    elif family == _AF_INET6:
        ip6 = ipaddress.IPv6Address(raw)
        if ip6.ipv4_mapped is not None:  # shown as the IPv4 it is
            event["family"], event["addr"] = _AF_INET, str(ip6.ipv4_mapped)
        else:
            event["addr"] = str(ip6)
    elif family == _AF_UNIX:
        event["addr"] = _unix_name(event.pop("unix_path"), event["path_len"])
    else:
        event["addr"] = ""
    event.pop("unix_path", None)


def _unix_name(raw: bytes, length: int) -> str:
    if raw[:1] == b"\0" and length > 1:  # abstract: '@' as ss(8) shows it
        return "@" + raw[1:length].decode("utf-8", "backslashreplace")
    return _text(raw)


def _fix_exec(event: dict) -> None:
    event["argv"] = [
        a.decode("utf-8", "backslashreplace")
        for a in event["argv"][: event["args_len"]].split(b"\0")
        if a
    ]
    event["filename"] = join_path(event.pop("cwd"), event["filename"])
    event["script"] = event["filename"] if event["interpreter"] else ""


def _fix_exit(event: dict) -> None:
    # the wait(2) status: the exit code in bits 8-15, or the killing signal in 0-6
    code = event["exit_code"]
    event["exit_status"] = (code >> 8) & 0xFF
    event["exit_signal"] = code & 0x7F


_FIXUPS = {"sock": _fix_sock, "exec": _fix_exec, "exit": _fix_exit}
_BYTES_FIELDS = {"addr", "argv", "unix_path"}


def _format(fld: Field) -> str:
    if fld.name.startswith("_pad"):
        return f"{fld.size}x"  # padding is skipped, never decoded
    return f"{fld.count}s" if fld.count > 1 else _FORMATS[fld.ctype]


class _Decoder:
    """Decodes one layout with a function generated from it: one struct unpack into a
    dict literal, with strings cut at their NUL and (dir, name) pairs joined. Compared
    with a loop over the fields this halves the cost per event, which bounds how many
    events per second user space can take in."""

    def __init__(self, layout: Layout, kind: Kind | None = None):
        fields = HEADER + layout.fields
        layout_offsets(fields)
        self.struct = struct.Struct("<" + "".join(_format(f) for f in fields))
        self.names = [f.name for f in fields if not f.name.startswith("_pad")]
        self.layout, self.kind = layout, kind
        self.fixup = _FIXUPS.get(layout.name)
        self._decode = self._generate(fields)

    def _generate(self, fields: tuple[Field, ...]) -> Callable[[bytes], dict]:
        var = {name: f"v{i}" for i, name in enumerate(self.names)}
        strings = {
            f.name for f in fields if f.count > 1 and f.name not in _BYTES_FIELDS
        }
        joined = {
            dir_key: (out, name_key) for out, dir_key, name_key in self.layout.paths
        }
        parts = []
        for name in self.names:
            if name in joined:
                out, name_key = joined[name]
                name_expr = f"_text({var[name_key]})" if name_key else '""'
                parts.append(f"{out!r}: _join(_text({var[name]}), {name_expr})")
            elif any(name == n for _o, _d, n in self.layout.paths):
                continue  # folded into its directory's path
            elif name in strings:
                parts.append(f"{name!r}: _text({var[name]})")
            else:
                parts.append(f"{name!r}: {var[name]}")
        if "ret" in var:
            parts.append(f"'error': -{var['ret']} if {var['ret']} < 0 else 0")
        if self.kind:  # the kind's name replaces its number; area and op are constant
            parts[0] = f"'kind': {self.kind.name!r}"
            parts += [f"'area': {self.kind.area!r}", f"'op': {self.kind.op!r}"]
        src = (
            f"def decode_{self.layout.name}(data):\n"
            f"    {', '.join(var.values())}, = _unpack(data)\n"
            f"    return {{{', '.join(parts)}}}\n"
        )
        scope = {"_unpack": self.struct.unpack_from, "_text": _text, "_join": join_path}
        exec(compile(src, f"<decoder {self.layout.name}>", "exec"), scope)  # noqa: S102
        return scope[f"decode_{self.layout.name}"]

    def __call__(self, data: bytes | memoryview) -> dict:
        event = self._decode(data)
        if self.fixup:
            self.fixup(event)
        return event


_DECODERS = {name: _Decoder(layout) for name, layout in LAYOUTS.items()}
_BY_KIND = {kind.id: _Decoder(LAYOUTS[kind.layout], kind) for kind in KINDS}


class DecodeError(ValueError):
    pass


def decode(data: bytes | memoryview) -> dict:
    """One ring-buffer record -> dict of header keys, area, op and the kind's fields."""
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"record of {len(data)} bytes is shorter than the header")
    decoder = _BY_KIND.get(data[0] | data[1] << 8)
    if decoder is None:
        raise DecodeError(f"unknown event kind {data[0] | data[1] << 8}")
    if len(data) < decoder.struct.size:
        raise DecodeError(
            f"{decoder.kind.name} record of {len(data)} bytes, "
            f"expected {decoder.struct.size}"
        )
    return decoder(data)


def field_offsets(layout_name: str) -> dict[str, tuple[int, int]]:
    """{field: (offset, size)} of `struct ev_<layout_name>`, header fields included."""
    fields = HEADER + LAYOUTS[layout_name].fields
    return {f.name: (off, f.size) for f, off in layout_offsets(fields)}


# -- batched decoding (numpy) --------------------------------------------------------

_NP_FORMATS = {
    "u8": "<u1",
    "u16": "<u2",
    "u32": "<u4",
    "u64": "<u8",
    "s32": "<i4",
    "s64": "<i8",
}


def _np_format(fld: Field) -> str | tuple[str, int]:
    if fld.ctype == "char":
        return f"S{fld.count}"  # numpy keeps the bytes; cut at the first NUL to read
    return (
        _NP_FORMATS[fld.ctype]
        if fld.count == 1
        else (_NP_FORMATS[fld.ctype], fld.count)
    )


@functools.cache
def record_dtype(layout_name: str):
    """The numpy structured dtype of `struct ev_<layout_name>`, generated from the same
    table as the C header and decode(): every member but padding, at its C offset."""
    import numpy as np  # only batched decoding needs numpy

    fields = [
        (fld, off)
        for fld, off in layout_offsets(HEADER + LAYOUTS[layout_name].fields)
        if not fld.name.startswith("_pad")
    ]
    return np.dtype(
        {
            "names": [fld.name for fld, _ in fields],
            "formats": [_np_format(fld) for fld, _ in fields],
            "offsets": [off for _, off in fields],
            "itemsize": struct_size(LAYOUTS[layout_name]),
        }
    )


def columns(data: bytes, offsets, lengths) -> tuple[dict, int]:
    """Many records at once: one structured array per layout, rows in record order.

    data holds the records at `offsets` (numpy int arrays, with their `lengths`), as in
    a ring-buffer span: every record starts on an 8-byte boundary. Returns ({layout name: array}, records skipped because their
    kind is unknown or they are shorter than their layout). The `kind` column keeps the
    kind id; KINDS_BY_ID names it. A few numpy operations per layout replace one dict
    per event, so this costs a fraction of decode() per record.
    """
    import numpy as np

    raw = np.frombuffer(data, np.uint8)
    if len(offsets) == 0:
        return {}, 0
    if np.any(offsets % 8):
        raise ValueError("records must start on 8-byte boundaries")
    kinds = raw[offsets] | raw[offsets + 1].astype(np.uint16) << 8
    present = {KINDS_BY_ID[k].layout for k in np.unique(kinds) if k in KINDS_BY_ID}
    out, good = {}, 0
    for name in sorted(present):  # most spans hold one or two layouts, not all 16
        ids = _KIND_IDS_BY_LAYOUT[name]
        dtype = record_dtype(name)
        mine = np.isin(kinds, ids) & (lengths >= dtype.itemsize)
        if not mine.any():
            continue
        # every 8-byte boundary seen as the start of a record: indexing this view
        # copies just the records asked for, with no per-byte index array
        slots = np.lib.stride_tricks.as_strided(
            raw,
            shape=((len(raw) - dtype.itemsize) // 8 + 1, dtype.itemsize),
            strides=(8, 1),
            writeable=False,
        )
        out[name] = slots[offsets[mine] // 8].view(dtype).reshape(-1)
        good += len(out[name])
    return out, len(offsets) - good


_KIND_IDS_BY_LAYOUT = {
    name: [kind.id for kind in KINDS if kind.layout == name] for name in LAYOUTS
}


def flag_names(flags: int) -> set[str]:
    return {name for name, bit in FLAGS.items() if flags & bit}


def main() -> None:
    """`python -m capsule.events.schema OUT`: write the C header to OUT."""
    import sys

    write_c_header(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
