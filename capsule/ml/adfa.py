"""Read ADFA-LD and split it into train, validation and test, the same way every time.

Normal traces (training/ and validation/) are split by a hash of the file name: 60%
train, 20% validation, 20% test. Attack traces are split by recording run, not by
trace, because the traces of one run share one attack session and would leak between
splits: runs 1-4 train, run 5 validation, runs 6 and above test. The test split is for
the final report only; nothing is tuned on it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from capsule.errors import CapsuleError
from capsule.ml.syscalltable import i386_name

SPLITS = ("train", "val", "test")
ENV_DATA = "CAPSULE_ADFA_DIR"
_RUN_DIR = re.compile(r"^(?P<family>.+)_(?P<run>\d+)$")


@dataclass(frozen=True)
class Trace:
    """One ADFA-LD trace with its label and split."""

    relpath: str
    label: int  # 1 = attack
    family: str  # "normal" or the attack family
    split: str
    syscalls: tuple[str, ...]


def default_data_dir() -> Path:
    """$CAPSULE_ADFA_DIR, else ../shared/data/adfa-ld beside the repository."""
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA])
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "adfa-ld"


def normal_split(name: str) -> str:
    bucket = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10
    return "train" if bucket < 6 else ("val" if bucket < 8 else "test")


def attack_split(run: int) -> str:
    return "train" if run <= 4 else ("val" if run == 5 else "test")


def read_trace(path: Path) -> tuple[str, ...]:
    """The system-call names of one trace file (i386 numbers separated by spaces)."""
    try:
        return tuple(i386_name(int(word)) for word in path.read_text().split())
    except ValueError as err:
        raise CapsuleError(
            f"failed to read trace {path}: not a number list ({err})"
        ) from err


def load(data_dir: Path | None = None) -> list[Trace]:
    """Every trace under data_dir, sorted by path, each with its split."""
    root = Path(data_dir or default_data_dir())
    if not (root / "training").is_dir() or not (root / "attack").is_dir():
        raise CapsuleError(
            f"failed to load ADFA-LD from {root}: training/ or attack/ is missing",
            hint=f"pass --data DIR or set {ENV_DATA}",
        )
    traces = []
    for path in sorted(root.glob("training/*.txt")) + sorted(
        root.glob("validation/*.txt")
    ):
        traces.append(
            Trace(
                str(path.relative_to(root)),
                0,
                "normal",
                normal_split(path.name),
                read_trace(path),
            )
        )
    for path in sorted(root.glob("attack/*/*.txt")):
        match = _RUN_DIR.match(path.parent.name)
        if not match:
            raise CapsuleError(f"failed to load {path}: folder is not FAMILY_RUN")
        traces.append(
            Trace(
                str(path.relative_to(root)),
                1,
                match["family"],
                attack_split(int(match["run"])),
                read_trace(path),
            )
        )
    return traces


def split_hashes(root: Path, traces: list[Trace]) -> dict[str, str]:
    """sha256 over each split's (path, content) pairs: says which data a model saw."""
    digests = {split: hashlib.sha256() for split in SPLITS}
    for trace in traces:
        digest = digests[trace.split]
        digest.update(trace.relpath.encode() + b"\0")
        digest.update((Path(root) / trace.relpath).read_bytes())
    return {split: digest.hexdigest() for split, digest in digests.items()}
