"""Compile Capsule's BPF C into objects, cached under build/ by a hash of the inputs.

Every object includes build/vmlinux.h (the running kernel's types, for CO-RE) and the
generated build/capsule_events.h, so both are produced here when missing or stale.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from capsule.errors import CapsuleError
from capsule.events import schema

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BPF_DIR = ROOT / "bpf"
BUILD_DIR = ROOT / "build"
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
CFLAGS = [
    "-O2",
    "-g",
    "-target",
    "bpf",
    "-D__TARGET_ARCH_x86",
    "-Wall",
    "-Wno-unused-function",
    "-idirafter",
    "/usr/include/x86_64-linux-gnu",
]


def ensure_vmlinux_h(build_dir: Path = BUILD_DIR) -> Path:
    """build/vmlinux.h, dumped from the kernel's BTF with bpftool when absent."""
    target = build_dir / "vmlinux.h"
    if target.exists():
        return target
    if not KERNEL_BTF.exists():
        raise CapsuleError(
            f"failed to generate vmlinux.h: {KERNEL_BTF} is missing",
            hint="use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    bpftool = shutil.which("bpftool")
    if not bpftool:
        raise CapsuleError(
            "failed to generate vmlinux.h: bpftool is not installed",
            hint="apt-get install bpftool, or run `make setup`",
        )
    build_dir.mkdir(parents=True, exist_ok=True)
    log.info("generating %s from %s", target, KERNEL_BTF)
    res = subprocess.run(
        [bpftool, "btf", "dump", "file", str(KERNEL_BTF), "format", "c"],
        capture_output=True,
        check=False,
    )
    if res.returncode:
        raise CapsuleError(
            f"failed to generate vmlinux.h: {res.stderr.decode().strip()}"
        )
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(res.stdout)
    os.replace(tmp, target)
    return target


def _inputs_hash(source: Path, include_dirs: list[Path], flags: list[str]) -> str:
    digest = hashlib.sha256(" ".join(CFLAGS + flags).encode())
    files = [source] + sorted(p for d in include_dirs for p in d.glob("*.h"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def compile_bpf(
    source: Path, build_dir: Path = BUILD_DIR, extra_flags: list[str] | None = None
) -> Path:
    """The compiled object of `source`, rebuilt only when an input changed."""
    flags = list(extra_flags or [])
    clang = shutil.which("clang")
    if not clang:
        raise CapsuleError(
            f"failed to compile {source.name}: clang is not installed",
            hint="apt-get install clang llvm, or run `make setup`",
        )
    if not source.exists():
        raise CapsuleError(f"failed to compile {source}: no such file")
    ensure_vmlinux_h(build_dir)
    schema.write_c_header(build_dir / "capsule_events.h")
    includes = [build_dir, BPF_DIR / "include"]
    digest = _inputs_hash(source, includes, flags)
    target = build_dir / f"{source.name.removesuffix('.c')}.{digest}.o"
    if target.exists():
        return target

    # a private temporary name: tests and commands may compile the same source at once
    tmp = f"{target}.{os.getpid()}.tmp"
    cmd = [
        clang,
        *CFLAGS,
        *flags,
        *(f"-I{d}" for d in includes),
        "-c",
        str(source),
        "-o",
        tmp,
    ]
    log.info("compiling %s", source.name)
    log.debug("%s", " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        first = next(
            (ln for ln in res.stderr.splitlines() if "error" in ln), res.stderr
        )
        log.debug("clang output:\n%s", res.stderr)
        raise CapsuleError(f"failed to compile {source.name}: {first.strip()}")
    os.replace(tmp, target)
    return target
