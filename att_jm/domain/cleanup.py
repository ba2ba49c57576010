"""Pure Auto Cleanup selection: which rows of a table a policy removes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from att_jm.domain import limits as lim


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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CleanupPolicy:
        """A policy from stored JSON, every field clamped into its range (a log written by an
        older version may hold any number: it must load, and never break time arithmetic).

        The scheduler keeps its policies as JSON (its snapshots store them) and reads them
        on every turn of the writer's loop and several times per `settings.set`: the same
        three values give the same policy, so it is parsed once (`_cleanup_policy`)."""
        rows = data.get("max_rows", cls.max_rows)  # the class attributes: the defaults
        age = data.get("max_age_days", cls.max_age_days)
        every = data.get("every_seconds")
        try:
            return _cleanup_policy(rows, age, every)
        except TypeError:  # an unhashable stored value (a list, a dict): parsed each time
            return cls._parse(rows, age, every)

    @classmethod
    def _parse(cls, rows: Any, age: Any, every: Any) -> CleanupPolicy:
        default = cls()
        max_rows = None if rows is None else lim.clamp_int(
            rows, lim.MIN_MAX_ROWS, lim.MAX_MAX_ROWS, default.max_rows or lim.MAX_MAX_ROWS)
        max_age = None if age is None else lim.clamp(
            age, lim.MIN_MAX_AGE_DAYS, lim.MAX_MAX_AGE_DAYS, default.max_age_days or 7.0)
        if max_rows is None and max_age is None:  # a table must not grow without bound
            max_rows = default.max_rows
        return cls(max_rows=max_rows, max_age_days=max_age, every_seconds=lim.clamp(
            every, lim.MIN_EVERY_SECONDS, lim.MAX_EVERY_SECONDS, default.every_seconds))


@dataclass(frozen=True)
class ArchivePolicy:
    """Automatic archival: the sealed rows older than `max_age_days` moved to an archive file
    every `every_seconds` (`att-jm audit archive`); off (None) by default."""

    max_age_days: float | None = None
    every_seconds: float = 3600.0

    def to_json(self) -> dict[str, float | None]:
        return {"max_age_days": self.max_age_days, "every_seconds": self.every_seconds}

    @classmethod
    def from_json(cls, data: Any) -> ArchivePolicy:
        """A policy from stored JSON (absent in logs written before it: off), every field
        clamped into its range, so that a stored bad value never breaks a start."""
        if not isinstance(data, Mapping):
            return cls()
        age, every = data.get("max_age_days"), data.get("every_seconds")
        try:
            return _archive_policy(age, every)
        except TypeError:  # an unhashable stored value: parsed each time
            return cls._parse(age, every)

    @classmethod
    def _parse(cls, age: Any, every: Any) -> ArchivePolicy:
        max_age = None if age is None else lim.clamp(
            age, lim.MIN_MAX_AGE_DAYS, lim.MAX_MAX_AGE_DAYS, lim.MAX_MAX_AGE_DAYS)
        return cls(max_age_days=max_age, every_seconds=lim.clamp(
            every, lim.MIN_EVERY_SECONDS, lim.MAX_EVERY_SECONDS, cls().every_seconds))


# The policies parsed once per distinct stored values. `typed`: 1, 1.0 and True are equal
# keys but not the same stored value (a bool is not a number here). A few entries suffice:
# the scheduler holds one policy per table at a time.
@lru_cache(maxsize=16, typed=True)
def _cleanup_policy(rows: Any, age: Any, every: Any) -> CleanupPolicy:
    return CleanupPolicy._parse(rows, age, every)


@lru_cache(maxsize=8, typed=True)
def _archive_policy(age: Any, every: Any) -> ArchivePolicy:
    return ArchivePolicy._parse(age, every)


def select_for_cleanup(
    rows_newest_first: Sequence[tuple[str, datetime]],
    policy: CleanupPolicy,
    now: datetime,
) -> list[str]:
    """Ids of the rows past `max_rows` (oldest go first) or older than `max_age_days`.

    `rows_newest_first` holds (id, finished_at) pairs, newest first. The result is oldest first.
    """
    keep = len(rows_newest_first) if policy.max_rows is None else policy.max_rows
    cutoff = (
        None if policy.max_age_days is None
        else lim.add_seconds(now, -policy.max_age_days * lim.DAY)
    )
    removed: list[str] = []
    for index in range(len(rows_newest_first) - 1, -1, -1):
        row_id, finished_at = rows_newest_first[index]
        if index >= keep or (cutoff is not None and finished_at < cutoff):
            removed.append(row_id)
    return removed
