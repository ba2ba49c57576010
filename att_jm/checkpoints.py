"""WAL checkpoints of the store and the views file on threads of their own.

SQLite checkpoints a WAL database from within the commit that takes the WAL past
`wal_autocheckpoint` pages (1,000): that commit then copies the pages into the database file
and syncs both, several milliseconds during which the writer handles nothing. The writer
commits to both files after every batch, so one command or notification in a few hundred
waited for it (a step of the p99 latency). Here a daemon thread with its own connection runs
a PASSIVE checkpoint every `period` seconds, so that the WAL is copied back and starts over
long before a commit reaches 1,000 pages: PASSIVE never blocks the writer, and the sqlite3
module releases the GIL while SQLite copies and syncs. The writer's connections keep their
automatic checkpoint as the fallback (a thread that falls behind, a reader that keeps the
WAL from starting over): the WAL stays bounded as before. A failed checkpoint (a full disk)
is logged and tried again the next period.

PostgreSQL stores (a `postgresql://` URL) have no WAL file of theirs to checkpoint: the server
does it. A Checkpointer for one does nothing (no thread, no connection).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import Final

import structlog

from att_jm import timeline
from att_jm.log.backend import is_postgres

log = structlog.get_logger("att_jm")

PERIOD_SECONDS: Final = 0.5


class Checkpointer:
    """Checkpoints the WAL database at `path` every `period` s, until `close()`."""

    def __init__(self, path: str, period: float = PERIOD_SECONDS, *, views: bool = False) -> None:
        self.path = path
        self.period = period
        self.checkpoints = 0
        self.failures = 0
        self._stop = threading.Event()
        #: In the timeline's marks: 1 for a views file, 0 for the store.
        self._label = 1 if views else 0
        self.active = not is_postgres(path)
        if not self.active:  # the server checkpoints its own WAL
            return
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=1000")
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.checkpoint()

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint (failures are logged: the next period tries again)."""
        if not self.active:
            return
        begun = timeline.now() if timeline.ON else 0
        try:
            _, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            timeline.mark("checkpoint", self._label, frames, copied, begun)
        except sqlite3.Error as error:
            self.failures += 1
            log.warning("views.checkpoint_failed", views=self.path, error=repr(error))

    def close(self) -> None:
        """Stop the thread; a last checkpoint, then close its connection."""
        self._stop.set()
        if not self.active:
            return
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.checkpoint()
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
