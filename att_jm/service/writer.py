"""The writer's loop: wait, read, handle the batch, run the timers.

One writer thread (the main thread) owns the store, the views and the MQTT connection (it
drives paho's network loop itself: see `att_jm.mqtt.driven`). It waits on the broker's
socket, its inbox (signals), the running script's pipes and the relay's answers in one
`poll()`; handles everything that arrived as one batch (`Batches`); then starts the next
execution when the interval allows, runs Auto Cleanup when due, and seals the log.
`bootstrap()` builds it from its parts.

On a PostgreSQL store shared by several instances (att_jm/service/standby.py) the writer runs
while its instance holds the lease (`Parts.lease`): each turn of the loop asks whether the
lease is still trusted, the loop never sleeps past the moment it stops being so, and every
commit checks it in the store (`Lease.fence`). Once it is lost, the writer leaves at once
without writing anything (`abandon`): the running script's group killed (the lease's
watchdog thread kills it first, whatever the loop is doing), no dispatch, no seal, the
session left to the next leader; `run()` then returns LEASE_LOST.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import structlog

from att_jm import timeline
from att_jm.application import JobManager
from att_jm.metrics.shared import WriterStats
from att_jm.mqtt.adapter import ServiceConnection
from att_jm.mqtt.instances import GuardedConnection
from att_jm.relay.handle import EventsRelay
from att_jm.runner import kill_leftovers
from att_jm.service.aftercommit import AfterCommit
from att_jm.service.archival import AutoArchive
from att_jm.service.batches import Batches
from att_jm.service.dispatch import Dispatcher
from att_jm.service.fence import LeaseLost
from att_jm.service.held import HeldStart
from att_jm.service.inbox import Inbox, Item, Stop, Stopping
from att_jm.service.scripts import ScriptSlot
from att_jm.service.sealing import LogSeals
from att_jm.service.status import Status
from att_jm.service.units import StoppedDuringFault, Units
from projections.views import Views

if TYPE_CHECKING:  # psycopg is imported on a PostgreSQL store only
    from att_jm.service.lease import Lease

log = structlog.get_logger("att_jm")

#: The longest the loop sleeps without looking at the relay and a views catch-up.
LOOK_AROUND_SECONDS = 1.0
#: While a script runs, the rows for the next seal are digested once this many wait.
PREPARE_LEAST = 64
#: What `Writer.run` returns when its instance lost the lease (it goes back to standby).
LEASE_LOST = 75


@dataclass
class Parts:
    """What the writer is made of (see `att_jm.service.bootstrap`)."""

    manager: JobManager
    views: Views
    inbox: Inbox
    stopping: Stopping
    connection: ServiceConnection
    status: Status
    relay: EventsRelay
    slot: ScriptSlot
    held: HeldStart
    after: AfterCommit
    units: Units
    batches: Batches
    dispatcher: Dispatcher
    seals: LogSeals
    clock: Callable[[], datetime]
    max_batch: int
    #: Where the relay begins when it has no position file of its own (a first start).
    first_unpublished: int
    #: Called last at a stop, in order (checkpointers, views).
    closers: tuple[Callable[[], object], ...]
    #: The log's end (for the last log line).
    position: Callable[[], int]
    #: The stats block (`att_jm.metrics.shared`): the loop's heartbeat.
    stats: WriterStats
    #: On a PostgreSQL store: the lease this writer runs under (None: the only writer).
    lease: Lease | None = None
    #: Automatic archival (the setting `archive`): its child process, followed from the timers.
    archival: AutoArchive | None = None


class Writer:
    """The single writer's loop."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.manager = parts.manager
        self.inbox = parts.inbox
        self.connection = parts.connection
        self.status = parts.status
        self.relay = parts.relay
        self.slot = parts.slot
        self.held = parts.held
        self.units = parts.units
        self.batches = parts.batches
        self.clock = parts.clock
        self._stopping = parts.stopping
        self.stats = parts.stats
        self.lease = parts.lease

    def run(self) -> int:
        """Connect and serve until a Stop is handled; the exit code (LEASE_LOST when the
        instance lost its lease)."""
        if self.lease is not None:
            self.lease.on_lost = self._lease_lost
        try:
            self._check_lease()
            self.relay.start(after=self.parts.first_unpublished)
            self.slot.prepare()
            interrupted = self.units.timer("executions.interrupt",
                                           self.manager.interrupt_running)
            if interrupted:
                log.warning("executions.interrupted", ids=interrupted,
                            leftover_pids_killed=kill_leftovers(interrupted))
            self.connection.start(lambda: self.status.body("online"), self.status.last_will())
            self._loop()
        except StoppedDuringFault:
            log.error("service.stopped_during_store_fault", unacknowledged="left to the broker")
        except LeaseLost as lost:
            self.abandon(str(lost))
            return LEASE_LOST
        try:
            self.close()
        except LeaseLost as lost:  # lost while closing: the rest is left as after a crash
            self.abandon(str(lost))
            return LEASE_LOST
        return 0

    def _loop(self) -> None:
        while not self._stopping.seen:
            self._check_lease()
            # Once something waits, only take what else has arrived (a bigger batch).
            wait = self._wait_seconds() if self.inbox.empty() else 0.0
            script = self.slot.fds()
            ready = self.connection.poll(wait, self.inbox.fileno(), *script, *self.held.fds())
            self.stats.turn(self.connection.connected)
            self._check_lease()
            self.held.release()
            if script and not ready.isdisjoint(script):  # its end, most often: the relay now
                self.parts.after.tell_relay()
            self.slot.step(ready)
            items = self.inbox.drain(self.parts.max_batch)
            if items:
                timeline.mark("drain", len(items))
                self.handle(items)
            self.tick()

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _lease_lost(self, reason: str) -> None:
        """From the lease's threads, the moment it is lost: the running script's group is
        killed now (whatever the loop is doing), and the loop woken to leave."""
        self.slot.scripts.kill_running()
        self.inbox.wake()

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the writer to stop; safe in a signal handler (SimpleQueue.put is reentrant)."""
        self._stopping.requested.set()
        self.inbox.put(Stop(reason))

    def handle(self, items: list[Item]) -> None:
        """Handle `items` as one batch (what one turn of the loop read)."""
        self.batches.handle(items)

    def tick(self) -> None:
        """The timers: the relay's health, a views catch-up, Auto Cleanup, the next start,
        the seals."""
        self.relay.check()
        after = self.parts.after
        if after.relay_wait_seconds() == 0.0 or self._stopping.seen:
            after.tell_relay()
        if self._stopping.seen:
            return
        if after.views_behind or after.views_due():  # the write side does not wait for them
            after.flush_views()
        now = self.clock()
        for table in self.manager.cleanup_due(now):
            removed = self.units.timer(
                f"cleanup.{table}", partial(self.manager.cleanup, table=table, actor="scheduler")
            )
            if removed:
                log.info("cleanup.ran", table=table, removed=removed)
        if self.manager.scheduler.running is None:  # else none may start (one at a time)
            self.units.timer("dispatch", self.parts.dispatcher.start_next)
        self.slot.settle()
        if self.parts.archival is not None:
            self.parts.archival.step()
        if self.manager.scheduler.running is not None and self.inbox.empty():
            self.manager.preload_next()
        if not self.held.pending:  # a seal (milliseconds) never delays a start
            self.parts.seals.seal()
            if self.inbox.empty():  # while a script runs, in chunks (not a read per batch)
                self.parts.seals.prepare(least=PREPARE_LEAST if self.slot.busy else 1)

    def close(self) -> None:
        """Stop: the running script killed, the log sealed and closed, the relay drained,
        the offline status published, everything closed. Raises LeaseLost when the writes
        of the close find the lease gone (the caller then `abandon`s)."""
        self.held.drop()
        self.slot.stop()
        self.parts.after.flush_views()
        self._stop_archival()
        self.parts.seals.close()  # a clean stop's last write: the whole log sealed, and closed
        self.manager.close()
        self.relay.stop()  # it publishes what is left of the events and the views, then exits
        self.connection.stop(self.status.body("offline"))
        self._close_parts()
        log.info("service.stopped", position=self.parts.position())

    def abandon(self, reason: str) -> None:
        """Leave after the lease was lost, writing nothing: the script killed, no seal, the
        store's connections closed, the relay stopped, the session left to the next leader
        (DISCONNECT with its Will: `offline` unless a new leader connects within 5 s)."""
        log.error("service.fenced", reason=reason, instance=self.status.instance,
                  epoch=self.status.epoch)
        if self.lease is not None:
            self.lease.lose(reason)  # the store's fence may have told it first
        self.held.drop()
        self.slot.stop()
        self._stop_archival()
        with contextlib.suppress(Exception):
            self.parts.seals.sealer.close()
        with contextlib.suppress(Exception):
            self.manager.log.close()  # the writer's connection, without recording anything
        self.relay.stop(timeout=1.0)
        if isinstance(self.connection, GuardedConnection):
            self.connection.abandon()
        self._close_parts()
        log.info("service.left_after_lease_lost")

    def _stop_archival(self) -> None:
        if self.parts.archival is not None:
            try:
                self.parts.archival.stop()
            except Exception as error:  # noqa: BLE001 -- never keeps the service from stopping
                log.warning("archive.stop_failed", error=repr(error))

    def _close_parts(self) -> None:
        for close in self.parts.closers:
            try:
                close()
            except Exception as error:  # noqa: BLE001 -- one closer's fault spares the others
                log.warning("service.close_failed", error=repr(error))
        self.inbox.close()

    def _wait_seconds(self) -> float:
        now = self.clock()
        wakes = [self.manager.next_cleanup(now)]
        start = self.manager.next_start(now)
        if start is not None:
            wakes.append(start)
        wait = min((wake - now).total_seconds() for wake in wakes)
        wait = min(wait, LOOK_AROUND_SECONDS)
        lease = None if self.lease is None else self.lease.seconds_left()
        archival = None if self.parts.archival is None else self.parts.archival.wait_seconds()
        for other in (self.parts.seals.wait_seconds(), self.slot.wait_seconds(),
                      self.held.wait_seconds(), lease, archival,
                      self.parts.after.views_wait_seconds(),
                      self.parts.after.relay_wait_seconds()):
            if other is not None:
                wait = min(wait, other)
        return max(0.0, min(wait, 60.0))
