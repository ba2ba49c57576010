"""Stored rows of the event log, read straight from the SQLite store, read-only and paged.

The one reader of the log: every read of stored rows goes through `StoreReader` (the relay,
the audit tool, the sealer, and through `att_jm.store.read_rows` the catch-ups and replays),
the writer's appends being `att_jm.store.WriterLog`'s. It knows the store's SQL
(eventsourcing's `stored_events` table: a row's position is its `rowid`; its
`stored_snapshots` table: one row per snapshot, keyed by aggregate id and version). It opens
the file with `mode=ro` and reads in pages of short transactions: in WAL mode they never
block the writer, and no read transaction stays open long enough to hold back the writer's
checkpoints. A caller that needs several queries on one state of the log (a rebuild) opens a
transaction on `connection` itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import quote

from att_jm.errors import AttJmError

TABLE: Final = "stored_events"
SNAPSHOTS: Final = "stored_snapshots"
PAGE: Final = 5000
_COLUMNS: Final = "rowid, originator_id, originator_version, topic, state"
#: A stored originator id (32 hex digits in SQLite) in the usual UUID text form, made by SQLite.
DASHED_ID_SQL: Final = (
    "CASE WHEN length(originator_id) = 32 THEN substr(originator_id, 1, 8) || '-' || "
    "substr(originator_id, 9, 4) || '-' || substr(originator_id, 13, 4) || '-' || "
    "substr(originator_id, 17, 4) || '-' || substr(originator_id, 21) ELSE originator_id END"
)
#: What the view rules and the write index take of a row: (position, aggregate id in UUID
#: text form, topic, state); see `StoreReader.keyed_pages`.
_KEYED_COLUMNS: Final = f"rowid, {DASHED_ID_SQL}, topic, state"


class AuditError(AttJmError):
    """The audit cannot go on: no store, not a store, a bad argument, a broken file."""


class Row(NamedTuple):
    """One stored event as it is in the store: what a seal hashes and `export` writes."""

    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


def readonly_uri(path: str) -> str:
    """The SQLite URI that opens `path` read-only (never creates it)."""
    return f"file:{quote(str(Path(path).resolve()))}?mode=ro"


class UndecodableText:
    """What a reader puts in place of a row's state when a text column of the row is not
    UTF-8 (`column`: its name; see `StoreReader.next_rows`): no message is made of such a
    row (`att_jm.log.messages.undecodable_message`)."""

    __slots__ = ("column",)

    def __init__(self, column: str) -> None:
        self.column = column


def _row(raw: tuple[Any, ...]) -> Row:
    position, originator_id, version, topic, state = raw
    if isinstance(state, str):  # a hand-edited row may hold TEXT instead of the BLOB
        state = state.encode()
    elif state is None:
        state = b""
    if not isinstance(version, int):  # idem: a version that is no integer reads as 0
        try:
            version = int(version)
        except (TypeError, ValueError, OverflowError):
            version = 0
        if not -(2**63) <= version < 2**63:
            version = 0
    return Row(int(position), str(originator_id), version, str(topic), bytes(state))


class StoreReader:
    """Read-only access to the rows of the store file at `path`."""

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise AuditError(f"no store file at {path}")
        self.path = path
        try:
            self._db = _connect(path)
            found = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
            ).fetchone()
        except sqlite3.DatabaseError as error:
            raise AuditError(f"{path} is not a readable SQLite store: {error}") from None
        if found is None:
            raise AuditError(f"{path} has no event log (table {TABLE} is missing)")

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The reader's own connection (autocommit), for a caller's queries on one state of
        the log: `BEGIN` ... `COMMIT` around them."""
        return self._db

    def max_position(self) -> int:
        """The position of the last stored row (0 for an empty log)."""
        row = self._db.execute(f"SELECT MAX(rowid) FROM {TABLE}").fetchone()  # noqa: S608 -- fixed name
        return int(row[0] or 0)

    def count(self, after: int | None = None, upto: int | None = None) -> int:
        """How many rows have a position in (after, upto]."""
        where, params = _range(after, upto)
        row = self._db.execute(f"SELECT count(*) FROM {TABLE} {where}", params).fetchone()  # noqa: S608 -- fixed name, placeholders
        return int(row[0])

    def count_topics(self, after: int, topics: Sequence[str]) -> int:
        """How many rows after position `after` have one of `topics`."""
        row = self._db.execute(
            f"SELECT count(*) FROM {TABLE} WHERE rowid > ? "  # noqa: S608 -- fixed name
            f"AND topic IN ({','.join('?' * len(topics))})", (after, *topics),
        ).fetchone()
        return int(row[0])

    def row(self, position: int) -> Row | None:
        raw = self._db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE rowid = ?", (position,)  # noqa: S608 -- fixed names
        ).fetchone()
        return None if raw is None else _row(raw)

    def aggregate(self, originator_id: str, upto: int | None = None) -> list[Row]:
        """The rows of one aggregate (stored id: 32 hex digits), by version, up to `upto`."""
        raws = self._db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE originator_id = ? "  # noqa: S608 -- fixed names
            "ORDER BY originator_version", (originator_id,),
        ).fetchall()
        return [_row(raw) for raw in raws if upto is None or raw[0] <= upto]

    def last_event(self, originator_id: str, topic: str | None = None) -> Row | None:
        """The row of the highest version of one aggregate (of that `topic`, if given): one
        look-up in the (originator_id, originator_version) key, whatever the log's size."""
        where = "" if topic is None else " AND topic = ?"
        raw = self._db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE originator_id = ?{where} "  # noqa: S608 -- fixed names, placeholders
            "ORDER BY originator_version DESC LIMIT 1",
            (originator_id,) if topic is None else (originator_id, topic),
        ).fetchone()
        return None if raw is None else _row(raw)

    def tail(self, after: int) -> tuple[int, int | None, int | None]:
        """(how many, first, last position) of the rows after position `after`: reads only
        those rows' keys."""
        raw = self._db.execute(
            f"SELECT count(*), min(rowid), max(rowid) FROM {TABLE} WHERE rowid > ?",  # noqa: S608 -- fixed name
            (after,),
        ).fetchone()
        return int(raw[0]), raw[1], raw[2]

    def snapshot_keys(self) -> list[tuple[str, int]]:
        """(aggregate id as stored, version) of every stored snapshot, in key order (none
        when the store has no snapshot table)."""
        try:
            raws = self._db.execute(
                f"SELECT originator_id, originator_version FROM {SNAPSHOTS} "  # noqa: S608 -- fixed name
                "ORDER BY originator_id, originator_version"
            ).fetchall()
        except sqlite3.OperationalError:  # no such table: a store from before snapshots
            return []
        return [(str(oid), int(version)) for oid, version in raws]

    def snapshot(self, originator_id: str, version: int) -> tuple[str, bytes] | None:
        """(topic, state) of one stored snapshot."""
        raw = self._db.execute(
            f"SELECT topic, state FROM {SNAPSHOTS} "  # noqa: S608 -- fixed name
            "WHERE originator_id = ? AND originator_version = ?", (originator_id, version),
        ).fetchone()
        if raw is None:
            return None
        state = raw[1]
        state = state.encode() if isinstance(state, str) else bytes(state or b"")
        return str(raw[0]), state

    def window(self, first: int, last: int, topics: Sequence[str]) -> list[Row]:
        """The rows with a position in [first, last] and one of `topics`."""
        raws = self._db.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE rowid BETWEEN ? AND ? "  # noqa: S608 -- fixed names, placeholders
            f"AND topic IN ({','.join('?' * len(topics))}) ORDER BY rowid",
            (first, last, *topics),
        ).fetchall()
        return [_row(raw) for raw in raws]

    def pages(
        self, after: int | None = None, upto: int | None = None, topics: Sequence[str] = (),
        page: int = PAGE,
    ) -> Iterator[list[Row]]:
        """The rows with a position in (after, upto] (None: unbounded), in pages, in log order.

        Each page is one short read; a row appended meanwhile shows up when `upto` allows.
        """
        for raws in self.raw_pages(after, upto, topics, page):
            yield [_row(raw) for raw in raws]

    def rows(
        self, after: int | None = None, upto: int | None = None, topics: Sequence[str] = (),
        page: int = PAGE,
    ) -> Iterator[Row]:
        """The rows of `pages`, one by one."""
        for rows in self.pages(after, upto, topics, page):
            yield from rows

    def raw_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[tuple[int, str, int, str, bytes]]]:
        """Like `pages`, without building `Row`s: the tuples as SQLite returns them."""
        return _pages(self._db, _COLUMNS, after, upto, topics, page)

    def keyed_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[tuple[int, str, str, bytes]]]:
        """Like `raw_pages`, each row as (position, aggregate id in UUID text form, topic,
        state): what the view rules and the write index take (no version; the id made by
        SQLite, no Python per row)."""
        return _pages(self._db, _KEYED_COLUMNS, after, upto, topics, page)

    def next_rows(self, after: int, count: int) -> list[tuple[int, str, int, str, Any]]:
        """The first `count` rows after position `after`, as `raw_pages` gives them; a row
        holding text that is not UTF-8 (SQLite cannot give it as `str`) has an
        `UndecodableText` as its state."""
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
    topic_filter = f" AND topic IN ({','.join('?' * len(topics))})" if topics else ""
    while True:
        where, params = _range(after, upto)
        where = where or "WHERE 1"
        raws = db.execute(
            f"SELECT {columns} FROM {TABLE} {where}{topic_filter} ORDER BY rowid LIMIT ?",  # noqa: S608 -- fixed names, placeholders
            (*params, *topics, page),
        ).fetchall()
        if not raws:
            return
        yield raws
        if len(raws) < page:
            return
        after = raws[-1][0]


def _range(after: int | None, upto: int | None) -> tuple[str, tuple[int, ...]]:
    clauses: list[str] = []
    params: list[int] = []
    if after is not None:
        clauses.append("rowid > ?")
        params.append(after)
    if upto is not None:
        clauses.append("rowid <= ?")
        params.append(upto)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def insert_rows(path: str, pages: Iterable[Sequence[Row]]) -> int:
    """Insert `pages` of rows, at their positions, into the empty store at `path`.

    All or nothing: one transaction. AuditError when the store already holds events.
    """
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
