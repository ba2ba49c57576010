"""The shape of the views: their tables and columns, how they are opened, and their migration.

One SQLite file (`<store>.views.db`), or for a PostgreSQL store the schema `<schema>_views`
of its database (`att_jm.log.backend`), holds the Jobs, Queue, Executed, Failed and Settings
read models, the log position they follow (`tracking`), each view's last changing position
(`view_positions`) and the job aggregates' names (`job_ids`). Views of another
SCHEMA_VERSION are emptied when opened for writing: the next catch-up rebuilds them from the
log with today's rules (`projections.rules`). PostgreSQL text cannot hold U+0000: a NUL in a
cell (a script's Feedback, a notification id) is shown there as U+FFFD (the log keeps the
exact text; the audit's replays show it).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

from att_jm.log.backend import POSTGRES, is_postgres, parse_postgres
from att_jm.vocabulary import EntryState, View

#: The shape of the views file; a file of another version is emptied and rebuilt from the log.
SCHEMA_VERSION: Final = 2  # 2: queue.not_before, jobs.retry (automatic retries)
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tracking (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY, script TEXT, trigger TEXT, match TEXT, command TEXT,
    timeout_seconds REAL, enabled INTEGER, created_at TEXT, updated_at TEXT, retry TEXT);
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY, job TEXT, command TEXT, trigger TEXT, notification_id TEXT,
    enqueued_at TEXT, state TEXT, started_at TEXT, attempt INTEGER, feedback TEXT,
    not_before TEXT, sort_key INTEGER NOT NULL, script TEXT, timeout_seconds REAL);
CREATE INDEX IF NOT EXISTS queue_order ON queue (state, sort_key);
CREATE TABLE IF NOT EXISTS executed (
    id TEXT PRIMARY KEY, job TEXT, command TEXT, trigger TEXT, notification_id TEXT,
    enqueued_at TEXT, started_at TEXT, finished_at TEXT, attempt INTEGER, result INTEGER,
    feedback TEXT, seq INTEGER NOT NULL, script TEXT, timeout_seconds REAL);
CREATE INDEX IF NOT EXISTS executed_order ON executed (seq);
CREATE TABLE IF NOT EXISTS failed (
    id TEXT PRIMARY KEY, job TEXT, command TEXT, trigger TEXT, notification_id TEXT,
    enqueued_at TEXT, started_at TEXT, finished_at TEXT, attempt INTEGER, result INTEGER,
    feedback TEXT, seq INTEGER NOT NULL, script TEXT, timeout_seconds REAL);
CREATE INDEX IF NOT EXISTS failed_order ON failed (seq);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS view_positions (view TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_ids (id TEXT PRIMARY KEY, name TEXT NOT NULL);
"""
#: Every table `reset()` empties.
TABLES: Final = ("tracking", "view_positions", "jobs", "job_ids", "queue", "executed", "failed",
                 "settings")

#: The columns a view message shows, in order, per table view.
QUEUE_COLS: Final = (
    "id", "job", "command", "trigger", "notification_id", "enqueued_at", "state", "started_at",
    "attempt", "feedback", "not_before",
)
DONE_COLS: Final = (
    "id", "job", "command", "trigger", "notification_id", "enqueued_at", "started_at",
    "finished_at", "attempt", "result", "feedback",
)
JOB_COLS: Final = (
    "name", "script", "trigger", "match", "command", "timeout_seconds", "enabled", "created_at",
    "updated_at", "retry",
)
#: Every column of each table, in table order: what the rules' overlay holds and writes back.
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "jobs": JOB_COLS,
    "queue": (*QUEUE_COLS, "sort_key", "script", "timeout_seconds"),
    "executed": (*DONE_COLS, "seq", "script", "timeout_seconds"),
    "failed": (*DONE_COLS, "seq", "script", "timeout_seconds"),
    "job_ids": ("id", "name"),
}
#: The key column of each table (`id` when not named here).
KEYS: Final = {"jobs": "name", "job_ids": "id"}
#: Each table view's order, as the contract has it (the running entry first in the queue).
ORDER: Final[dict[str, str]] = {
    View.QUEUE: f"ORDER BY state != '{EntryState.RUNNING}', sort_key",
    View.EXECUTED: "ORDER BY seq DESC",
    View.FAILED: "ORDER BY seq DESC",
    View.JOBS: "ORDER BY name",
}

Row = dict[str, Any]


def view_columns(view: str) -> tuple[str, ...]:
    """The columns a message of table view `view` shows, in order."""
    return JOB_COLS if view == View.JOBS else QUEUE_COLS if view == View.QUEUE else DONE_COLS


def connect(path: str, *, readonly: bool = False) -> Any:
    """The views at `path` (":memory:": in memory; a `postgresql://` URL: that schema), in
    autocommit mode (transactions are explicit). Read-only: never created nor migrated.
    Otherwise created when missing (an SQLite file in WAL mode), migrated and given today's
    tables."""
    if is_postgres(path):
        return _connect_postgres(path, readonly=readonly)
    if readonly:
        db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # rebuildable from the log
        migrate(db)
        db.executescript(SCHEMA)
    db.execute("PRAGMA busy_timeout=5000")
    return db


def migrate(db: sqlite3.Connection) -> None:
    """A views file of another shape is emptied (its position with it): the next catch-up
    rebuilds it from the log with today's rules."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return
    tables = [str(row[0]) for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    for table in tables:
        db.execute(f"DROP TABLE {table}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# PostgreSQL ------------------------------------------------------------------------------


def _connect_postgres(url: str, *, readonly: bool) -> Any:
    """The views schema of a PostgreSQL store: a connection that reconnects when lost, its
    text parameters NUL-safe; unless `readonly`, the schema created and migrated (one
    process at a time: an advisory lock)."""
    from att_jm.log.backend import LiveConnection  # noqa: PLC0415 -- psycopg on demand

    location = parse_postgres(url)
    db = LiveConnection(location, readonly=readonly, configure=_configure)
    if readonly:
        return db
    from psycopg import sql  # noqa: PLC0415 -- idem

    from att_jm.store.postgres import lock_key  # noqa: PLC0415 -- idem

    db.execute("BEGIN")
    try:
        db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("views", location.schema),))
        db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(location.schema)))
        db.execute("CREATE TABLE IF NOT EXISTS views_meta (key TEXT PRIMARY KEY, "
                   "value BIGINT NOT NULL)")
        row = db.execute("SELECT value FROM views_meta WHERE key = 'version'").fetchone()
        if row is None or int(row[0]) != SCHEMA_VERSION:
            tables = [str(r[0]) for r in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s "
                "AND tablename <> 'views_meta'", (location.schema,))]
            for table in tables:
                db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
            db.execute(POSTGRES.upsert("views_meta", ("key", "value"), "key",
                                       source="VALUES ('version', ?)"), (SCHEMA_VERSION,))
        for statement in POSTGRES.ddl(SCHEMA):
            db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


def _configure(db: Any) -> None:
    """A views connection: its commits do not wait for the disk (the views are rebuilt from
    the log: SQLite's views file runs with synchronous=NORMAL for the same reason), its text
    parameters with U+0000 replaced by U+FFFD (PostgreSQL text cannot hold it; see the
    module)."""
    db.execute("SET synchronous_commit = off")
    from psycopg.types.string import StrDumperUnknown  # noqa: PLC0415 -- psycopg on demand

    class NulSafeStr(StrDumperUnknown):
        def dump(self, obj: str) -> Any:
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    db.adapters.register_dumper(str, NulSafeStr)
