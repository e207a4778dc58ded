"""Batched decoding: numpy dtypes from the one schema, checked against the object's
BTF, and columns() agreeing with decode() record by record."""

from __future__ import annotations

import numpy as np
import pytest

from capsule.events import schema
from capsule.runtime import btf, build

LAYOUTS = sorted(schema.LAYOUTS)


@pytest.fixture(scope="module")
def object_btf():
    obj = build.compile_bpf(build.BPF_DIR / "trace.bpf.c")
    return btf.read_object_btf(obj)


@pytest.mark.parametrize("name", LAYOUTS)
def test_record_dtype_matches_btf(object_btf, name):
    dtype = schema.record_dtype(name)
    members = object_btf.flat_members(f"ev_{name}")
    assert dtype.itemsize == object_btf.find(f"ev_{name}").size_or_type
    for field, (offset, size) in members.items():
        if field.startswith("_pad"):
            assert field not in dtype.names
            continue
        ftype, foff = dtype.fields[field][:2]
        assert (foff, ftype.itemsize) == (offset, size), field


def _record(kind: schema.Kind, seed: int) -> bytes:
    """A record of this kind with every byte set from seed, and a valid header."""
    size = schema.struct_size(schema.LAYOUTS[kind.layout])
    raw = bytearray((seed + i * 7) % 251 for i in range(size))
    raw[0:2] = kind.id.to_bytes(2, "little")
    raw[4:8] = size.to_bytes(4, "little")
    return bytes(raw)


def test_columns_agree_with_decode_for_every_kind():
    records = [_record(kind, seed) for seed, kind in enumerate(schema.KINDS * 2)]
    records.append(b"\xff\xff" + bytes(70))  # an unknown kind: skipped and counted
    data = b"".join(records)
    starts = np.cumsum([0] + [len(r) for r in records[:-1]])
    lengths = np.array([len(r) for r in records])

    arrays, bad = schema.columns(data, starts, lengths)

    assert bad == 1
    assert sum(len(a) for a in arrays.values()) == len(records) - 1
    seen = {name: 0 for name in arrays}
    for record in records[:-1]:
        event = schema.decode(record)
        layout = schema.KINDS_BY_ID[int.from_bytes(record[:2], "little")].layout
        row = arrays[layout][seen[layout]]
        seen[layout] += 1
        assert schema.KINDS_BY_ID[int(row["kind"])].name == event["kind"]
        for key in ("ts_ns", "pid", "tid", "uid", "cgroup_id", "flags"):
            assert int(row[key]) == event[key], (layout, key)
        assert (
            row["comm"].split(b"\0")[0].decode("utf-8", "backslashreplace")
            == event["comm"]
        )


def test_short_record_is_not_read_past_its_end():
    kind = schema.KINDS_BY_ID[20]  # file_read: 624 bytes
    record = _record(kind, 3)[:100]
    arrays, bad = schema.columns(record, np.array([0]), np.array([100]))
    assert arrays == {} and bad == 1
