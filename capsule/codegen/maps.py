"""The map contents of an artifact: the policy's literals as BPF map keys and values.

Layouts follow the structs in bpf/templates/policy.bpf.c.j2; a test compares these
sizes with the BTF of the compiled object, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from capsule.codegen.ir import KEY_PATH_LEN, AreaTable, Ir, Verdict
from capsule.lang.model import Effect

FORMAT = "capsule-maps"
VERSION = 1
VERDICT = struct.Struct("<IBBH")  # rank, effect, enforced, rule
PATH_KEY = struct.Struct(f"<I{KEY_PATH_LEN}s")  # op, path
PREFIX_KEY = struct.Struct(f"<IB{KEY_PATH_LEN}s3x")  # prefixlen bits, op, path
U32 = struct.Struct("<I")
_EFFECT_CODE = {effect: code for code, effect in enumerate(Effect)}


def verdict_bytes(verdict: Verdict) -> bytes:
    return VERDICT.pack(verdict.rank, _EFFECT_CODE[verdict.effect],
                        _EFFECT_CODE[verdict.enforced], verdict.rule)  # fmt: skip


def path_key(op: int, path: str) -> bytes:
    return PATH_KEY.pack(op, path.encode())


def prefix_key(op: int, prefix: str) -> bytes:
    raw = prefix.encode()
    return PREFIX_KEY.pack(8 * (1 + len(raw)), op, raw)


def _area_maps(table: AreaTable) -> dict[str, list[tuple[bytes, bytes]]]:
    maps = {}
    if table.exact:
        maps[f"{table.area}_exact"] = [
            (path_key(op, path), verdict_bytes(v)) for (op, path), v in table.exact.items()
        ]
    if table.prefix:
        maps[f"{table.area}_prefix"] = [
            (prefix_key(op, p), verdict_bytes(v)) for (op, p), v in table.prefix.items()
        ]
    if table.any_op:
        maps[f"{table.area}_any"] = [
            (U32.pack(op), verdict_bytes(v)) for op, v in table.any_op.items()
        ]
    return maps


def contents(ir: Ir) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every map the loader fills, name -> [(key, value)], sorted for stable output."""
    maps: dict[str, list[tuple[bytes, bytes]]] = {}
    for table in ir.areas.values():
        maps.update(_area_maps(table))
    return {name: sorted(entries) for name, entries in sorted(maps.items())}


def to_json(ir: Ir) -> str:
    """The versioned map-contents file of an artifact (maps.json)."""
    maps = {
        name: {
            "key_size": len(entries[0][0]),
            "value_size": len(entries[0][1]),
            "entries": [[key.hex(), value.hex()] for key, value in entries],
        }
        for name, entries in contents(ir).items()
    }
    return json.dumps({"format": FORMAT, "version": VERSION, "maps": maps}, indent=1)


def read_json(path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    """Read maps.json back; refuses another format or a newer version."""
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{VERSION} file")
    return {
        name: [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in spec["entries"]]
        for name, spec in data["maps"].items()
    }


def to_loader_lines(maps: dict[str, list[tuple[bytes, bytes]]]) -> str:
    """The "MAP KEYHEX VALUEHEX" lines the test loader (tests/lsm/lsm_run.c) reads."""
    return "".join(f"{name} {k.hex()} {v.hex()}\n" for name, kv in maps.items() for k, v in kv)
