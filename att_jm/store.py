"""The event store: the eventsourcing Application, its persistence settings, and log reading."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import orjson
from eventsourcing import persistence
from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import StoredEvent, Transcoder

from att_jm.domain.scheduler import Scheduler
from att_jm.log.rows import StoreReader
from att_jm.log.transcoder import OrjsonTranscoder


class JobManagerApp(Application[UUID]):
    """The event-sourced application: every state change of the Job Manager is saved here."""

    name = "JobManager"
    snapshotting_intervals = {Scheduler: 500}  # noqa: RUF012 -- the library's declared ClassVar

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()


def sqlite_env(path: str, *, readonly: bool = False) -> dict[str, str]:
    """Persistence settings for an SQLite store file (created with its folder when missing)."""
    if readonly:
        dbname = f"file:{Path(path).resolve()}?mode=ro"
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        dbname = path
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": dbname,
        "SQLITE_LOCK_TIMEOUT": "10",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "CREATE_TABLE": "n" if readonly else "y",
    }


#: SQLite result codes (primary) of faults that may pass: busy, locked, out of memory,
#: read-only (a remount), interrupted, I/O error, corrupt (the operator must act: never the
#: message's fault), disk full, cannot open, protocol, not a database.
_TRANSIENT_CODES: Final = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})
#: What the library raises (wrapping sqlite3's error as its cause) for faults of the store.
_STORE_FAULTS: Final = (
    persistence.OperationalError, persistence.InterfaceError, persistence.InternalError,
)


def is_transient(error: BaseException) -> bool:
    """Whether `error` is a fault of the store (or the machine) that may pass: retried with
    back-off. Anything else (a constraint, data SQLite refuses, a bug in a handler) fails the
    same way on every retry: a deterministic failure of the message being handled."""
    seen: BaseException | None = error
    for _ in range(8):  # the library's error wraps sqlite3's as its cause
        if seen is None:
            break
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)
            if isinstance(code, int):
                return (code & 0xFF) in _TRANSIENT_CODES
            return isinstance(seen, sqlite3.OperationalError)
        seen = seen.__cause__
    return isinstance(error, (OSError, MemoryError, *_STORE_FAULTS))


def open_store(path: str, *, readonly: bool = False) -> JobManagerApp:
    """The application over the SQLite store at `path`."""
    return JobManagerApp(env=sqlite_env(path, readonly=readonly))


def read_log(
    app: JobManagerApp, after: int, topics: Sequence[str] = (), page: int = 1000
) -> Iterator[tuple[int, DomainEventProtocol[Any]]]:
    """(position, event) of every stored event after `after`, in log order, page by page."""
    while True:
        notifications = app.recorder.select_notifications(
            start=after, limit=page, topics=topics, inclusive_of_start=False
        )
        for notification in notifications:
            yield notification.id, app.mapper.to_domain_event(notification)
        if len(notifications) < page:
            return
        after = notifications[-1].id


def log_position(app: JobManagerApp) -> int:
    """The position of the last stored event (0 for an empty log)."""
    return app.recorder.max_notification_id() or 0


class WriterLog:
    """The writer's own plain connection to the store: its appends and its existence checks.

    Without the library's pooled connection and transaction around each statement (about
    0.1 ms a commit, a third of answering a command), and with one `executemany` per commit
    where eventsourcing's recorder runs one statement per event to read each rowid. The
    rows are exactly the recorder's (same table, columns and encoding), so the library
    reads them as its own. The writer is the store's only writer and SQLite gives a new row
    the largest rowid plus one: the rows of one transaction take consecutive positions
    ending at the largest rowid after the insert.
    """

    def __init__(self, app: JobManagerApp, lock_timeout: float = 10.0) -> None:
        recorder = app.recorder
        table = str(recorder.events_table_name)  # type: ignore[attr-defined]  # the SQLite recorder's
        db_name = str(recorder.datastore.pool.db_name)  # type: ignore[attr-defined]  # idem
        self._db = sqlite3.connect(db_name, uri=db_name.startswith("file:"),
                                   isolation_level=None, timeout=lock_timeout)
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before its ack
        self.db_name = db_name
        self._insert = str(recorder.insert_events_statement)  # type: ignore[attr-defined]  # idem
        self._last = f"SELECT max(rowid) FROM {table}"  # noqa: S608 -- the library's table name
        self._any = (
            f"SELECT originator_id FROM {table} WHERE originator_version = 1 "  # noqa: S608 -- idem
            "AND originator_id IN "
        )
        self._first = (
            f"SELECT state FROM {table} WHERE originator_id = ? "  # noqa: S608 -- idem
            "AND originator_version = 1"
        )

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer's connection (for tables kept in its transactions, e.g. an index)."""
        return self._db

    def append(
        self, stored: Sequence[StoredEvent],
        before_commit: Callable[[sqlite3.Cursor, list[int]], None] | None = None,
    ) -> list[int]:
        """Insert `stored` in one transaction; their log positions. `before_commit` runs in
        that transaction, given the positions (what it writes commits with the events)."""
        if not stored:
            return []
        rows = [
            (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
             s.originator_version, s.topic, s.state)
            for s in stored
        ]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(self._insert, rows)
            last = int(db.execute(self._last).fetchone()[0])
            positions = list(range(last - len(rows) + 1, last + 1))
            if before_commit is not None:
                before_commit(db.cursor(), positions)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back by itself (a full disk)
                db.execute("ROLLBACK")
            raise
        return positions

    def existing(self, ids: Collection[UUID], chunk: int = 500) -> set[UUID]:
        """Which of `ids` name an aggregate that has events (one query per chunk)."""
        found: set[UUID] = set()
        wanted = [aggregate_id.hex for aggregate_id in ids]
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            cursor = self._db.execute(f"{self._any}({','.join('?' * len(part))})", part)
            found.update(UUID(row[0]) for row in cursor)
        return found

    def exists(self, aggregate_id: UUID) -> bool:
        return bool(self.existing((aggregate_id,)))

    def received(self, notification: UUID) -> tuple[str, Any] | None:
        """(trigger, payload) of the stored notification aggregate `notification`; None when
        there is none (or its first event is not a notification's)."""
        row = self._db.execute(self._first, (notification.hex,)).fetchone()
        if row is None:
            return None
        try:
            state = orjson.loads(row[0])
            return str(state["trigger"]), state["payload"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None

    def close(self) -> None:
        self._db.close()


def open_log(app: JobManagerApp) -> StoreReader:
    """The log reader (`att_jm.log.rows.StoreReader`, read-only) on the store file of `app`."""
    db_name = str(app.recorder.datastore.pool.db_name)  # type: ignore[attr-defined]  # the SQLite recorder's
    if db_name.startswith("file:"):  # a read-only app's URI (`sqlite_env`)
        db_name = db_name.removeprefix("file:").partition("?")[0]
    return StoreReader(db_name)


def read_rows(
    app: JobManagerApp, after: int, topics: Sequence[str] = (), page: int = 5000
) -> Iterator[list[tuple[int, str, str, bytes]]]:
    """Pages of stored rows (position, originator id, topic, state) after `after`, in log order.

    The raw rows, without building event objects (`StoreReader.keyed_pages`: the one log
    reader, through a read-only connection of its own): what catch-ups and replays need, at
    the speed of SQLite.
    """
    reader = open_log(app)
    try:
        yield from reader.keyed_pages(after, None, topics, page)
    finally:
        reader.close()
