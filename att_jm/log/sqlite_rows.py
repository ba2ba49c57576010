"""The log reader's SQL on an SQLite store file (see `att_jm.log.rows`).

eventsourcing's `stored_events` table: a row's position is its `rowid`, the originator id is
stored as 32 hex digits; `stored_snapshots`: one row per snapshot, keyed by aggregate id and
version. The file is opened with `mode=ro`; in WAL mode readers never block the writer.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from att_jm.log.stored import (
    DASHED_ID_SQL,
    PAGE,
    SNAPSHOTS,
    TABLE,
    AuditError,
    KeyedRow,
    RawRow,
    Row,
    Survey,
    UndecodableText,
    as_row,
    paged,
    range_clause,
    readonly_uri,
)

_COLUMNS: Final = "rowid, originator_id, originator_version, topic, state"
#: What the view rules and the write index take of a row (see `StoreReader.keyed_pages`).
_KEYED_COLUMNS: Final = f"rowid, {DASHED_ID_SQL}, topic, state"


def _marks(count: int) -> str:
    return ",".join("?" * count)


class SqliteRows:
    """The queries of `att_jm.log.rows.StoreReader` on the store file at `path` (each
    method as documented there)."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise AuditError(f"no store file at {path}")
        self.path = path
        try:
            self.db = _connect(path)
            found = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
            ).fetchone()
        except sqlite3.DatabaseError as error:
            raise AuditError(f"{path} is not a readable SQLite store: {error}") from None
        if found is None:
            raise AuditError(f"{path} has no event log (table {TABLE} is missing)")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def max_position(self) -> int:
        row = self.db.execute(f"SELECT MAX(rowid) FROM {TABLE}").fetchone()  # noqa: S608 -- fixed name
        return int(row[0] or 0)

    def count(self, after: int | None = None, upto: int | None = None) -> int:
        where, params = _range(after, upto)
        row = self.db.execute(f"SELECT count(*) FROM {TABLE} {where}", params).fetchone()  # noqa: S608 -- fixed name, placeholders
        return int(row[0])

    def count_topics(self, after: int, topics: Sequence[str]) -> int:
        row = self.db.execute(
            f"SELECT count(*) FROM {TABLE} WHERE rowid > ? "  # noqa: S608 -- fixed name
            f"AND topic IN ({_marks(len(topics))})", (after, *topics),
        ).fetchone()
        return int(row[0])

    def row(self, position: int) -> Row | None:
        raw = self.db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE rowid = ?", (position,)  # noqa: S608 -- fixed names
        ).fetchone()
        return None if raw is None else as_row(raw)

    def aggregate(self, originator_id: str, upto: int | None = None) -> list[Row]:
        raws = self.db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE originator_id = ? "  # noqa: S608 -- fixed names
            "ORDER BY originator_version", (originator_id,),
        ).fetchall()
        return [as_row(raw) for raw in raws if upto is None or raw[0] <= upto]

    def last_event(self, originator_id: str, topic: str | None = None) -> Row | None:
        where = "" if topic is None else " AND topic = ?"
        raw = self.db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE originator_id = ?{where} "  # noqa: S608 -- fixed names, placeholders
            "ORDER BY originator_version DESC LIMIT 1",
            (originator_id,) if topic is None else (originator_id, topic),
        ).fetchone()
        return None if raw is None else as_row(raw)

    def tail(self, after: int) -> tuple[int, int | None, int | None]:
        raw = self.db.execute(
            f"SELECT count(*), min(rowid), max(rowid) FROM {TABLE} WHERE rowid > ?",  # noqa: S608 -- fixed name
            (after,),
        ).fetchone()
        return int(raw[0]), raw[1], raw[2]

    def straddling(self, after: int) -> list[tuple[str, int]]:
        raws = self.db.execute(
            f"SELECT originator_id, min(originator_version) FROM {TABLE} WHERE rowid > ? "  # noqa: S608 -- fixed name
            "GROUP BY originator_id HAVING min(originator_version) > 1", (after,)).fetchall()
        return [(str(oid), int(version)) for oid, version in raws]

    def snapshot_keys(self) -> list[tuple[str, int]]:
        try:
            raws = self.db.execute(
                f"SELECT originator_id, originator_version FROM {SNAPSHOTS} "  # noqa: S608 -- fixed name
                "ORDER BY originator_id, originator_version"
            ).fetchall()
        except sqlite3.OperationalError:  # no such table: a store from before snapshots
            return []
        return [(str(oid), int(version)) for oid, version in raws]

    def snapshot(self, originator_id: str, version: int) -> tuple[str, bytes] | None:
        raw = self.db.execute(
            f"SELECT topic, state FROM {SNAPSHOTS} "  # noqa: S608 -- fixed name
            "WHERE originator_id = ? AND originator_version = ?", (originator_id, version),
        ).fetchone()
        if raw is None:
            return None
        state = raw[1]
        state = state.encode() if isinstance(state, str) else bytes(state or b"")
        return str(raw[0]), state

    def window(self, first: int, last: int, topics: Sequence[str]) -> list[Row]:
        raws = self.db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE rowid BETWEEN ? AND ? "  # noqa: S608 -- fixed names, placeholders
            f"AND topic IN ({_marks(len(topics))}) ORDER BY rowid",
            (first, last, *topics),
        ).fetchall()
        return [as_row(raw) for raw in raws]

    def raw_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[RawRow]]:
        return _pages(self.db, _COLUMNS, after, upto, topics, page)

    def keyed_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[KeyedRow]]:
        return _pages(self.db, _KEYED_COLUMNS, after, upto, topics, page)

    def next_rows(self, after: int, count: int) -> list[tuple[int, str, int, str, Any]]:
        """The first `count` rows after position `after`; a row holding text that is not
        UTF-8 (SQLite cannot give it as `str`) has an `UndecodableText` as its state."""
        try:
            return next(self.raw_pages(after, None, page=count), [])
        except sqlite3.OperationalError as error:  # "Could not decode to UTF-8 column ..."
            if "decode" not in str(error):
                raise
        db = _connect(self.path)
        db.text_factory = bytes
        try:
            raws = next(_pages(db, _COLUMNS, after, None, (), count), [])
        finally:
            db.close()
        rows: list[tuple[int, str, int, str, Any]] = []
        for position, originator_id, version, topic, state in raws:
            texts = {"originator_id": originator_id, "topic": topic}
            bad = None
            for column, value in texts.items():
                if isinstance(value, bytes):
                    try:
                        texts[column] = value.decode()
                    except UnicodeDecodeError:
                        texts[column] = value.decode("utf-8", "replace")
                        bad = bad or column
            rows.append((position, texts["originator_id"], version, texts["topic"],
                         state if bad is None else UndecodableText(bad)))
        return rows

    # Rebuild ------------------------------------------------------------------------------

    def survey(self, upto: int, topics: Sequence[str], created: str, final: Sequence[str],
               others: Sequence[str]) -> Survey:
        row = self.db.execute(
            f"SELECT count(*), "  # noqa: S608 -- the library's table, fixed topics
            f"json_group_array(originator_id) FILTER (WHERE topic = ? AND "
            f"  (SELECT last.topic FROM {TABLE} AS last "
            f"   WHERE last.originator_id = event.originator_id AND last.rowid <= ? "
            f"   ORDER BY last.originator_version DESC LIMIT 1) NOT IN ({_marks(len(final))})), "
            f"json_group_array(rowid) FILTER (WHERE topic IN ({_marks(len(others))})) "
            f"FROM {TABLE} AS event WHERE rowid <= ? AND topic IN ({_marks(len(topics))})",
            (created, upto, *final, *others, upto, *topics),
        ).fetchone()
        return Survey(int(row[0]), str(row[1]), str(row[2]))

    def survey_rows(self, survey: Survey, topics: Sequence[str], upto: int,
                    page: int) -> Iterator[list[KeyedRow]]:
        cursor = self.db.execute(
            f"SELECT rowid, {DASHED_ID_SQL}, topic, state FROM {TABLE} "  # noqa: S608 -- the library's table
            f"WHERE rowid IN (SELECT value FROM json_each(?)) "
            f"OR (originator_id IN (SELECT value FROM json_each(?)) "
            f"    AND topic IN ({_marks(len(topics))}) AND rowid <= ?) "
            f"ORDER BY rowid",
            (survey.others, survey.live, *topics, upto),
        )
        while rows := cursor.fetchmany(page):
            yield rows

    def last_position(self, upto: int, topics: Sequence[str]) -> int:
        row = self.db.execute(
            f"SELECT rowid FROM {TABLE} WHERE rowid <= ? "  # noqa: S608 -- the library's table
            f"AND topic IN ({_marks(len(topics))}) ORDER BY rowid DESC LIMIT 1",
            (upto, *topics),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def backwards(self, upto: int, after: int, topic: str) -> Iterator[tuple[int, bytes]]:
        cursor = self.db.execute(
            f"SELECT rowid, state FROM {TABLE} WHERE rowid <= ? AND rowid > ? "  # noqa: S608 -- the library's table
            f"AND topic = ? ORDER BY rowid DESC",
            (upto, after, topic),
        )
        try:
            yield from cursor
        finally:
            cursor.close()


def _connect(path: str) -> sqlite3.Connection:
    """A read-only connection to the store file at `path` (never creates it)."""
    db = sqlite3.connect(readonly_uri(path), uri=True, isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA query_only = 1")
    db.execute("PRAGMA busy_timeout = 10000")
    return db


def _pages(
    db: sqlite3.Connection, columns: str, after: int | None, upto: int | None,
    topics: Sequence[str], page: int,
) -> Iterator[list[Any]]:
    """`columns` of the rows with a position in (after, upto] and one of `topics` (none: any),
    in log order, in pages of `page` rows: each page one short read (a row appended meanwhile
    shows up when `upto` allows). The first column must be `rowid`."""
    topic_filter = f" AND topic IN ({_marks(len(topics))})" if topics else ""

    def read(start: int | None) -> list[Any]:
        where, params = _range(start, upto)
        return db.execute(
            f"SELECT {columns} FROM {TABLE} {where or 'WHERE 1'}{topic_filter} "  # noqa: S608 -- fixed names, placeholders
            "ORDER BY rowid LIMIT ?", (*params, *topics, page),
        ).fetchall()

    return paged(read, after, page)


def _range(after: int | None, upto: int | None) -> tuple[str, tuple[int, ...]]:
    return range_clause(after, upto, "rowid", "?")


def insert_sqlite_rows(path: str, pages: Iterable[Sequence[Row]]) -> int:
    """Insert `pages` of rows, at their positions, into the empty store file at `path`."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("BEGIN IMMEDIATE")
        if db.execute(f"SELECT 1 FROM {TABLE} LIMIT 1").fetchone() is not None:  # noqa: S608 -- fixed name
            raise AuditError(f"{path} already holds events: import only into an empty store")
        count = 0
        for rows in pages:
            db.executemany(
                f"INSERT INTO {TABLE} (rowid, originator_id, originator_version, topic, state) "  # noqa: S608 -- fixed name
                "VALUES (?, ?, ?, ?, ?)", rows,
            )
            count += len(rows)
        db.execute("COMMIT")
        return count
    except sqlite3.IntegrityError as error:
        db.execute("ROLLBACK")
        raise AuditError(f"the rows do not fit in one log: {error}") from None
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
