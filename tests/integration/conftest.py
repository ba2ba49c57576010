"""Fixtures of the integration tests: the JobManager over real files, with a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.application import Harness
from helpers.clock import Clock

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def open_harness(tmp_path: Path, clock: Clock,
                 store_location: str) -> Iterator[Callable[..., Harness]]:
    """Opens the JobManager over the test's store (`store_location`), again and again."""
    opened: list[Harness] = []

    def make(max_payload_bytes: int = 256 * 1024) -> Harness:
        harness = Harness(tmp_path, clock, max_payload_bytes, store_location)
        opened.append(harness)
        return harness

    yield make
    for harness in opened:
        harness.close()


@pytest.fixture
def jm(open_harness: Callable[..., Harness]) -> Harness:
    return open_harness()
