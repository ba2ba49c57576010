"""The store in PostgreSQL: the library's persistence settings, the schema it needs, the
writer's connection, and the positions kept next to the log.

eventsourcing's PostgreSQL recorder keeps the events in `<schema>.jobmanager_events` with a
`notification_id` from a sequence, and takes `LOCK TABLE ... IN EXCLUSIVE MODE` for every
insert so that ids are handed out in commit order. A sequence is not gap-free (a rolled-back
insert burns its numbers), and the relay, the seals and the audit take the positions as
1, 2, 3, ...: so here the column has no default, and a trigger gives a row inserted without
an id the largest one plus one (`jm_next_position`; the library's inserts, under its lock).
The writer's own appends (`PgWriterLog`) take the same lock, read the largest id and insert
their rows with the ids that follow, in one transaction with the write index's changes:
gap-free (a rollback leaves no hole), in commit order (no other writer appends until the
commit), whoever writes.

Creating the schema and the tables is serialized by an advisory lock, so that several
instances may start at once (`open_postgres`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Sequence
from typing import Any, Final
from uuid import UUID

import psycopg
import structlog
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from att_jm.log.backend import (
    PG_EVENTS,
    POSTGRES,
    LiveConnection,
    PgLocation,
    parse_postgres,
    pg_connect,
)
from att_jm.store.app import JobManagerApp
from att_jm.store.faults import StoreConflict
from att_jm.store.writer import BeforeCommit, WriterLog

log = structlog.get_logger("att_jm")

#: The primary key of the events table: (originator_id, originator_version).
EVENT_KEY: Final = f"{PG_EVENTS}_pkey"
POSITIONS: Final = "jm_positions"
_TRIGGER: Final = "jm_next_position"


def lock_key(purpose: str, schema: str) -> int:
    """A 64-bit advisory lock key for `purpose` on the store in `schema`."""
    digest = hashlib.sha256(f"att_jm:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def postgres_env(location: PgLocation, *, readonly: bool = False) -> dict[str, str]:
    """Persistence settings of the library for the store at `location`."""
    password = location.password
    if password is None:  # libpq's PGPASSWORD, else its password file (~/.pgpass)
        password = os.environ.get("PGPASSWORD", "")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": location.dbname,
        "POSTGRES_HOST": location.host,
        "POSTGRES_PORT": str(location.port),
        "POSTGRES_USER": location.user,
        "POSTGRES_PASSWORD": password,
        "POSTGRES_SCHEMA": location.schema,
        "POSTGRES_POOL_SIZE": "1",  # one thread uses it; a few more when asked at once
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_LOCK_TIMEOUT": "10",  # seconds for the table lock, as SQLite's busy timeout
        "IS_SNAPSHOTTING_ENABLED": "y",
        "CREATE_TABLE": "n" if readonly else "y",
    }


def open_postgres(url: str, *, readonly: bool = False, compact: bool = False) -> JobManagerApp:
    """The application over the PostgreSQL store at `url`; unless `readonly`, its schema and
    tables are created when missing, one instance at a time. `compact`: as `open_store`'s."""
    location = parse_postgres(url)
    env = postgres_env(location, readonly=readonly)
    if readonly:
        return JobManagerApp(env=env, compact=compact)
    with pg_connect(location) as db:
        key = lock_key("ddl", location.schema)
        db.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            if db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                          (location.schema,)).fetchone() is None:
                db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(location.schema)))
            app = JobManagerApp(env=env, compact=compact)
            _gap_free_positions(db, location.schema)
            db.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, "
                               "position BIGINT NOT NULL)").format(sql.Identifier(POSITIONS)))
        finally:
            db.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return app


def _gap_free_positions(db: psycopg.Connection[Any], schema: str) -> None:
    """The events table's `notification_id` without the sequence's default: a row inserted
    without an id gets the largest one plus one (see the module)."""
    table = sql.Identifier(schema, PG_EVENTS)
    default = db.execute(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s AND column_name = 'notification_id'", (schema, PG_EVENTS),
    ).fetchone()
    if default is not None and default[0] is not None:
        db.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN notification_id DROP DEFAULT")
                   .format(table))
    if db.execute("SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
                  (f"{schema}.{PG_EVENTS}", _TRIGGER)).fetchone() is not None:
        return
    function = sql.Identifier(schema, _TRIGGER)
    db.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN NEW.notification_id := (SELECT coalesce(max(notification_id), 0) + 1 "
        "FROM {table}); RETURN NEW; END $$").format(function=function, table=table))
    db.execute(sql.SQL(
        "CREATE TRIGGER {trigger} BEFORE INSERT ON {table} FOR EACH ROW "
        "WHEN (NEW.notification_id IS NULL) EXECUTE FUNCTION {function}()").format(
            trigger=sql.Identifier(_TRIGGER), table=table, function=function))


def is_key_clash(error: BaseException) -> bool:
    """Whether `error` is the events table's primary key refusing a row (a version that
    another writer stored first)."""
    return (isinstance(error, psycopg.errors.UniqueViolation)
            and error.diag.constraint_name == EVENT_KEY)


class PgWriterLog(WriterLog):
    """The writer's connection to a PostgreSQL store (see the module).

    One append is two round trips in a pipeline: the lock and the largest id, then the
    insert (one statement with arrays), the caller's statements and the commit. After a
    failed append the connection is dropped (it may be broken, or hold prepared statements
    of an aborted pipeline) and a new one opened at the next use.
    """

    dialect = POSTGRES

    def __init__(self, app: JobManagerApp, lock_timeout: float = 10.0) -> None:
        self._location = parse_postgres(app.location)
        self.db_name = self._location.shown
        self._lock_timeout_ms = int(lock_timeout * 1000)
        self._db: psycopg.Connection[Any] | None = None
        self._insert = (
            f"INSERT INTO {PG_EVENTS} (notification_id, originator_id, originator_version, "  # noqa: S608 -- fixed names
            "topic, state) SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::bigint[], "
            "%s::text[], %s::bytea[])"
        )
        self.connection  # noqa: B018 -- connect now: a store that cannot be reached fails the start

    @property
    def connection(self) -> psycopg.Connection[Any]:
        db = self._db
        if db is None or db.closed or db.broken:
            db = pg_connect(self._location)
            db.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
            self._db = db
        return db

    def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except psycopg.Error as error:  # already broken
                log.debug("store.close_failed", error=repr(error))

    def append(
        self, stored: Sequence[StoredEvent], before_commit: BeforeCommit | None = None,
    ) -> list[int]:
        if not stored:
            return []
        db = self.connection
        try:
            with db.pipeline(), db.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(f"LOCK TABLE {PG_EVENTS} IN EXCLUSIVE MODE")
                cursor.execute(f"NOTIFY {PG_EVENTS}")  # as the library does: LISTENers wake
                cursor.execute(f"SELECT coalesce(max(notification_id), 0) FROM {PG_EVENTS}")  # noqa: S608 -- fixed names
                row = cursor.fetchone()
                last = int(row[0]) if row is not None else 0
                positions = list(range(last + 1, last + 1 + len(stored)))
                cursor.execute(self._insert, (
                    positions,
                    [s.originator_id if isinstance(s.originator_id, UUID)
                     else UUID(str(s.originator_id)) for s in stored],
                    [s.originator_version for s in stored],
                    [s.topic for s in stored],
                    [s.state for s in stored],
                ))
                if before_commit is not None:
                    before_commit(cursor, positions)
                cursor.execute("COMMIT")
        except BaseException as error:
            self._drop()  # the server rolls back what it holds of the transaction
            if is_key_clash(error):
                raise StoreConflict(f"IntegrityError: {error}") from error
            raise
        return positions

    def create(self, script: str) -> None:
        db = self.connection
        try:
            db.execute("BEGIN")
            db.execute("SELECT pg_advisory_xact_lock(%s)",
                       (lock_key("ddl", self._location.schema),))
            for statement in POSTGRES.ddl(script):
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            self._drop()
            raise

    def existing(self, ids: Collection[UUID], chunk: int = 5000) -> set[UUID]:
        found: set[UUID] = set()
        wanted = list(ids)
        for start in range(0, len(wanted), chunk):
            rows = self.connection.execute(
                f"SELECT originator_id FROM {PG_EVENTS} WHERE originator_version = 1 "  # noqa: S608 -- fixed names
                "AND originator_id = ANY(%s)", (wanted[start : start + chunk],))
            found.update(row[0] for row in rows)
        return found

    def missing_start(self) -> bool:
        row = self.connection.execute(
            f"SELECT min(notification_id) FROM {PG_EVENTS}").fetchone()  # noqa: S608 -- fixed names
        return row is not None and row[0] is not None and int(row[0]) > 1

    def has_rows(self, aggregate_id: UUID) -> bool:
        return self.connection.execute(
            f"SELECT 1 FROM {PG_EVENTS} WHERE originator_id = %s LIMIT 1",  # noqa: S608 -- fixed names
            (aggregate_id,)).fetchone() is not None

    def first_state(self, aggregate_id: UUID) -> bytes | None:
        row = self.connection.execute(
            f"SELECT state FROM {PG_EVENTS} WHERE originator_id = %s "  # noqa: S608 -- fixed names
            "AND originator_version = 1", (aggregate_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def events_of(self, aggregate_id: UUID, kind: str) -> list[StoredEvent]:
        rows = self.connection.execute(
            f"SELECT originator_version, topic, state FROM {PG_EVENTS} "  # noqa: S608 -- fixed names
            "WHERE originator_id = %s AND EXISTS (SELECT 1 FROM "
            f"{PG_EVENTS} WHERE originator_id = %s AND originator_version = 1 "
            "AND substr(topic, 1, %s) = %s) ORDER BY originator_version",
            (aggregate_id, aggregate_id, len(kind), kind)).fetchall()
        return [StoredEvent(aggregate_id, int(version), str(topic), bytes(state))
                for version, topic, state in rows]

    def close(self) -> None:
        self._drop()


class PgPositions:
    """Positions kept in the store's `jm_positions` table (the relay's published one), each
    row written alone in autocommit, on a connection of its own."""

    def __init__(self, url: str) -> None:
        self._db = LiveConnection(parse_postgres(url))

    def read(self, name: str) -> int | None:
        row = self._db.execute(
            f"SELECT position FROM {POSITIONS} WHERE name = %s", (name,)).fetchone()  # noqa: S608 -- fixed names
        return None if row is None else max(0, int(row[0]))

    def write(self, name: str, position: int) -> None:
        self._db.execute(
            POSTGRES.upsert(POSITIONS, ("name", "position"), "name"), (name, position))

    def close(self) -> None:
        self._db.close()


class SessionLock:
    """An advisory lock of the store held by a connection of its own until `release()` (or
    the connection's end: a process that dies loses it)."""

    def __init__(self, url: str, purpose: str) -> None:
        self._location = parse_postgres(url)
        self._key = lock_key(purpose, self._location.schema)
        self._db: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        if self._db is None or self._db.closed:
            self._db = pg_connect(self._location)
        row = self._db.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        return row is not None and bool(row[0])

    def release(self) -> None:
        if self._db is not None:
            self._db.close()  # the session's locks go with it
            self._db = None

    close = release
