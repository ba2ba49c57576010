"""The Execution aggregate: one queue entry, from enqueued to Executed or Failed and beyond.

Where an entry is (`Execution.status`) is a `att_jm.vocabulary.EntryState`; a script's Result
a `att_jm.vocabulary.Result`. The events' `apply` bodies shared by several events (an attempt
ended in a table; the entry gone from every table) and the guards the commands check are
module-level helpers below, so that the class holds the events and the commands only.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final
from uuid import UUID

from eventsourcing.domain import Aggregate

from att_jm.domain.retry import RetryPolicy
from att_jm.domain.scheduler import SCHEDULER
from att_jm.domain.times import iso
from att_jm.errors import Conflict, NotFound
from att_jm.vocabulary import EntryState, Result

QUEUED: Final = EntryState.QUEUED  # the two queue states, also importable from here
RUNNING: Final = EntryState.RUNNING
#: Queue order: an entry sorts by the log position of the event that queued it; one sent to
#: the front (or re-executed) by this plus that position: before all others, in that order.
FRONT_BASE: Final = -(10**15)


class _EndsInTable:
    """The `apply` of an event that ends an attempt in a table: `STATUS` (Executed, Failed)."""

    if TYPE_CHECKING:
        STATUS: ClassVar[EntryState]
        result: int
        feedback: str | None
        timestamp: datetime

    def apply(self, aggregate: Any) -> None:
        aggregate.status = self.STATUS
        aggregate.result = self.result
        aggregate.feedback = self.feedback
        aggregate.finished_at = self.timestamp


class _LeavesEveryTable:
    """The `apply` of an event after which the entry is in no table (removed from the queue
    or Executed, deleted from Failed, cleaned up): the domain allows it nothing more."""

    def apply(self, aggregate: Any) -> None:
        aggregate.status = EntryState.GONE


def _conflict_unless(execution: Execution, state: EntryState) -> None:
    """Conflict unless the entry is `state` (the scheduler's own steps: start, end)."""
    if execution.status != state:
        raise Conflict(f"entry {execution.label} is {execution.status}, not {state}")


def _not_found_unless(execution: Execution, state: EntryState) -> None:
    """NotFound unless the entry is in `state`'s table (an operator's command on it)."""
    if execution.status != state:
        raise NotFound(f"no {state} entry {execution.label}")


def _queued_for_operator(execution: Execution) -> None:
    """An operator may remove or send to the front a queued entry, not a running one."""
    if execution.status == EntryState.RUNNING:
        raise Conflict(f"entry {execution.label} is running")
    _not_found_unless(execution, EntryState.QUEUED)


class Execution(Aggregate):
    """An entry of the queue; `status` says which table it is in."""

    TOPIC = "att_jm:Execution"

    class Created(Aggregate.Created):
        """The base of the creation event (the library wants one per aggregate)."""

        TOPIC = "att_jm:Execution.Created"

    class Enqueued(Created):
        TOPIC = "att_jm:Execution.Enqueued"
        job: str
        script: str
        command: str
        trigger: str
        notification_id: str
        timeout_seconds: float
        actor: str
        retry: dict[str, Any] | None = None  # the job's policy when enqueued (None: no retry)

    class Started(Aggregate.Event):
        TOPIC = "att_jm:Execution.Started"
        attempt: int
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = EntryState.RUNNING
            aggregate.started_at = self.timestamp
            aggregate.front = False

    class Succeeded(_EndsInTable, Aggregate.Event):
        TOPIC = "att_jm:Execution.Succeeded"
        STATUS = EntryState.EXECUTED
        result: int
        feedback: str | None
        exit_code: int | None
        duration_seconds: float
        actor: str

    class Failed(_EndsInTable, Aggregate.Event):
        TOPIC = "att_jm:Execution.Failed"
        STATUS = EntryState.FAILED
        result: int
        feedback: str | None
        exit_code: int | None
        duration_seconds: float
        timed_out: bool
        interrupted: bool
        actor: str

    class AttemptFailed(Aggregate.Event):
        """An attempt failed and the retry policy allows another: the entry is queued again
        as attempt `attempt` (the next), to start no earlier than `not_before`."""

        TOPIC = "att_jm:Execution.AttemptFailed"
        result: int
        feedback: str | None
        exit_code: int | None
        duration_seconds: float
        timed_out: bool
        interrupted: bool
        attempt: int
        not_before: str  # ISO-8601 UTC, as `times.iso` writes it (events hold JSON values)
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = EntryState.QUEUED
            aggregate.attempt = self.attempt
            aggregate.previous_feedback = self.feedback
            aggregate.not_before = self.not_before
            aggregate.front = False

    class RemovedFromQueue(_LeavesEveryTable, Aggregate.Event):
        TOPIC = "att_jm:Execution.RemovedFromQueue"
        actor: str

    class SentToFront(Aggregate.Event):
        TOPIC = "att_jm:Execution.SentToFront"
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.front = True
            aggregate.not_before = None

    class Reexecuted(Aggregate.Event):
        TOPIC = "att_jm:Execution.Reexecuted"
        attempt: int
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = EntryState.QUEUED
            aggregate.front = True
            aggregate.attempt = self.attempt
            aggregate.previous_feedback = aggregate.feedback
            aggregate.result = None
            aggregate.feedback = None
            aggregate.not_before = None

    class RemovedFromExecuted(_LeavesEveryTable, Aggregate.Event):
        TOPIC = "att_jm:Execution.RemovedFromExecuted"
        actor: str

    class DeletedFromFailed(_LeavesEveryTable, Aggregate.Event):
        TOPIC = "att_jm:Execution.DeletedFromFailed"
        actor: str

    class CleanedUp(_LeavesEveryTable, Aggregate.Event):
        """Auto Cleanup removed the row from `table`; `cleanup` names the run."""

        TOPIC = "att_jm:Execution.CleanedUp"
        table: str
        cleanup: str
        actor: str

    def __init__(
        self,
        job: str,
        script: str,
        command: str,
        trigger: str,
        notification_id: str,
        timeout_seconds: float,
        actor: str,
        retry: dict[str, Any] | None = None,
    ) -> None:
        self.job = job
        self.script = script
        self.command = command
        self.trigger = trigger
        self.notification_id = notification_id
        self.timeout_seconds = timeout_seconds
        self.status = EntryState.QUEUED
        self.front = False
        self.attempt = 1
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.result: int | None = None
        self.feedback: str | None = None
        self.previous_feedback: str | None = None
        self.retry = retry
        self.not_before: str | None = None  # a retry waits until then (ISO-8601 UTC)

    @classmethod
    def enqueue(
        cls, execution_id: UUID, job: str, script: str, command: str, trigger: str,
        notification_id: str, timeout_seconds: float, actor: str, at: datetime,
        retry: dict[str, Any] | None = None,
    ) -> Execution:
        return cls._create(
            cls.Enqueued, id=execution_id, job=job, script=script, command=command,
            trigger=trigger, notification_id=notification_id, timeout_seconds=timeout_seconds,
            actor=actor, timestamp=at, retry=retry,
        )

    @classmethod
    def enqueued_event(
        cls, execution_id: UUID, job: str, script: str, command: str, trigger: str,
        notification_id: str, timeout_seconds: float, actor: str, at: datetime,
        retry: dict[str, Any] | None = None,
    ) -> Execution.Enqueued:
        """The event `enqueue()` records, without building the aggregate: for a caller that
        only stores it (the notification hot path; `enqueue()` costs ~3x as much)."""
        return cls.Enqueued(  # type: ignore[call-arg]  # the library makes the fields a dataclass __init__ at runtime
            originator_id=execution_id, originator_version=cls.INITIAL_VERSION, timestamp=at,
            originator_topic=cls.TOPIC, job=job, script=script, command=command,
            trigger=trigger, notification_id=notification_id, timeout_seconds=timeout_seconds,
            actor=actor, retry=retry,
        )

    @property
    def label(self) -> str:
        return str(self.id)

    def start(self, at: datetime) -> None:
        _conflict_unless(self, EntryState.QUEUED)
        self.trigger_event(self.Started, attempt=self.attempt, actor=SCHEDULER, timestamp=at)

    def succeed(
        self, feedback: str | None, exit_code: int | None, duration: float, at: datetime
    ) -> None:
        _conflict_unless(self, EntryState.RUNNING)
        self.trigger_event(
            self.Succeeded, result=Result.SUCCEEDED, feedback=feedback, exit_code=exit_code,
            duration_seconds=duration, actor=SCHEDULER, timestamp=at,
        )

    def fail(
        self, feedback: str | None, exit_code: int | None, duration: float, at: datetime, *,
        timed_out: bool = False, interrupted: bool = False,
    ) -> bool:
        """Record a failed attempt: queued again when the retry policy allows another attempt
        (True), else Failed (False)."""
        _conflict_unless(self, EntryState.RUNNING)
        policy = RetryPolicy.from_json(getattr(self, "retry", None))
        if policy is not None and policy.retries_after(self.attempt):
            self.trigger_event(
                self.AttemptFailed, result=Result.FAILED, feedback=feedback, exit_code=exit_code,
                duration_seconds=duration, timed_out=timed_out, interrupted=interrupted,
                attempt=self.attempt + 1, not_before=iso(policy.not_before(self.attempt, at)),
                actor=SCHEDULER, timestamp=at,
            )
            return True
        self.trigger_event(
            self.Failed, result=Result.FAILED, feedback=feedback, exit_code=exit_code,
            duration_seconds=duration, timed_out=timed_out, interrupted=interrupted,
            actor=SCHEDULER, timestamp=at,
        )
        return False

    def remove_from_queue(self, actor: str, at: datetime) -> None:
        _queued_for_operator(self)
        self.trigger_event(self.RemovedFromQueue, actor=actor, timestamp=at)

    def send_to_front(self, actor: str, at: datetime) -> None:
        _queued_for_operator(self)
        self.trigger_event(self.SentToFront, actor=actor, timestamp=at)

    def remove_from_executed(self, actor: str, at: datetime) -> None:
        _not_found_unless(self, EntryState.EXECUTED)
        self.trigger_event(self.RemovedFromExecuted, actor=actor, timestamp=at)

    def reexecute(self, actor: str, at: datetime) -> None:
        """Run a failed entry again, at the front; a retry still waiting for its time (a
        failed attempt, queued again) is sent to the front to run now."""
        if self.status == EntryState.QUEUED and getattr(self, "not_before", None) is not None:
            self.trigger_event(self.SentToFront, actor=actor, timestamp=at)
            return
        _not_found_unless(self, EntryState.FAILED)
        self.trigger_event(self.Reexecuted, attempt=self.attempt + 1, actor=actor, timestamp=at)

    def delete_from_failed(self, actor: str, at: datetime) -> None:
        _not_found_unless(self, EntryState.FAILED)
        self.trigger_event(self.DeletedFromFailed, actor=actor, timestamp=at)

    def clean_up(self, table: str, cleanup: str, actor: str, at: datetime) -> bool:
        """Remove the row by Auto Cleanup; False when it is no longer in `table`."""
        if self.status != table:
            return False
        self.trigger_event(self.CleanedUp, table=table, cleanup=cleanup, actor=actor, timestamp=at)
        return True
