"""Stores for the tests, on either engine, and reading one the way an auditor would
(read-only), for assertions."""

from __future__ import annotations

import io
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql as psql

from att_jm.audit.transfer import export
from att_jm.log.backend import (
    PG_EVENTS,
    PG_SNAPSHOTS,
    is_postgres,
    parse_postgres,
    pg_connect,
    views_location,
)
from att_jm.log.codec import loads_state
from att_jm.log.rows import StoreReader
from att_jm.log.stored import Row
from att_jm.store import open_store
from helpers.postgres import POSTGRESQL, SQLITE, PostgresServer


def store_for(request: pytest.FixtureRequest, backend: str, directory: Path) -> str:
    """A new, empty store for the test (or module) of `request`: `<directory>/att-jm.db`, or
    on PostgreSQL a fresh schema of the session's server (dropped when `request` ends)."""
    if backend != POSTGRESQL:
        return str(directory / "att-jm.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.new_store()
    request.addfinalizer(lambda: server.drop_store(url))
    return url


def another_store(request: pytest.FixtureRequest, like: str, directory: Path) -> str:
    """A new, empty store on the engine of the store `like` (see `store_for`)."""
    return store_for(request, POSTGRESQL if is_postgres(like) else SQLITE, directory)


def views_for(store: str, directory: Path) -> str:
    """Where the views of `store` go: `<directory>/<name>`-like file next to an SQLite store
    (the service's own rule), the store's views schema on PostgreSQL."""
    if is_postgres(store):
        return views_location(store)
    return str(directory / "views.db")


def stored_states(store: Path | str, topic: str) -> list[dict[str, Any]]:
    """The stored state of every event of `topic` (e.g. `att_jm:Rejection.Rejected`), in
    log order."""
    reader = StoreReader(str(store))
    try:
        return [loads_state(row.state) for row in reader.rows(topics=[topic])]
    finally:
        reader.close()


def count_events(store: Path | str, topic: str) -> int:
    """How many events of `topic` the log holds."""
    reader = StoreReader(str(store))
    try:
        return reader.count_topics(0, [topic])
    finally:
        reader.close()


def all_rows(store: Path | str) -> list[Row]:
    """Every stored event as it is in the store, in log order (the same form on both
    engines: what a seal hashes and an export writes)."""
    reader = StoreReader(str(store))
    try:
        return list(reader.rows())
    finally:
        reader.close()


def exported(store: Path | str) -> bytes:
    """The log of `store` as `att-jm audit export` writes it (JSON Lines)."""
    reader = StoreReader(str(store))
    out = io.BytesIO()
    try:
        export(reader, out)
    finally:
        reader.close()
    return out.getvalue()


def copy_store(store: str, copy: str) -> str:
    """`store` as it is (its events and snapshots, row for row) copied into the new store
    `copy` on the same engine: the file itself on SQLite; `copy`."""
    if not is_postgres(store):
        Path(copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store, copy)
        return copy
    open_store(copy).close()  # its tables, indexes and triggers
    source, target = parse_postgres(store), parse_postgres(copy)
    db = pg_connect(target)
    try:
        for table in (PG_EVENTS, PG_SNAPSHOTS):
            db.execute(psql.SQL("INSERT INTO {} SELECT * FROM {}").format(
                psql.Identifier(target.schema, table), psql.Identifier(source.schema, table)))
    finally:
        db.close()
    return copy


def rejections(store: Path | str) -> list[dict[str, Any]]:
    """Every recorded rejection, in log order."""
    return stored_states(store, "att_jm:Rejection.Rejected")


def notification_ids(store: Path | str) -> list[str]:
    """The id of every notification the log received, in log order."""
    return [state["notification_id"]
            for state in stored_states(store, "att_jm:Notification.Received")]


def intruders_sql(store: str, statement: str) -> str:
    """An SQLite statement on the store's tables as it reads on the engine of `store`: on
    PostgreSQL its tables, notification_id for rowid, its placeholders."""
    if not is_postgres(store):
        return statement
    return (statement.replace("stored_events", PG_EVENTS)
            .replace("stored_snapshots", PG_SNAPSHOTS)
            .replace("rowid", "notification_id").replace("?", "%s"))


def rewrite_state(store: Path | str, position: int, change: Callable[[bytes], bytes]) -> None:
    """What someone with write access to the store could do: the stored state of the event
    at `position` (SQLite's rowid, PostgreSQL's notification_id) replaced by `change(state)`,
    in place."""
    location = str(store)
    if is_postgres(location):
        db: Any = pg_connect(parse_postgres(location))
        select = f"SELECT state FROM {PG_EVENTS} WHERE notification_id = %s"  # noqa: S608 -- fixed names
        update = f"UPDATE {PG_EVENTS} SET state = %s WHERE notification_id = %s"  # noqa: S608 -- fixed names
    else:
        db = sqlite3.connect(location, isolation_level=None)
        select = "SELECT state FROM stored_events WHERE rowid = ?"
        update = "UPDATE stored_events SET state = ? WHERE rowid = ?"
    try:
        state = bytes(db.execute(select, (position,)).fetchone()[0])
        db.execute(update, (change(state), position))
    finally:
        db.close()


def flip_a_bit(state: bytes) -> bytes:
    """`state` with one bit of its third last byte flipped (for `rewrite_state`)."""
    changed = bytearray(state)
    changed[-3] ^= 0x01
    return bytes(changed)


class ViewsSql:
    """Queries of a test's own on the views at `views`, through a read-only connection of
    its own (an SQLite file, or a PostgreSQL views schema), opened at the first query."""

    def __init__(self, views: str) -> None:
        self.views = views
        self._db: Any = None

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        """The rows `query` (no parameters) gives."""
        if self._db is None:
            if is_postgres(self.views):
                self._db = pg_connect(parse_postgres(self.views), readonly=True)
            else:
                self._db = sqlite3.connect(f"file:{self.views}?mode=ro", uri=True)
        return [tuple(row) for row in self._db.execute(query)]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def store_state(store: str) -> dict[str, Any]:
    """What a read-only tool must leave as it was: the files of an SQLite store's folder
    (size and modification time; not the WAL's -wal/-shm, which readers may touch), or the
    contents of every table of a PostgreSQL store and its views (a digest per table)."""
    if not is_postgres(store):
        folder = Path(store).parent
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                if not p.name.endswith(("-wal", "-shm"))}
    location = parse_postgres(store)
    db = pg_connect(location, readonly=True)
    try:
        tables = db.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN (%s, %s) "
            "ORDER BY 1, 2", (location.schema, location.views_schema)).fetchall()
        return {
            f"{schema}.{table}": db.execute(
                psql.SQL("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                         "FROM {} AS t").format(psql.Identifier(schema, table))).fetchone()
            for schema, table in tables
        }
    finally:
        db.close()
