"""The LSM test VM: runs a batch of commands in one guest boot of a stock kernel.

The host kernel cannot load BPF LSM programs, so tests that need the real LSM
verifier and real denials run in Debian's linux-image-amd64 under qemu, started by
virtme-ng (`vng`). The guest sees the host filesystem read-only, so the project's
venv, clang-built objects and libbpf are used in place. One boot costs ~25-50 s of
software emulation, so callers batch every command into one `run_batch` call.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from capsule.errors import CapsuleError
from capsule.runtime import vm_guest

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
BOOT_GLOB = "vmlinuz-*"
DEFAULT_TIMEOUT = 900.0  # a loaded 2-core host boots the guest in up to ~5 min
_HINT = (
    "run `make setup` (qemu-system-x86, linux-image-amd64, busybox-static, virtme-ng)"
)


@dataclass
class GuestCommand:
    """One command to run in the guest; `cwd` defaults to a tmpfs scratch dir."""

    name: str
    argv: list[str]
    timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass
class GuestResult:
    """What one command did in the guest. `returncode` is None if it never finished."""

    name: str
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class GuestRun:
    """One guest boot: the kernel it ran, its LSM list and every command's result."""

    kernel: str
    lsm: list[str]
    mounts: dict[str, bool]
    results: dict[str, GuestResult]
    boot_seconds: float


class VmUnavailable(CapsuleError):
    """The VM cannot be started on this machine (a tool or the kernel is missing)."""


def find_kernel(image: str | None = None) -> Path:
    """Return the kernel image: `image`, $CAPSULE_VM_KERNEL or the newest in /boot.

    Raises:
        VmUnavailable: no such image exists.
    """
    chosen = image or os.environ.get("CAPSULE_VM_KERNEL")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise VmUnavailable(f"failed to find kernel image: {path} does not exist")
        return path
    images = sorted(Path("/boot").glob(BOOT_GLOB))
    if not images:
        raise VmUnavailable(
            "failed to find kernel image: no /boot/vmlinuz-*", hint=_HINT
        )
    return images[-1]


def find_vng() -> str:
    """Return the vng executable, preferring the one beside this Python (the venv)."""
    beside = Path(sys.executable).parent / "vng"
    found = str(beside) if beside.is_file() else shutil.which("vng")
    if not found:
        raise VmUnavailable(
            "failed to find vng: virtme-ng is not installed", hint=_HINT
        )
    return found


def check_available(image: str | None = None) -> tuple[str, Path]:
    """Check every tool the VM needs; return (vng, kernel image) or VmUnavailable."""
    if not shutil.which(QEMU):
        raise VmUnavailable(f"failed to find {QEMU}: qemu is not installed", hint=_HINT)
    if not any(shutil.which(name) for name in ("busybox", "busybox-static")):
        raise VmUnavailable(
            "failed to find busybox: vng needs a static busybox", hint=_HINT
        )
    return find_vng(), find_kernel(image)


def _vng_argv(
    vng: str, kernel: Path, memory: str, batch: Path, qemu_opts: str = ""
) -> list[str]:
    # --disable-kvm: this host's /dev/kvm cannot boot a stock kernel, so emulate
    guest = f"{sys.executable} {vm_guest.__file__} {batch}"
    argv = [
        vng,
        "--run",
        str(kernel),
        "--disable-kvm",
        "--memory",
        memory,
        "--exec",
        guest,
    ]
    # one "--qemu-opts=..." word, so that an option like -icount is not vng's own
    return [*argv, f"--qemu-opts={qemu_opts}"] if qemu_opts else argv


def _check_names(commands: list[GuestCommand]) -> None:
    names = [command.name for command in commands]
    if len(set(names)) != len(names):
        raise ValueError(f"guest command names must be unique: {names}")


def _write_batch(commands: list[GuestCommand], workdir: Path) -> Path:
    batch = workdir / "batch.json"
    batch.write_text(json.dumps({"commands": [vars(cmd) for cmd in commands]}))
    return batch


def _boot(argv: list[str], timeout: float) -> tuple[str, str]:
    """Run vng and read its output through a pipe; kill our qemu group on timeout."""
    env = {**os.environ, "PATH": f"{Path(argv[0]).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CapsuleError(f"failed to run the LSM VM: no result after {timeout:.0f} s")
    return out.decode(errors="replace"), err.decode(errors="replace")


def _parse(out: str, err: str) -> tuple[dict, dict[str, GuestResult]]:
    guest, results, done = None, {}, False
    for line in out.splitlines():
        if vm_guest.DONE in line:
            done = True
        if vm_guest.MARKER not in line:
            continue
        record = json.loads(line.split(vm_guest.MARKER, 1)[1])
        if "guest" in record:
            guest = record["guest"]
            continue
        del record["index"]
        results[record["name"]] = GuestResult(**record)
    if guest is None or not done:
        tail = (err.strip() or out.strip())[-600:]
        raise CapsuleError(
            f"failed to run the LSM VM: the guest did not finish: {tail}"
        )
    return guest, results


def run_batch(
    commands: list[GuestCommand],
    image: str | None = None,
    memory: str = "1G",
    timeout: float = DEFAULT_TIMEOUT,
    qemu_opts: str = "",
) -> GuestRun:
    """Boot the guest once, run `commands` in order and return their results.

    `qemu_opts` are extra qemu arguments, e.g. "-icount shift=0" for a guest clock
    that counts emulated instructions instead of following the host's clock.

    Raises:
        VmUnavailable: qemu, vng, busybox or the kernel image is missing.
        CapsuleError: the guest did not boot or finish within `timeout` seconds.
    """
    _check_names(commands)
    vng, kernel = check_available(image)
    with tempfile.TemporaryDirectory(prefix="capsule-vm-") as tmp:
        batch = _write_batch(commands, Path(tmp))
        argv = _vng_argv(vng, kernel, memory, batch, qemu_opts)
        log.info("booting %s in the LSM VM for %d commands", kernel.name, len(commands))
        started = time.monotonic()
        out, err = _boot(argv, timeout)
    guest, results = _parse(out, err)
    seconds = time.monotonic() - started - sum(r.seconds for r in results.values())
    return GuestRun(guest["kernel"], guest["lsm"], guest["mounts"], results, seconds)
