"""The run store: SQLite and JSONL hold the same events, drops and metadata."""

import json
import sqlite3

import pytest

from capsule.errors import CapsuleError
from capsule.runtime.store import DB_NAME, JSONL_NAME, RunReader, RunStore, to_json

T0 = 5_000_000_000


def event(area, op, ts_offset_ms, pid, **fields):
    base = {
        "kind": f"{area}_{op}",
        "flags": 0,
        "ts_ns": T0 + ts_offset_ms * 1_000_000,
        "pid": pid,
        "tid": pid,
        "ppid": 1,
        "uid": 0,
        "gid": 0,
        "cgroup_id": 1,
        "comm": "c",
        "area": area,
        "op": op,
        "depth": 0,
    }
    base.update(fields)
    return base


EVENTS = [
    event("process", "exec", 0, 10, argv=["sh", "-c", "x"]),
    event("file", "create", 5, 10, path="/tmp/a"),
    event("process", "fork", 10, 10, child_pid=11),
    event("network", "connect", 20, 11, address="127.0.0.1:80"),
    event("file", "write", 30, 11, path="/tmp/a"),
    event("signal", "send", 40, 10, sig=15, target_pid=11),
]


@pytest.fixture
def run_dir(tmp_path):
    store = RunStore(tmp_path / "run")
    store.set_meta(command=["sh", "-c", "x"], t0_ns=T0)
    for ev in EVENTS:
        store.add(dict(ev))
    store.record_drops(3, T0 + 50_000_000)
    store.close()
    return tmp_path / "run"


def test_both_files_hold_every_event_in_order(run_dir):
    reader = RunReader(run_dir / DB_NAME)
    stored = list(reader.events())
    lines = (run_dir / JSONL_NAME).read_text().splitlines()
    assert [json.loads(line) for line in lines] == stored
    assert [(e["area"], e["op"]) for e in stored] == [
        (e["area"], e["op"]) for e in EVENTS
    ]
    assert [e["seq"] for e in stored] == list(range(1, len(EVENTS) + 1))


def test_meta_and_drops(run_dir):
    reader = RunReader(run_dir)
    assert reader.meta() == {"command": ["sh", "-c", "x"], "t0_ns": T0}
    assert reader.drops() == 3
    assert reader.counts() == {"process": 2, "file": 2, "network": 1, "signal": 1}


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"areas": ["file"]}, [2, 5]),
        ({"areas": ["file", "signal"]}, [2, 5, 6]),
        ({"pids": [11]}, [4, 5]),
        ({"since_ns": T0 + 10_000_000}, [3, 4, 5, 6]),
        ({"until_ns": T0 + 10_000_000}, [1, 2, 3]),
        ({"areas": ["file"], "pids": [10], "until_ns": T0 + 40_000_000}, [2]),
        ({"areas": ["memory"]}, []),
    ],
)
def test_filters(run_dir, filters, expected):
    assert [e["seq"] for e in RunReader(run_dir).events(**filters)] == expected


def test_descendants(tmp_path):
    store = RunStore(tmp_path)
    for parent, child in [(10, 11), (11, 12), (10, 13), (20, 21)]:
        store.add(event("process", "fork", 0, parent, child_pid=child))
    store.close()
    reader = RunReader(tmp_path)
    assert reader.descendants([11]) == {11, 12}
    assert reader.descendants([10]) == {10, 11, 12, 13}
    assert reader.descendants([99]) == {99}


def test_sql_columns_are_queryable(run_dir):
    db = sqlite3.connect(run_dir / DB_NAME)
    rows = db.execute(
        "SELECT pid, area, op FROM events WHERE area='network'"
    ).fetchall()
    assert rows == [(11, "network", "connect")]


def test_invalid_utf8_and_bytes_are_stored_as_text(tmp_path):
    store = RunStore(tmp_path)
    bad = b"/tmp/bad\xff\nname".decode("utf-8", "surrogateescape")
    store.add(event("file", "create", 0, 1, path=bad, raw=b"\x01\x02", comm=bad))
    store.close()
    (stored,) = RunReader(tmp_path).events()
    assert stored["path"] == "/tmp/bad\\xff\\nname"
    assert stored["raw"] == "0102"
    (tmp_path / JSONL_NAME).read_text(encoding="utf-8")  # valid UTF-8 throughout


def test_control_characters_survive_json_exactly():
    ev = event("file", "create", 0, 1, path="/tmp/a\nb\x1b")
    assert json.loads(to_json(ev))["path"] == "/tmp/a\nb\x1b"
    assert "\n" not in to_json(ev)


def test_a_new_run_replaces_the_old_one(run_dir):
    store = RunStore(run_dir)
    store.add(event("file", "read", 0, 1, path="/x"))
    store.close()
    assert len(list(RunReader(run_dir).events())) == 1


class TestBadRuns:
    def test_missing(self, tmp_path):
        with pytest.raises(CapsuleError, match=r"failed to open run .*: no such file"):
            RunReader(tmp_path / "nope.db")

    def test_not_sqlite(self, tmp_path):
        path = tmp_path / "run.db"
        path.write_text("hello, this is not a database" * 100)
        with pytest.raises(CapsuleError, match="failed to open run .*run.db: "):
            RunReader(path)

    def test_other_sqlite(self, tmp_path):
        path = tmp_path / "other.db"
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
        with pytest.raises(CapsuleError, match="no such table: events"):
            RunReader(path)

    def test_unwritable_directory(self, tmp_path):
        (tmp_path / "file").write_text("")
        with pytest.raises(CapsuleError, match="failed to create run store"):
            RunStore(tmp_path / "file" / "run")


def test_a_failed_write_is_reported(tmp_path):
    store = RunStore(tmp_path)
    store._submit(store._writer.db.close)  # the database goes away under the writer
    store.add(event("file", "read", 0, 1, path="/x"))
    with pytest.raises(CapsuleError, match="failed to write run store .*closed"):
        store.close()


def test_docs_name_every_stored_field():
    """docs/events.md is the JSONL schema: a field added to the schema must be there."""
    from pathlib import Path

    from capsule.events import schema

    doc = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    dropped_by_decoder = {"unix_path", "cwd"}  # folded into addr and filename
    missing = []
    for layout in schema.LAYOUTS.values():
        joined = {part for _, d, n in layout.paths for part in (d, n) if part}
        names = [f.name for f in layout.fields if not f.name.startswith("_pad")]
        names += [out for out, _, _ in layout.paths]
        missing += [
            f"{layout.name}.{name}"
            for name in names
            if name not in joined | dropped_by_decoder and f"`{name}`" not in doc
        ]
    assert missing == []
