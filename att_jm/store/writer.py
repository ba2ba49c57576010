"""The writer's own connection to the store: what every engine's `WriterLog` does."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from att_jm.log.backend import Dialect
from att_jm.log.codec import loads_state

#: Runs inside an append's transaction, given a cursor and the appended rows' positions.
BeforeCommit = Callable[[Any, list[int]], None]


class WriterLog:
    """The writer's own plain connection to the store: its appends and its existence checks.

    Without the library's pooled connection and transaction around each statement (about
    0.1 ms a commit on SQLite, a third of answering a command), and with one statement per
    commit where eventsourcing's recorder runs one per event. The rows are exactly the
    recorder's (same table, columns and encoding), so the library reads them as its own.
    Positions are gap-free and in commit order: the rows of one transaction take
    consecutive positions after the largest stored one, and no other transaction appends
    until it commits (SQLite's write lock; PostgreSQL's table lock, as the library takes it).
    """

    dialect: Dialect
    #: The store as it may be shown (a path; a URL without its password).
    db_name: str

    @property
    def connection(self) -> Any:
        """The writer's connection (for tables kept in its transactions, e.g. an index);
        a new one when the last was lost (PostgreSQL)."""
        raise NotImplementedError

    def append(self, stored: Sequence[StoredEvent],
               before_commit: BeforeCommit | None = None) -> list[int]:
        """Insert `stored` in one transaction; their log positions. `before_commit` runs in
        that transaction, given the positions (what it writes commits with the events).
        StoreConflict when an event's (aggregate, version) is stored already."""
        raise NotImplementedError

    def create(self, script: str) -> None:
        """Run the CREATE ... IF NOT EXISTS statements of `script` (SQLite's types: the
        dialect adapts them), one writer at a time."""
        raise NotImplementedError

    def existing(self, ids: Collection[UUID], chunk: int = 500) -> set[UUID]:
        """Which of `ids` name an aggregate that has events (one query per chunk)."""
        raise NotImplementedError

    def exists(self, aggregate_id: UUID) -> bool:
        return bool(self.existing((aggregate_id,)))

    def missing_start(self) -> bool:
        """Whether rows at the log's start are gone (an archival removed them): its first
        position is over 1."""
        raise NotImplementedError

    def has_rows(self, aggregate_id: UUID) -> bool:
        """Whether any event of aggregate `aggregate_id` is stored, whatever its version (in
        an archived store an aggregate's first versions may be gone, its later ones kept)."""
        raise NotImplementedError

    def first_state(self, aggregate_id: UUID) -> bytes | None:
        """The stored state of version 1 of aggregate `aggregate_id` (None: none)."""
        raise NotImplementedError

    def events_of(self, aggregate_id: UUID, kind: str) -> list[StoredEvent]:
        """Every stored event of aggregate `aggregate_id`, by version, when its version 1 is
        stored with a topic that starts with `kind` (else none: an aggregate of another kind
        is not read whole, however long its history). One query, without the snapshot
        lookup and the pooled connection of the library's repository."""
        raise NotImplementedError

    def received(self, notification: UUID) -> tuple[str, Any] | None:
        """(trigger, payload) of the stored notification aggregate `notification`; None when
        there is none (or its first event is not a notification's)."""
        state = self.first_state(notification)
        if state is None:
            return None
        try:
            data = loads_state(state)
            return str(data["trigger"]), data["payload"]
        except (ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        raise NotImplementedError

