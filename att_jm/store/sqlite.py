"""The store in an SQLite file: its persistence settings and the writer's connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from att_jm import timeline
from att_jm.log.backend import SQLITE
from att_jm.store.faults import StoreConflict
from att_jm.store.writer import BeforeCommit, WriterLog

if TYPE_CHECKING:  # pragma: no cover
    from att_jm.store.app import JobManagerApp

#: How SQLite names a clash of an event's key (another writer stored that version first).
_KEY_CLASH: Final = "UNIQUE constraint failed: stored_events.originator_id"


def sqlite_env(path: str, *, readonly: bool = False) -> dict[str, str]:
    """Persistence settings for an SQLite store file (created with its folder when missing)."""
    if readonly:
        dbname = f"file:{Path(path).resolve()}?mode=ro"
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        dbname = path
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": dbname,
        "SQLITE_LOCK_TIMEOUT": "10",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "CREATE_TABLE": "n" if readonly else "y",
    }


class SqliteWriterLog(WriterLog):
    """The writer's connection to an SQLite store file.

    SQLite gives a new row the largest rowid plus one, and `BEGIN IMMEDIATE` takes the
    file's write lock: the rows of one transaction take consecutive positions ending at the
    largest rowid after the insert.
    """

    dialect = SQLITE

    def __init__(self, app: JobManagerApp, lock_timeout: float = 10.0) -> None:
        recorder = app.recorder
        table = str(recorder.events_table_name)  # type: ignore[attr-defined]  # the SQLite recorder's
        db_name = str(recorder.datastore.pool.db_name)  # type: ignore[attr-defined]  # idem
        self._db = sqlite3.connect(db_name, uri=db_name.startswith("file:"),
                                   isolation_level=None, timeout=lock_timeout)
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before its ack
        self.db_name = db_name
        self._insert = str(recorder.insert_events_statement)  # type: ignore[attr-defined]  # idem
        self._last = f"SELECT max(rowid) FROM {table}"  # noqa: S608 -- the library's table name
        self._any = (
            f"SELECT originator_id FROM {table} WHERE originator_version = 1 "  # noqa: S608 -- idem
            "AND originator_id IN "
        )
        self._events_of = (
            f"SELECT originator_version, topic, state FROM {table} "  # noqa: S608 -- idem
            "WHERE originator_id = ? AND EXISTS (SELECT 1 FROM "
            f"{table} WHERE originator_id = ? AND originator_version = 1 "
            "AND substr(topic, 1, ?) = ?) ORDER BY originator_version"
        )
        self._rows_of = f"SELECT 1 FROM {table} WHERE originator_id = ? LIMIT 1"  # noqa: S608 -- idem
        self._first_position = f"SELECT min(rowid) FROM {table}"  # noqa: S608 -- idem
        self._first = (
            f"SELECT state FROM {table} WHERE originator_id = ? "  # noqa: S608 -- idem
            "AND originator_version = 1"
        )

    @property
    def connection(self) -> sqlite3.Connection:
        return self._db

    def append(
        self, stored: Sequence[StoredEvent], before_commit: BeforeCommit | None = None,
    ) -> list[int]:
        if not stored:
            return []
        rows = [
            (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
             s.originator_version, s.topic, s.state)
            for s in stored
        ]
        db = self._db
        t0 = timeline.now() if timeline.ON else 0
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(self._insert, rows)
            last = int(db.execute(self._last).fetchone()[0])
            positions = list(range(last - len(rows) + 1, last + 1))
            if before_commit is not None:
                before_commit(db.cursor(), positions)
            t1 = timeline.now() if timeline.ON else 0
            db.execute("COMMIT")
            timeline.mark("append", t0, t1)
        except BaseException as error:
            if db.in_transaction:  # SQLite may have rolled back by itself (a full disk)
                db.execute("ROLLBACK")
            if isinstance(error, sqlite3.IntegrityError) and str(error).startswith(_KEY_CLASH):
                raise StoreConflict(f"IntegrityError: {error}") from error
            raise
        return positions

    def create(self, script: str) -> None:
        self._db.executescript(script)

    def existing(self, ids: Collection[UUID], chunk: int = 500) -> set[UUID]:
        found: set[UUID] = set()
        wanted = [aggregate_id.hex for aggregate_id in ids]
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            cursor = self._db.execute(f"{self._any}({','.join('?' * len(part))})", part)
            found.update(UUID(row[0]) for row in cursor)
        return found

    def missing_start(self) -> bool:
        first = self._db.execute(self._first_position).fetchone()[0]
        return first is not None and int(first) > 1

    def has_rows(self, aggregate_id: UUID) -> bool:
        return self._db.execute(self._rows_of, (aggregate_id.hex,)).fetchone() is not None

    def first_state(self, aggregate_id: UUID) -> bytes | None:
        row = self._db.execute(self._first, (aggregate_id.hex,)).fetchone()
        if row is None:
            return None
        state = row[0]
        return state if isinstance(state, bytes) else str(state).encode()

    def events_of(self, aggregate_id: UUID, kind: str) -> list[StoredEvent]:
        key = aggregate_id.hex
        rows = self._db.execute(self._events_of, (key, key, len(kind), kind)).fetchall()
        return [StoredEvent(aggregate_id, int(version), str(topic),
                            state if isinstance(state, bytes) else str(state).encode())
                for version, topic, state in rows]

    def close(self) -> None:
        self._db.close()
