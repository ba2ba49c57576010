"""The relay's end of its pipes with the writer: hints on stdin, answers on stdout.

stdin, one line per commit: the position just committed (a hint: the relay reads to the
log's end anyway), `w<N>` (a hint that also asks to be told once N is confirmed), `v` (the
views took a batch). EOF: the writer stopped or died. stdout: `<N>` once N is confirmed, or
at once while the relay is not connected (nothing to wait for then).
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Sequence

from att_jm.relay.constants import WANTED


class WriterPipe:
    """Reads the writer's hints and writes the answers it asked for."""

    def __init__(self, wake_fd: int | None, stop_fd: int | None, answer_fd: int | None) -> None:
        self._wake_fd = wake_fd
        self._stop_fd = stop_fd
        self._answer_fd = answer_fd
        self._partial = b""
        self.hint = 0  # the highest position the writer said it committed
        self.wanted: list[int] = []  # positions to answer about once confirmed, sorted
        self.views_woken = False  # a `v` came since `take_views_wake()`
        self.eof = False  # the writer stopped or died

    def fds(self) -> Sequence[int]:
        return tuple(fd for fd in (self._wake_fd, self._stop_fd) if fd is not None)

    def read(self, sent: int) -> None:
        """Take what the writer wrote (`sent`: the last position published, for a line that
        says nothing readable: read anyway)."""
        if self._stop_fd is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._stop_fd, 512):
                    pass
        if self._wake_fd is None:
            return
        data = b""
        try:
            while chunk := os.read(self._wake_fd, 65536):
                data += chunk
            self._wake_fd = None  # EOF: the writer stopped or died
            self.eof = True
        except BlockingIOError:
            pass
        if data:
            self._take(data, sent)

    def take_views_wake(self) -> bool:
        woken, self.views_woken = self.views_woken, False
        return woken

    def answer(self, confirmed: int, connected: bool) -> None:
        """Tell the writer that the positions it asked about are confirmed (all of them when
        not connected: they cannot be soon)."""
        wanted = self.wanted
        if not wanted or (confirmed < wanted[0] and connected):
            return
        if connected:
            done = bisect.bisect_right(wanted, confirmed)
            answers, self.wanted = wanted[:done], wanted[done:]
        else:
            answers, self.wanted = wanted, []
        if self._answer_fd is None:
            return
        try:
            os.write(self._answer_fd, b"".join(b"%d\n" % position for position in answers))
        except BlockingIOError:  # a full pipe: the writer stopped reading; it waits no longer
            pass
        except OSError:  # the writer is gone
            self._answer_fd = None

    def _take(self, data: bytes, sent: int) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-64:]
        asked = [line for line in lines if line[:1] == b"w"]
        if asked:
            lines = [line for line in lines if line[:1] != b"w"] + [line[1:] for line in asked]
            for line in asked:
                with contextlib.suppress(ValueError):
                    bisect.insort(self.wanted, int(line[1:]))
            del self.wanted[:-WANTED]  # a writer that asks more than that has stopped waiting
        if b"v" in lines:
            self.views_woken = True
            lines = [line for line in lines if line != b"v"]
            if not lines:
                return
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                self.hint = max(self.hint, int(line))
                return
        self.hint = max(self.hint, sent + 1)  # no readable line: read anyway
