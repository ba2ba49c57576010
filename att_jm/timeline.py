"""Timestamps along the path of a message through the writer and the relay, for
`python -m bench.timeline`; off unless the environment variable ATT_JM_TIMELINE names a
directory.

When on, the writer marks each batch it drains from its inbox, each commit that stored
events (its start; the mark's own time is its end) and each time it wakes the relay; the
relay marks each turn of its loop, each page of rows it read and each page it published.
Each process keeps its marks in memory (a few tuples per batch, at most MAX_MARKS) and writes
them to DIRECTORY/<pid>.txt when it exits: one mark per line, its kind, its values, its time
(CLOCK_MONOTONIC nanoseconds: one clock for every process of the machine). Off, a mark costs
a call that tests a constant.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from pathlib import Path
from typing import Final

TIMELINE_ENV: Final = "ATT_JM_TIMELINE"
DIRECTORY: Final = os.environ.get(TIMELINE_ENV, "")
ON: Final = bool(DIRECTORY)
MAX_MARKS: Final = 2_000_000  # ~200 MB at most: a bench run, not a service left running

_marks: list[tuple[object, ...]] = []
now = time.monotonic_ns


def mark(kind: str, *values: int) -> None:
    """Record `kind` with `values` and the time (when on)."""
    if ON and len(_marks) < MAX_MARKS:
        _marks.append((kind, *values, now()))


def _write() -> None:
    with contextlib.suppress(OSError):
        path = Path(DIRECTORY) / f"{os.getpid()}.txt"
        path.write_text("".join(" ".join(map(str, m)) + "\n" for m in _marks))


if ON:
    atexit.register(_write)
