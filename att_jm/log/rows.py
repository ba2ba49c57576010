"""Stored rows of the event log, read-only and paged: the one reader of the log.

Every read of stored rows goes through a `StoreReader` (the relay, the audit tool, the
sealer, the service's traces, and through `att_jm.store.read_rows` the catch-ups and
replays), the writer's appends being `att_jm.store.WriterLog`'s. `StoreReader(store)` opens
the store `store` names and reads it with that engine's SQL: an SQLite file
(`att_jm.log.sqlite_rows`: eventsourcing's `stored_events` table, a row's position is its
`rowid`) or a PostgreSQL database (`att_jm.log.pg_rows`: `jobmanager_events`, a row's
position is its `notification_id`). Both give the same rows: the originator id as 32 hex
digits (SQLite's stored form), the state as bytes. A reader never writes (SQLite
`mode=ro`; PostgreSQL read-only transactions) and reads in pages of short transactions: they
never block the writer, and no read transaction stays open long enough to hold it back. A
caller that needs several queries on one state of the log (a rebuild) uses `consistent()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from att_jm.log.backend import is_postgres
from att_jm.log.sqlite_rows import SqliteRows, insert_sqlite_rows
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
    readonly_uri,
)

__all__ = ["DASHED_ID_SQL", "PAGE", "SNAPSHOTS", "TABLE", "AuditError", "KeyedRow", "RawRow",
           "Row", "StoreReader", "Survey", "UndecodableText", "as_row", "insert_rows",
           "readonly_uri"]


class StoreReader:
    """Read-only access to the rows of the store `store`: an SQLite file's path, or a
    PostgreSQL URL (AuditError when there is no readable event log there)."""

    def __init__(self, store: str) -> None:
        #: The store as given (a URL may hold a password: never shown as it is).
        self.path = store
        if is_postgres(store):
            from att_jm.log.pg_rows import PgRows  # noqa: PLC0415 -- psycopg on demand

            self._engine: SqliteRows | PgRows = PgRows(store)
        else:
            self._engine = SqliteRows(store)

    def close(self) -> None:
        self._engine.close()

    @property
    def connection(self) -> Any:
        """The reader's own connection (autocommit)."""
        return self._engine.db

    def consistent(self) -> AbstractContextManager[None]:
        """Every query inside sees one state of the log (a read transaction)."""
        return self._engine.consistent()

    def max_position(self) -> int:
        """The position of the last stored row (0 for an empty log)."""
        return self._engine.max_position()

    def count(self, after: int | None = None, upto: int | None = None) -> int:
        """How many rows have a position in (after, upto]."""
        return self._engine.count(after, upto)

    def count_topics(self, after: int, topics: Sequence[str]) -> int:
        """How many rows after position `after` have one of `topics`."""
        return self._engine.count_topics(after, topics)

    def row(self, position: int) -> Row | None:
        return self._engine.row(position)

    def aggregate(self, originator_id: str, upto: int | None = None) -> list[Row]:
        """The rows of one aggregate (stored id: 32 hex digits), by version, up to `upto`."""
        return self._engine.aggregate(originator_id, upto)

    def last_event(self, originator_id: str, topic: str | None = None) -> Row | None:
        """The row of the highest version of one aggregate (of that `topic`, if given): one
        look-up in the (originator_id, originator_version) key, whatever the log's size."""
        return self._engine.last_event(originator_id, topic)

    def tail(self, after: int) -> tuple[int, int | None, int | None]:
        """(how many, first, last position) of the rows after position `after`: reads only
        those rows' keys."""
        return self._engine.tail(after)

    def straddling(self, after: int) -> list[tuple[str, int]]:
        """(aggregate id as stored, first version) of the aggregates whose rows after
        position `after` begin at a version above 1 (their earlier versions are at or
        before it, or archived)."""
        return self._engine.straddling(after)

    def snapshot_keys(self) -> list[tuple[str, int]]:
        """(aggregate id as stored, version) of every stored snapshot, in key order (none
        when the store has no snapshot table)."""
        return self._engine.snapshot_keys()

    def snapshot(self, originator_id: str, version: int) -> tuple[str, bytes] | None:
        """(topic, state) of one stored snapshot."""
        return self._engine.snapshot(originator_id, version)

    def window(self, first: int, last: int, topics: Sequence[str]) -> list[Row]:
        """The rows with a position in [first, last] and one of `topics`."""
        return self._engine.window(first, last, topics)

    def raw_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[RawRow]]:
        """The rows with a position in (after, upto] (None: unbounded) and one of `topics`
        (none: any), in pages, in log order, as tuples: each page one short read (a row
        appended meanwhile shows up when `upto` allows)."""
        return self._engine.raw_pages(after, upto, topics, page)

    def keyed_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[KeyedRow]]:
        """Like `raw_pages`, each row as (position, aggregate id in UUID text form, topic,
        state): what the view rules and the write index take (no version; the id made by
        the database, no Python per row)."""
        return self._engine.keyed_pages(after, upto, topics, page)

    def next_rows(self, after: int, count: int) -> list[tuple[int, str, int, str, Any]]:
        """The first `count` rows after position `after`, as `raw_pages` gives them; a row
        holding text that is not UTF-8 (SQLite may hold such text) has an
        `UndecodableText` as its state."""
        return self._engine.next_rows(after, count)

    def pages(
        self, after: int | None = None, upto: int | None = None, topics: Sequence[str] = (),
        page: int = PAGE,
    ) -> Iterator[list[Row]]:
        """The rows with a position in (after, upto] (None: unbounded), in pages, in log order.

        Each page is one short read; a row appended meanwhile shows up when `upto` allows.
        """
        for raws in self.raw_pages(after, upto, topics, page):
            yield [as_row(raw) for raw in raws]

    def rows(
        self, after: int | None = None, upto: int | None = None, topics: Sequence[str] = (),
        page: int = PAGE,
    ) -> Iterator[Row]:
        """The rows of `pages`, one by one."""
        for rows in self.pages(after, upto, topics, page):
            yield from rows

    # What a rebuild from empty views reads (projections.rebuild), inside `consistent()` -----

    def survey(self, upto: int, topics: Sequence[str], created: str, final: Sequence[str],
               others: Sequence[str]) -> Survey:
        """In one scan of the rows up to `upto` with one of `topics`: how many there are,
        the executions created (a `created` row) whose last row up to `upto` is not one of
        `final`, and the positions of the rows with one of `others` (in the engine's form)."""
        return self._engine.survey(upto, topics, created, final, others)

    def survey_rows(self, survey: Survey, topics: Sequence[str], upto: int,
                    page: int) -> Iterator[list[KeyedRow]]:
        """Pages (keyed rows, in log order) of the survey's other rows and of its live
        executions' rows with one of `topics` up to `upto`."""
        return self._engine.survey_rows(survey, topics, upto, page)

    def last_position(self, upto: int, topics: Sequence[str]) -> int:
        """The position of the last row up to `upto` with one of `topics` (0: none)."""
        return self._engine.last_position(upto, topics)

    def backwards(self, upto: int, after: int, topic: str) -> Iterator[tuple[int, bytes]]:
        """(position, state) of the rows in (after, upto] with `topic`, newest first."""
        return self._engine.backwards(upto, after, topic)


def insert_rows(store: str, pages: Iterable[Sequence[Row]]) -> int:
    """Insert `pages` of rows, at their positions, into the empty store `store`.

    All or nothing: one transaction. AuditError when the store already holds events.
    """
    if is_postgres(store):
        from att_jm.log.pg_rows import insert_pg_rows  # noqa: PLC0415 -- psycopg on demand

        return insert_pg_rows(store, pages)
    return insert_sqlite_rows(store, pages)
