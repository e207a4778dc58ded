"""Policy -> artifact directory: generated C, the .bpf.o, maps.json and manifest.json.

The steps read as the issue lists them: check (done by the caller), IR, C, clang,
object; then pyelftools reads the object back and checks it against the manifest.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from capsule import __version__
from capsule.codegen import maps, render
from capsule.codegen.ir import Ir, lower
from capsule.errors import CapsuleError
from capsule.events import schema
from capsule.lang.model import Policy

log = logging.getLogger(__name__)

FORMAT = "capsule-artifact"
VERSION = 1
GENERATOR = f"capsule compile {__version__}"
ROOT = Path(__file__).resolve().parents[2]
VMLINUX_H = ROOT / "build" / "vmlinux.h"
ARCHES = {"x86_64": "x86", "aarch64": "arm64"}  # target -> __TARGET_ARCH_ suffix
LICENSE = "GPL"  # bpf_d_path and bpf_send_signal are GPL-only helpers
OBJECT, SOURCE, MANIFEST, MAPS = (
    "policy.bpf.o",
    "policy.bpf.c",
    "manifest.json",
    "maps.json",
)
_SLEEPABLE = "lsm.s/"


@dataclass
class Artifact:
    directory: Path
    ir: Ir
    manifest: dict

    @property
    def object(self) -> Path:
        return self.directory / OBJECT


def host_arch() -> str:
    machine = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)


def _features(ir: Ir) -> list[str]:
    found = {"bpf_lsm", "btf", "ringbuf", "sleepable_lsm", "bpf_d_path", "task_storage"}
    if any(
        getattr(table, "prefix", None)
        or getattr(table, "dfa", None)
        or getattr(table, "entries", None)
        for table in ir.areas.values()
    ):
        found.add("bpf_loop")
    return sorted(found)


def manifest(ir: Ir, arch: str) -> dict:
    """What the artifact holds and needs; the loader and `check_object` read it."""
    sizes = {
        name: (len(kv[0][0]), len(kv[0][1])) for name, kv in maps.contents(ir).items()
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "generator": GENERATOR,
        "policy_sha256": ir.policy_hash,
        "sources": list(ir.sources),
        "target_arch": arch,
        "license": LICENSE,
        "kernel_features": _features(ir),
        "min_kernel": "5.17",
        "hooks": [
            {
                "name": hook,
                "section": _section(hook),
                "decides": [f"{area} {op}" for area, op in pairs],
            }
            for hook, pairs in ir.hooks.items()
        ],
        "maps": {
            name: {"key_size": k, "value_size": v} for name, (k, v) in sizes.items()
        },
        "rules": ir.rules,
        "unsupported": [
            asdict(item) | {"ops": list(item.ops), "effect": item.effect.value}
            for item in ir.unsupported
        ],
    }


def _section(hook: str) -> str:
    # file_open and bprm_check_security sleep for bpf_d_path; the others cannot
    sleeps = hook in ("file_open", "bprm_check_security")
    return f"{_SLEEPABLE}{hook}" if sleeps else f"lsm/{hook}"


def ensure_headers(include: Path) -> Path:
    """vmlinux.h (the kernel's BTF as C) and capsule_events.h, in one include dir."""
    if not VMLINUX_H.exists():
        done = subprocess.run(
            ["make", "-C", str(ROOT), "build/vmlinux.h"], capture_output=True, text=True
        )
        if done.returncode:
            raise CapsuleError(
                f"failed to make build/vmlinux.h: {done.stderr.strip()}",
                hint="run `make setup`",
            )
    include.mkdir(parents=True, exist_ok=True)
    schema.write_c_header(include / "capsule_events.h")
    return include


def clang_argv(source: Path, out: Path, arch: str, include: Path) -> list[str]:
    if arch not in ARCHES:
        raise CapsuleError(
            f"failed to compile for {arch}: targets are {', '.join(ARCHES)}"
        )
    return [
        "clang",
        "-target",
        "bpf",
        "-O2",
        "-g",
        "-Wall",
        "-Werror",
        f"-D__TARGET_ARCH_{ARCHES[arch]}",
        f"-I{include}",
        f"-I{VMLINUX_H.parent}",
        "-c",
        str(source),
        "-o",
        str(out),
    ]


def compile_c(source: Path, out: Path, arch: str) -> None:
    """clang with CO-RE (-g keeps BTF for relocations); any warning is an error."""
    include = ensure_headers(out.parent / "include")
    argv = clang_argv(source, out, arch, include)
    log.debug("running %s", " ".join(argv))
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        first = done.stderr.strip().splitlines()[0] if done.stderr.strip() else "?"
        log.error("clang output:\n%s", done.stderr)
        raise CapsuleError(f"failed to compile {source}: {first}")


def check_object(path: Path, manifest: dict) -> list[str]:
    """Read the object with pyelftools; return what disagrees with the manifest."""
    problems = []
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        sections = {section.name for section in elf.iter_sections()}
        for hook in manifest["hooks"]:
            if hook["section"] not in sections:
                problems.append(f"section {hook['section']} is missing")
        license_section = elf.get_section_by_name("license")
        found = (
            license_section.data().rstrip(b"\0").decode() if license_section else None
        )
        if found != manifest["license"]:
            problems.append(
                f"license is {found!r}, manifest says {manifest['license']!r}"
            )
        symbols = _map_symbols(elf)
        problems += [
            f"map {name} is missing" for name in manifest["maps"] if name not in symbols
        ]
    return problems


def _map_symbols(elf: ELFFile) -> set[str]:
    sections = enumerate(elf.iter_sections())
    maps_index = next((i for i, s in sections if s.name == ".maps"), None)
    symtab = elf.get_section_by_name(".symtab")
    if maps_index is None or symtab is None:
        return set()
    return {sym.name for sym in symtab.iter_symbols() if sym["st_shndx"] == maps_index}


# what a manifest must hold for the object to be checked and loaded
_MANIFEST_KEYS = {
    "format": str,
    "sources": list,
    "license": str,
    "hooks": list,
    "maps": dict,
}


def load(directory: Path) -> dict:
    """The manifest of an artifact directory, after its object was checked against it.

    Raises:
        CapsuleError: one line naming the file that is missing, unreadable, not
            JSON, not a manifest, or an object that disagrees with the manifest.
    """
    path = directory / MANIFEST
    data = _read_manifest(path)
    obj = directory / OBJECT
    try:
        problems = check_object(obj, data)
    except OSError as err:
        raise CapsuleError(f"failed to read {obj}: {err.strerror or err}") from None
    except Exception as err:  # pyelftools raises many kinds on a damaged object
        raise CapsuleError(
            f"failed to read {obj}: not a valid BPF ELF object ({_cause(err)})",
            hint="recompile it with `capsule compile`",
        ) from None
    if problems:
        raise CapsuleError(
            f"failed to check {obj} against {MANIFEST}: {'; '.join(problems)}",
            hint="recompile it with `capsule compile`",
        )
    return data


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise CapsuleError(f"failed to read {path}: {err.strerror or err}") from None
    except ValueError as err:
        if isinstance(err, json.JSONDecodeError):
            cause = f"at line {err.lineno} column {err.colno}: {err.msg}"
        else:  # not UTF-8
            cause = f"({_cause(err)})"
        raise CapsuleError(
            f"failed to read {path}: invalid JSON {cause}",
            hint="recompile the artifact with `capsule compile`",
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CapsuleError(
            f"failed to read {path}: not a {FORMAT} manifest",
            hint="recompile the artifact with `capsule compile`",
        )
    for key, kind in _MANIFEST_KEYS.items():
        if not isinstance(data.get(key), kind):
            raise CapsuleError(
                f"failed to read {path}: '{key}' is missing or not a {kind.__name__}",
                hint="recompile the artifact with `capsule compile`",
            )
    for hook in data["hooks"]:
        if not isinstance(hook, dict) or not isinstance(hook.get("section"), str):
            raise CapsuleError(f"failed to read {path}: a hook has no section")
    return data


def _cause(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def build(policy: Policy, out: Path, arch: str | None = None) -> Artifact:
    """Lower, render, compile and check one checked policy into the directory `out`."""
    arch = arch or host_arch()
    if arch not in ARCHES:
        targets = ", ".join(ARCHES)
        raise CapsuleError(f"failed to compile for {arch}: targets are {targets}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CapsuleError(
            f"failed to create the artifact directory {out}: {err.strerror}",
            hint="pass -o a directory that can be created or already exists",
        ) from None
    ir = lower(policy)
    for item in ir.unsupported:
        log.debug(
            "%s: %s %s is not enforced in the kernel: %s",
            item.ref,
            item.area,
            ",".join(item.ops),
            item.reason,
        )
    source = out / SOURCE
    source.write_text(render.render(ir))
    compile_c(source, out / OBJECT, arch)
    data = manifest(ir, arch)
    (out / MAPS).write_text(maps.to_json(ir) + "\n")
    (out / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
    problems = check_object(out / OBJECT, data)
    if problems:
        raise CapsuleError(f"failed to check {out / OBJECT}: {'; '.join(problems)}")
    log.info("wrote %s: hooks %s", out, ", ".join(ir.hooks) or "none")
    return Artifact(out, ir, data)
