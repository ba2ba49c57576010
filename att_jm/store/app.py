"""The eventsourcing Application of the Job Manager, and reading its store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import EnvType

from att_jm.domain.scheduler import Scheduler
from att_jm.log.codec import StateCodec, UndecodableState, decode_state, is_encoded
from att_jm.log.rows import KeyedRow, StoreReader
from att_jm.log.transcoder import OrjsonTranscoder


class JobManagerApp(Application[UUID]):
    """The event-sourced application: every state change of the Job Manager is saved here."""

    name = "JobManager"
    snapshotting_intervals = {Scheduler: 500}  # noqa: RUF012 -- the library's declared ClassVar
    #: The store as it was named (a path or a PostgreSQL URL: `att_jm.log.backend`).
    location: str = ""
    readonly: bool = False

    #: Whether events and snapshots are stored compact (setting `compact_states`).
    compact: bool = False

    def __init__(self, env: EnvType | None = None, *, compact: bool = False) -> None:
        self.compact = compact  # before the library's __init__, which calls construct_mapper
        super().__init__(env)

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        """Compact: the library's mapper with the stored-state codec (`att_jm.log.codec`) as
        its compressor. Plain: the library's mapper as it is for writing (states stored as
        their JSON), reading rows of either form (`PlainWritingMapper`)."""
        if self.compact:
            return Mapper(transcoder=self.construct_transcoder(), compressor=StateCodec())
        return PlainWritingMapper(transcoder=self.construct_transcoder())


class PlainWritingMapper(Mapper[UUID]):
    """The library's mapper without a compressor (events stored as their JSON, nothing more
    on the writer's path) that still loads compact rows: a store switched from compact to
    plain, or a mixed log, replays (a first-byte check per loaded row)."""

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        state = stored_event.state
        if is_encoded(state):
            try:
                state = decode_state(state)
            except UndecodableState as error:  # as the library reports a state it cannot read
                raise MapperDeserialisationError(
                    f"Failed to deserialise state of stored event with topic "
                    f"'{stored_event.topic}', originator_id '{stored_event.originator_id}' and "
                    f"originator_version {stored_event.originator_version}: {error}") from error
            stored_event = StoredEvent(stored_event.originator_id,
                                       stored_event.originator_version, stored_event.topic, state)
        return super().to_domain_event(stored_event)


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


def open_log(app: JobManagerApp) -> StoreReader:
    """The log reader (`att_jm.log.rows.StoreReader`, read-only) on the store of `app`."""
    return StoreReader(app.location)


def read_rows(
    app: JobManagerApp, after: int, topics: Sequence[str] = (), page: int = 5000
) -> Iterator[list[KeyedRow]]:
    """Pages of stored rows (position, originator id, topic, state) after `after`, in log order.

    The raw rows, without building event objects (`StoreReader.keyed_pages`: the one log
    reader, through a read-only connection of its own): what catch-ups and replays need, at
    the speed of the database.
    """
    reader = open_log(app)
    try:
        yield from reader.keyed_pages(after, None, topics, page)
    finally:
        reader.close()
