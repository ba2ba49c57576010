"""The Jobs, Queue, Executed, Failed and Settings read models, kept in one SQLite file.

Rows and the tracked log position change in one transaction, so each event is
applied exactly once; `reset()` plus a catch-up rebuilds everything from zero.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
from eventsourcing.domain import DomainEventProtocol

from att_jm.domain.cleanup import CleanupPolicy
from att_jm.domain.executions import Execution
from att_jm.domain.jobs import Job
from att_jm.domain.scheduler import DEFAULT_INTERVAL_SECONDS, Scheduler
from att_jm.domain.times import iso, parse_iso

VIEWS: Final = ("jobs", "queue", "executed", "failed", "settings")
FRONT_BASE: Final = -(10**15)  # sort keys of entries sent to the front sort before all others

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tracking (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY, script TEXT, trigger TEXT, match TEXT, command TEXT,
    timeout_seconds REAL, enabled INTEGER, created_at TEXT, updated_at TEXT);
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY, job TEXT, command TEXT, trigger TEXT, notification_id TEXT,
    enqueued_at TEXT, state TEXT, started_at TEXT, attempt INTEGER, feedback TEXT,
    sort_key INTEGER NOT NULL, script TEXT, timeout_seconds REAL);
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

_QUEUE_COLS: Final = (
    "id", "job", "command", "trigger", "notification_id", "enqueued_at", "state", "started_at",
    "attempt", "feedback",
)
_DONE_COLS: Final = (
    "id", "job", "command", "trigger", "notification_id", "enqueued_at", "started_at",
    "finished_at", "attempt", "result", "feedback",
)
_JOB_COLS: Final = (
    "name", "script", "trigger", "match", "command", "timeout_seconds", "enabled", "created_at",
    "updated_at",
)
_ORDER: Final = {
    "queue": "ORDER BY state != 'running', sort_key",
    "executed": "ORDER BY seq DESC",
    "failed": "ORDER BY seq DESC",
    "jobs": "ORDER BY name",
}

Applier = Callable[[sqlite3.Cursor, Any, int], str]


def default_settings() -> dict[str, Any]:
    return {
        "interval_seconds": DEFAULT_INTERVAL_SECONDS,
        "executed_cleanup": CleanupPolicy().to_json(),
        "failed_cleanup": CleanupPolicy().to_json(),
    }


def _entry_id(event: Any) -> str:
    return str(event.originator_id)


def _job_added(c: sqlite3.Cursor, e: Job.Added, position: int) -> str:
    at = iso(e.timestamp)
    c.execute(
        "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?)",
        (e.name, e.script, e.trigger, _json(e.match), e.command, e.timeout_seconds,
         int(e.enabled), at, at),
    )
    return "jobs"


def _job_readded(c: sqlite3.Cursor, e: Job.Readded, position: int) -> str:
    d = e.definition
    at = iso(e.timestamp)
    name = _job_name(c, e)
    c.execute(
        "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?)",
        (name, d["script"], d["trigger"], _json(d["match"]), d["command"],
         d["timeout_seconds"], int(d["enabled"]), at, at),
    )
    return "jobs"


def _job_name(c: sqlite3.Cursor, e: Any) -> str:
    row = c.execute("SELECT name FROM job_ids WHERE id = ?", (str(e.originator_id),)).fetchone()
    return str(row[0])


def _job_updated(c: sqlite3.Cursor, e: Job.Updated, position: int) -> str:
    name = _job_name(c, e)
    changes = dict(e.changes)
    if "match" in changes:
        changes["match"] = _json(changes["match"])
    if "enabled" in changes:
        changes["enabled"] = int(changes["enabled"])
    changes["updated_at"] = iso(e.timestamp)
    assignments = ", ".join(f"{key} = ?" for key in changes if key in _JOB_COLS)
    values = [value for key, value in changes.items() if key in _JOB_COLS]
    c.execute(f"UPDATE jobs SET {assignments} WHERE name = ?", (*values, name))  # noqa: S608 -- column names come from _JOB_COLS
    return "jobs"


def _job_removed(c: sqlite3.Cursor, e: Job.Removed, position: int) -> str:
    c.execute("DELETE FROM jobs WHERE name = ?", (_job_name(c, e),))
    return "jobs"


def _enqueued(c: sqlite3.Cursor, e: Execution.Enqueued, position: int) -> str:
    c.execute(
        "INSERT OR REPLACE INTO queue VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (_entry_id(e), e.job, e.command, e.trigger, e.notification_id, iso(e.timestamp),
         "queued", None, 1, None, position, e.script, e.timeout_seconds),
    )
    return "queue"


def _started(c: sqlite3.Cursor, e: Execution.Started, position: int) -> str:
    c.execute(
        "UPDATE queue SET state = 'running', started_at = ?, attempt = ? WHERE id = ?",
        (iso(e.timestamp), e.attempt, _entry_id(e)),
    )
    return "queue"


def _finish(c: sqlite3.Cursor, e: Any, position: int, table: str) -> None:
    entry = _entry_id(e)
    c.execute(
        f"INSERT OR REPLACE INTO {table} SELECT id, job, command, trigger, notification_id, "  # noqa: S608 -- table is executed or failed
        "enqueued_at, started_at, ?, attempt, ?, ?, ?, script, timeout_seconds "
        "FROM queue WHERE id = ?",
        (iso(e.timestamp), e.result, e.feedback, position, entry),
    )
    c.execute("DELETE FROM queue WHERE id = ?", (entry,))


def _succeeded(c: sqlite3.Cursor, e: Execution.Succeeded, position: int) -> str:
    _finish(c, e, position, "executed")
    return "queue,executed"


def _failed(c: sqlite3.Cursor, e: Execution.Failed, position: int) -> str:
    _finish(c, e, position, "failed")
    return "queue,failed"


def _delete_from(table: str) -> Applier:
    def apply(c: sqlite3.Cursor, e: Any, position: int) -> str:
        c.execute(f"DELETE FROM {table} WHERE id = ?", (_entry_id(e),))  # noqa: S608 -- fixed table names
        return table

    return apply


def _sent_to_front(c: sqlite3.Cursor, e: Execution.SentToFront, position: int) -> str:
    c.execute(
        "UPDATE queue SET sort_key = ? WHERE id = ?", (FRONT_BASE + position, _entry_id(e))
    )
    return "queue"


def _reexecuted(c: sqlite3.Cursor, e: Execution.Reexecuted, position: int) -> str:
    entry = _entry_id(e)
    c.execute(
        "INSERT OR REPLACE INTO queue SELECT id, job, command, trigger, notification_id, "
        "enqueued_at, 'queued', NULL, ?, feedback, ?, script, timeout_seconds "
        "FROM failed WHERE id = ?",
        (e.attempt, FRONT_BASE + position, entry),
    )
    c.execute("DELETE FROM failed WHERE id = ?", (entry,))
    return "queue,failed"


def _cleaned_up(c: sqlite3.Cursor, e: Execution.CleanedUp, position: int) -> str:
    table = "executed" if e.table == "executed" else "failed"
    c.execute(f"DELETE FROM {table} WHERE id = ?", (_entry_id(e),))  # noqa: S608 -- fixed table names
    return table


def _settings_changed(c: sqlite3.Cursor, e: Scheduler.SettingsChanged, position: int) -> str:
    value = {
        "interval_seconds": e.interval_seconds,
        "executed_cleanup": e.executed_cleanup,
        "failed_cleanup": e.failed_cleanup,
    }
    c.execute("INSERT OR REPLACE INTO settings VALUES ('settings', ?)", (_json(value),))
    return "settings"


APPLIERS: Final[dict[type[Any], Applier]] = {
    Job.Added: _job_added,
    Job.Readded: _job_readded,
    Job.Updated: _job_updated,
    Job.Removed: _job_removed,
    Execution.Enqueued: _enqueued,
    Execution.Started: _started,
    Execution.Succeeded: _succeeded,
    Execution.Failed: _failed,
    Execution.RemovedFromQueue: _delete_from("queue"),
    Execution.SentToFront: _sent_to_front,
    Execution.Reexecuted: _reexecuted,
    Execution.RemovedFromExecuted: _delete_from("executed"),
    Execution.DeletedFromFailed: _delete_from("failed"),
    Execution.CleanedUp: _cleaned_up,
    Scheduler.SettingsChanged: _settings_changed,
}

TOPICS: Final = tuple(sorted(cls.TOPIC for cls in APPLIERS))  # what the catch-up reads


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class Views:
    """The read models in the SQLite file at `path` (created when missing, unless read-only)."""

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # rebuildable from the log
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self._db.close()

    @property
    def position(self) -> int:
        row = self._db.execute("SELECT position FROM tracking WHERE name = 'views'").fetchone()
        return int(row[0]) if row else 0

    def apply(self, items: Iterable[tuple[int, DomainEventProtocol[Any]]]) -> set[str]:
        """Apply events after the tracked position, in one transaction; the views they changed."""
        changed: set[str] = set()
        position = self.position
        c = self._db.cursor()
        c.execute("BEGIN IMMEDIATE")
        try:
            for event_position, event in items:
                if event_position <= position:
                    continue
                position = event_position
                applier = APPLIERS.get(type(event))
                if applier is None:
                    continue
                if isinstance(event, Job.Added):
                    c.execute(
                        "INSERT OR REPLACE INTO job_ids VALUES (?, ?)",
                        (str(event.originator_id), event.name),
                    )
                touched = applier(c, event, event_position).split(",")
                changed.update(touched)
                c.executemany(
                    "INSERT OR REPLACE INTO view_positions VALUES (?, ?)",
                    [(view, event_position) for view in touched],
                )
            c.execute("INSERT OR REPLACE INTO tracking VALUES ('views', ?)", (position,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return changed

    def advance(self, position: int) -> None:
        """Record that the log up to `position` holds nothing more for these views."""
        if position > self.position:
            self._db.execute("INSERT OR REPLACE INTO tracking VALUES ('views', ?)", (position,))

    def reset(self) -> None:
        """Forget every row and the position: the next catch-up rebuilds from zero."""
        c = self._db.cursor()
        c.execute("BEGIN IMMEDIATE")
        tables = ("tracking", "view_positions", "jobs", "job_ids", "queue", "executed", "failed",
                  "settings")
        for table in tables:
            c.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed table names
        c.execute("COMMIT")

    # Queries -----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        row = self._db.execute("SELECT value FROM settings WHERE key = 'settings'").fetchone()
        return default_settings() if row is None else dict(orjson.loads(row[0]))

    def count(self, view: str) -> int:
        return int(self._db.execute(f"SELECT count(*) FROM {view}").fetchone()[0])  # noqa: S608 -- view names are fixed

    def rows(self, view: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` rows of a table view, in the contract's order."""
        cols = {"jobs": _JOB_COLS, "queue": _QUEUE_COLS}.get(view, _DONE_COLS)
        cursor = self._db.execute(
            f"SELECT {', '.join(cols)} FROM {view} {_ORDER[view]} LIMIT ?", (limit,)  # noqa: S608 -- fixed names
        )
        out = [dict(zip(cols, row, strict=True)) for row in cursor]
        if view == "jobs":
            for row in out:
                row["match"] = None if row["match"] is None else orjson.loads(row["match"])
                row["enabled"] = bool(row["enabled"])
        return out

    def view_position(self, view: str) -> int:
        """The position of the last event that changed `view` (0: never changed)."""
        row = self._db.execute(
            "SELECT position FROM view_positions WHERE view = ?", (view,)
        ).fetchone()
        return int(row[0]) if row else 0

    def payload(self, view: str, limit: int) -> dict[str, Any]:
        """The contract's view message for `view`.

        Its `position` is that of the last event that changed the view, so the same
        content always carries the same position (across restarts and rebuilds).
        """
        position = self.view_position(view)
        if view == "settings":
            return {"view": "settings", "position": position, "settings": self.settings()}
        return {
            "view": view,
            "position": position,
            "total": self.count(view),
            "rows": self.rows(view, limit),
        }

    def next_queued(self) -> tuple[str, bool] | None:
        """The entry that runs next and whether it was sent to the front, or None."""
        row = self._db.execute(
            "SELECT id, sort_key FROM queue WHERE state = 'queued' ORDER BY sort_key LIMIT 1"
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]) < 0)

    def running(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT id FROM queue WHERE state='running'")]

    def job_names(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT name FROM jobs ORDER BY name")]

    def finished(self, table: str) -> list[tuple[str, datetime]]:
        """(id, finished_at) of the rows of executed or failed, newest first."""
        cursor = self._db.execute(
            f"SELECT id, finished_at FROM {table} ORDER BY seq DESC"  # noqa: S608 -- fixed names
        )
        return [(str(r[0]), parse_iso(r[1])) for r in cursor]

    def snapshot(self) -> dict[str, Any]:
        """Every view in full (for comparisons: restart, rebuild, audit)."""
        out: dict[str, Any] = {"settings": self.settings()}
        for view in ("jobs", "queue", "executed", "failed"):
            out[view] = self.rows(view, 10**9)
        return out
