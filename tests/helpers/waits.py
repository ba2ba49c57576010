"""Waiting for a condition instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0,
               every: float = 0.05) -> Any:
    """The first truthy value `check()` returns, polling every `every` s; AssertionError
    naming `what` when none came within `timeout` s. An AssertionError `check` raises counts
    as "not yet"."""
    deadline = time.monotonic() + timeout
    last: AssertionError | None = None
    while True:
        try:
            value = check()
        except AssertionError as error:
            value, last = None, error
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}" + ("" if last is None else f" ({last})"))
        time.sleep(every)
