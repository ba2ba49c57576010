"""The relay's priority: the writer's while the relay keeps up, lower during a burst.

When the relay wakes to more than BEHIND_ROWS rows of the log to publish (the writer
batches: a burst) it runs at the niceness of the setting `relay_nice` (19 by default): on busy
cores the writer, which commits and acknowledges, goes first, and the events follow once a
core is free. Once it has published everything and no such backlog came for CALM_SECONDS, it
returns to the niceness it was started with (the writer's): a notification that meets a quiet
service then has its events published without waiting for the scheduler to give a
low-priority process a core (bench/README.md: the relay's turn and the enqueue latency). The
calm period keeps a burst from flipping it back and forth between two of its batches.

Returning to a lower niceness needs the right to raise a priority (CAP_SYS_NICE, or
RLIMIT_NICE: systemd's `LimitNICE=`, set in deploy/att-jm.service). Without it the first
attempt fails, is logged once (`relay.priority_fixed`) and the relay stays at `relay_nice`.
Linux keeps a niceness per thread: the relay's loop is its only thread that works.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Final

import structlog

log = structlog.get_logger("att_jm.relay")

#: More rows than this still to publish when the relay wakes: a burst (the writer first).
BEHIND_ROWS: Final = 16
#: Caught up, and no burst for this long (seconds): the writer's niceness again.
CALM_SECONDS: Final = 0.25


def _get() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def _set(nice: int) -> None:
    os.setpriority(os.PRIO_PROCESS, 0, nice)


class Priority:
    """The relay thread's niceness: `busy` while behind, the one it started with once caught
    up (`follow` at each turn, before and after its reads)."""

    def __init__(self, busy: int, *, get: Callable[[], int] = _get,
                 set_nice: Callable[[int], None] = _set,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._set = set_nice
        self._monotonic = monotonic
        self._burst = monotonic()  # when the last backlog over BEHIND_ROWS was seen
        self.idle = get()
        self.busy = max(busy, self.idle)
        self.current = self.idle
        #: Whether the niceness follows the backlog (False: `relay_nice` is the writer's, or
        #: the system refused to return to the writer's).
        self.adaptive = self.busy > self.idle
        if self.adaptive:  # starting: there may be a backlog since the last stop
            self._apply(self.busy)

    def follow(self, backlog: int, caught_up: bool) -> None:
        """At a turn that began with `backlog` rows stored and not published (the writer's
        hint less the last position published), before its reads and after them;
        `caught_up`: the last read reached the log's end."""
        if not self.adaptive:
            return
        if backlog > BEHIND_ROWS:
            self._burst = self._monotonic()
            if self.current != self.busy:
                self._apply(self.busy)
        elif (caught_up and self.current != self.idle
              and self._monotonic() - self._burst >= CALM_SECONDS):
            self._apply(self.idle)

    def _apply(self, nice: int) -> None:
        try:
            self._set(nice)
        except OSError as error:  # a sandbox that refuses it: the relay stays as it is
            self.adaptive = False
            if nice < self.current:
                log.warning("relay.priority_fixed", nice=self.current, error=str(error),
                            effect="the relay stays at relay_nice while it keeps up")
            else:
                log.warning("relay.priority_unchanged", nice=nice, error=str(error))
            return
        self.current = nice
