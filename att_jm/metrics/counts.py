"""What the exporter counts from the log: stored rows, read-only, from the log's end at its
start (so every counter starts at 0 with the exporter, as Prometheus counters may).

Label values are bounded whatever the log holds (a forged row may hold any text): a
rejection's source and code, a cleanup's table, are one of the known values or `other`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from att_jm.errors import REPLY_CODES
from att_jm.log.codec import loads_state
from att_jm.vocabulary import TABLES

NOTIFICATION: Final = "att_jm:Notification.Received"
REJECTED: Final = "att_jm:Rejection.Rejected"
ENQUEUED: Final = "att_jm:Execution.Enqueued"
STARTED: Final = "att_jm:Execution.Started"
SUCCEEDED: Final = "att_jm:Execution.Succeeded"
FAILED: Final = "att_jm:Execution.Failed"
ATTEMPT_FAILED: Final = "att_jm:Execution.AttemptFailed"
CLEANED_UP: Final = "att_jm:Execution.CleanedUp"
CLEANUP_RAN: Final = "att_jm:Scheduler.CleanupRan"
#: The stored topics the exporter reads (every other row is passed over by SQLite).
TOPICS: Final = (NOTIFICATION, REJECTED, ENQUEUED, STARTED, SUCCEEDED, FAILED, ATTEMPT_FAILED,
                 CLEANED_UP, CLEANUP_RAN)

OTHER: Final = "other"
SOURCES: Final = ("notification", "command")
CODES: Final = tuple(sorted(REPLY_CODES))
#: How an attempt ended: `interrupted` when the service stopped while it ran (recorded as a
#: failure, retried if the policy allows), else `retried` (AttemptFailed: another attempt
#: follows), `failed` (Failed) or `succeeded`.
OUTCOMES: Final = ("succeeded", "failed", "retried", "interrupted")
CLEANUP_TABLES: Final = tuple(str(table) for table in TABLES)
#: Upper bounds (seconds) of the script duration buckets; one more bucket is +Inf.
DURATION_BOUNDS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                          600.0, 1800.0, 3600.0)


def _known(value: Any, known: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in known else OTHER


@dataclass
class Histogram:
    """Observations per bucket (not cumulative; the last bucket is +Inf) and their sum."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.buckets), self.total)


@dataclass
class LogCounts:
    """The counters kept from the log's rows (see docs/metrics.md)."""

    notifications: int = 0
    enqueued: int = 0
    started: int = 0
    timed_out: int = 0
    undecodable: int = 0
    rejections: dict[tuple[str, str], int] = field(default_factory=lambda: {
        (source, code): 0 for source in SOURCES for code in CODES})
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    durations: dict[str, Histogram] = field(default_factory=lambda: {
        outcome: Histogram(DURATION_BOUNDS) for outcome in OUTCOMES})
    cleanup_runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLEANUP_TABLES, 0))
    cleaned_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLEANUP_TABLES, 0))

    def add(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Count stored rows (position, originator id, version, topic, state), as
        `att_jm.log.rows.StoreReader.raw_pages` gives them."""
        for row in rows:
            topic = row[3]
            if topic == NOTIFICATION:  # counted without decoding its payload
                self.notifications += 1
            elif topic == ENQUEUED:
                self.enqueued += 1
            elif topic == STARTED:
                self.started += 1
            elif topic in TOPICS:
                try:
                    data = loads_state(row[4])
                    if not isinstance(data, dict):
                        raise TypeError("not an object")  # counted as undecodable, below
                    self._decoded(topic, data)
                except (orjson.JSONDecodeError, TypeError, ValueError):
                    self.undecodable += 1

    def _decoded(self, topic: str, data: dict[str, Any]) -> None:
        if topic == REJECTED:
            key = (_known(data.get("source"), SOURCES), _known(data.get("code"), CODES))
            self.rejections[key] = self.rejections.get(key, 0) + 1
        elif topic in (SUCCEEDED, FAILED, ATTEMPT_FAILED):
            if data.get("interrupted") is True:
                outcome = "interrupted"
            else:
                outcome = {SUCCEEDED: "succeeded", FAILED: "failed"}.get(topic, "retried")
            self.outcomes[outcome] += 1
            if data.get("timed_out") is True:
                self.timed_out += 1
            duration = data.get("duration_seconds")
            if isinstance(duration, int | float) and not isinstance(duration, bool):
                self.durations[outcome].observe(max(0.0, float(duration)))
        elif topic == CLEANED_UP:
            table = _known(data.get("table"), CLEANUP_TABLES)
            self.cleaned_rows[table] = self.cleaned_rows.get(table, 0) + 1
        elif topic == CLEANUP_RAN:
            table = _known(data.get("table"), CLEANUP_TABLES)
            self.cleanup_runs[table] = self.cleanup_runs.get(table, 0) + 1

    def copy(self) -> LogCounts:
        return LogCounts(
            notifications=self.notifications, enqueued=self.enqueued, started=self.started,
            timed_out=self.timed_out, undecodable=self.undecodable,
            rejections=dict(self.rejections), outcomes=dict(self.outcomes),
            durations={key: h.copy() for key, h in self.durations.items()},
            cleanup_runs=dict(self.cleanup_runs), cleaned_rows=dict(self.cleaned_rows),
        )
