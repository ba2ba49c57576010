"""Auto Cleanup selection: by Row Count, by Row Age, both, and the boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from att_jm.domain.cleanup import CleanupPolicy, select_for_cleanup

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rows(*ages_days: float) -> list[tuple[str, datetime]]:
    """Rows `r0, r1, ...` finished `ages_days` ago, newest first (ages must ascend)."""
    assert list(ages_days) == sorted(ages_days)
    return [(f"r{i}", NOW - timedelta(days=age)) for i, age in enumerate(ages_days)]


def test_the_default_policy_is_the_contracts() -> None:
    policy = CleanupPolicy()
    assert policy.to_json() == {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 3600.0}


@pytest.mark.parametrize(
    ("count", "max_rows", "removed"),
    [
        (0, 3, []),
        (2, 3, []),
        (3, 3, []),  # exactly max_rows rows: none removed
        (4, 3, ["r3"]),
        (6, 3, ["r5", "r4", "r3"]),  # the oldest go first
        (5, 1, ["r4", "r3", "r2", "r1"]),
    ],
)
def test_row_count_keeps_the_newest_max_rows(count: int, max_rows: int, removed: list[str]) -> None:
    policy = CleanupPolicy(max_rows=max_rows, max_age_days=None)
    table = rows(*[0.0] * count)
    assert select_for_cleanup(table, policy, NOW) == removed


@pytest.mark.parametrize(
    ("ages", "max_age_days", "removed"),
    [
        ((), 7, []),
        ((0, 1, 6.9), 7, []),
        ((0, 7), 7, []),  # exactly max_age_days old: kept (only older rows go)
        ((0, 7.0001), 7, ["r1"]),
        ((0, 1, 8, 30), 7, ["r3", "r2"]),
        ((10, 20), 7, ["r1", "r0"]),
        ((0.4, 0.6), 0.5, ["r1"]),
    ],
)
def test_row_age_removes_rows_older_than_max_age_days(
    ages: tuple[float, ...], max_age_days: float, removed: list[str]
) -> None:
    policy = CleanupPolicy(max_rows=None, max_age_days=max_age_days)
    assert select_for_cleanup(rows(*ages), policy, NOW) == removed


@pytest.mark.parametrize(
    ("ages", "removed"),
    [
        ((0, 1), []),  # under both limits
        ((0, 1, 2, 3), ["r3"]),  # over the row count only
        ((0, 8), ["r1"]),  # over the age only
        ((0, 1, 2, 9, 10), ["r4", "r3"]),  # both say the same rows
        ((0, 1, 2, 3, 9), ["r4", "r3"]),  # count takes r3, age takes r4
        ((8, 9), ["r1", "r0"]),  # age removes rows the count would keep
    ],
)
def test_count_and_age_together_remove_the_union_oldest_first(
    ages: tuple[float, ...], removed: list[str]
) -> None:
    policy = CleanupPolicy(max_rows=3, max_age_days=7)
    assert select_for_cleanup(rows(*ages), policy, NOW) == removed


def test_no_limit_at_all_removes_nothing() -> None:
    policy = CleanupPolicy(max_rows=None, max_age_days=None)
    assert select_for_cleanup(rows(0, 100, 1000), policy, NOW) == []


def test_the_row_count_follows_the_given_order_not_the_timestamps() -> None:
    # The views give rows newest first by log position; equal timestamps keep that order.
    same = NOW - timedelta(hours=1)
    table = [("c", same), ("b", same), ("a", same)]
    policy = CleanupPolicy(max_rows=1, max_age_days=None)
    assert select_for_cleanup(table, policy, NOW) == ["a", "b"]


def test_row_age_is_measured_from_now() -> None:
    policy = CleanupPolicy(max_rows=None, max_age_days=1)
    table = rows(0.5)
    assert select_for_cleanup(table, policy, NOW) == []
    assert select_for_cleanup(table, policy, NOW + timedelta(days=0.6)) == ["r0"]
