"""A progress bar on stderr for long audit runs, shown only when stderr is a terminal.

It appears after `delay` seconds (short runs never show it), redraws at most 10 times a
second, and is erased before anything else is written to the same terminal (`clear()`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Final

WIDTH: Final = 30


class Progress:
    """`progress(position)` as a callable; `done()` erases the bar."""

    def __init__(
        self, total: int, label: str, *, stream: IO[str] | None = None,
        enabled: bool | None = None, delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1)
        self.label = label
        self.clock = clock
        self.started = clock()
        self.delay = delay
        self.drawn = False
        self._next = self.started + delay

    def __call__(self, position: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now < self._next:
            return
        self._next = now + 0.1
        self.stream.write("\r" + self.line(position, now - self.started) + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def line(self, position: int, seconds: float) -> str:
        done = min(max(position, 0), self.total)
        filled = done * WIDTH // self.total
        rate = done / seconds if seconds > 0 else 0.0
        return (f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                f"{100 * done // self.total:3d}% {done:,}/{self.total:,} {rate:,.0f}/s")

    def clear(self) -> None:
        """Erase the bar (before other output on the same terminal)."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False

    done = clear
