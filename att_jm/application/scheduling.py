"""What runs next and when, how a run ends, and Auto Cleanup: the scheduler aggregate
decides from the write index (`att_jm.application.index`), never from the views.

Auto Cleanup removes a table's due rows in chunks of at most CLEANUP_CHUNK per unit of work
(one commit, one views update, one relay burst): a run with more due rows goes on at the
writer's next turns, other messages handled in between, so that neither the writer's
longest stall nor its memory grows with the table or the settings (`Scheduling.cleanup`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import uuid4

from att_jm.application.model import WriteModel
from att_jm.application.unit import UnitOfWork
from att_jm.domain import limits as lim
from att_jm.domain.cleanup import CleanupPolicy
from att_jm.domain.executions import Execution
from att_jm.domain.runs import Outcome, Run
from att_jm.domain.scheduler import SCHEDULER, TABLES
from att_jm.domain.times import parse_iso
from att_jm.errors import NotFound
from att_jm.vocabulary import EntryState, Result

INTERRUPTED = "interrupted: the service stopped while this execution was running"
#: The most rows Auto Cleanup removes in one unit of work (CleanedUp events per commit,
#: counted over the unit of work: `cleanup.run` of `all` shares them between the tables).
CLEANUP_CHUNK: Final = 1000
#: The most rows one cleanup step reads looking for rows due by Row Age past those Row Count
#: removes (a big table with few rows due is read over several turns, never in one).
CLEANUP_SCAN: Final = 10_000
#: The rows of one read of that scan.
SCAN_PAGE: Final = 1000


class Scheduling:
    """The scheduling and cleanup use cases."""

    def __init__(self, model: WriteModel, clock: Callable[[], datetime]) -> None:
        self.model = model
        self.clock = clock
        #: The Auto Cleanup runs that have more chunks to go, by table.
        self._runs: dict[str, CleanupInProgress] = {}

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
        """The tables whose Auto Cleanup is due: its period is over, or a run has more to go."""
        scheduler = self.model.scheduler
        return [t for t in TABLES if t in self._runs or scheduler.cleanup_due(t, now) <= now]

    def next_cleanup(self, now: datetime) -> datetime:
        if self._runs:  # the next chunk: at the writer's next turn
            return now
        return min(self.model.scheduler.cleanup_due(t, now) for t in TABLES)

    def cleanup(self, uow: UnitOfWork, table: str, actor: str) -> int:
        """One step of Auto Cleanup of `table`: at most CLEANUP_CHUNK rows removed (fewer when
        `uow` holds CleanedUp events already); how many it removed.

        A run whose due rows do not fit goes on at the next call by the scheduler (the
        writer's timer: `cleanup_due` names the table until the run ends): each call one
        chunk of the same run (its id, its actor), and the run's CleanupRan (`removed`: the
        rows of all its chunks) is stored with its last chunk, which is when the period to
        the next run starts. A call by another actor (`cleanup.run`) ends the run in progress
        (its CleanupRan) and starts its own.

        The rows are `select_for_cleanup`'s, oldest first: Row Count at each chunk, Row Age
        counted from the run's start. Each chunk reads them again from the index, which holds
        what is committed: a crash (or a failed commit) between two chunks loses none and
        removes none twice; the next run (the period is not over: no CleanupRan yet; after a
        `cleanup.run`, the next period's) removes the rest.
        """
        now = self.clock()
        run = self._runs.get(table)
        if run is not None:
            self._settle(uow, table, run)
            if actor != SCHEDULER:
                self._end(uow, table, run, now)
                run = None
        if run is None:  # kept (`_runs`) only once it has a chunk to go: a run that fails
            run = CleanupInProgress(uuid4().hex, actor, now)  # is not tried again and again
        budget = CLEANUP_CHUNK - _cleaned_up_in(uow)
        entries, last = self._due(table, run, budget)
        removed = 0
        for entry in entries:
            execution = self.model.execution(uow, entry)
            if execution.clean_up(table, run.id, run.actor, now):
                uow.touch(execution)
                if not removed:
                    run.chunk = entry
                removed += 1
        run.chunk_rows = removed
        if last or (entries and not removed):  # (rows the index holds but that are not in
            # the table: the run ends rather than try them again and again)
            self._end(uow, table, run, now)
        else:
            self._runs[table] = run
        return removed

    def _settle(self, uow: UnitOfWork, table: str, run: CleanupInProgress) -> None:
        """Count the run's last chunk if it was stored (or is in `uow`): its first row is
        gone from the table. One that was not is done again by the next chunk."""
        if run.chunk is not None:
            if self.model.execution(uow, run.chunk).status != table:
                run.removed += run.chunk_rows
            run.chunk, run.chunk_rows = None, 0

    def _end(self, uow: UnitOfWork, table: str, run: CleanupInProgress, now: datetime) -> None:
        """Record the end of `run` (with its last chunk, if any, in `uow`)."""
        self._runs.pop(table, None)
        scheduler = self.model.scheduler
        scheduler.record_cleanup(table, run.id, run.removed + run.chunk_rows, run.actor, now)
        uow.touch(scheduler)

    def _due(self, table: str, run: CleanupInProgress, budget: int) -> tuple[list[str], bool]:
        """The next `budget` rows of `table` the run removes, oldest first, and whether they
        are its last: the rows past `max_rows` (the oldest) and then those older than
        `max_age_days` at the run's start, each read as a bounded range of the index."""
        if budget <= 0:
            return [], False
        policy = self.model.scheduler.policy(table)
        if policy != run.policy:  # another policy (settings.set): its age scan starts over
            run.policy, run.scanned = policy, 0
        index = self.model.index
        want = budget + 1  # one more: whether these are the last
        past = None if policy.max_rows is None else index.finished_past(table, policy.max_rows)
        due = [] if past is None else index.finished_through(table, past, want)
        if len(due) == want:
            return due[:budget], False
        if policy.max_age_days is None:
            return due, True
        cutoff = lim.add_seconds(run.since, -policy.max_age_days * lim.DAY)
        # The rows after `past` older than the cutoff, from where the last chunk's scan
        # stopped (the rows before it were not due; none of them became due since: the
        # cutoff is the run's, a row's `finished_at` never changes).
        after = run.scanned if past is None else max(run.scanned, past)
        first_due: int | None = None  # the scan restarts before the rows this chunk removes
        read = 0
        while read < CLEANUP_SCAN:
            wanted = min(SCAN_PAGE, CLEANUP_SCAN - read)
            page = index.finished_after(table, after, wanted)
            read += len(page)
            for entry, seq, finished_at in page:
                if parse_iso(finished_at) < cutoff:
                    first_due = after if first_due is None else first_due
                    due.append(entry)
                    if len(due) == want:
                        run.scanned = first_due
                        return due[:budget], False
                after = seq
            if len(page) < wanted:  # the end of the table: the run's last rows
                return due, True
        run.scanned = after if first_due is None else first_due
        return due, False


@dataclass
class CleanupInProgress:
    """An Auto Cleanup run of one table between its chunks (held in memory only: after a
    crash the next run removes what is still due)."""

    id: str
    actor: str
    #: When it started: Row Age counts from here.
    since: datetime
    #: The rows of its chunks known to be stored.
    removed: int = 0
    #: The first row of its last chunk, and the rows of that chunk, until known stored.
    chunk: str | None = None
    chunk_rows: int = 0
    #: The policy of its last chunk, and the `seq` its Row Age scan has examined the rows to.
    policy: CleanupPolicy | None = None
    scanned: int = 0


def _cleaned_up_in(uow: UnitOfWork) -> int:
    """The CleanedUp events `uow` holds (collected, or pending on what it touched)."""
    pending = (event for aggregate in uow.aggregates.values()
               for event in aggregate.pending_events)
    return sum(isinstance(event, Execution.CleanedUp)
               for event in itertools.chain(uow.events, pending))
