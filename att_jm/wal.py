"""WAL checkpoints off the writer's critical path (SQLite files of the store and the views).

SQLite checkpoints by itself inside the commit that takes the WAL past 1,000 pages: that
commit then copies ~4 MB back into the database file and syncs it, a pause of several
milliseconds for whatever request waits on it (one commit in ~70 while executions run). The
writer's connections turn that off; the relay, on the other core, checkpoints both files
every `EVERY_SECONDS` (PASSIVE: it never blocks the writer), and the writer checkpoints
itself only when a WAL grew past `SAFETY_PAGES` (the relay is away).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Final

EVERY_SECONDS: Final = 1.0
SAFETY_PAGES: Final = 16_384
_PAGE: Final = 4096


def no_auto_checkpoint(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_autocheckpoint=0")


def wal_path(database: str) -> str:
    """The WAL file of the database at `database` (a path or a `file:` URI)."""
    return database.removeprefix("file:").split("?", 1)[0] + "-wal"


def checkpoint_if_large(db: sqlite3.Connection, wal: str, pages: int = SAFETY_PAGES) -> bool:
    """`PRAGMA wal_checkpoint(PASSIVE)` on `db` when its WAL file `wal` holds more than
    `pages` pages; whether it did."""
    try:
        size = os.stat(wal).st_size
    except OSError:
        return False
    if size <= pages * _PAGE:
        return False
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return True


class Checkpointer:
    """Checkpoints some database files now and then (the relay's): PASSIVE, errors ignored
    (a busy or missing file is tried again next time)."""

    def __init__(self, paths: list[str]) -> None:
        self._paths = paths
        self._dbs: dict[str, sqlite3.Connection] = {}

    def run(self) -> None:
        for path in self._paths:
            try:
                db = self._dbs.get(path)
                if db is None:
                    if not os.path.exists(path):
                        continue
                    db = self._dbs[path] = sqlite3.connect(path, timeout=0)
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                self._close(path)

    def _close(self, path: str) -> None:
        db = self._dbs.pop(path, None)
        if db is not None:
            db.close()

    def close(self) -> None:
        for path in list(self._dbs):
            self._close(path)
