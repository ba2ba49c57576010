"""The unit of work: what one batch did, in the order it happened, until it is committed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from att_jm.domain.executions import Execution


@dataclass
class UnitOfWork:
    """The events of one batch in the order they happened, and the aggregates they came from.

    The handlers add to it; `att_jm.application.model.WriteModel.commit` stores it in one
    transaction. It holds no I/O and no hooks of the writer's (`att_jm.service.units`
    extends it with those).
    """

    events: list[Any] = field(default_factory=list)
    encoded: list[StoredEvent] = field(default_factory=list)  # events[:len(encoded)], encoded
    aggregates: dict[UUID, Aggregate] = field(default_factory=dict)
    #: notification id -> (trigger, payload) of the notifications this batch received
    notifications: dict[str, tuple[str, Any]] = field(default_factory=dict)
    conflicts: dict[UUID, None] = field(default_factory=dict)  # conflict records made (ordered)
    stored: set[UUID] | None = None  # notification aggregates known to be stored (prefetched)
    parsed: dict[bytes, tuple[Any, UUID | None]] = field(default_factory=dict)  # prefetched
    archived: bool | None = None  # whether the log's first rows are gone (read once a batch)
    enqueued: dict[UUID, Any] = field(default_factory=dict)  # Execution.Enqueued events added
    now: datetime | None = None  # one clock reading for the notifications of the batch
    replies: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    #: A handler failed after changing aggregates in memory: reload them after the commit.
    spoiled: bool = False
    #: What the commit may leave until its replies are sent (the scheduler's snapshot); None:
    #: done within the commit. The writer's unit of work runs them after its replies.
    later: list[Callable[[], None]] | None = None
    _touched: list[Aggregate] = field(default_factory=list)

    def add(self, *events: Any) -> None:
        """Creation events of aggregates nothing reads again (not built, see `enqueued_event`)."""
        self.events.extend(events)
        for event in events:
            if isinstance(event, Execution.Enqueued):
                self.enqueued[event.originator_id] = event

    def mark(self) -> tuple[int, int, int]:
        """Where the unit of work stands, for `truncate`."""
        return len(self.events), len(self.notifications), len(self.conflicts)

    def truncate(self, mark: tuple[int, int, int]) -> None:
        """Forget what was added since `mark` (a handler that failed)."""
        events, notifications, conflicts = mark
        dropped = {id(event) for event in self.events[events:]}
        del self.events[events:]
        del self.encoded[events:]
        for key in [k for k, event in self.enqueued.items() if id(event) in dropped]:
            del self.enqueued[key]
        for nid in list(self.notifications)[notifications:]:
            del self.notifications[nid]
        for record in list(self.conflicts)[conflicts:]:
            del self.conflicts[record]

    def touch(self, *aggregates: Aggregate) -> None:
        for aggregate in aggregates:
            self.aggregates[aggregate.id] = aggregate
            self._touched.append(aggregate)

    def collect(self) -> None:
        """Take the pending events of what the last handler touched, in order."""
        for aggregate in self._touched:
            self.events.extend(aggregate.collect_events())
        self._touched.clear()

    def discard(self) -> None:
        """Drop what the last (failed) handler did; the in-memory state must be reloaded."""
        for aggregate in self._touched:
            if aggregate.collect_events():
                self.spoiled = True
        self._touched.clear()
