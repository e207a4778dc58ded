"""The map contents of an artifact: the policy's literals as BPF map keys and values.

Layouts follow the structs in bpf/templates/policy.bpf.c.j2; a test compares these
sizes with the BTF of the compiled object, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from capsule.codegen import creds, net
from capsule.codegen.ir import KEY_PATH_LEN, AreaTable, Ir, Verdict
from capsule.lang.model import Effect

FORMAT = "capsule-maps"
VERSION = 1
VERDICT = struct.Struct("<IBBH")  # rank, effect, enforced, rule
PATH_KEY = struct.Struct(f"<I{KEY_PATH_LEN}s")  # op, path
U32 = struct.Struct("<I")
DFA_KEY = struct.Struct("<II")  # state, op
_EFFECT_CODE = {effect: code for code, effect in enumerate(Effect)}


def verdict_bytes(verdict: Verdict) -> bytes:
    return VERDICT.pack(
        verdict.rank,
        _EFFECT_CODE[verdict.effect],
        _EFFECT_CODE[verdict.enforced],
        verdict.rule,
    )


def path_key(op: int, path: str) -> bytes:
    return PATH_KEY.pack(op, path.encode())


def _network_maps(table: net.NetTable) -> dict[str, list[tuple[bytes, bytes]]]:
    return {
        "network_rules": [
            (U32.pack(index), entry.key_bytes() + verdict_bytes(entry.verdict))
            for index, entry in enumerate(table.entries)
        ]
    }


def _creds_maps(table: creds.CredTable) -> dict[str, list[tuple[bytes, bytes]]]:
    return {
        "creds_rules": [
            (U32.pack(index), entry.key_bytes() + verdict_bytes(entry.verdict))
            for index, entry in enumerate(table.entries)
        ]
    }


def _area_maps(table) -> dict[str, list[tuple[bytes, bytes]]]:
    if isinstance(table, net.NetTable):
        return _network_maps(table)
    if isinstance(table, creds.CredTable):
        return _creds_maps(table)
    maps = {}
    if table.exact:
        maps[f"{table.area}_exact"] = [
            (path_key(op, path), verdict_bytes(v))
            for (op, path), v in table.exact.items()
        ]
    if table.prefix:
        maps[f"{table.area}_prefix"] = [
            (path_key(op, p), verdict_bytes(v)) for (op, p), v in table.prefix.items()
        ]
    if table.dfa is not None:
        maps.update(_dfa_maps(table))
    if table.any_op:
        maps[f"{table.area}_any"] = [
            (U32.pack(op), verdict_bytes(v)) for op, v in table.any_op.items()
        ]
    return maps


def _dfa_maps(table: AreaTable) -> dict[str, list[tuple[bytes, bytes]]]:
    automaton = table.dfa
    row = struct.Struct(f"<{automaton.class_count}H")
    return {
        f"{table.area}_dfa_cls": [(U32.pack(0), bytes(automaton.classes))],
        f"{table.area}_dfa_next": [
            (U32.pack(state), row.pack(*nexts))
            for state, nexts in enumerate(automaton.next)
        ],
        f"{table.area}_dfa_accept": [
            (DFA_KEY.pack(state, op), verdict_bytes(v))
            for (state, op), v in table.dfa_accept.items()
        ],
    }


def contents(ir: Ir) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every map the loader fills, name -> [(key, value)], sorted for stable output."""
    maps: dict[str, list[tuple[bytes, bytes]]] = {}
    for table in ir.areas.values():
        maps.update(_area_maps(table))
    return {name: sorted(entries) for name, entries in sorted(maps.items()) if entries}


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
    return "".join(
        f"{name} {k.hex()} {v.hex()}\n" for name, kv in maps.items() for k, v in kv
    )
