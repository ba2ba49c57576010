"""The shape of the views file: its tables and columns, how a file is opened, and its migration.

One SQLite file (`<store>.views.db`) holds the Jobs, Queue, Executed, Failed and Settings read
models, the log position they follow (`tracking`), each view's last changing position
(`view_positions`) and the job aggregates' names (`job_ids`). A file of another
SCHEMA_VERSION is emptied when opened for writing: the next catch-up rebuilds it from the
log with today's rules (`projections.rules`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

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


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """The views file at `path` (":memory:": in memory), in autocommit mode (transactions are
    explicit). Read-only: never created nor migrated. Otherwise created when missing, in WAL
    mode, migrated and given today's tables."""
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
