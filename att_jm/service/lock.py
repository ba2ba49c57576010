"""One writer (serve or rebuild) at a time: an exclusive lock on the views file."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


class ViewsLock:
    """An exclusive lock on the views file: one writer (serve or rebuild) at a time."""

    def __init__(self, views_path: str) -> None:
        self.path = Path(views_path + ".lock")
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
