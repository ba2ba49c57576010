"""The log reader's SQL on a PostgreSQL store (see `att_jm.log.rows` and `att_jm.log.backend`).

eventsourcing's `jobmanager_events` table in the store's schema: a row's position is its
`notification_id` (gap-free and in commit order: `att_jm.store.postgres`), the originator id
a `uuid`, given here as 32 hex digits like SQLite's stored form so that seals, exports and
traces are the same on both engines; `jobmanager_snapshots` likewise. Every connection is
read-only (`default_transaction_read_only`) and autocommit: each query is a short
transaction of its own, except inside `consistent()` (REPEATABLE READ).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

import psycopg
from psycopg import sql

from att_jm.log.backend import (
    PG_EVENTS,
    PG_SNAPSHOTS,
    POSTGRES,
    LiveConnection,
    parse_postgres,
    pg_connect,
    redact,
)
from att_jm.log.stored import (
    PAGE,
    AuditError,
    KeyedRow,
    RawRow,
    Row,
    Survey,
    as_row,
    paged,
    range_clause,
)

if TYPE_CHECKING:  # pragma: no cover
    from att_jm.log.backend import PgLocation

#: The originator id as SQLite stores it (32 hex digits), made by PostgreSQL.
_HEX_ID: Final = "replace(originator_id::text, '-', '')"
_COLUMNS: Final = f"notification_id, {_HEX_ID}, originator_version, topic, state"
_KEYED_COLUMNS: Final = "notification_id, originator_id::text, topic, state"


def _uuid(stored_id: str) -> UUID | None:
    try:
        return UUID(stored_id)
    except ValueError:
        return None


class PgRows:
    """The queries of `att_jm.log.rows.StoreReader` on the PostgreSQL store at `url` (each
    method as documented there)."""

    def __init__(self, url: str) -> None:
        self.path = url
        location = parse_postgres(url)
        self.location: PgLocation = location
        try:
            self.db = LiveConnection(location, readonly=True)
            found = self.db.execute("SELECT to_regclass(%s)", (f"{location.schema}.{PG_EVENTS}",)
                                     ).fetchone()
        except psycopg.Error as error:
            raise AuditError(f"cannot read the store {redact(url)}: {error}") from None
        if found is None or found[0] is None:
            self.db.close()
            raise AuditError(f"{redact(url)} has no event log (table "
                             f"{location.schema}.{PG_EVENTS} is missing)")
        self._snapshots = self.db.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{location.schema}.{PG_SNAPSHOTS}",)
        ).fetchone() == (True,)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        self.db.execute(POSTGRES.begin_snapshot)
        try:
            yield
        finally:
            if not self.db.closed:
                self.db.execute("ROLLBACK")  # read-only: nothing to keep

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(query, params).fetchone()

    def max_position(self) -> int:
        row = self._one(f"SELECT max(notification_id) FROM {PG_EVENTS}")  # noqa: S608 -- fixed names
        return int(row[0] or 0)

    def count(self, after: int | None = None, upto: int | None = None) -> int:
        where, params = _range(after, upto)
        return int(self._one(f"SELECT count(*) FROM {PG_EVENTS} {where}", params)[0])  # noqa: S608 -- fixed names

    def count_topics(self, after: int, topics: Sequence[str]) -> int:
        row = self._one(f"SELECT count(*) FROM {PG_EVENTS} WHERE notification_id > %s "  # noqa: S608 -- fixed names
                        "AND topic = ANY(%s)", (after, list(topics)))
        return int(row[0])

    def row(self, position: int) -> Row | None:
        raw = self._one(f"SELECT {_COLUMNS} FROM {PG_EVENTS} WHERE notification_id = %s",  # noqa: S608 -- fixed names
                        (position,))
        return None if raw is None else as_row(raw)

    def aggregate(self, originator_id: str, upto: int | None = None) -> list[Row]:
        key = _uuid(originator_id)
        if key is None:
            return []
        raws = self.db.execute(
            f"SELECT {_COLUMNS} FROM {PG_EVENTS} WHERE originator_id = %s "  # noqa: S608 -- fixed names
            "ORDER BY originator_version", (key,),
        ).fetchall()
        return [as_row(raw) for raw in raws if upto is None or raw[0] <= upto]

    def last_event(self, originator_id: str, topic: str | None = None) -> Row | None:
        key = _uuid(originator_id)
        if key is None:
            return None
        where = "" if topic is None else " AND topic = %s"
        raw = self._one(
            f"SELECT {_COLUMNS} FROM {PG_EVENTS} WHERE originator_id = %s{where} "  # noqa: S608 -- fixed names
            "ORDER BY originator_version DESC LIMIT 1",
            (key,) if topic is None else (key, topic),
        )
        return None if raw is None else as_row(raw)

    def tail(self, after: int) -> tuple[int, int | None, int | None]:
        raw = self._one(f"SELECT count(*), min(notification_id), max(notification_id) "  # noqa: S608 -- fixed names
                        f"FROM {PG_EVENTS} WHERE notification_id > %s", (after,))
        return int(raw[0]), raw[1], raw[2]

    def straddling(self, after: int) -> list[tuple[str, int]]:
        raws = self.db.execute(
            f"SELECT {_HEX_ID}, min(originator_version) FROM {PG_EVENTS} "  # noqa: S608 -- fixed names
            "WHERE notification_id > %s GROUP BY originator_id "
            "HAVING min(originator_version) > 1", (after,)).fetchall()
        return [(str(oid), int(version)) for oid, version in raws]

    def snapshot_keys(self) -> list[tuple[str, int]]:
        if not self._snapshots:
            return []
        raws = self.db.execute(
            f"SELECT {_HEX_ID}, originator_version FROM {PG_SNAPSHOTS} "  # noqa: S608 -- fixed names
            "ORDER BY originator_id, originator_version").fetchall()
        return [(str(oid), int(version)) for oid, version in raws]

    def snapshot(self, originator_id: str, version: int) -> tuple[str, bytes] | None:
        key = _uuid(originator_id)
        if key is None or not self._snapshots:
            return None
        raw = self._one(f"SELECT topic, state FROM {PG_SNAPSHOTS} "  # noqa: S608 -- fixed names
                        "WHERE originator_id = %s AND originator_version = %s", (key, version))
        return None if raw is None else (str(raw[0]), bytes(raw[1] or b""))

    def window(self, first: int, last: int, topics: Sequence[str]) -> list[Row]:
        raws = self.db.execute(
            f"SELECT {_COLUMNS} FROM {PG_EVENTS} WHERE notification_id BETWEEN %s AND %s "  # noqa: S608 -- fixed names
            "AND topic = ANY(%s) ORDER BY notification_id", (first, last, list(topics)),
        ).fetchall()
        return [as_row(raw) for raw in raws]

    def raw_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[RawRow]]:
        return _pages(self.db, _COLUMNS, after, upto, topics, page)

    def next_rows(self, after: int, count: int) -> list[tuple[int, str, int, str, Any]]:
        # PostgreSQL's text is always valid UTF-8: no row needs `UndecodableText`.
        return list(next(self.raw_pages(after, None, page=count), []))

    def keyed_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[KeyedRow]]:
        return _pages(self.db, _KEYED_COLUMNS, after, upto, topics, page)

    # Rebuild ------------------------------------------------------------------------------

    def survey(self, upto: int, topics: Sequence[str], created: str, final: Sequence[str],
               others: Sequence[str]) -> Survey:
        row = self._one(
            f"SELECT count(*), "  # noqa: S608 -- fixed names
            f"coalesce(array_agg(originator_id) FILTER (WHERE topic = %s AND "
            f"  (SELECT last.topic FROM {PG_EVENTS} AS last "
            f"   WHERE last.originator_id = event.originator_id AND last.notification_id <= %s "
            f"   ORDER BY last.originator_version DESC LIMIT 1) <> ALL(%s)), '{{}}'), "
            f"coalesce(array_agg(notification_id) FILTER (WHERE topic = ANY(%s)), '{{}}') "
            f"FROM {PG_EVENTS} AS event WHERE notification_id <= %s AND topic = ANY(%s)",
            (created, upto, list(final), list(others), upto, list(topics)),
        )
        return Survey(int(row[0]), list(row[1]), list(row[2]))

    def survey_rows(self, survey: Survey, topics: Sequence[str], upto: int,
                    page: int) -> Iterator[list[KeyedRow]]:
        # A server-side cursor: the rows come in pages, never all at once.
        with self.db.cursor(name="att_jm_survey") as cursor:
            cursor.execute(
                f"SELECT {_KEYED_COLUMNS} FROM {PG_EVENTS} "  # noqa: S608 -- fixed names
                f"WHERE notification_id = ANY(%s) "
                f"OR (originator_id = ANY(%s) AND topic = ANY(%s) AND notification_id <= %s) "
                f"ORDER BY notification_id",
                (survey.others, survey.live, list(topics), upto),
            )
            while rows := cursor.fetchmany(page):
                yield rows

    def last_position(self, upto: int, topics: Sequence[str]) -> int:
        row = self._one(f"SELECT notification_id FROM {PG_EVENTS} WHERE notification_id <= %s "  # noqa: S608 -- fixed names
                        "AND topic = ANY(%s) ORDER BY notification_id DESC LIMIT 1",
                        (upto, list(topics)))
        return 0 if row is None else int(row[0])

    def backwards(self, upto: int, after: int, topic: str) -> Iterator[tuple[int, bytes]]:
        with self.db.cursor(name="att_jm_backwards") as cursor:
            cursor.execute(
                f"SELECT notification_id, state FROM {PG_EVENTS} "  # noqa: S608 -- fixed names
                "WHERE notification_id <= %s AND notification_id > %s AND topic = %s "
                "ORDER BY notification_id DESC", (upto, after, topic))
            while rows := cursor.fetchmany(100):
                yield from rows


def _range(after: int | None, upto: int | None) -> tuple[str, tuple[int, ...]]:
    return range_clause(after, upto, "notification_id", "%s")


def _pages(
    db: LiveConnection, columns: str, after: int | None,
    upto: int | None, topics: Sequence[str], page: int,
) -> Iterator[list[Any]]:
    """`columns` of the rows with a position in (after, upto] and one of `topics` (none: any),
    in log order, in pages of `page` rows, each one short read. The first column must be
    `notification_id`."""
    topic_filter = " AND topic = ANY(%s)" if topics else ""
    extra: tuple[Any, ...] = (list(topics),) if topics else ()

    def read(start: int | None) -> list[Any]:
        where, params = _range(start, upto)
        return db.execute(
            f"SELECT {columns} FROM {PG_EVENTS} {where or 'WHERE true'}{topic_filter} "  # noqa: S608 -- fixed names
            "ORDER BY notification_id LIMIT %s", (*params, *extra, page),
        ).fetchall()

    return paged(read, after, page)


def insert_pg_rows(url: str, pages: Iterable[Sequence[Row]]) -> int:
    """Insert `pages` of rows, at their positions, into the empty PostgreSQL store at `url`
    (created already: `att_jm.store.open_store`), in one transaction."""
    location = parse_postgres(url)
    db = pg_connect(location)
    table = sql.Identifier(PG_EVENTS)
    try:
        db.execute("BEGIN")
        db.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        if db.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(table)).fetchone() is not None:
            raise AuditError(f"{redact(url)} already holds events: import only into an empty "
                             "store")
        count = 0
        insert = sql.SQL(
            "INSERT INTO {} (notification_id, originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::bigint[], %s::text[], "
            "%s::bytea[])").format(table)
        for rows in pages:
            ids = []
            for row in rows:
                key = _uuid(row.originator_id)
                if key is None:
                    raise AuditError(f"position {row.position}: the originator id "
                                     f"{row.originator_id!r} is not a UUID (PostgreSQL stores "
                                     "UUIDs only)")
                ids.append(key)
            db.execute(insert, ([r.position for r in rows], ids,
                                [r.originator_version for r in rows],
                                [r.topic for r in rows], [r.state for r in rows]))
            count += len(rows)
        db.execute("COMMIT")
        return count
    except psycopg.IntegrityError as error:
        db.execute("ROLLBACK")
        raise AuditError(f"the rows do not fit in one log: {error}") from None
    except psycopg.DataError as error:  # text PostgreSQL refuses (a NUL in a topic)
        db.execute("ROLLBACK")
        raise AuditError(f"the rows cannot be stored in PostgreSQL: {error}") from None
    except BaseException:
        if POSTGRES.in_transaction(db) and not db.closed:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
