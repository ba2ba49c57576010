"""The write model: the aggregates the Job Manager decides with, their store, its index.

The jobs and the scheduler are held in memory (they match the store after every commit;
`reload()` replaces them after a failed one), recent executions in a small cache; the write
index (`att_jm.application.index`) says what is queued, running and finished. `commit`
stores a unit of work's events and the index's changes in one transaction.
"""

from __future__ import annotations

import collections
import functools
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent

from att_jm.application.index import TOPICS, WriteIndex, live_changes
from att_jm.application.unit import UnitOfWork
from att_jm.domain import limits as lim
from att_jm.domain.executions import Execution
from att_jm.domain.ids import SCHEDULER_ID, job_id
from att_jm.domain.jobs import Job
from att_jm.domain.limits import shown
from att_jm.domain.scheduler import Scheduler
from att_jm.errors import EventTooLarge, NotFound
from att_jm.log.anchor import read_anchor
from att_jm.log.codec import encode_state
from att_jm.store import JobManagerApp, log_position, open_writer_log, read_rows

log = structlog.get_logger("att_jm")

EXECUTIONS_CACHED = 256
#: How the topic of every event of an Execution starts.
_EXECUTION_TOPICS = f"{Execution.TOPIC}."
#: The library snapshots the scheduler every this many versions (see `JobManagerApp`).
SCHEDULER_SNAPSHOT_EVERY = 500


def _too_large(event: object, size: int) -> EventTooLarge:
    """The refusal of `event`, whose JSON is `size` bytes, over the cap."""
    return EventTooLarge(f"its {type(event).__name__} event would be {size} bytes, over "
                         f"the cap of {lim.MAX_EVENT_BYTES} bytes per event")


class WriteModel:
    """The aggregates of the Job Manager, loaded from and stored to the event store."""

    def __init__(self, app: JobManagerApp, clock: Callable[[], Any]) -> None:
        self.app = app
        self.log = open_writer_log(app)
        self.index = WriteIndex(self.log)
        self.jobs: dict[str, Job] = {}
        #: The jobs the last `reload()` could not load (name -> why): left out, not running.
        self.unloadable: dict[str, str] = {}
        #: The last `reload()` failed: the state in memory may be a failed unit of work's,
        #: to be reloaded before the next one (`att_jm.service.units.Units.run`).
        self.stale = False
        # Executions this writer loaded or changed lately (the running one, the next ones).
        self._executions: collections.OrderedDict[UUID, Execution] = collections.OrderedDict()
        self.scheduler = self._load_scheduler(clock)
        self.catch_up()
        self.reload()

    def close(self) -> None:
        """Record the index's position, close the writer's connection (the last connection
        to close checkpoints the WAL)."""
        try:
            self.index.record()
        except sqlite3.Error as error:  # the next start replays what it holds already
            log.warning("index.record_failed", error=repr(error))
        self.log.close()

    def catch_up(self) -> int:
        """Bring the index up to the log's end (rebuilt when it is ahead of it): the rows
        after its recorded position are applied (again); the rows applied."""
        end = log_position(self.app)
        if self.index.position > end:
            log.warning("index.ahead_of_log", index=self.index.position, log=end)
            self.index.reset()
        anchor = read_anchor(self.log.connection, self.log.dialect)
        if anchor is not None and self.index.position < anchor.position:
            # An archived store: the rows before the anchor are gone, its state is the index
            # at its position (exact: the rows after it then apply as they would have).
            self.index.load(anchor.state()["index"], anchor.position)
            log.info("index.from_anchor", position=anchor.position)
        if self.index.position == end:
            return 0
        applied = self.index.catch_up(read_rows(self.app, self.index.position, TOPICS), end)
        log.info("index.caught_up", rows=applied, position=end)
        return applied

    def _load_scheduler(self, clock: Callable[[], Any]) -> Scheduler:
        try:
            scheduler: Scheduler = self.app.repository.get(SCHEDULER_ID)
        except AggregateNotFoundError:
            scheduler = Scheduler.create(clock())
            self.app.save(scheduler)
        return scheduler

    def reload(self) -> None:
        """Drop every cached aggregate and load the current ones from the store.

        The new state replaces the old one only once it is complete: when the store refuses
        a read, the state stays as it was (never a part of the jobs), marked `stale`, and
        the error is raised. A job whose stored state does not decode (its snapshot or an
        event this code cannot read) is left out, logged and named in `unloadable`, so that
        it cannot stop the service from starting nor the other jobs from running."""
        self._executions.clear()  # a cache: loaded again when needed
        try:
            scheduler: Scheduler = self.app.repository.get(SCHEDULER_ID)
            jobs: dict[str, Job] = {}
            unloadable: dict[str, str] = {}
            for name in self.index.job_names():
                try:
                    job = self.get_job(name)
                except MapperDeserialisationError as error:
                    unloadable[name] = str(error)
                    log.error("job.unloadable", job=name, error=str(error))
                    continue
                if job is not None and not job.removed:
                    jobs[name] = job
        except BaseException:
            self.stale = True
            raise
        self.scheduler, self.jobs, self.unloadable = scheduler, jobs, unloadable
        self.stale = False

    def get_job(self, name: str) -> Job | None:
        try:
            job: Job = self.app.repository.get(job_id(name))
        except AggregateNotFoundError:
            return None
        return job

    def exists(self, aggregate_id: UUID) -> bool:
        return self.log.exists(aggregate_id)

    def existing(self, ids: Iterable[UUID]) -> set[UUID]:
        return self.log.existing(list(ids))

    def execution(self, uow: UnitOfWork, entry: str) -> Execution:
        """Execution `entry` as this unit of work sees it; NotFound when there is none."""
        try:
            key = UUID(entry)
        except ValueError:
            raise NotFound(f"no entry {shown(entry)}") from None
        cached = uow.aggregates.get(key)
        if isinstance(cached, Execution):
            return cached
        created = uow.enqueued.get(key)
        if created is not None:  # enqueued by this batch: built from its event, not stored yet
            built = created.mutate(None)
            if not isinstance(built, Execution):  # pragma: no cover -- an Enqueued makes one
                raise NotFound(f"no entry {entry!r}")
            uow.aggregates[key] = built
            self._remember(key, built)
            return built
        known = self._executions.get(key)
        if known is not None:
            self._executions.move_to_end(key)
            return known
        execution = self._load_execution(key)
        if not isinstance(execution, Execution):
            raise NotFound(f"no entry {entry!r}")
        self._remember(key, execution)
        return execution

    def _load_execution(self, key: UUID) -> object:
        """Aggregate `key` replayed from its events, read on the writer's own connection
        (a fifth of the library repository's cost, which also looks for a snapshot first
        through its pooled connection); through the repository when its first events are
        not in the log (archived: it starts from a snapshot) or it is no execution (the
        scheduler, say, is read from its snapshot, not from its whole history); None when
        there is none."""
        stored = self.log.events_of(key, _EXECUTION_TOPICS)
        if stored and stored[0].originator_version == 1:
            to_event = self.app.mapper.to_domain_event
            aggregate: Any = None
            for row in stored:
                event: Any = to_event(row)  # an aggregate event: it has `mutate`
                aggregate = event.mutate(aggregate)
            return aggregate
        try:
            loaded: object = self.app.repository.get(key)
        except AggregateNotFoundError:
            return None
        return loaded

    def _remember(self, key: UUID, execution: Execution) -> None:
        self._executions[key] = execution
        if len(self._executions) > EXECUTIONS_CACHED:
            self._executions.popitem(last=False)

    # Persistence ---------------------------------------------------------------------------

    def encode(self, uow: UnitOfWork) -> None:
        """Encode the events not encoded yet, as the commit will store them (raises what the
        commit would raise for an event that cannot be stored, and EventTooLarge for one
        over `limits.MAX_EVENT_BYTES`). Stores with `compact_states` on: `_encode_compact`."""
        if self.app.compact:
            self._encode_compact(uow)
            return
        to_stored = self.app.mapper.to_stored_event
        start = len(uow.encoded)
        uow.encoded.extend(to_stored(event) for event in uow.events[start:])
        for index in range(start, len(uow.encoded)):
            size = len(uow.encoded[index].state)
            if size > lim.MAX_EVENT_BYTES:
                del uow.encoded[start:]
                raise _too_large(uow.events[index], size)

    def _encode_compact(self, uow: UnitOfWork) -> None:
        """`encode` storing states compact (`att_jm.log.codec`): the cap is on the JSON,
        what is published and exported, not on the stored bytes."""
        to_plain = self._plain.to_stored_event
        start = len(uow.encoded)
        for event in uow.events[start:]:
            plain = to_plain(event)
            size = len(plain.state)
            if size > lim.MAX_EVENT_BYTES:
                del uow.encoded[start:]
                raise _too_large(event, size)
            uow.encoded.append(StoredEvent(plain.originator_id, plain.originator_version,
                                           plain.topic, encode_state(plain.state)))

    @functools.cached_property
    def _plain(self) -> Mapper[UUID]:
        """The application's mapper without the codec: an event's JSON."""
        return Mapper(transcoder=self.app.mapper.transcoder)

    def commit(self, uow: UnitOfWork) -> list[tuple[int, Any]]:
        """Store the batch's events and the index's changes in one transaction (snapshotting
        the scheduler); each event with its log position."""
        if not uow.events:
            return []
        # The recorder directly: Application.save() would re-collect the events through a
        # runtime Protocol isinstance() per event and snapshot by aggregate, and
        # EventStore.put() would encode each event again.
        self.encode(uow)
        events = uow.events
        index = self.index

        def index_changes(cursor: Any, positions: list[int]) -> None:
            index.write(cursor, live_changes(zip(positions, events, strict=True)), positions[-1])

        try:
            positions = self.log.append(uow.encoded, index_changes)
        except BaseException:
            index.forget()
            raise
        if any(event.originator_id == SCHEDULER_ID
               and event.originator_version % SCHEDULER_SNAPSHOT_EVERY == 0 for event in events):
            if uow.later is None:
                self._snapshot()
            elif not uow.spoiled:  # (a spoiled scheduler is reloaded: the next multiple's)
                uow.later.append(self._snapshot)  # a commit of its own: after the replies
        return list(zip(positions, events, strict=True))

    def _snapshot(self) -> None:
        """Snapshot the scheduler as it is in memory, just stored (the library's
        `take_snapshot` would read back and replay its last events first).

        A failure only costs load time, so it never fails a commit."""
        scheduler = self.scheduler
        try:
            if self.app.snapshots is None or scheduler.pending_events:
                raise RuntimeError("no snapshot store, or the scheduler has unstored events")
            snapshot_class = getattr(type(scheduler), "Snapshot", type(self.app).snapshot_class)
            if snapshot_class is None:
                raise RuntimeError("no snapshot class")
            self.app.snapshots.put([snapshot_class.take(scheduler)])
        except Exception as error:  # noqa: BLE001 -- the batch is already stored
            log.warning("scheduler.snapshot_failed", version=scheduler.version, error=repr(error))
