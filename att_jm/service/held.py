"""A start held until the broker has taken the events of its batch.

A script dispatched onto an idle queue starts once the relay answers that the broker took
its batch's events (their PUBACKs arrived), after HOLD_START_SECONDS at most, or at once
when anything else is to be handled: subscribers hear that an execution started before its
script can act, and the script's start does not take the cores from the events on their
way (bench/README.md has the figures).

The batch's acknowledgements (its messages are committed) wait with the start and go just
before it, and the views take the batch once it started (`AfterCommit`): between the commit
and the relay's answer the writer does nothing the events' way needs a core for (the
broker would wake for the acknowledgements; the views are an SQLite transaction). A stop
acknowledges them and drops the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from att_jm.relay.handle import EventsRelay
from att_jm.service.inbox import Inbox

log = structlog.get_logger("att_jm")

#: The longest a start waits for the relay's answer.
HOLD_START_SECONDS = 0.003


class HeldStart:
    """At most one start waiting for the relay's answer that `position` was confirmed."""

    def __init__(self, relay: EventsRelay, inbox: Inbox, *,
                 seconds: float = HOLD_START_SECONDS) -> None:
        self.relay = relay
        self.inbox = inbox
        self.seconds = seconds
        #: (start, position, deadline on time.monotonic)
        self._held: tuple[Callable[[], object], int, float] | None = None
        #: What goes just before the start (the batch's acknowledgements).
        self._first: Sequence[Callable[[], object]] = ()

    @property
    def pending(self) -> bool:
        return self._held is not None

    @property
    def position(self) -> int | None:
        """The log position whose confirmation the held start waits for."""
        return None if self._held is None else self._held[1]

    @property
    def waiting(self) -> int:
        """How many calls (acknowledgements) wait to go before the held start."""
        return len(self._first)

    def hold(self, start: Callable[[], object], position: int,
             first: Sequence[Callable[[], object]] = ()) -> bool:
        """Hold `start` until `position` is confirmed, and `first` (called in order just
        before it); False (nothing held) without a relay."""
        if not self.relay.ask(position):
            return False
        self._held = (start, position, time.monotonic() + self.seconds)
        self._first = tuple(first)
        return True

    def fds(self) -> tuple[int, ...]:
        """What to wait on for the answer (nothing when no start is held)."""
        fd = self.relay.answers_fd() if self._held is not None else None
        return () if fd is None else (fd,)

    def wait_seconds(self) -> float | None:
        return None if self._held is None else max(0.0, self._held[2] - time.monotonic())

    def release(self) -> None:
        """Start the held script once the relay answered, its time is up, or something else
        is to be handled (nothing waits behind a held start)."""
        if self._held is None:
            return
        start, position, deadline = self._held
        if (self.relay.confirmed(position) or time.monotonic() >= deadline
                or not self.inbox.empty()):
            self._held = None
            self._call_first()
            start()

    def drop(self) -> None:
        """At a stop: the acknowledgements go (their messages are committed), the start
        never does (the next start records its execution interrupted)."""
        if self._held is not None:
            log.warning("execution.start_dropped_at_stop", position=self._held[1])
            self._held = None
            self._call_first()

    def _call_first(self) -> None:
        first, self._first = self._first, ()
        for call in first:
            call()
