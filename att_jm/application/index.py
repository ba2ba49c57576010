"""The write side's own index: the queue's order, the finished tables, the live job names,
the last retained notification of each trigger.

The Job Manager decides what runs next, what Auto Cleanup removes, which executions were
running at a stop and which jobs exist from this index, never from the views (the read
side, which may lag the log after a views fault). It lives in the store's own file, in
tables next to the events (`jm_index`, `jm_queue`, `jm_finished`, `jm_jobs`,
`jm_retained`), and is updated in the transaction that stores the events it follows: it
always holds what the committed log says.

`jm_retained` holds, for each trigger, the id of the last notification stored that was
published retained (its state says `"retained": true`): the copy the broker keeps and sends
again at each of the service's subscribes. An archival keeps the index (its anchor), not
the notifications' rows: past the de-duplication horizon that copy is still known as seen
(`att_jm.application.notifications`). One row per trigger, whatever the log's length.

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
from typing import Any, Final, Protocol

import orjson
import structlog

from att_jm.domain.executions import FRONT_BASE
from att_jm.domain.times import iso, parse_iso
from att_jm.log.backend import SQLITE, Dialect
from att_jm.log.codec import loads_state
from att_jm.log.records import stored_iso

log = structlog.get_logger("att_jm")

_QUEUE_COLUMNS: Final = ("id", "state", "sort_key", "not_before")
_FINISHED_COLUMNS: Final = ("id", "tbl", "seq", "finished_at")
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jm_index (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jm_queue (id TEXT PRIMARY KEY, state TEXT NOT NULL,
    sort_key INTEGER NOT NULL, not_before TEXT) WITHOUT ROWID;
DROP INDEX IF EXISTS jm_queue_order;
DROP INDEX IF EXISTS jm_queue_retry;
CREATE INDEX IF NOT EXISTS jm_queue_next ON jm_queue (sort_key) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jm_queue_retries ON jm_queue (not_before)
    WHERE state = 'queued' AND not_before IS NOT NULL;
CREATE TABLE IF NOT EXISTS jm_finished (id TEXT PRIMARY KEY, tbl TEXT NOT NULL,
    seq INTEGER NOT NULL, finished_at TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jm_finished_order ON jm_finished (tbl, seq);
CREATE TABLE IF NOT EXISTS jm_jobs (id TEXT PRIMARY KEY, name TEXT NOT NULL,
    live INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jm_retained (id TEXT PRIMARY KEY, notification TEXT NOT NULL)
    WITHOUT ROWID;
"""
TABLES: Final = ("jm_index", "jm_queue", "jm_finished", "jm_jobs", "jm_retained")
#: What an archival anchor keeps of the index (`state`, `load`).
STATE_TABLES: Final = {"jm_queue": _QUEUE_COLUMNS, "jm_finished": _FINISHED_COLUMNS,
                       "jm_jobs": ("id", "name", "live"), "jm_retained": ("id", "notification")}
#: The recorded position is written with a commit once the log moved this far past it.
RECORD_EVERY: Final = 1000

#: (position, topic, aggregate id, field getter): one event as the rules read it. The
#: getter gives an event's field by name, and its time (ISO-8601, as `times.iso`) as `at`.
Change = tuple[int, str, str, Callable[[str], Any]]
#: (cursor, position, aggregate id, field getter): a rule's statements, on the writer's cursor.
Rule = Callable[[Any, int, str, Callable[[str], Any]], None]

_QUEUE: Final = _QUEUE_COLUMNS
_RECEIVED: Final = "att_jm:Notification.Received"
_FINISHED: Final = _FINISHED_COLUMNS


def make_rules(d: Dialect) -> dict[str, Rule]:
    """The index's rules (topic -> rule) with the statements of dialect `d`, built once."""
    finish_row = d.upsert("jm_finished", _FINISHED, "id", source=(
        "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jm_queue WHERE id = ?)"))
    drop_queued = d.q("DELETE FROM jm_queue WHERE id = ?")
    drop_finished = d.q("DELETE FROM jm_finished WHERE id = ? AND tbl = ?")
    enqueue = d.upsert("jm_queue", _QUEUE, "id", source="VALUES (?, 'queued', ?, NULL)")
    start = d.q("UPDATE jm_queue SET state = 'running' WHERE id = ?")
    requeue = d.q("UPDATE jm_queue SET state = 'queued', sort_key = ?, not_before = ? "
                  "WHERE id = ?")
    to_front = d.q("UPDATE jm_queue SET sort_key = ?, not_before = NULL WHERE id = ?")
    reexecute = d.upsert("jm_queue", _QUEUE, "id", source=(
        "SELECT ?, 'queued', ?, NULL WHERE EXISTS "
        "(SELECT 1 FROM jm_finished WHERE id = ? AND tbl = 'failed')"))
    add_job = d.upsert("jm_jobs", ("id", "name", "live"), "id", source="VALUES (?, ?, 1)")
    set_live = d.q("UPDATE jm_jobs SET live = ? WHERE id = ?")
    keep_retained = d.upsert("jm_retained", ("id", "notification"), "id",
                             source="VALUES (?, ?)")

    def finish(table: str) -> Rule:
        def rule(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
            c.execute(finish_row, (entry, table, position, get("at"), entry))
            c.execute(drop_queued, (entry,))
        return rule

    def remove_from(table: str) -> Rule:
        def rule(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
            c.execute(drop_finished, (entry, table))
        return rule

    def enqueued(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute(enqueue, (entry, position))

    def started(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute(start, (entry,))

    def attempt_failed(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute(requeue, (position, get("not_before"), entry))

    def removed_from_queue(c: Any, position: int, entry: str,
                           get: Callable[[str], Any]) -> None:
        c.execute(drop_queued, (entry,))

    def sent_to_front(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute(to_front, (FRONT_BASE + position, entry))

    def reexecuted(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute(reexecute, (entry, FRONT_BASE + position, entry))
        c.execute(drop_finished, (entry, "failed"))

    def cleaned_up(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
        c.execute(drop_finished, (entry, "executed" if get("table") == "executed" else "failed"))

    def job_added(c: Any, position: int, job: str, get: Callable[[str], Any]) -> None:
        c.execute(add_job, (job, str(get("name"))))

    def received(c: Any, position: int, entry: str, get: Callable[[str], Any]) -> None:
        try:
            retained = get("retained")
        except LookupError:  # a stored notification that was not published retained
            return
        if retained is True:
            c.execute(keep_retained, (str(get("trigger")), str(get("notification_id"))))

    def job_live(live: int) -> Rule:
        def rule(c: Any, position: int, job: str, get: Callable[[str], Any]) -> None:
            c.execute(set_live, (live, job))
        return rule

    return {
        "att_jm:Execution.Enqueued": enqueued,
        "att_jm:Execution.Started": started,
        "att_jm:Execution.Succeeded": finish("executed"),
        "att_jm:Execution.Failed": finish("failed"),
        "att_jm:Execution.AttemptFailed": attempt_failed,
        "att_jm:Execution.RemovedFromQueue": removed_from_queue,
        "att_jm:Execution.SentToFront": sent_to_front,
        "att_jm:Execution.Reexecuted": reexecuted,
        "att_jm:Execution.RemovedFromExecuted": remove_from("executed"),
        "att_jm:Execution.DeletedFromFailed": remove_from("failed"),
        "att_jm:Execution.CleanedUp": cleaned_up,
        "att_jm:Job.Added": job_added,
        "att_jm:Job.Readded": job_live(1),
        "att_jm:Job.Removed": job_live(0),
        _RECEIVED: received,
    }


#: The rules with SQLite's statements (the topics they follow: `TOPICS`).
RULES: Final[dict[str, Rule]] = make_rules(SQLITE)
TOPICS: Final = tuple(sorted(RULES))


def live_changes(items: Iterable[tuple[int, Any]]) -> list[Change]:
    """The index's changes from live domain events (position, event); a notification not
    published retained changes nothing (its rule would do nothing): skipped here, before
    its change is built, since every notification passes here (its cost: bench/README.md,
    session 21)."""
    changes: list[Change] = []
    for position, event in items:
        topic = getattr(type(event), "TOPIC", "")
        if topic in RULES and (topic != _RECEIVED or event.retained):
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
            data: Mapping[str, Any] = loads_state(state)
            at = stored_iso(data["timestamp"])
        except (orjson.JSONDecodeError, LookupError, TypeError, ValueError) as error:
            log.error("index.row_undecodable", position=position, topic=topic, error=repr(error))
            continue
        yield position, topic, aggregate, _stored_getter(data, at)


def _stored_getter(data: Mapping[str, Any], at: str) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        return at if name == "at" else data[name]
    return get


class IndexStore(Protocol):
    """Where the index lives: the writer's connection to the store (`att_jm.store.WriterLog`)."""

    dialect: Dialect

    @property
    def connection(self) -> Any: ...

    def create(self, script: str) -> None: ...


class WriteIndex:
    """The index over the writer's own connection to the store (`att_jm.store.WriterLog`)."""

    def __init__(self, store: IndexStore) -> None:
        self._store = store
        d = self._dialect = store.dialect
        store.create(SCHEMA)
        self._rules = RULES if d is SQLITE else make_rules(d)
        self._record_sql = d.upsert("jm_index", ("key", "value"), "key",
                                    source="VALUES ('position', ?)")
        self._sql = {name: d.q(text) for name, text in _READS.items()}
        self._memo: dict[str, Any] = {}
        #: The last position recorded in `jm_index`, and the last one applied.
        self._recorded = self.position
        self._seen = self._recorded

    @property
    def _db(self) -> Any:
        return self._store.connection

    # Kept up to date -----------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The recorded position: the index holds at least the log up to it."""
        row = self._db.execute(self._sql["position"]).fetchone()
        return 0 if row is None else int(row[0])

    def write(self, cursor: Any, changes: Sequence[Change], position: int, *,
              record: bool = False) -> None:
        """Apply `changes` (the log up to `position`), inside the caller's transaction; the
        position is recorded too when `record` is set or it is RECORD_EVERY past the last."""
        self._memo.clear()
        rules = self._rules
        for change_position, topic, aggregate, get in changes:
            try:
                rules[topic](cursor, change_position, aggregate, get)
            except (LookupError, TypeError, ValueError) as error:  # a forged row's data
                log.error("index.change_skipped", position=change_position, topic=topic,
                          error=repr(error))
        if record or position - self._recorded >= RECORD_EVERY:
            cursor.execute(self._record_sql, (position,))
            self._recorded = position
        self._seen = max(self._seen, position)

    def record(self) -> None:
        """Record the last position applied (at a clean stop: the next start replays none)."""
        if self._seen > self._recorded:
            self._db.execute(self._record_sql, (self._seen,))
            self._recorded = self._seen

    def forget(self) -> None:
        """After a failed commit: nothing memoised survives (the transaction rolled back)."""
        self._memo.clear()
        self._recorded = self._seen = self.position

    def catch_up(self, pages: Iterable[Sequence[tuple[int, str, str, bytes]]], end: int) -> int:
        """Apply stored rows (pages of position, aggregate id, topic, state) after the index's
        position, up to the log's `end`, in one transaction; the rows applied."""
        applied = 0
        db = self._db
        cursor = db.cursor()
        self._memo.clear()
        cursor.execute(self._dialect.begin_write)
        try:
            for page in pages:
                changes = list(stored_changes(page))
                applied += len(changes)
                self.write(cursor, changes, end)
            self.write(cursor, [], end, record=True)
            cursor.execute("COMMIT")
        except BaseException:
            if not db.closed and self._dialect.in_transaction(db):
                cursor.execute("ROLLBACK")
            self.forget()
            raise
        return applied

    def reset(self) -> None:
        """Forget everything: the next catch-up rebuilds the index from the first row."""
        self._memo.clear()
        cursor = self._db.cursor()
        cursor.execute(self._dialect.begin_write)
        for table in TABLES:
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed table names
        cursor.execute("COMMIT")
        self._recorded = self._seen = 0

    def state(self) -> dict[str, list[list[Any]]]:
        """Every row of the index's tables (an archival anchor keeps them: `load`)."""
        return {table: [list(row) for row in self._db.execute(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")]  # noqa: S608 -- fixed names
            for table, columns in STATE_TABLES.items()}

    def load(self, state: dict[str, list[list[Any]]], position: int) -> None:
        """Make the index the one of `state` at log `position` (an archival anchor's: the
        rows before it are no longer in the store), in one transaction."""
        self._memo.clear()
        d = self._dialect
        cursor = self._db.cursor()
        cursor.execute(d.begin_write)
        try:
            for table in TABLES:
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed table names
            for table, columns in STATE_TABLES.items():
                rows = [tuple(row) for row in state.get(table, ())]
                if rows:
                    cursor.executemany(d.q(
                        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 -- fixed names
                        f"VALUES ({', '.join('?' * len(columns))})"), rows)
            cursor.execute(self._record_sql, (position,))
            cursor.execute("COMMIT")
        except BaseException:
            if d.in_transaction(self._db):
                cursor.execute("ROLLBACK")
            self.forget()
            raise
        self._recorded = self._seen = position

    # Read ----------------------------------------------------------------------------------

    def next_queued(self, now: datetime) -> tuple[str, bool] | None:
        """The entry that runs next and whether it was sent to the front, or None; a retry
        whose `not_before` is after `now` waits."""
        if self._retries_wait():
            row = self._db.execute(self._sql["next_due"], (iso(now),)).fetchone()
            return None if row is None else (str(row[0]), int(row[1]) < 0)
        memo = self._memo
        if "next" not in memo:
            row = self._db.execute(self._sql["next"]).fetchone()
            memo["next"] = None if row is None else (str(row[0]), int(row[1]) < 0)
        found: tuple[str, bool] | None = memo["next"]
        return found

    def next_retry_at(self, now: datetime) -> datetime | None:
        """The earliest `not_before` after `now` of a waiting retry (None: none waits)."""
        if not self._retries_wait():
            return None
        row = self._db.execute(self._sql["retry_at"], (iso(now),)).fetchone()
        return None if row is None or row[0] is None else parse_iso(str(row[0]))

    def _retries_wait(self) -> bool:
        """Whether any queued entry is a retry with a `not_before` (memoised until a write)."""
        memo = self._memo
        if "waiting" not in memo:
            memo["waiting"] = self._db.execute(self._sql["waiting"]).fetchone() is not None
        return bool(memo["waiting"])

    def running(self) -> list[str]:
        """The entries whose execution is running (one at most, but for a forged log)."""
        cursor = self._db.execute(self._sql["running"])
        return [str(row[0]) for row in cursor]

    def finished(self, table: str) -> list[tuple[str, datetime]]:
        """(id, finished_at) of the rows of executed or failed, newest first (the whole
        table: Auto Cleanup reads bounded ranges instead, `finished_through`/`_after`)."""
        cursor = self._db.execute(self._sql["finished"], (table,))
        return [(str(row[0]), parse_iso(row[1])) for row in cursor]

    def finished_past(self, table: str, keep: int) -> int | None:
        """The `seq` of the newest row of `table` past its newest `keep` (the rows at or
        before it are the ones Row Count removes), None when it holds `keep` rows or fewer."""
        row = self._db.execute(self._sql["finished_past"], (table, keep)).fetchone()
        return None if row is None else int(row[0])

    def finished_through(self, table: str, seq: int, limit: int) -> list[str]:
        """The ids of the oldest `limit` rows of `table` whose `seq` is at most `seq`,
        oldest first."""
        cursor = self._db.execute(self._sql["finished_through"], (table, seq, limit))
        return [str(row[0]) for row in cursor]

    def finished_after(self, table: str, seq: int,
                       limit: int) -> list[tuple[str, int, str]]:
        """(id, seq, finished_at) of the oldest `limit` rows of `table` after `seq`, oldest
        first (a page: the next one starts after the last `seq`)."""
        cursor = self._db.execute(self._sql["finished_after"], (table, seq, limit))
        return [(str(row[0]), int(row[1]), str(row[2])) for row in cursor]

    def job_names(self) -> list[str]:
        """The names of the jobs that exist (added, not removed)."""
        cursor = self._db.execute(self._sql["jobs"])
        return [str(row[0]) for row in cursor]

    def retained(self, trigger: str) -> str | None:
        """The id of the last notification published retained on `trigger` (the copy the
        broker keeps and sends again at each subscribe), None when none was."""
        row = self._db.execute(self._sql["retained"], (trigger,)).fetchone()
        return None if row is None else str(row[0])

    def queue(self) -> list[tuple[str, str, int, str | None]]:
        """Every queue entry (id, state, sort key, not_before), in the order they run."""
        cursor = self._db.execute(self._sql["queue"])
        return [(str(r[0]), str(r[1]), int(r[2]), r[3]) for r in cursor]


#: The index's queries, written for SQLite (`Dialect.q` adapts them).
_READS: Final = {
    "position": "SELECT value FROM jm_index WHERE key = 'position'",
    "next_due": ("SELECT id, sort_key FROM jm_queue WHERE state = 'queued' AND "
                 "(not_before IS NULL OR not_before <= ?) ORDER BY sort_key LIMIT 1"),
    "next": "SELECT id, sort_key FROM jm_queue WHERE state = 'queued' ORDER BY sort_key LIMIT 1",
    "retry_at": ("SELECT min(not_before) FROM jm_queue WHERE state = 'queued' "
                 "AND not_before > ?"),
    "waiting": ("SELECT 1 FROM jm_queue WHERE state = 'queued' AND not_before IS NOT NULL "
                "LIMIT 1"),
    "running": "SELECT id FROM jm_queue WHERE state = 'running' ORDER BY id",
    "finished": "SELECT id, finished_at FROM jm_finished WHERE tbl = ? ORDER BY seq DESC",
    # Auto Cleanup's bounded reads (jm_finished_order: a range of (tbl, seq), never the table).
    "finished_past": "SELECT seq FROM jm_finished WHERE tbl = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
    "finished_through": ("SELECT id FROM jm_finished WHERE tbl = ? AND seq <= ? ORDER BY seq "
                         "LIMIT ?"),
    "finished_after": ("SELECT id, seq, finished_at FROM jm_finished WHERE tbl = ? AND seq > ? "
                       "ORDER BY seq LIMIT ?"),
    "jobs": "SELECT name FROM jm_jobs WHERE live = 1 ORDER BY name",
    "retained": "SELECT notification FROM jm_retained WHERE id = ?",
    "queue": ("SELECT id, state, sort_key, not_before FROM jm_queue "
              "ORDER BY state != 'running', sort_key"),
}


class MemoryIndexStore:
    """An index kept in memory (SQLite): the index at a past position, for an archival."""

    dialect: Dialect = SQLITE

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", isolation_level=None)

    @property
    def connection(self) -> Any:
        return self._db

    def create(self, script: str) -> None:
        self._db.executescript(script)

    def close(self) -> None:
        self._db.close()
