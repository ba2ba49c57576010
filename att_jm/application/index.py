"""The write side's own index: the queue's order, the finished tables, the live job names.

The Job Manager decides what runs next, what Auto Cleanup removes, which executions were
running at a stop and which jobs exist from this index, never from the views (the read
side, which may lag the log after a views fault). It lives in the store's own file, in
tables next to the events (`jm_index`, `jm_queue`, `jm_finished`, `jm_jobs`), and is
updated in the transaction that stores the events it follows: it always holds what the
committed log says.

Its recorded position (`jm_index`) is written only every RECORD_EVERY positions, at a
catch-up and at a clean stop (a page of its own in every commit would cost a third of the
index's price, docs/adr/0001-write-side-queue.md): the index holds at least the log up to
it, and maybe more. At start it applies the rows after it again; the rules converge, since
each one sets an execution's rows from its own events, the last of which decide
(tests/integration/test_write_index.py replays suffixes of random histories). A store
without the index (written by an older version) gets it built from the first row; an index
that claims a position beyond the log's end (a store restored from an older copy) is
rebuilt.

The rules follow the queue view's (`projections.views`): an entry sorts by the position of
its Enqueued (or its last AttemptFailed) event; one sent to the front (or re-executed) by
FRONT_BASE plus that event's position, before all others; a retry waits for `not_before`.
tests/integration/test_write_index.py checks that both agree on random histories.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import orjson
import structlog

from att_jm.domain.executions import FRONT_BASE
from att_jm.domain.times import iso, parse_iso
from att_jm.log.records import stored_iso

log = structlog.get_logger("att_jm")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jm_index (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jm_queue (id TEXT PRIMARY KEY, state TEXT NOT NULL,
    sort_key INTEGER NOT NULL, not_before TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jm_queue_order ON jm_queue (state, sort_key);
CREATE TABLE IF NOT EXISTS jm_finished (id TEXT PRIMARY KEY, tbl TEXT NOT NULL,
    seq INTEGER NOT NULL, finished_at TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jm_finished_order ON jm_finished (tbl, seq);
CREATE TABLE IF NOT EXISTS jm_jobs (id TEXT PRIMARY KEY, name TEXT NOT NULL,
    live INTEGER NOT NULL) WITHOUT ROWID;
"""
TABLES: Final = ("jm_index", "jm_queue", "jm_finished", "jm_jobs")
#: The recorded position is written with a commit once the log moved this far past it.
RECORD_EVERY: Final = 1000

#: (position, topic, aggregate id, field getter): one event as the rules read it. The
#: getter gives an event's field by name, and its time (ISO-8601, as `times.iso`) as `at`.
Change = tuple[int, str, str, Callable[[str], Any]]
Rule = Callable[[sqlite3.Cursor, int, str, Callable[[str], Any]], None]


def _finish(table: str) -> Rule:
    def rule(c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute("INSERT OR REPLACE INTO jm_finished SELECT ?, ?, ?, ? WHERE EXISTS "
                  "(SELECT 1 FROM jm_queue WHERE id = ?)",
                  (entry, table, position, get("at"), entry))
        c.execute("DELETE FROM jm_queue WHERE id = ?", (entry,))
    return rule


def _remove_from(table: str) -> Rule:
    def rule(c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute("DELETE FROM jm_finished WHERE id = ? AND tbl = ?", (entry, table))
    return rule


def _enqueued(c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]) -> None:
    c.execute("INSERT OR REPLACE INTO jm_queue VALUES (?, 'queued', ?, NULL)", (entry, position))


def _started(c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]) -> None:
    c.execute("UPDATE jm_queue SET state = 'running' WHERE id = ?", (entry,))


def _attempt_failed(
    c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]
) -> None:
    c.execute("UPDATE jm_queue SET state = 'queued', sort_key = ?, not_before = ? WHERE id = ?",
              (position, get("not_before"), entry))


def _removed_from_queue(
    c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]
) -> None:
    c.execute("DELETE FROM jm_queue WHERE id = ?", (entry,))


def _sent_to_front(
    c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]
) -> None:
    c.execute("UPDATE jm_queue SET sort_key = ?, not_before = NULL WHERE id = ?",
              (FRONT_BASE + position, entry))


def _reexecuted(c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]) -> None:
    c.execute("INSERT OR REPLACE INTO jm_queue SELECT ?, 'queued', ?, NULL WHERE EXISTS "
              "(SELECT 1 FROM jm_finished WHERE id = ? AND tbl = 'failed')",
              (entry, FRONT_BASE + position, entry))
    c.execute("DELETE FROM jm_finished WHERE id = ? AND tbl = 'failed'", (entry,))


def _cleaned_up(c: sqlite3.Cursor, position: int, entry: str, get: Callable[[str], Any]) -> None:
    table = "executed" if get("table") == "executed" else "failed"
    c.execute("DELETE FROM jm_finished WHERE id = ? AND tbl = ?", (entry, table))


def _job_added(c: sqlite3.Cursor, position: int, job: str, get: Callable[[str], Any]) -> None:
    c.execute("INSERT OR REPLACE INTO jm_jobs VALUES (?, ?, 1)", (job, str(get("name"))))


def _job_live(live: int) -> Rule:
    def rule(c: sqlite3.Cursor, position: int, job: str, get: Callable[[str], Any]) -> None:
        c.execute("UPDATE jm_jobs SET live = ? WHERE id = ?", (live, job))
    return rule


RULES: Final[dict[str, Rule]] = {
    "att_jm:Execution.Enqueued": _enqueued,
    "att_jm:Execution.Started": _started,
    "att_jm:Execution.Succeeded": _finish("executed"),
    "att_jm:Execution.Failed": _finish("failed"),
    "att_jm:Execution.AttemptFailed": _attempt_failed,
    "att_jm:Execution.RemovedFromQueue": _removed_from_queue,
    "att_jm:Execution.SentToFront": _sent_to_front,
    "att_jm:Execution.Reexecuted": _reexecuted,
    "att_jm:Execution.RemovedFromExecuted": _remove_from("executed"),
    "att_jm:Execution.DeletedFromFailed": _remove_from("failed"),
    "att_jm:Execution.CleanedUp": _cleaned_up,
    "att_jm:Job.Added": _job_added,
    "att_jm:Job.Readded": _job_live(1),
    "att_jm:Job.Removed": _job_live(0),
}
TOPICS: Final = tuple(sorted(RULES))


def live_changes(items: Iterable[tuple[int, Any]]) -> list[Change]:
    """The index's changes from live domain events (position, event)."""
    changes: list[Change] = []
    for position, event in items:
        topic = getattr(type(event), "TOPIC", "")
        if topic in RULES:
            changes.append((position, topic, str(event.originator_id), _live_getter(event)))
    return changes


def _live_getter(event: Any) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        return iso(event.timestamp) if name == "at" else getattr(event, name)
    return get


def stored_changes(rows: Iterable[tuple[int, str, str, bytes]]) -> Iterable[Change]:
    """The index's changes from stored rows (position, aggregate id, topic, state); a row
    that does not decode (forged, corrupt) is logged and skipped."""
    for position, aggregate, topic, state in rows:
        if topic not in RULES:
            continue
        try:
            data: Mapping[str, Any] = orjson.loads(state)
            at = stored_iso(data["timestamp"])
        except (orjson.JSONDecodeError, LookupError, TypeError, ValueError) as error:
            log.error("index.row_undecodable", position=position, topic=topic, error=repr(error))
            continue
        yield position, topic, aggregate, _stored_getter(data, at)


def _stored_getter(data: Mapping[str, Any], at: str) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        return at if name == "at" else data[name]
    return get


class WriteIndex:
    """The index over the writer's own connection to the store (`att_jm.store.WriterLog`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(SCHEMA)
        self._memo: dict[str, Any] = {}
        #: The last position recorded in `jm_index`, and the last one applied.
        self._recorded = self.position
        self._seen = self._recorded

    # Kept up to date -----------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The recorded position: the index holds at least the log up to it."""
        row = self._db.execute("SELECT value FROM jm_index WHERE key = 'position'").fetchone()
        return 0 if row is None else int(row[0])

    def write(self, cursor: sqlite3.Cursor, changes: Sequence[Change], position: int, *,
              record: bool = False) -> None:
        """Apply `changes` (the log up to `position`), inside the caller's transaction; the
        position is recorded too when `record` is set or it is RECORD_EVERY past the last."""
        self._memo.clear()
        for change_position, topic, aggregate, get in changes:
            try:
                RULES[topic](cursor, change_position, aggregate, get)
            except (LookupError, TypeError, ValueError) as error:  # a forged row's data
                log.error("index.change_skipped", position=change_position, topic=topic,
                          error=repr(error))
        if record or position - self._recorded >= RECORD_EVERY:
            cursor.execute("INSERT OR REPLACE INTO jm_index VALUES ('position', ?)",
                           (position,))
            self._recorded = position
        self._seen = max(self._seen, position)

    def record(self) -> None:
        """Record the last position applied (at a clean stop: the next start replays none)."""
        if self._seen > self._recorded:
            self._db.execute("INSERT OR REPLACE INTO jm_index VALUES ('position', ?)",
                             (self._seen,))
            self._recorded = self._seen

    def forget(self) -> None:
        """After a failed commit: nothing memoised survives (the transaction rolled back)."""
        self._memo.clear()
        self._recorded = self._seen = self.position

    def catch_up(self, pages: Iterable[Sequence[tuple[int, str, str, bytes]]], end: int) -> int:
        """Apply stored rows (pages of position, aggregate id, topic, state) after the index's
        position, up to the log's `end`, in one transaction; the rows applied."""
        applied = 0
        cursor = self._db.cursor()
        self._memo.clear()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            for page in pages:
                changes = list(stored_changes(page))
                applied += len(changes)
                self.write(cursor, changes, end)
            self.write(cursor, [], end, record=True)
            cursor.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                cursor.execute("ROLLBACK")
            self.forget()
            raise
        return applied

    def reset(self) -> None:
        """Forget everything: the next catch-up rebuilds the index from the first row."""
        self._memo.clear()
        cursor = self._db.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed table names
        cursor.execute("COMMIT")
        self._recorded = self._seen = 0

    # Read ----------------------------------------------------------------------------------

    def next_queued(self, now: datetime) -> tuple[str, bool] | None:
        """The entry that runs next and whether it was sent to the front, or None; a retry
        whose `not_before` is after `now` waits."""
        if self._retries_wait():
            row = self._db.execute(
                "SELECT id, sort_key FROM jm_queue WHERE state = 'queued' AND "
                "(not_before IS NULL OR not_before <= ?) ORDER BY sort_key LIMIT 1", (iso(now),),
            ).fetchone()
            return None if row is None else (str(row[0]), int(row[1]) < 0)
        memo = self._memo
        if "next" not in memo:
            row = self._db.execute(
                "SELECT id, sort_key FROM jm_queue WHERE state = 'queued' "
                "ORDER BY sort_key LIMIT 1"
            ).fetchone()
            memo["next"] = None if row is None else (str(row[0]), int(row[1]) < 0)
        found: tuple[str, bool] | None = memo["next"]
        return found

    def next_retry_at(self, now: datetime) -> datetime | None:
        """The earliest `not_before` after `now` of a waiting retry (None: none waits)."""
        if not self._retries_wait():
            return None
        row = self._db.execute(
            "SELECT min(not_before) FROM jm_queue WHERE state = 'queued' AND not_before > ?",
            (iso(now),),
        ).fetchone()
        return None if row is None or row[0] is None else parse_iso(str(row[0]))

    def _retries_wait(self) -> bool:
        """Whether any queued entry is a retry with a `not_before` (memoised until a write)."""
        memo = self._memo
        if "waiting" not in memo:
            memo["waiting"] = self._db.execute(
                "SELECT 1 FROM jm_queue WHERE state = 'queued' AND not_before IS NOT NULL "
                "LIMIT 1"
            ).fetchone() is not None
        return bool(memo["waiting"])

    def running(self) -> list[str]:
        """The entries whose execution is running (one at most, but for a forged log)."""
        cursor = self._db.execute("SELECT id FROM jm_queue WHERE state = 'running' ORDER BY id")
        return [str(row[0]) for row in cursor]

    def finished(self, table: str) -> list[tuple[str, datetime]]:
        """(id, finished_at) of the rows of executed or failed, newest first."""
        cursor = self._db.execute(
            "SELECT id, finished_at FROM jm_finished WHERE tbl = ? ORDER BY seq DESC", (table,)
        )
        return [(str(row[0]), parse_iso(row[1])) for row in cursor]

    def job_names(self) -> list[str]:
        """The names of the jobs that exist (added, not removed)."""
        cursor = self._db.execute("SELECT name FROM jm_jobs WHERE live = 1 ORDER BY name")
        return [str(row[0]) for row in cursor]

    def queue(self) -> list[tuple[str, str, int, str | None]]:
        """Every queue entry (id, state, sort key, not_before), in the order they run."""
        cursor = self._db.execute(
            "SELECT id, state, sort_key, not_before FROM jm_queue "
            "ORDER BY state != 'running', sort_key"
        )
        return [(str(r[0]), str(r[1]), int(r[2]), r[3]) for r in cursor]
