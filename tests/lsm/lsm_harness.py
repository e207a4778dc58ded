"""Shared by the LSM tests: a registry of guest jobs run in ONE boot of the test VM.

Each test module registers, at import time, a builder that prepares its files on the
host (compiles objects, writes inputs) and returns the GuestCommand to run. The
session fixture `lsm_vm` (conftest.py) builds every job, boots the VM once and hands
each test the run, so a test asserts on the host what happened in the guest.
"""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from capsule.runtime.vm import GuestCommand, GuestResult

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VMLINUX_H = ROOT / "build" / "vmlinux.h"

Builder = Callable[[Path, Path], GuestCommand]  # (workdir, loader) -> command
JOBS: dict[str, Builder] = {}


def guest_job(name: str) -> Callable[[Builder], Builder]:
    """Register `builder(workdir, loader) -> GuestCommand` under a unique name."""

    def register(builder: Builder) -> Builder:
        if name in JOBS:
            raise ValueError(f"duplicate guest job {name}")
        JOBS[name] = builder
        return builder

    return register


def ensure_vmlinux_h() -> Path:
    if not VMLINUX_H.exists():
        subprocess.run(["make", "-C", str(ROOT), "build/vmlinux.h"], check=True)
    return VMLINUX_H


def compile_bpf(source: Path, out: Path) -> Path:
    """Compile a hand-written BPF C file with CO-RE for the guest (x86_64)."""
    include = ensure_vmlinux_h().parent
    argv = [
        "clang",
        "-target",
        "bpf",
        "-O2",
        "-g",
        "-Wall",
        "-Werror",
        "-D__TARGET_ARCH_x86",
        f"-I{include}",
        "-c",
        str(source),
        "-o",
        str(out),
    ]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return out


def build_loader(workdir: Path) -> Path:
    """Build lsm_run, the C loader over the system libbpf, for the guest."""
    out = workdir / "lsm_run"
    argv = [
        "gcc",
        "-O2",
        "-Wall",
        "-Werror",
        "-o",
        str(out),
        str(HERE / "lsm_run.c"),
        "-lbpf",
    ]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return out


def probe_results(result: GuestResult) -> dict[str, str]:
    """The probe's {path: "ok" or errno name} line from a job's stdout."""
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no probe output in:\n{result.stdout}\n{result.stderr}")
