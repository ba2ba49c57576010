"""What the writer handles: the messages it read, script outcomes, stop requests."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from att_jm.domain.runs import Outcome
from att_jm.mqtt.adapter import Inbound


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunFinished:
    """The runner's report: how execution `execution_id` ended, and when."""

    execution_id: str
    outcome: Outcome
    at: datetime


@dataclass(frozen=True)
class Stop:
    """Asks the writer to finish what it holds and stop."""

    reason: str = "requested"


Item = Inbound | RunFinished | Stop


class Inbox:
    """What the writer handles next: the messages it read itself, and what other threads
    and signal handlers put, which also wakes the writer's `poll()`."""

    def __init__(self) -> None:
        self._local: collections.deque[Item] = collections.deque()
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        """Readable when another thread put something."""
        return self._read_fd

    def put_local(self, item: Item) -> None:
        """From the writer thread itself (e.g. paho's callbacks inside `poll()`)."""
        self._local.append(item)

    def put(self, item: Item) -> None:
        """From any thread, or a signal handler (SimpleQueue.put and os.write are reentrant)."""
        self._queue.put(item)
        self.wake()

    def wake(self) -> None:
        """Wake the writer's `poll()` with nothing to handle (it looks at its timers and
        the lease); from any thread."""
        with contextlib.suppress(OSError):  # a full pipe: the writer is awake already
            os.write(self._write_fd, b"\0")

    def qsize(self) -> int:
        return len(self._local) + self._queue.qsize()

    def empty(self) -> bool:
        return not self._local and self._queue.empty()

    def drain(self, limit: int) -> list[Item]:
        """Up to `limit` items, the other threads' first, each source in arrival order."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        items: list[Item] = []
        while len(items) < limit:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        local = self._local
        while local and len(items) < limit:
            items.append(local.popleft())
        return items

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class Stopping:
    """The writer's stop: asked for (from any thread, or a signal handler) and then seen by
    the loop when it handles the Stop item."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.seen = False
