"""The application service: notifications, commands, dispatch and cleanup as units of work.

Each handler reads what it needs, calls the domain, and adds the touched
aggregates to a UnitOfWork; the writer commits one UnitOfWork per drained batch.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4, uuid5

import orjson
import structlog
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from att_jm.domain import commands as cmd
from att_jm.domain import limits as lim
from att_jm.domain.cleanup import select_for_cleanup
from att_jm.domain.errors import (
    Conflict,
    EventTooLarge,
    Forbidden,
    InvalidInput,
    JobManagerError,
    NotFound,
    RateLimited,
    TooLarge,
)
from att_jm.domain.executions import QUEUED, RUNNING, Execution
from att_jm.domain.ids import (
    NAMESPACE,
    SCHEDULER_ID,
    command_id,
    execution_id,
    job_id,
    notification_id,
)
from att_jm.domain.jobs import Job
from att_jm.domain.limits import cut, shown
from att_jm.domain.matching import fill_template, json_equal, matches
from att_jm.domain.notifications import CommandRecord, Notification, Rejection
from att_jm.domain.ratelimit import TokenBuckets
from att_jm.domain.retry import RetryPolicy
from att_jm.domain.scheduler import TABLES, Scheduler
from att_jm.domain.times import iso, parse_iso
from att_jm.store import JobManagerApp, WriterLog
from projections.views import Views

log = structlog.get_logger("att_jm")

MAX_NOTIFICATION_ID = lim.MAX_NOTIFICATION_ID_CHARS
#: Deeper inbound JSON would be accepted and then fail every commit of its batch, for ever
#: (orjson writes at most 254 levels, and an event nests a payload a few levels deeper).
MAX_JSON_DEPTH = lim.MAX_JSON_DEPTH
EXECUTIONS_CACHED = 256
INTERRUPTED = "interrupted: the service stopped while this execution was running"


@dataclass(frozen=True)
class Dispatch:
    """An execution the scheduler just started: what the runner needs to run it."""

    execution_id: str
    job: str
    trigger: str
    attempt: int
    script: str
    command: str
    timeout_seconds: float


@dataclass(frozen=True)
class Outcome:
    """What the runner reports back for one execution."""

    result: int
    feedback: str | None
    exit_code: int | None
    duration_seconds: float
    timed_out: bool = False


@dataclass
class UnitOfWork:
    """The events of one batch in the order they happened, and the aggregates they came from."""

    events: list[Any] = field(default_factory=list)
    encoded: list[StoredEvent] = field(default_factory=list)  # events[:len(encoded)], encoded
    aggregates: dict[UUID, Aggregate] = field(default_factory=dict)
    #: notification id -> (trigger, payload) of the notifications this batch received
    notifications: dict[str, tuple[str, Any]] = field(default_factory=dict)
    conflicts: dict[UUID, None] = field(default_factory=dict)  # conflict records made (ordered)
    stored: set[UUID] | None = None  # notification aggregates known to be stored (prefetched)
    parsed: dict[bytes, tuple[Any, UUID | None]] = field(default_factory=dict)  # prefetched
    enqueued: dict[UUID, Any] = field(default_factory=dict)  # Execution.Enqueued events added
    now: datetime | None = None  # one clock reading for the notifications of the batch
    replies: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    spoiled: bool = False
    after_store: list[Callable[[], object]] = field(default_factory=list)  # run once stored
    start: Callable[[], object] | None = None  # starts the script dispatched, once stored
    handover: bool = False  # the batch ended a script: the next one starts before all else
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


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` objects/arrays (it could not be stored)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            raise InvalidInput(f"JSON nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in item)


def error_reply(error: JobManagerError) -> dict[str, Any]:
    message = cut(error.message, lim.MAX_REASON_CHARS)
    return {"ok": False, "error": {"code": error.code, "message": message}}


def ok_reply(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def job_row(job: Job) -> dict[str, Any]:
    return {
        "name": job.name,
        "script": job.script,
        "trigger": job.trigger,
        "match": job.match,
        "command": job.command,
        "timeout_seconds": lim.clamp_timeout(job.timeout_seconds),
        "enabled": job.enabled,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "retry": _policy_json(getattr(job, "retry", None)),
    }


def _policy_json(value: Any) -> dict[str, Any] | None:
    policy = RetryPolicy.from_json(value)
    return None if policy is None else policy.to_json()


class JobManager:
    """The Job Manager's use cases over the event store (writes) and the views (reads)."""

    def __init__(
        self,
        app: JobManagerApp,
        views: Views,
        *,
        check_script: Callable[[str], object],
        clock: Callable[[], datetime],
        max_payload_bytes: int = 256 * 1024,
        may_send: Callable[[str, str], bool] | None = None,
        rate: TokenBuckets | None = None,
    ) -> None:
        self.app = app
        self.views = views
        self.check_script = check_script
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes
        #: (actor, command) -> whether that actor's role allows it; None: no roles (every
        #: actor may send every command: a broker whose ACL alone decides).
        self.may_send = may_send
        self.rate = rate
        #: actor -> (second of the last recorded refusal, refusals since then not recorded)
        self._limited: dict[str, tuple[int, int]] = {}
        self.log = WriterLog(app)
        self.jobs: dict[str, Job] = {}
        # Executions this writer loaded or changed lately (the running one, the next ones):
        # like the jobs and the scheduler, they match the store after every commit, and
        # reload() drops them after a failed one.
        self._executions: collections.OrderedDict[UUID, Execution] = collections.OrderedDict()
        self.scheduler = self._load_scheduler()
        self.reload()

    def close(self) -> None:
        """Close the writer's connection (the last connection to close checkpoints the WAL)."""
        self.log.close()

    # State -------------------------------------------------------------------------------

    def _load_scheduler(self) -> Scheduler:
        try:
            scheduler: Scheduler = self.app.repository.get(SCHEDULER_ID)
        except AggregateNotFoundError:
            scheduler = Scheduler.create(self.clock())
            self.app.save(scheduler)
        return scheduler

    def reload(self) -> None:
        """Drop every cached aggregate and load the current ones from the store."""
        self.scheduler = self.app.repository.get(SCHEDULER_ID)
        self._executions.clear()
        self.jobs = {}
        for name in self.views.job_names():
            job = self._get_job(name)
            if job is not None and not job.removed:
                self.jobs[name] = job

    def _get_job(self, name: str) -> Job | None:
        try:
            job: Job = self.app.repository.get(job_id(name))
        except AggregateNotFoundError:
            return None
        return job

    def _exists(self, aggregate_id: UUID) -> bool:
        return self.log.exists(aggregate_id)

    def prefetch_notifications(self, uow: UnitOfWork, payloads: Iterable[bytes]) -> None:
        """Parse these payloads once, and look up in one query which of their notification
        ids are stored already."""
        ids = []
        for payload in payloads:
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            key = None
            if isinstance(body, dict):
                nid = body.get("id")
                if isinstance(nid, str):
                    key = notification_id(nid)
                    ids.append(key)
            uow.parsed[payload] = (body, key)
        uow.stored = self.log.existing(ids) if ids else set()

    def _notification_stored(self, uow: UnitOfWork, key: UUID) -> bool:
        if uow.stored is not None:
            return key in uow.stored
        return self._exists(key)

    def _execution(self, uow: UnitOfWork, entry: str) -> Execution:
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
        try:
            execution: Execution = self.app.repository.get(key)
        except AggregateNotFoundError:
            raise NotFound(f"no entry {entry!r}") from None
        if not isinstance(execution, Execution):
            raise NotFound(f"no entry {entry!r}")
        self._remember(key, execution)
        return execution

    def _remember(self, key: UUID, execution: Execution) -> None:
        self._executions[key] = execution
        if len(self._executions) > EXECUTIONS_CACHED:
            self._executions.popitem(last=False)

    def encode(self, uow: UnitOfWork) -> None:
        """Encode the events not encoded yet, as the commit will store them (raises what the
        commit would raise for an event that cannot be stored, and EventTooLarge for one
        over `limits.MAX_EVENT_BYTES`)."""
        to_stored = self.app.mapper.to_stored_event
        start = len(uow.encoded)
        uow.encoded.extend(to_stored(event) for event in uow.events[start:])
        for index in range(start, len(uow.encoded)):
            size = len(uow.encoded[index].state)
            if size > lim.MAX_EVENT_BYTES:
                del uow.encoded[start:]
                raise EventTooLarge(
                    f"its {type(uow.events[index]).__name__} event would be {size} bytes, over "
                    f"the cap of {lim.MAX_EVENT_BYTES} bytes per event"
                )

    def commit(self, uow: UnitOfWork) -> list[tuple[int, Any]]:
        """Store the batch's events in one transaction (snapshotting the scheduler); each
        event with its log position."""
        if not uow.events:
            return []
        # The recorder directly: Application.save() would re-collect the events through a
        # runtime Protocol isinstance() per event (5% of a burst) and snapshot by aggregate,
        # and EventStore.put() would encode each event again.
        self.encode(uow)
        positions = self.log.append(uow.encoded)
        if any(event.originator_id == SCHEDULER_ID and event.originator_version % 500 == 0
               for event in uow.events):
            self._snapshot()
        return list(zip(positions, uow.events, strict=True))

    def _snapshot(self) -> None:
        """Snapshot the scheduler as it is in memory, just stored (the library's
        `take_snapshot` would read back and replay its last 500 events first).

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

    # Notifications -----------------------------------------------------------------------

    def receive_notification(
        self, uow: UnitOfWork, trigger: str, topic: str, payload: bytes
    ) -> str:
        """Store a notification and enqueue the jobs it triggers; the outcome as a word."""
        try:
            body, key = self._parse_notification(uow, payload)
            if len(trigger) > lim.MAX_TRIGGER_CHARS:
                raise InvalidInput(f"the trigger (the topic's last level) must be at most "
                                   f"{lim.MAX_TRIGGER_CHARS} characters")
        except JobManagerError as error:
            self.reject_notification(uow, topic, error, payload)
            return "rejected"
        nid = body["id"]
        first = uow.notifications.get(nid)
        if first is None and self._notification_stored(uow, key):
            first = self.log.received(key)
            if first is None:  # stored, but not readable as a notification: never run again
                return "duplicate"
        if first is not None:
            if first[0] == trigger and json_equal(first[1], body):
                return "duplicate"  # a redelivery, a retained copy: nothing to do
            return self._conflict(uow, nid, trigger, topic, body, payload, first[0])
        uow.notifications[nid] = (trigger, body)
        if uow.now is None:
            uow.now = self.clock()
        now = uow.now
        enqueued: list[dict[str, str]] = []
        skipped: list[dict[str, str]] = []
        executions: list[Execution.Enqueued] = []
        for job in self.jobs.values():
            if not (job.enabled and job.trigger == trigger and matches(job.match, body)):
                continue
            try:
                command = fill_template(job.command, body)
            except InvalidInput as error:
                skipped.append({"job": job.name, "reason": cut(error.message,
                                                               lim.MAX_REASON_CHARS)})
                continue
            entry = execution_id(nid, job.name)
            enqueued.append({"job": job.name, "execution_id": str(entry)})
            executions.append(
                Execution.enqueued_event(
                    entry, job.name, job.script, command, trigger, nid,
                    lim.clamp_timeout(job.timeout_seconds), "channel-manager", now,
                    getattr(job, "retry", None),
                )
            )
        # Neither aggregate is read again while the service runs: only their events are made.
        uow.add(Notification.received_event(key, nid, trigger, body, enqueued, skipped, now),
                *executions)
        return f"enqueued {len(executions)}" if executions else "matched none"

    def _conflict(
        self, uow: UnitOfWork, nid: str, trigger: str, topic: str, body: Any, payload: bytes,
        first_trigger: str,
    ) -> str:
        """Record that id `nid` came again with another payload or trigger (once per distinct
        copy: a redelivery of the same conflicting copy is silent); the outcome as a word."""
        digest = hashlib.sha256(
            trigger.encode("utf-8", "surrogatepass") + b"\x00"
            + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        record = uuid5(NAMESPACE, f"conflict:{nid}\x00{digest}")
        if record in uow.conflicts or self._exists(record):
            return "duplicate conflict"
        uow.conflicts[record] = None
        where = "the same trigger" if first_trigger == trigger else (
            f"trigger {shown(first_trigger)}")
        error = Conflict(
            f"notification id {shown(nid)} was first received on {where} with another "
            f"payload; this copy (trigger {shown(trigger)}) is recorded, not run"
        )
        self._reject(uow, "notification", topic, error, payload, "channel-manager",
                     rejection_id=record)
        return "conflict"

    def _parse_notification(self, uow: UnitOfWork, payload: bytes) -> tuple[dict[str, Any], UUID]:
        """The notification's body and aggregate id; JobManagerError when it is not valid."""
        if len(payload) > self.max_payload_bytes:
            raise TooLarge(f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}")
        prefetched = uow.parsed.get(payload)
        if prefetched is not None:
            body, key = prefetched
        else:
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"not JSON: {error}") from None
            key = None
        if not isinstance(body, dict):
            raise InvalidInput("the payload must be a JSON object")
        check_depth(body)
        nid = body.get("id")
        if not isinstance(nid, str) or not 1 <= len(nid) <= MAX_NOTIFICATION_ID:
            raise InvalidInput('"id" must be a string of 1-200 characters')
        return body, key if key is not None else notification_id(nid)

    def reject_command(
        self, uow: UnitOfWork, topic: str, error: JobManagerError, payload: bytes, actor: str
    ) -> dict[str, Any]:
        """Record a command refused before it reached its handler (e.g. a bad actor level)."""
        self._reject(uow, "command", topic, error, payload, actor)
        return error_reply(error)

    def reject_notification(
        self, uow: UnitOfWork, topic: str, error: JobManagerError, payload: bytes
    ) -> None:
        """Record a notification refused (invalid, too large, or one whose handling failed)."""
        self._reject(uow, "notification", topic, error, payload, "channel-manager")

    def _reject(
        self, uow: UnitOfWork, source: str, topic: str, error: JobManagerError, payload: bytes,
        actor: str, *, rejection_id: UUID | None = None,
    ) -> None:
        reason = cut(error.message, lim.MAX_REASON_CHARS)
        rejection = Rejection.reject(
            rejection_id or uuid4(), source, cut(topic, lim.MAX_TOPIC_SHOWN_CHARS), error.code,
            reason, payload, cut(actor, lim.MAX_ACTOR_CHARS), self.clock(),
        )
        uow.touch(rejection)
        log.warning(f"{source}.rejected", topic=topic, code=error.code, reason=reason)

    # Commands ----------------------------------------------------------------------------

    def handle_command(
        self, uow: UnitOfWork, actor: str, name: str, topic: str, payload: bytes,
        correlation: bytes | None,
    ) -> dict[str, Any] | cmd.ViewsGet:
        """The reply to a command, or the ViewsGet to answer once the views are caught up."""
        if correlation is not None and len(correlation) > lim.MAX_CORRELATION_BYTES:
            return self.reject_command(uow, topic, InvalidInput(
                f"CorrelationData must be at most {lim.MAX_CORRELATION_BYTES} bytes, "
                f"not {len(correlation)}"), payload, actor)
        # Empty CorrelationData identifies nothing: such commands are not deduplicated.
        record = command_id(actor, correlation) if correlation else None
        done = self._handled_before(uow, record)
        if done is None:
            done = self._refused(uow, actor, name, topic, payload)
        if done is not None:
            return done
        try:
            command = self._parse_command(name, payload)
            if isinstance(command, cmd.ViewsGet):
                return command
            reply = ok_reply(self._execute(uow, actor, command))
        except JobManagerError as error:
            uow.discard()
            reply = error_reply(error)
            if record is None:
                self._reject(uow, "command", topic, error, payload, actor)
        if record is not None and correlation:
            uow.collect()
            uow.touch(CommandRecord.handled(record, actor, name, correlation, reply, self.clock()))
            uow.replies[record] = reply
        return reply

    def _handled_before(self, uow: UnitOfWork, record: UUID | None) -> dict[str, Any] | None:
        """The stored reply of a command handled before (a redelivery), else None."""
        if record is None:
            return None
        if record in uow.replies:
            return uow.replies[record]
        if self._exists(record):
            stored: CommandRecord = self.app.repository.get(record)
            return stored.reply
        return None

    def _refused(
        self, uow: UnitOfWork, actor: str, name: str, topic: str, payload: bytes
    ) -> dict[str, Any] | None:
        """The error reply (recorded) when `actor`'s role may not send `name`, or when it is
        over its rate; None when the command may go on."""
        if self.may_send is not None and not self.may_send(actor, name):
            return self.reject_command(uow, topic, Forbidden(
                f"user {shown(actor)} may not send {shown(name)}: its role does not allow it"),
                payload, actor)
        if self.rate is not None and not self.rate.take(actor, self.clock().timestamp()):
            return self._rate_limited(uow, topic, payload, actor)
        return None

    def _rate_limited(
        self, uow: UnitOfWork, topic: str, payload: bytes, actor: str
    ) -> dict[str, Any]:
        """The `rate_limited` reply; recorded, but at most once a second per actor (the
        record says how many more were refused since the last one): a flood over the limit
        must not flood the log instead."""
        assert self.rate is not None  # noqa: S101 -- only called with a limiter
        error = RateLimited(
            f"more than {lim.plain(self.rate.rate)} commands a second (bursts of "
            f"{self.rate.burst}) from {shown(actor)}: try again later"
        )
        second = int(self.clock().timestamp())
        last, unrecorded = self._limited.get(actor, (-1, 0))
        if second == last:
            self._limited[actor] = (last, unrecorded + 1)
            return error_reply(error)
        if len(self._limited) > 10_000:
            self._limited.clear()
        self._limited[actor] = (second, 0)
        recorded = error if not unrecorded else RateLimited(
            f"{error.message} ({unrecorded} more refused since the last record)")
        self._reject(uow, "command", topic, recorded, payload, actor)
        return error_reply(error)

    def _parse_command(self, name: str, payload: bytes) -> cmd.Command:
        if len(payload) > self.max_payload_bytes:
            raise TooLarge(f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}")
        try:
            args = orjson.loads(payload) if payload.strip() else {}
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"the arguments are not JSON: {error}") from None
        check_depth(args)
        return cmd.parse_command(name, args)

    def _execute(self, uow: UnitOfWork, actor: str, command: cmd.Command) -> Any:
        now = self.clock()
        match command:
            case cmd.JobAdd(spec):
                return self._job_add(uow, spec, actor, now)
            case cmd.JobUpdate(name, changes):
                return self._job_update(uow, name, changes, actor, now)
            case cmd.JobRemove(name):
                job = self._existing_job(name)
                job.remove(actor, now)
                uow.touch(job)
                del self.jobs[name]
                return {"name": name, "removed": True}
            case cmd.EntryCommand(name, entry):
                return self._entry_command(uow, name, entry, actor, now)
            case cmd.SettingsSet(interval, executed, failed):
                self.scheduler.change_settings(interval, executed, failed, actor, now)
                uow.touch(self.scheduler)
                return self.scheduler.settings_json()
            case cmd.CleanupRun(table):
                tables = TABLES if table == "all" else (table,)
                return {t: self.cleanup(uow, t, actor) for t in tables}
        raise InvalidInput(f"unsupported command {command!r}")  # pragma: no cover

    def _existing_job(self, name: str) -> Job:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job named {name!r}")
        return job

    def _job_add(self, uow: UnitOfWork, spec: cmd.JobSpec, actor: str, now: datetime) -> Any:
        if spec.name not in self.jobs and len(self.jobs) >= lim.MAX_JOBS:
            raise Conflict(f"at most {lim.MAX_JOBS} jobs can be defined at once: remove one "
                           "first")
        self._check_script(spec.script)
        # A job removed earlier in this batch is only in the unit of work, not yet in the store.
        touched = uow.aggregates.get(job_id(spec.name))
        job = self.jobs.get(spec.name) or (
            touched if isinstance(touched, Job) else self._get_job(spec.name)
        )
        if job is None:
            job = Job.add(spec, actor, now)
        else:
            job.readd(spec, actor, now)
        uow.touch(job)
        self.jobs[spec.name] = job
        return job_row(job)

    def _job_update(
        self, uow: UnitOfWork, name: str, changes: dict[str, Any], actor: str, now: datetime
    ) -> Any:
        job = self._existing_job(name)
        if "script" in changes:
            self._check_script(changes["script"])
        job.update(changes, actor, now)
        uow.touch(job)
        return job_row(job)

    def _check_script(self, script: str) -> None:
        try:
            self.check_script(script)
        except Exception as error:  # noqa: BLE001 -- the port raises its own refusal type
            raise InvalidInput(f"script {shown(script)}: {cut(str(error), 300)}") from None

    def _entry_command(
        self, uow: UnitOfWork, name: str, entry: str, actor: str, now: datetime
    ) -> Any:
        execution = self._execution(uow, entry)
        if name == "queue.remove":
            execution.remove_from_queue(actor, now)
        elif name == "queue.execute-now":
            execution.send_to_front(actor, now)
        elif name == "executed.remove":
            execution.remove_from_executed(actor, now)
        elif name == "failed.execute":
            execution.reexecute(actor, now)
        else:
            execution.delete_from_failed(actor, now)
        uow.touch(execution)
        return {"id": entry, "status": execution.status, "attempt": execution.attempt}

    # Scheduling --------------------------------------------------------------------------

    def next_start(self, now: datetime) -> datetime | None:
        """When the next queued entry may start (None: nothing to start): a ready entry by the
        interval rule, else the first waiting retry once its time comes."""
        candidate = self.views.next_queued(iso(now))
        if candidate is not None:
            return self.scheduler.next_start(now, candidate[1])
        retry = self.views.next_retry_at(iso(now))
        if retry is None:
            return None
        return self.scheduler.next_start(max(now, parse_iso(retry)), False)

    def dispatch(self, uow: UnitOfWork, *, chained: bool = False) -> Dispatch | None:
        """Start the next queued entry when the interval allows; what to run, or None.

        `chained`: the views do not hold the events of `uow` yet (a batch of script ends and
        notifications, no command); the views' next entry is started only if `uow` left it
        queued, and when the views hold none, the first entry `uow` enqueued is the next
        (otherwise the next tick decides).
        """
        now = self.clock()
        candidate = self.views.next_queued(iso(now))
        if candidate is None and chained:
            first = next(iter(uow.enqueued), None)  # in the order they were enqueued
            candidate = None if first is None else (str(first), False)
        due = self.scheduler.next_start(now, None if candidate is None else candidate[1])
        if candidate is None or due is None or due > now:
            return None
        execution = self._execution(uow, candidate[0])
        if chained and execution.status != QUEUED:
            return None
        execution.start(now)
        self.scheduler.dispatch(candidate[0], candidate[1], now)
        uow.touch(execution, self.scheduler)
        return Dispatch(
            execution_id=candidate[0], job=execution.job, trigger=execution.trigger,
            attempt=execution.attempt, script=execution.script, command=execution.command,
            timeout_seconds=lim.clamp_timeout(execution.timeout_seconds),
        )

    def preload_next(self) -> None:
        """Load the entry that runs next, if it is not loaded yet (while a script runs, so
        that starting it right after the running one ends reads nothing from the store)."""
        candidate = self.views.next_queued(iso(self.clock()))
        if candidate is None:
            return
        try:
            self._execution(UnitOfWork(), candidate[0])
        except NotFound:
            return

    def finish(self, uow: UnitOfWork, entry: str, outcome: Outcome, at: datetime) -> bool:
        """Record how an execution ended; False when it was no longer running."""
        execution = self._execution(uow, entry)
        if execution.status != RUNNING:
            return False
        if outcome.result == 3:
            execution.succeed(outcome.feedback, outcome.exit_code, outcome.duration_seconds, at)
        else:
            execution.fail(
                outcome.feedback, outcome.exit_code, outcome.duration_seconds, at,
                timed_out=outcome.timed_out,
            )
        self.scheduler.release(entry, at)
        uow.touch(execution, self.scheduler)
        return True

    def interrupt_running(self, uow: UnitOfWork) -> list[str]:
        """Fail what was running when the service last stopped; their ids."""
        running = set(self.views.running())
        if self.scheduler.running:
            running.add(self.scheduler.running)
        now = self.clock()
        for entry in sorted(running):
            execution = self._execution(uow, entry)
            if execution.status == RUNNING:
                execution.fail(INTERRUPTED, None, 0.0, now, interrupted=True)
                uow.touch(execution)
            if self.scheduler.running == entry:
                self.scheduler.release(entry, now)
                uow.touch(self.scheduler)
        return sorted(running)

    # Auto Cleanup ------------------------------------------------------------------------

    def cleanup_due(self, now: datetime) -> list[str]:
        return [t for t in TABLES if self.scheduler.cleanup_due(t, now) <= now]

    def next_cleanup(self, now: datetime) -> datetime:
        return min(self.scheduler.cleanup_due(t, now) for t in TABLES)

    def cleanup(self, uow: UnitOfWork, table: str, actor: str) -> int:
        """Run Auto Cleanup of `table` now; how many rows it removed."""
        now = self.clock()
        run = uuid4().hex
        removed = 0
        policy = self.scheduler.policy(table)
        for entry in select_for_cleanup(self.views.finished(table), policy, now):
            execution = self._execution(uow, entry)
            if execution.clean_up(table, run, actor, now):
                uow.touch(execution)
                removed += 1
        self.scheduler.record_cleanup(table, run, removed, actor, now)
        uow.touch(self.scheduler)
        return removed
