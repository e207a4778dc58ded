"""What this kernel allows Capsule to do, found by trying it.

Each BPF program type is probed by loading and attaching a tiny program of that type
(bpf/probes.bpf.c): configuration files and /sys/kernel/security/lsm can say a
feature is there while the kernel still refuses it (lockdown, a hypervisor's policy).
Every check gives a status, what was seen, and a one-line fix when something is missing.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from capsule.errors import CapsuleError
from capsule.runtime import build, tracer

log = logging.getLogger(__name__)

OK, MISSING, UNKNOWN = "ok", "missing", "unknown"
TRACEFS = Path("/sys/kernel/tracing")
PROBES = build.BPF_DIR / "probes.bpf.c"
# what tracing needs; everything else only widens what Capsule can do
REQUIRED = ("btf", "clang", "libbpf", "raw_tp", "tp_btf", "ringbuf", "tracer")

_NR_SECCOMP, _NR_LANDLOCK_CREATE_RULESET = 317, 444
_SECCOMP_GET_ACTION_AVAIL, _SECCOMP_RET_USER_NOTIF = 2, 0x7FC00000
_BPF_MAP_TYPE_RINGBUF = 27


@dataclass
class Check:
    feature: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# program probes: (feature, program, how it attaches, fix when refused)
_PROGRAM_PROBES = (
    (
        "lsm",
        "probe_lsm",
        "auto",
        (
            "needs a kernel with CONFIG_BPF_LSM=y booted with lsm=...,bpf that lets "
            "BPF LSM load; enforcement falls back to seccomp/Landlock"
        ),
    ),
    (
        "fentry",
        "probe_fentry",
        "auto",
        (
            "needs BPF trampolines (fentry/fexit) allowed by the kernel; Capsule "
            "traces with tp_btf/raw_tp instead"
        ),
    ),
    (
        "tp_btf",
        "probe_tp_btf",
        "auto",
        "needs CONFIG_DEBUG_INFO_BTF=y and kernel >= 5.5",
    ),
    (
        "raw_tp",
        "probe_raw_tp",
        "auto",
        "needs CONFIG_BPF_EVENTS=y and root (CAP_BPF, CAP_PERFMON)",
    ),
    (
        "tracepoint",
        "probe_tracepoint",
        "auto",
        "mount tracefs: mount -t tracefs nodev /sys/kernel/tracing",
    ),
    (
        "cgroup_sock_addr",
        "probe_cgroup_connect",
        "cgroup",
        "needs cgroup v2 and CONFIG_CGROUP_BPF=y",
    ),
    (
        "cgroup_sock",
        "probe_cgroup_sock",
        "cgroup",
        "needs cgroup v2 and CONFIG_CGROUP_BPF=y",
    ),
    (
        "cgroup_skb",
        "probe_cgroup_skb",
        "cgroup",
        "needs cgroup v2 and CONFIG_CGROUP_BPF=y",
    ),
)


def ensure_tracefs() -> bool:
    """Mount tracefs where libbpf looks for tracepoint ids, if it is not mounted."""
    if (TRACEFS / "events").exists():
        return True
    res = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode:
        log.debug("mounting tracefs failed: %s", res.stderr.strip())
    return (TRACEFS / "events").exists()


def check_btf() -> Check:
    path = Path("/sys/kernel/btf/vmlinux")
    if path.exists():
        return Check("btf", OK, f"{path} ({path.stat().st_size // 1024} KiB)")
    return Check(
        "btf",
        MISSING,
        f"{path} is missing",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    )


def check_clang() -> Check:
    clang = shutil.which("clang")
    if not clang:
        return Check(
            "clang",
            MISSING,
            "clang is not installed",
            "apt-get install clang llvm (or `make setup`)",
        )
    version = subprocess.run(
        [clang, "--version"], capture_output=True, text=True, check=False
    )
    return Check(
        "clang", OK, version.stdout.splitlines()[0] if version.stdout else clang
    )


def check_cgroup2() -> Check:
    mount = tracer.cgroup2_mount()
    if mount:
        return Check("cgroup2", OK, f"mounted at {mount}")
    return Check(
        "cgroup2",
        MISSING,
        "no cgroup2 mount",
        "mount -t cgroup2 none /sys/fs/cgroup/unified",
    )


def check_bpffs() -> Check:
    path = Path("/sys/fs/bpf")
    if os.path.ismount(path):
        return Check("bpffs", OK, f"mounted at {path} (pinning works)")
    return Check(
        "bpffs",
        MISSING,
        f"{path} is not a bpf filesystem mount",
        "mount -t bpf bpf /sys/fs/bpf (only needed to pin maps and links)",
    )


def check_ringbuf() -> Check:
    from capsule.runtime import libbpf

    try:
        ring = libbpf.create_map(_BPF_MAP_TYPE_RINGBUF, "capsule_probe", 0, 0, 1 << 16)
    except CapsuleError as exc:
        return Check("ringbuf", MISSING, exc.message, "needs kernel >= 5.8")
    try:
        mmap.mmap(
            ring.fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        ).close()
        return Check("ringbuf", OK, "created and mapped a 64 KiB ring buffer")
    except OSError as exc:
        return Check(
            "ringbuf", MISSING, f"mmap failed: {exc.strerror}", "needs kernel >= 5.8"
        )
    finally:
        os.close(ring.fd)


def check_landlock() -> Check:
    from capsule.runtime import libbpf

    abi, err = libbpf.raw_syscall(_NR_LANDLOCK_CREATE_RULESET, None, 0, 1)
    if abi > 0:
        return Check("landlock", OK, f"ABI version {abi}")
    return Check(
        "landlock",
        MISSING,
        f"landlock_create_ruleset: {os.strerror(err)}",
        "boot with lsm=...,landlock (CONFIG_SECURITY_LANDLOCK=y)",
    )


def check_seccomp_notify() -> Check:
    from capsule.runtime import libbpf

    action = ctypes.c_uint32(_SECCOMP_RET_USER_NOTIF)
    res, err = libbpf.raw_syscall(
        _NR_SECCOMP, _SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(action)
    )
    if res == 0:
        return Check("seccomp_notify", OK, "SECCOMP_RET_USER_NOTIF is available")
    return Check(
        "seccomp_notify",
        MISSING,
        f"seccomp: {os.strerror(err)}",
        "needs kernel >= 5.0 with CONFIG_SECCOMP_FILTER=y",
    )


def probe_programs(obj_path: Path) -> list[Check]:
    """Load and attach each probe program alone; the error says why one is refused."""
    return [_probe_one(obj_path, *probe) for probe in _PROGRAM_PROBES]


def _probe_one(
    obj_path: Path, feature: str, prog_name: str, how: str, fix: str
) -> Check:
    from capsule.runtime import libbpf

    if feature == "tracepoint" and not ensure_tracefs():
        return Check(feature, MISSING, "tracefs is not mounted and could not be", fix)
    step = "load"
    try:
        with libbpf.BpfObject(obj_path) as obj:
            for prog in obj.programs():
                prog.set_autoload(prog.name == prog_name)
            obj.load()
            step, prog = "attach", obj.program(prog_name)
            if how == "cgroup":
                with _scratch_cgroup() as group:
                    prog.attach_cgroup(group).destroy()
            else:
                prog.attach().destroy()
    except CapsuleError as exc:
        cause = exc.message.rsplit(": ", 1)[-1]
        return Check(feature, MISSING, f"{step} refused: {cause}", fix)
    return Check(feature, OK, "loaded and attached")


class _scratch_cgroup:
    """A fresh empty cgroup v2 directory, removed afterwards."""

    def __enter__(self) -> Path:
        mount = tracer.cgroup2_mount()
        if mount is None:
            raise CapsuleError("failed to attach to a cgroup: no cgroup2 mount")
        self.path = mount / f"capsule-doctor-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        return self.path

    def __exit__(self, *exc) -> None:
        self.path.rmdir()


def check_tracer() -> Check:
    """The real thing: load Capsule's tracer and see the exec of a traced /bin/true."""
    from capsule.runtime.tracer import Tracer

    try:
        with Tracer() as t:
            t.start()
            proc = subprocess.Popen(
                ["/bin/sh", "-c", "read x; exec /bin/true"], stdin=subprocess.PIPE
            )
            t.track_pid(proc.pid)
            proc.communicate(b"\n")
            seen = [
                e
                for e in t.poll(200) + t.poll(50)
                if e["kind"] == "proc_exec" and e["pid"] == proc.pid
            ]
    except CapsuleError as exc:
        return Check("tracer", MISSING, exc.message, exc.hint or "see the lines above")
    if not seen:
        return Check(
            "tracer",
            MISSING,
            "loaded, but no exec event arrived",
            "rerun with --debug and report the libbpf log",
        )
    return Check("tracer", OK, "loaded, attached, and saw an exec in its scope")


def check_libbpf() -> Check:
    try:
        from capsule.runtime import libbpf
    except CapsuleError as exc:
        return Check("libbpf", MISSING, exc.message, exc.hint or "")
    return Check("libbpf", OK, f"libbpf.so.1 {libbpf.version()}")


def run_checks() -> list[Check]:
    """Every check, in the order `capsule doctor` prints them."""
    clang, libbpf = check_clang(), check_libbpf()
    checks = [check_btf(), clang, check_cgroup2(), check_bpffs(), libbpf]
    if libbpf.status != OK:
        return checks
    checks += [check_ringbuf(), check_landlock(), check_seccomp_notify()]
    if os.geteuid() != 0:
        checks.append(
            Check(
                "bpf",
                MISSING,
                "not root: BPF programs cannot be loaded",
                "run capsule doctor as root",
            )
        )
        return checks
    if clang.status != OK:
        reason = "cannot build the probes without clang"
        return checks + [Check("bpf", UNKNOWN, reason, clang.fix)]
    try:
        obj_path = build.compile_bpf(PROBES)
    except CapsuleError as exc:
        return checks + [Check("bpf", UNKNOWN, exc.message, exc.hint or "")]
    checks += probe_programs(obj_path)
    checks.append(check_tracer())
    return checks


def tracing_works(checks: list[Check]) -> bool:
    status = {c.feature: c.status for c in checks}
    return all(status.get(name) == OK for name in REQUIRED)
