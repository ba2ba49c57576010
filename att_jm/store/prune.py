"""Removing archived rows from the store: the anchor recorded, then the rows deleted.

Used by `att-jm audit archive` while the service may run: every write is a short
transaction of its own (the anchor in one; the rows in transactions of `BATCH` rows, so
the writer, which appends in between, never waits long), and each step can be run again
after a crash (a re-run deletes what is left). The positions of the rows that stay never
change; the store always keeps its last row (the seal after the anchor), so an append
still takes the largest position plus one. The store is never vacuumed: `VACUUM` may
renumber SQLite's rowids, the positions; the freed pages are reused by later rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, Final
from uuid import UUID

from att_jm.log.anchor import Anchor, create_table, insert_anchor
from att_jm.log.backend import (
    PG_EVENTS,
    PG_SNAPSHOTS,
    POSTGRES,
    SQLITE,
    is_postgres,
    parse_postgres,
    pg_connect,
)
from att_jm.log.stored import SNAPSHOTS, TABLE

BATCH: Final = 1000  # rows deleted per transaction


class Pruner:
    """A writing connection to the store `store` (a path or a PostgreSQL URL)."""

    def __init__(self, store: str) -> None:
        self.postgres = is_postgres(store)
        self.dialect = POSTGRES if self.postgres else SQLITE
        if self.postgres:
            self.db: Any = pg_connect(parse_postgres(store))
            self._events, self._key = PG_EVENTS, "notification_id"
            self._snapshots = PG_SNAPSHOTS
        else:
            self.db = sqlite3.connect(store, isolation_level=None, timeout=30.0)
            self.db.execute("PRAGMA synchronous=FULL")
            self._events, self._key = TABLE, "rowid"
            self._snapshots = SNAPSHOTS

    def close(self) -> None:
        self.db.close()

    def record(self, anchor: Anchor) -> None:
        """Record `anchor` in `jm_anchor` (created when missing), in one transaction."""
        create_table(self.db, self.dialect)
        with self._transaction() as cursor:
            insert_anchor(cursor, self.dialect, anchor)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in a write transaction, committed at the end (rolled back on error)."""
        cursor = self.db.cursor()
        cursor.execute(self.dialect.begin_write)
        try:
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            if self.dialect.in_transaction(self.db):
                cursor.execute("ROLLBACK")
            raise

    def leftover(self, position: int) -> int:
        """How many rows at or before `position` are still stored."""
        row = self.db.execute(self.dialect.q(
            f"SELECT count(*) FROM {self._events} WHERE {self._key} <= ?"),  # noqa: S608 -- fixed names
            (position,)).fetchone()
        return int(row[0])

    def delete_through(self, position: int, batch: int = BATCH) -> int:
        """Delete the rows at or before `position`, `batch` rows per transaction; how many.

        Refuses to delete the last stored row (ValueError): positions must keep growing."""
        last = self.db.execute(f"SELECT max({self._key}) FROM {self._events}").fetchone()[0]  # noqa: S608 -- fixed names
        if last is not None and int(last) <= position:
            raise ValueError(f"position {position} is the end of the log: the store must keep "
                             "its last row")
        delete = self.dialect.q(
            f"DELETE FROM {self._events} WHERE {self._key} IN "  # noqa: S608 -- fixed names
            f"(SELECT {self._key} FROM {self._events} WHERE {self._key} <= ? "
            f"ORDER BY {self._key} LIMIT ?)")
        deleted = 0
        while True:
            with self._transaction() as cursor:
                cursor.execute(delete, (position, batch))
                count = int(cursor.rowcount)
            deleted += max(0, count)
            if count < batch:
                return deleted

    def sweep_snapshots(self) -> int:
        """Delete the snapshots no load can use once the archived rows are gone (what an
        archival interrupted after its deletion left): each aggregate keeps those at or after
        the version just before its first stored event, or, with no stored event left, its
        newest; how many were deleted, in one transaction."""
        s, e = self._snapshots, self._events
        with self._transaction() as cursor:
            cursor.execute(
                f"DELETE FROM {s} WHERE originator_version < COALESCE("  # noqa: S608 -- fixed names
                f"(SELECT min(e.originator_version) - 1 FROM {e} e "
                f"WHERE e.originator_id = {s}.originator_id), "
                f"(SELECT max(k.originator_version) FROM {s} k "
                f"WHERE k.originator_id = {s}.originator_id))")
            return max(0, int(cursor.rowcount))

    def delete_snapshots(self, kept: Iterable[tuple[str, int]]) -> int:
        """Delete each aggregate's snapshots older than the one kept for it ((stored id as
        32 hex digits, version) pairs), in one transaction; how many."""
        ids = [(UUID(stored_id) if self.postgres else stored_id, version)
               for stored_id, version in kept]
        if not ids:
            return 0
        delete = self.dialect.q(f"DELETE FROM {self._snapshots} "  # noqa: S608 -- fixed names
                                "WHERE originator_id = ? AND originator_version < ?")
        deleted = 0
        with self._transaction() as cursor:
            for key, version in ids:
                cursor.execute(delete, (key, version))
                deleted += max(0, cursor.rowcount)
        return deleted
