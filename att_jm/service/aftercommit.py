"""What follows a commit, in order: the acknowledgements and replies, the script it
started, the relay, the end of a store fault, the views.

The relay after a hand-over (a script's end started the next queued one: a draining queue)
in a batch without MQTT messages (no notification, no command: nobody waits for its events)
is told of that commit's events once the new script shows a sign of life (one of its
descriptors readable: usually its end), or RELAY_DEFER_SECONDS after the commit, or with the
next commit, whichever comes first: not at once. The relay then publishes them (and the
broker passes them on) while the writer records the script's end and starts the next one
(its commit mostly waits for the disk), not while the spawner and the script need the two
cores (bench/README.md, session 15). Any other commit wakes the relay at once, as before.

A start held for the relay's answer (att_jm.service.held: a notification met an idle queue)
also holds its batch's acknowledgements, and the views take the batch once the script
started (they wait while a script runs, VIEWS_DEFER_SECONDS at most): until the answer the
relay's turn and the broker have the cores to themselves (bench/README.md, session 16).

After a batch of commands only (each answered: no notification, no script's end) the relay's
wake-up and the views wait REPLY_QUIET_SECONDS after the replies, or for the next commit, a
read or a stop: on two cores the relay's publishes, the broker's and the views' transaction
otherwise run while the requester's client takes its reply (bench/README.md, session 17).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import structlog

from att_jm import timeline
from att_jm.application import JobManager
from att_jm.application.sealer import Sealer
from att_jm.mqtt.adapter import ServiceConnection
from att_jm.relay.handle import EventsRelay
from att_jm.service.held import HeldStart
from att_jm.service.status import Status
from att_jm.service.unit import WriterUnit
from att_jm.store import JobManagerApp
from projections.rebuild import catch_up
from projections.views import Views

log = structlog.get_logger("att_jm")

Stored = list[tuple[int, Any]]

#: While a script runs, a start is held or more messages wait in the inbox (a burst), the
#: views take a batch's events at most this long after it was committed (seconds), and this
#: many events at most: applied together, every few dozen executions of a draining queue or
#: batches of a burst, not after each (bench/README.md). The relay publishes a changed view
#: at most every 0.25 s; a `views.get` sees every committed batch.
VIEWS_DEFER_SECONDS: Final = 0.05
VIEWS_DEFER_EVENTS: Final = 2000
#: At most this long after a hand-over's commit (seconds) the relay is told of its events
#: when the script it started is still running (module docstring).
RELAY_DEFER_SECONDS: Final = 0.02
#: After a batch of commands only, how long the relay's wake-up and the views wait after the
#: replies (seconds; module docstring).
REPLY_QUIET_SECONDS: Final = 0.001


class AfterCommit:
    """Runs what follows each commit; keeps the views up to the log."""

    def __init__(
        self, *, app: JobManagerApp, manager: JobManager, views: Views, relay: EventsRelay,
        held: HeldStart, sealer: Sealer, status: Status, connection: ServiceConnection,
        views_behind: bool = False, defer_views: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.manager = manager
        self.views = views
        self.relay = relay
        self.held = held
        self.sealer = sealer
        self.status = status
        self.connection = connection
        #: The views lag the log (a views fault): caught up from the writer's timers.
        self.views_behind = views_behind
        #: Whether the views may wait (a script runs, a start is held, a burst: VIEWS_DEFER_*).
        self._defer_views = defer_views
        #: Committed events the views have not taken yet, and since when (time.monotonic()).
        self._pending: Stored = []
        self._pending_since = 0.0
        #: The last position the relay was not told of yet (a hand-over's), and when it must
        #: be at the latest (time.monotonic()).
        self._untold: int | None = None
        self._tell_by = 0.0
        #: Until when (time.monotonic()) the views wait after a batch of commands' replies.
        self._quiet_until = 0.0

    def committed(self, uow: WriterUnit, stored: Stored) -> None:
        """Everything that follows the commit of `uow`, which stored `stored`."""
        for hook in uow.after_store:  # replies (and their batch's acks): requesters wait
            hook()
        # The requesters' clients take their replies first (module docstring); any other
        # commit ends the views' wait.
        quiet = uow.commands_only and uow.start is None
        self._quiet_until = time.monotonic() + REPLY_QUIET_SECONDS if quiet else 0.0
        # Then the script it started and the relay (which reads the events on the other
        # core): after a script's end the next script first (the queue drains at the speed
        # of its scripts); on an idle queue the events first: the script starts once the
        # broker has taken them (see att_jm.service.held).
        start = uow.start
        handed_over = False
        if start is not None and uow.handover:
            start()
            start = None
            handed_over = True
        acks = uow.after_wake  # the acks of a batch without replies
        if stored:
            position = stored[-1][0]
            timeline.mark("wake", position)
            if start is not None and self.held.hold(start, position, first=acks):
                start = None  # the acks go with it (att_jm.service.held)
                acks = []
            elif handed_over and not uow.messages:  # a notification's events leave at once
                self._tell_later(position, RELAY_DEFER_SECONDS)
            elif quiet:
                self._tell_later(position, REPLY_QUIET_SECONDS)
            else:
                self._tell(position)
        for hook in acks:
            hook()
        if start is not None:
            start()
        if self.status.fault_kind == "store":
            self.connection.resume()
            self.status.set_fault(None)
            log.info("store.recovered")
        self.stored(stored)
        self._settle(uow)

    def _settle(self, uow: WriterUnit) -> None:
        """Last, once its replies, acks, script and events are under way: what the commit
        of `uow` left for later (the scheduler's snapshot), and the reload of a spoiled
        batch's aggregates."""
        for work in uow.later or ():
            work()
        if uow.spoiled:  # a handler failed after changing aggregates in memory
            try:
                self.manager.reload()
            except Exception as error:  # noqa: BLE001 -- the batch is stored: the model stays
                # stale and the next unit of work reloads it first (Units.run)
                log.error("store.reload_failed", error=repr(error))

    def stored(self, stored: Stored) -> None:
        """Wake the relay for the events (first: subscribers wait for them), then update the
        views (the relay publishes those that changed), or leave that for later while a
        script runs (`views_due`)."""
        if not stored:
            return
        if self._untold != stored[-1][0]:  # not a hand-over's, told later
            self._tell(stored[-1][0])
        self.sealer.note(stored[-1][0])
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.extend(stored)
        if self.views_due():
            self.flush_views()

    def tell_relay(self) -> None:
        """Tell the relay now of the events it was not told of yet (a hand-over's): the
        script it started showed a sign of life, RELAY_DEFER_SECONDS passed, or a stop."""
        if self._untold is not None:
            self._tell(self._untold)

    def relay_wait_seconds(self) -> float | None:
        """How long the relay may still be left untold (None: nothing waits)."""
        if self._untold is None:
            return None
        return max(0.0, self._tell_by - time.monotonic())

    def _tell(self, position: int) -> None:
        self._untold = None  # the relay reads up to the log's end: the earlier ones too
        self.relay.notify(position)

    def _tell_later(self, position: int, seconds: float) -> None:
        by = time.monotonic() + seconds
        # The earliest limit of those untold holds (the relay reads them all at once).
        self._tell_by = by if self._untold is None else min(self._tell_by, by)
        self._untold = position

    def views_due(self) -> bool:
        """Whether events wait for the views and may not wait longer."""
        if not self._pending:
            return False
        now = time.monotonic()
        if (len(self._pending) >= VIEWS_DEFER_EVENTS
                or now - self._pending_since >= VIEWS_DEFER_SECONDS):
            return True  # however long a flood of commands or a script lasts
        if now < self._quiet_until:  # after a batch of commands' replies
            return False
        return not self._defer_views()

    def views_wait_seconds(self) -> float | None:
        """How long the views may still wait (None: nothing waits)."""
        if not self._pending:
            return None
        now = time.monotonic()
        wait = self._pending_since + VIEWS_DEFER_SECONDS - now
        if self._quiet_until > now:
            wait = min(wait, self._quiet_until - now)
        return max(0.0, wait)

    def flush_views(self) -> None:
        """Bring the views up to every committed event now (before a read, at a stop), or
        catch them up from the log after a views fault."""
        pending, self._pending = self._pending, []
        if pending or self.views_behind:
            self.apply_views(pending)

    def apply_views(self, stored: Stored) -> None:
        """Bring the views up to the log (the batch just stored, or everything missed).

        The log is committed already, so a views failure (full disk) must not stop the
        writer: it is reported as a `views` fault and retried from the writer's timers (the
        write side decides from its own index: nothing waits for the views).
        """
        try:
            first = stored[0][0] if stored else 0
            if self.views_behind or self.views.position < first - 1:
                catch_up(self.app, self.views)
                self.relay.notify_views()
            elif stored and self.views.apply(stored):
                self.relay.notify_views()
        except Exception as error:  # noqa: BLE001 -- any views fault: report, retry later
            if not self.views_behind:
                log.error("views.apply_failed", error=repr(error))
            self.views_behind = True
            if self.status.fault is None:
                self.status.set_fault("views", error)
            return
        if self.views_behind:
            self.views_behind = False
            log.info("views.recovered", position=self.views.position)
        if self.status.fault_kind == "views":
            self.status.set_fault(None)
