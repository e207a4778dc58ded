"""The one ctypes module: a thin layer over the system's libbpf.so.1 (1.1 or newer).

Objects are opened from a compiled .bpf.o, configured before load (per-program autoload,
read-only `const volatile` knobs, map sizes), loaded, attached and closed. libbpf's own
messages, including the verifier log, go to this module's logger at DEBUG; a failed load
raises CapsuleError("failed to load BPF object X: <strerror>") and logs the whole log.
`raw_syscall()` is here too, for the few probes (Landlock, seccomp) Python cannot make.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import logging
import os
from pathlib import Path
from typing import Self

from capsule.errors import CapsuleError
from capsule.runtime import btf

log = logging.getLogger(__name__)

_PRINT_FN = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
)


def _load_libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise CapsuleError(
            f"failed to load libbpf: {exc}",
            hint="install libbpf1 (apt-get install libbpf1)",
        ) from None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return lib, libc


_lib, _libc = _load_libraries()
_p, _i, _u32, _sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
for _name, _res, _args in (
    ("bpf_object__open_file", _p, [ctypes.c_char_p, _p]),
    ("bpf_object__load", _i, [_p]),
    ("bpf_object__close", None, [_p]),
    ("bpf_object__find_program_by_name", _p, [_p, ctypes.c_char_p]),
    ("bpf_object__find_map_by_name", _p, [_p, ctypes.c_char_p]),
    ("bpf_object__next_program", _p, [_p, _p]),
    ("bpf_program__name", ctypes.c_char_p, [_p]),
    ("bpf_program__fd", _i, [_p]),
    ("bpf_program__set_autoload", _i, [_p, ctypes.c_bool]),
    ("bpf_program__set_log_level", _i, [_p, _u32]),
    ("bpf_program__attach", _p, [_p]),
    ("bpf_program__attach_cgroup", _p, [_p, _i]),
    ("bpf_link__destroy", _i, [_p]),
    ("bpf_link__pin", _i, [_p, ctypes.c_char_p]),
    ("bpf_link__fd", _i, [_p]),
    ("bpf_map__fd", _i, [_p]),
    ("bpf_map__initial_value", _p, [_p, ctypes.POINTER(_sz)]),
    ("bpf_map__set_max_entries", _i, [_p, _u32]),
    ("bpf_map__pin", _i, [_p, ctypes.c_char_p]),
    ("bpf_map_update_elem", _i, [_i, _p, _p, ctypes.c_uint64]),
    ("bpf_map_lookup_elem", _i, [_i, _p, _p]),
    ("bpf_map_delete_elem", _i, [_i, _p]),
    ("bpf_map_create", _i, [_i, ctypes.c_char_p, _u32, _u32, _u32, _p]),
    ("bpf_obj_get_info_by_fd", _i, [_i, _p, ctypes.POINTER(_u32)]),
    ("libbpf_num_possible_cpus", _i, []),
    ("libbpf_version_string", ctypes.c_char_p, []),
    ("libbpf_set_print", _p, [_PRINT_FN]),
):
    _fn = getattr(_lib, _name)
    _fn.restype, _fn.argtypes = _res, _args
_libc.vsnprintf.argtypes = [ctypes.c_char_p, _sz, ctypes.c_char_p, _p]
_libc.syscall.restype = ctypes.c_long

_PROG_INFO_SIZE, _RECURSION_MISSES = 232, 208  # struct bpf_prog_info (linux/bpf.h)

# every libbpf message since the last load began; a failed load shows them all
_messages: list[str] = []


# one buffer for every message: a verifier log arrives as a single message of up to MBs
_print_buffer = ctypes.create_string_buffer(4 << 20)


def _on_print(level: int, fmt: bytes, args: int) -> int:
    if len(_messages) > 10000:  # only the latest load's messages matter
        del _messages[:5000]
    # va_list is an array type on x86-64, so it arrives as a pointer vsnprintf accepts
    _libc.vsnprintf(_print_buffer, len(_print_buffer), fmt, args)
    text = _print_buffer.value.decode("utf-8", "replace").rstrip("\n")
    _messages.append(text)
    log.debug("%s", text)
    return 0


_print_callback = _PRINT_FN(_on_print)  # kept alive for as long as libbpf may call it
_lib.libbpf_set_print(_print_callback)


def _errno_text(code: int) -> str:
    code = abs(code)
    return f"{os.strerror(code)} ({errno_mod.errorcode.get(code, code)})"


def _check_ptr(ptr: int | None, what: str) -> int:
    """libbpf 1.x returns NULL and sets errno for pointer results."""
    if not ptr:
        raise CapsuleError(f"failed to {what}: {_errno_text(ctypes.get_errno() or 22)}")
    return ptr


def version() -> str:
    """The loaded libbpf's version, e.g. "v1.1"."""
    return _lib.libbpf_version_string().decode()


def possible_cpus() -> int:
    return _lib.libbpf_num_possible_cpus()


def raw_syscall(nr: int, *args: int | bytes | ctypes.Array | None) -> tuple[int, int]:
    """syscall(2) for probes Python cannot make: returns (result, errno)."""
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    res = _libc.syscall(ctypes.c_long(nr), *conv)
    return res, ctypes.get_errno()


class Link:
    """An attachment; destroyed on close unless pinned."""

    def __init__(self, ptr: int, name: str):
        self._ptr, self.name = ptr, name

    @property
    def fd(self) -> int:
        return _lib.bpf_link__fd(self._ptr)

    def pin(self, path: str | Path) -> None:
        err = _lib.bpf_link__pin(self._ptr, str(path).encode())
        if err:
            raise CapsuleError(
                f"failed to pin BPF link {self.name}: {_errno_text(err)}"
            )

    def destroy(self) -> None:
        if self._ptr:
            _lib.bpf_link__destroy(self._ptr)
            self._ptr = None


class Program:
    def __init__(self, ptr: int):
        self._ptr = ptr
        self.name = _lib.bpf_program__name(ptr).decode()

    @property
    def fd(self) -> int:
        return _lib.bpf_program__fd(self._ptr)

    def recursion_misses(self) -> int:
        """Runs the kernel skipped because this program was already running on that
        CPU (struct bpf_prog_info.recursion_misses, a stable UAPI offset)."""
        info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
        size = _u32(_PROG_INFO_SIZE)
        if self.fd < 0 or _lib.bpf_obj_get_info_by_fd(
            self.fd, info, ctypes.byref(size)
        ):
            return 0
        return int.from_bytes(
            info.raw[_RECURSION_MISSES : _RECURSION_MISSES + 8], "little"
        )

    def set_autoload(self, load: bool) -> None:
        _lib.bpf_program__set_autoload(self._ptr, load)

    def attach(self) -> Link:
        """Attach where the program's section says (tp_btf/..., raw_tp/..., lsm/...)."""
        ptr = _lib.bpf_program__attach(self._ptr)
        return Link(_check_ptr(ptr, f"attach BPF program {self.name}"), self.name)

    def attach_cgroup(self, cgroup: str | Path) -> Link:
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            ptr = _lib.bpf_program__attach_cgroup(self._ptr, fd)
            what = f"attach BPF program {self.name} to cgroup {cgroup}"
            return Link(_check_ptr(ptr, what), self.name)
        finally:
            os.close(fd)


class Map:
    """A map by fd: keys and values are bytes of the map's exact sizes."""

    def __init__(self, ptr: int | None, name: str, fd: int | None = None):
        self._ptr, self.name = ptr, name
        self._fd = fd

    @property
    def fd(self) -> int:
        return self._fd if self._fd is not None else _lib.bpf_map__fd(self._ptr)

    def set_max_entries(self, n: int) -> None:
        err = _lib.bpf_map__set_max_entries(self._ptr, n)
        if err:
            raise CapsuleError(
                f"failed to size BPF map {self.name}: {_errno_text(err)}"
            )

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        err = _lib.bpf_map_update_elem(self.fd, key, value, flags)
        if err:
            raise CapsuleError(
                f"failed to update BPF map {self.name}: {_errno_text(err)}"
            )

    def lookup(self, key: bytes, value_size: int) -> bytes | None:
        out = ctypes.create_string_buffer(value_size)
        err = _lib.bpf_map_lookup_elem(self.fd, key, out)
        if err == -errno_mod.ENOENT:
            return None
        if err:
            raise CapsuleError(
                f"failed to look up BPF map {self.name}: {_errno_text(err)}"
            )
        return out.raw

    def lookup_percpu(self, key: bytes, value_size: int) -> list[bytes]:
        """Per-CPU maps: one value per possible CPU, each padded to 8 bytes."""
        stride = (value_size + 7) // 8 * 8
        raw = self.lookup(key, stride * possible_cpus()) or b""
        return [raw[i : i + value_size] for i in range(0, len(raw), stride)]

    def delete(self, key: bytes) -> bool:
        err = _lib.bpf_map_delete_elem(self.fd, key)
        if err and err != -errno_mod.ENOENT:
            raise CapsuleError(
                f"failed to delete from BPF map {self.name}: {_errno_text(err)}"
            )
        return not err

    def pin(self, path: str | Path) -> None:
        err = _lib.bpf_map__pin(self._ptr, str(path).encode())
        if err:
            raise CapsuleError(f"failed to pin BPF map {self.name}: {_errno_text(err)}")


def create_map(
    map_type: int, name: str, key_size: int, value_size: int, max_entries: int
) -> Map:
    """A map outside any object (doctor's ring-buffer probe); close its fd when done."""
    fd = _lib.bpf_map_create(
        map_type, name.encode(), key_size, value_size, max_entries, None
    )
    if fd < 0:
        raise CapsuleError(f"failed to create BPF map {name}: {_errno_text(fd)}")
    return Map(None, name, fd)


class BpfObject:
    """One opened .bpf.o: configure, then load(), then attach; close() frees it all."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        ptr = _lib.bpf_object__open_file(str(self.path).encode(), None)
        self._ptr = _check_ptr(ptr, f"open BPF object {self.path}")
        self.loaded = False

    def programs(self) -> list[Program]:
        progs, ptr = [], _lib.bpf_object__next_program(self._ptr, None)
        while ptr:
            progs.append(Program(ptr))
            ptr = _lib.bpf_object__next_program(self._ptr, ptr)
        return progs

    def program(self, name: str) -> Program:
        ptr = _lib.bpf_object__find_program_by_name(self._ptr, name.encode())
        if not ptr:
            raise CapsuleError(f"failed to find BPF program {name} in {self.path}")
        return Program(ptr)

    def map(self, name: str) -> Map:
        ptr = _lib.bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise CapsuleError(f"failed to find BPF map {name} in {self.path}")
        return Map(ptr, name)

    def set_rodata(self, name: str, value: bytes) -> None:
        """Set a `const volatile` global before load; its offset comes from the BTF."""
        if self.loaded:
            raise CapsuleError(
                f"failed to set {name}: BPF object {self.path} is loaded"
            )
        offset, size = btf.symbol(self.path, name, ".rodata")
        if len(value) != size:
            raise CapsuleError(
                f"failed to set {name}: {len(value)} bytes for a {size}-byte variable"
            )
        rodata = self.map(".rodata")
        total = _sz(0)
        base = _lib.bpf_map__initial_value(rodata._ptr, ctypes.byref(total))
        if not base or offset + size > total.value:
            raise CapsuleError(f"failed to set {name}: no .rodata in {self.path}")
        ctypes.memmove(base + offset, value, size)

    def load(self) -> None:
        _messages.clear()
        err = _lib.bpf_object__load(self._ptr)
        if err:  # libbpf's messages, the verifier log among them, went to DEBUG
            raise CapsuleError(
                f"failed to load BPF object {self.path.name}: {_errno_text(err)}",
                hint=self._load_hint(abs(err)),
            )
        self.loaded = True

    @staticmethod
    def _load_hint(err: int) -> str:
        if err == errno_mod.EPERM:
            if os.geteuid() != 0:
                return "BPF needs root (CAP_BPF and CAP_PERFMON): run as root"
            return "the kernel refuses this program type; `capsule doctor` shows which"
        # the verifier's own last words name the failing check; the full log is at DEBUG
        lines = [ln for msg in _messages for ln in msg.splitlines()]
        for line in reversed(lines):
            if line and not line.startswith(
                ("libbpf:", "-- END", "processed", "verification")
            ):
                return f"verifier: {line.strip()[:160]} (the full log: --debug)"
        return "rerun with --debug for libbpf's log"

    def close(self) -> None:
        if self._ptr:
            _lib.bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
