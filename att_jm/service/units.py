"""Units of work: run, commit, and what a failure means.

A failure of the store (`att_jm.store.is_transient`: busy, locked, full, I/O) is retried
with back-off while the connection is kept alive (messages keep arriving and wait); any
other failure would repeat on a retry: PoisonBatch, and the caller splits the batch. A
commit the lease's fence refused (another instance holds the lease: att_jm/service/lease.py)
is neither: LeaseLost, which ends the writer's active phase.

A StoreConflict (an aggregate's version was stored by another writer first: the unique
(originator_id, originator_version) of the events table, the last line behind the lease) is
not this unit's fault either: nothing of it was stored, nothing it would have started runs;
the aggregates are loaded again and the unit is done again from them (a dispatch then finds
the scheduler busy with the other writer's run), at most CONFLICT_RETRIES times in a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from att_jm import timeline
from att_jm.application import JobManager
from att_jm.domain import limits as lim
from att_jm.errors import AttJmError
from att_jm.metrics.shared import WriterStats
from att_jm.mqtt.adapter import ServiceConnection
from att_jm.service.aftercommit import AfterCommit
from att_jm.service.fence import LeaseLost, fenced
from att_jm.service.held import HeldStart
from att_jm.service.inbox import Inbox, Stopping
from att_jm.service.scripts import ScriptSlot
from att_jm.service.status import Status
from att_jm.service.unit import WriterUnit
from att_jm.store import StoreConflict, is_transient

log = structlog.get_logger("att_jm")

RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: While the store refuses commits, messages keep arriving; past this many waiting in the inbox
#: the service stops receiving (disconnects) until a commit succeeds again.
INBOX_PAUSE = 1000
#: How many conflicts in a row one unit of work is done again after (then: PoisonBatch).
CONFLICT_RETRIES = 3
#: After a timer's unit of work failed deterministically (a bug, data the store refuses):
#: how long before that timer tries again (never a tight loop).
TIMER_RETRY_SECONDS = 5.0


class StoppedDuringFault(AttJmError):
    """A stop was asked for while the store refused commits: leave without acknowledging."""


class PoisonBatch(AttJmError):
    """A unit of work failed in a way a retry would repeat (not a fault of the store): its
    messages are handled again one by one, and the one that fails alone gets a terminal
    outcome (a recorded rejection, an `internal` reply), is acknowledged, and the rest go on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def _check_fence(error: BaseException) -> None:
    """Raise LeaseLost when `error` is the lease's fence refusing the commit."""
    if fenced(error):
        raise LeaseLost(f"the store refused the commit: {error}") from error


def internal_error(error: BaseException) -> AttJmError:
    """The error to record and answer for `error`: itself when it is one of the domain's (it
    has its code, e.g. `too_large`), else an `internal` one naming it."""
    if isinstance(error, AttJmError):
        return error
    return AttJmError(
        lim.cut(f"internal error: {type(error).__name__}: {error}", lim.MAX_REASON_CHARS)
    )


class Units:
    """Runs units of work to their commit."""

    def __init__(
        self, *, manager: JobManager, after: AfterCommit, status: Status,
        connection: ServiceConnection, inbox: Inbox, slot: ScriptSlot, held: HeldStart,
        stopping: Stopping, stats: WriterStats, guard: Callable[[], None] | None = None,
    ) -> None:
        self.manager = manager
        #: Raises LeaseLost once this writer may no longer commit (the lease's `check`): looked
        #: at before each attempt and while backing off, so a store fault never keeps a
        #: writer that lost its lease retrying.
        self.guard = guard
        self.after = after
        self.status = status
        self.connection = connection
        self.inbox = inbox
        self.slot = slot
        self.held = held
        self.stopping = stopping
        self.stats = stats
        #: Timer name -> time.monotonic() before which it is not tried again (see `timer`).
        self._timer_retry: dict[str, float] = {}
        self._conflicts = 0  # of the unit of work being run

    def run(self, work: Callable[[WriterUnit], Any]) -> Any:
        """Run `work` in its own unit of work and commit it, retrying with back-off while the
        store has a fault; PoisonBatch when it fails in a way a retry would repeat."""
        self._conflicts = 0
        for attempt in range(1_000_000):
            if attempt and self.stopping.requested.is_set():
                raise StoppedDuringFault
            if self.guard is not None:
                self.guard()
            uow = WriterUnit()
            try:
                if self.manager.model.stale:  # a failed reload kept a failed unit's state
                    self.manager.reload()
                result = work(uow)
                uow.collect()
            except Exception as error:  # noqa: BLE001 -- sorted right below
                _check_fence(error)
                if not is_transient(error):
                    self._poisoned(error)
                self.store_fault(error, attempt)  # e.g. a read the store refused
                continue
            if self._commit(uow, attempt):
                return result
        raise RuntimeError("unreachable")  # pragma: no cover

    def timer(self, name: str, work: Callable[[WriterUnit], Any]) -> Any:
        """A unit of work of the writer's own (cleanup, a dispatch): one that fails
        deterministically is logged and tried again TIMER_RETRY_SECONDS later, not at once."""
        if time.monotonic() < self._timer_retry.get(name, 0.0):
            return None
        try:
            return self.run(work)
        except PoisonBatch as poison:
            self._timer_retry[name] = time.monotonic() + TIMER_RETRY_SECONDS
            log.error(f"{name}.failed", error=repr(poison.error), retry_in=TIMER_RETRY_SECONDS)
            return None

    def store_fault(self, error: BaseException, attempt: int) -> None:
        """Report a fault of the store, forget what the unit did, keep the connection alive
        for the back-off delay."""
        delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
        log.error("store.commit_failed", error=repr(error), attempt=attempt + 1, retry_in=delay,
                  inbox=self.inbox.qsize())
        if self.status.fault_kind != "store":
            self.status.set_fault("store", error)
        self._reload()
        self._serve_network(delay)

    def _commit(self, uow: WriterUnit, attempt: int) -> bool:
        """Commit `uow` and run what follows; False after a store fault."""
        started = time.perf_counter()
        begun = timeline.now() if timeline.ON else 0
        try:
            stored = self.manager.commit(uow)
        except Exception as error:  # noqa: BLE001 -- a store fault: report, back off, retry
            _check_fence(error)
            if isinstance(error, StoreConflict) and self._conflicts < CONFLICT_RETRIES:
                self._conflicts += 1
                log.warning("store.conflict", error=str(error), retry=self._conflicts,
                            reason="another writer stored one of these aggregates first")
                self._reload()
                return False
            if not is_transient(error):
                self._poisoned(error)
            self.store_fault(error, attempt)
            return False
        if stored:  # the latency of commits that stored events (not of empty units)
            self.stats.committed(time.perf_counter() - started)
            timeline.mark("commit", stored[0][0], stored[-1][0], begun)
        self.after.committed(uow, stored)
        return True

    def _poisoned(self, error: BaseException) -> None:
        """Forget what the failed unit did in memory, then raise PoisonBatch."""
        log.error("unit.failed", error=repr(error), exc_info=error)
        self._reload()
        raise PoisonBatch(error) from error

    def _reload(self) -> None:
        """Reload the aggregates; when the store refuses, the model stays `stale` and the
        next unit of work reloads it first (`run`)."""
        try:
            self.manager.reload()
        except Exception as reload_error:  # noqa: BLE001 -- the store may refuse reads too
            log.error("store.reload_failed", error=repr(reload_error))

    def _serve_network(self, seconds: float) -> None:
        """Keep the connection alive for `seconds` while the store refuses commits (messages
        arriving meanwhile wait in the inbox; past INBOX_PAUSE the connection pauses)."""
        deadline = time.monotonic() + seconds
        while not self.stopping.requested.is_set():
            if self.guard is not None:
                self.guard()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready = self.connection.poll(left, self.inbox.fileno(), *self.slot.fds(),
                                         *self.held.fds())
            self.held.release()
            self.slot.step(ready)  # a script's end is recorded once the store works
            if self.inbox.qsize() >= INBOX_PAUSE and not self.connection.paused:
                log.warning("service.paused", inbox=self.inbox.qsize())
                self.connection.pause(self.status.paused())
