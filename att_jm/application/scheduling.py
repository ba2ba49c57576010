"""What runs next and when, how a run ends, and Auto Cleanup: the scheduler aggregate
decides from the write index (`att_jm.application.index`), never from the views."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import uuid4

from att_jm.application.model import WriteModel
from att_jm.application.unit import UnitOfWork
from att_jm.domain import limits as lim
from att_jm.domain.cleanup import select_for_cleanup
from att_jm.domain.runs import Outcome, Run
from att_jm.domain.scheduler import TABLES
from att_jm.errors import NotFound
from att_jm.vocabulary import EntryState, Result

INTERRUPTED = "interrupted: the service stopped while this execution was running"


class Scheduling:
    """The scheduling and cleanup use cases."""

    def __init__(self, model: WriteModel, clock: Callable[[], datetime]) -> None:
        self.model = model
        self.clock = clock

    def next_start(self, now: datetime) -> datetime | None:
        """When the next queued entry may start (None: nothing to start): a ready entry by the
        interval rule, else the first waiting retry once its time comes."""
        index, scheduler = self.model.index, self.model.scheduler
        candidate = index.next_queued(now)
        if candidate is not None:
            return scheduler.next_start(now, candidate[1])
        retry = index.next_retry_at(now)
        if retry is None:
            return None
        return scheduler.next_start(max(now, retry), False)

    def dispatch(self, uow: UnitOfWork, *, chained: bool = False) -> Run | None:
        """Start the next queued entry when the interval allows; what to run, or None.

        `chained`: inside a batch (script ends and notifications, no command) whose events
        the index does not hold until it is committed; the index's next entry is started
        only if `uow` left it queued, and when the index holds none, the first entry `uow`
        enqueued is the next (otherwise the next turn decides).
        """
        now = self.clock()
        candidate = self.model.index.next_queued(now)
        if candidate is None and chained:
            first = next(iter(uow.enqueued), None)  # in the order they were enqueued
            candidate = None if first is None else (str(first), False)
        scheduler = self.model.scheduler
        due = scheduler.next_start(now, None if candidate is None else candidate[1])
        if candidate is None or due is None or due > now:
            return None
        execution = self.model.execution(uow, candidate[0])
        if chained and execution.status != EntryState.QUEUED:
            return None
        execution.start(now)
        scheduler.dispatch(candidate[0], candidate[1], now)
        uow.touch(execution, scheduler)
        return Run(
            execution_id=candidate[0], job=execution.job, trigger=execution.trigger,
            attempt=execution.attempt, script=execution.script, command=execution.command,
            timeout_seconds=lim.clamp_timeout(execution.timeout_seconds),
        )

    def preload_next(self) -> None:
        """Load the entry that runs next, if it is not loaded yet (while a script runs, so
        that starting it right after the running one ends reads nothing from the store)."""
        candidate = self.model.index.next_queued(self.clock())
        if candidate is None:
            return
        try:
            self.model.execution(UnitOfWork(), candidate[0])
        except NotFound:
            return

    def finish(self, uow: UnitOfWork, entry: str, outcome: Outcome, at: datetime) -> bool:
        """Record how an execution ended; False when it was no longer running."""
        execution = self.model.execution(uow, entry)
        if execution.status != EntryState.RUNNING:
            return False
        if outcome.result == Result.SUCCEEDED:
            execution.succeed(outcome.feedback, outcome.exit_code, outcome.duration_seconds, at)
        else:
            execution.fail(
                outcome.feedback, outcome.exit_code, outcome.duration_seconds, at,
                timed_out=outcome.timed_out,
            )
        scheduler = self.model.scheduler
        scheduler.release(entry, at)
        uow.touch(execution, scheduler)
        return True

    def interrupt_running(self, uow: UnitOfWork) -> list[str]:
        """Fail what was running when the service last stopped; their ids."""
        scheduler = self.model.scheduler
        running = set(self.model.index.running())
        if scheduler.running:
            running.add(scheduler.running)
        now = self.clock()
        for entry in sorted(running):
            execution = self.model.execution(uow, entry)
            if execution.status == EntryState.RUNNING:
                execution.fail(INTERRUPTED, None, 0.0, now, interrupted=True)
                uow.touch(execution)
            if scheduler.running == entry:
                scheduler.release(entry, now)
                uow.touch(scheduler)
        return sorted(running)

    # Auto Cleanup --------------------------------------------------------------------------

    def cleanup_due(self, now: datetime) -> list[str]:
        return [t for t in TABLES if self.model.scheduler.cleanup_due(t, now) <= now]

    def next_cleanup(self, now: datetime) -> datetime:
        return min(self.model.scheduler.cleanup_due(t, now) for t in TABLES)

    def cleanup(self, uow: UnitOfWork, table: str, actor: str) -> int:
        """Run Auto Cleanup of `table` now; how many rows it removed."""
        now = self.clock()
        run = uuid4().hex
        removed = 0
        scheduler = self.model.scheduler
        policy = scheduler.policy(table)
        for entry in select_for_cleanup(self.model.index.finished(table), policy, now):
            execution = self.model.execution(uow, entry)
            if execution.clean_up(table, run, actor, now):
                uow.touch(execution)
                removed += 1
        scheduler.record_cleanup(table, run, removed, actor, now)
        uow.touch(scheduler)
        return removed
