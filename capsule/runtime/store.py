"""The run store: every event of a run in SQLite (the default) and in JSONL.

A run directory holds `run.db` (tables `run`, `events`, `drops`) and `events.jsonl`
(one JSON object per event, the same object as `events.data`). docs/events.md
describes both. Drops counted by the kernel are stored too, so that a reader of the
store can tell a quiet run from a lossy one.
"""

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson

from capsule.errors import CapsuleError
from capsule.runtime.escape import json_safe

log = logging.getLogger(__name__)

DB_NAME = "run.db"
JSONL_NAME = "events.jsonl"
STORE_VERSION = 1
_BATCH = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    area TEXT NOT NULL,
    op TEXT NOT NULL,
    pid INTEGER, tid INTEGER, ppid INTEGER, uid INTEGER,
    comm TEXT, flags INTEGER, verdict TEXT, depth INTEGER,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drops (ts_ns INTEGER NOT NULL, total INTEGER NOT NULL);
"""
# built once at the end of a run: keeping indexes current costs more than the insert
_INDEXES = """
CREATE INDEX IF NOT EXISTS events_by_area ON events (area, ts_ns);
CREATE INDEX IF NOT EXISTS events_by_pid ON events (pid, ts_ns);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts_ns);
"""
_INSERT = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"


def _jsonable(value):
    if isinstance(value, str):
        return json_safe(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def encode(event: dict) -> bytes:
    """One event as a JSON object on one line, valid UTF-8.

    Bytes become hex; a string holding bytes that are not UTF-8 is stored escaped.
    """
    try:
        return orjson.dumps(event)
    except TypeError:  # bytes, or a str with lone surrogates: the slow path
        return orjson.dumps(_jsonable(event))


def to_json(event: dict) -> str:
    return encode(event).decode()


class _Writer(threading.Thread):
    """Does the SQLite and file I/O of a store on its own thread.

    sqlite3 and file writes release the GIL while they work, so a batch is written while
    the session decodes and enriches the next one. Jobs run in submission order.
    """

    def __init__(self, db: sqlite3.Connection, jsonl) -> None:
        super().__init__(name="capsule-store", daemon=True)
        self.db, self.jsonl = db, jsonl
        self.jobs: queue.Queue = queue.Queue(maxsize=16)  # bounded: backpressure
        self.error: BaseException | None = None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    job()
                except (OSError, sqlite3.Error) as err:
                    self.error = err

    def write_batch(self, rows: list[tuple], lines: list[bytes]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(_INSERT, rows)
        if self.jsonl is not None:
            self.jsonl.write(b"".join(lines))


class RunStore:
    """Writes one run: events, drops and metadata."""

    def __init__(self, directory: Path, jsonl: bool = True) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.db_path = directory / DB_NAME
            for suffix in ("", "-wal", "-shm"):  # a run directory holds one run
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
            db = sqlite3.connect(
                self.db_path, isolation_level=None, check_same_thread=False
            )
            jsonl_file = open(directory / JSONL_NAME, "wb") if jsonl else None
            # a crash loses at most the last batch; the store is rebuilt per run anyway
            db.executescript(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;" + _SCHEMA
            )
            db.execute(f"PRAGMA user_version={STORE_VERSION}")
        except (OSError, sqlite3.Error) as err:
            cause = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise CapsuleError(
                f"failed to create run store {directory}: {cause}",
                hint="pass -o a directory that can be created or already exists",
            ) from err
        self._writer = _Writer(db, jsonl_file)
        self._writer.start()
        self._rows: list[tuple] = []
        self._lines: list[bytes] = []
        self._seq = 0
        self.count = 0

    def _submit(self, job) -> None:
        if self._writer.error is not None:
            raise CapsuleError(
                f"failed to write run store {self.directory}: {self._writer.error}"
            )
        self._writer.jobs.put(job)

    def set_meta(self, **values) -> None:
        rows = [(key, json.dumps(_jsonable(value))) for key, value in values.items()]
        sql = "INSERT OR REPLACE INTO run VALUES (?, ?)"
        self._submit(lambda: self._writer.db.executemany(sql, rows))

    def add(self, event: dict) -> None:
        self._seq += 1
        event["seq"] = self._seq
        data = encode(event)
        get = event.get
        self._rows.append((
            self._seq, event["ts_ns"], get("area", "?"), get("op", "?"), get("pid"),
            get("tid"), get("ppid"), get("uid"), json_safe(get("comm", "")),
            get("flags", 0), get("verdict"), get("depth", 0), data.decode(),
        ))  # fmt: skip
        self._lines.append(data + b"\n")
        if len(self._rows) >= _BATCH:
            self.flush()

    def record_drops(self, total: int, ts_ns: int) -> None:
        """The kernel's cumulative count of events it could not deliver."""
        sql = "INSERT INTO drops VALUES (?, ?)"
        self._submit(lambda: self._writer.db.execute(sql, (ts_ns, total)))

    def flush(self) -> None:
        """Hand the buffered events to the writer thread."""
        if self._rows:
            rows, lines = self._rows, self._lines
            self._submit(lambda: self._writer.write_batch(rows, lines))
            self.count += len(rows)
            self._rows, self._lines = [], []

    def close(self) -> None:
        """Write what is left, build the indexes and wait for the writer to finish."""
        self.flush()
        self._submit(self._finish)
        self._writer.jobs.put(None)
        self._writer.join()
        if self._writer.error is not None:
            raise CapsuleError(
                f"failed to write run store {self.directory}: {self._writer.error}"
            )

    def _finish(self) -> None:
        writer = self._writer
        if writer.jsonl is not None:
            writer.jsonl.close()
        writer.db.executescript(_INDEXES)
        writer.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        writer.db.execute("PRAGMA journal_mode=DELETE")
        writer.db.close()


class RunReader:
    """Reads a stored run back for `capsule timeline`."""

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            path = path / DB_NAME
        if not path.is_file():
            raise CapsuleError(
                f"failed to open run {path}: no such file",
                hint="pass the run.db written by `capsule trace -o DIR`",
            )
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            self._db.execute("SELECT 1 FROM events LIMIT 1").fetchall()
        except sqlite3.Error as err:
            raise CapsuleError(
                f"failed to open run {path}: not a Capsule run store ({err})",
                hint="pass the run.db written by `capsule trace -o DIR`",
            ) from err
        if version != STORE_VERSION:
            raise CapsuleError(
                f"failed to open run {path}: store version {version}, "
                f"expected {STORE_VERSION}"
            )
        self.path = path

    def meta(self) -> dict:
        rows = self._db.execute("SELECT key, value FROM run").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def drops(self) -> int:
        row = self._db.execute("SELECT max(total) FROM drops").fetchone()
        return row[0] or 0

    def events(
        self,
        areas: list[str] | None = None,
        pids: list[int] | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> Iterator[dict]:
        """Stored events in time order, filtered; times are CLOCK_MONOTONIC ns.

        Events from different sources (the tracer's and the hooks' ring buffers, the
        seccomp supervisor) reach the store with different delays; ts_ns orders them
        as they happened, and the order of arrival breaks ties.
        """
        where, args = [], []
        if areas:
            where.append(f"area IN ({','.join('?' * len(areas))})")
            args += areas
        if pids:
            where.append(f"pid IN ({','.join('?' * len(pids))})")
            args += pids
        if since_ns is not None:
            where.append("ts_ns >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("ts_ns <= ?")
            args.append(until_ns)
        sql = "SELECT data FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        for (data,) in self._db.execute(sql + " ORDER BY ts_ns, seq", args):
            yield orjson.loads(data)

    def descendants(self, pids: list[int]) -> set[int]:
        """The given pids and every process forked below them during the run."""
        sql = (
            "SELECT pid, data ->> '$.child_pid' FROM events "
            "WHERE area = 'process' AND op = 'fork'"
        )
        children: dict[int, list[int]] = {}
        for parent, child in self._db.execute(sql):
            children.setdefault(parent, []).append(child)
        found, todo = set(pids), list(pids)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT area, count(*) FROM events GROUP BY area")
        return dict(rows.fetchall())

    def close(self) -> None:
        self._db.close()
