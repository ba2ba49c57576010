"""Pure Auto Cleanup selection: which rows of a table a policy removes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class CleanupPolicy:
    """Auto Cleanup of one table: Row Count and/or Row Age, run every `every_seconds`."""

    max_rows: int | None = 1000
    max_age_days: float | None = 7.0
    every_seconds: float = 3600.0

    def to_json(self) -> dict[str, int | float | None]:
        return {
            "max_rows": self.max_rows,
            "max_age_days": self.max_age_days,
            "every_seconds": self.every_seconds,
        }


def select_for_cleanup(
    rows_newest_first: Sequence[tuple[str, datetime]],
    policy: CleanupPolicy,
    now: datetime,
) -> list[str]:
    """Ids of the rows past `max_rows` (oldest go first) or older than `max_age_days`.

    `rows_newest_first` holds (id, finished_at) pairs, newest first. The result is oldest first.
    """
    keep = len(rows_newest_first) if policy.max_rows is None else policy.max_rows
    cutoff = None if policy.max_age_days is None else now - timedelta(days=policy.max_age_days)
    removed: list[str] = []
    for index in range(len(rows_newest_first) - 1, -1, -1):
        row_id, finished_at = rows_newest_first[index]
        if index >= keep or (cutoff is not None and finished_at < cutoff):
            removed.append(row_id)
    return removed
