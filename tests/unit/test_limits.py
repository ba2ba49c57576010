"""Ranges, caps and saturating time arithmetic: no stored value can break a computation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.domain import Snapshot
from hypothesis import given
from hypothesis import strategies as st

from att_jm.domain import limits as lim
from att_jm.domain.cleanup import ArchivePolicy, CleanupPolicy, select_for_cleanup
from att_jm.domain.scheduler import DEFAULT_INTERVAL_SECONDS, Scheduler, next_start

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
EXTREMES: list[Any] = [1e12, 1e308, -1e308, -1.0, 0.0, -0.0, 5e-324, 2**63, True, None, "7", [], {}]


@pytest.mark.parametrize("seconds", [1e12, 1e20, 1e308, float("inf")])
def test_adding_a_huge_number_of_seconds_saturates_at_the_end_of_time(seconds: float) -> None:
    assert lim.add_seconds(T0, seconds) == lim.TIME_MAX
    assert lim.add_seconds(T0, -seconds) == lim.TIME_MIN


def test_adding_seconds_near_the_end_of_time_saturates_instead_of_raising() -> None:
    late = lim.TIME_MAX - timedelta(seconds=1)
    assert lim.add_seconds(late, 3600) == lim.TIME_MAX
    assert lim.add_seconds(lim.TIME_MIN, -1) == lim.TIME_MIN
    assert lim.add_seconds(T0, float("nan")) == T0
    assert lim.add_seconds(T0, 1.5) == T0 + timedelta(seconds=1.5)


@pytest.mark.parametrize("value", EXTREMES)
def test_clamp_always_gives_a_finite_number_inside_the_range(value: Any) -> None:
    clamped = lim.clamp(value, 1.0, 100.0, 50.0)
    assert 1.0 <= clamped <= 100.0
    assert str(clamped) != "-0.0"
    assert lim.clamp(-0.0, 0.0, 1.0, 0.5) == 0.0 and str(lim.clamp(-0.0, 0.0, 1.0, 0.5)) == "0.0"


def test_cut_keeps_short_text_and_marks_what_it_left_out() -> None:
    assert lim.cut("abc", 3) == "abc"
    assert lim.cut("abcdef", 3) == "abc…[cut: 3 more characters]"
    assert len(lim.shown("x" * 60_000)) < 120


@pytest.mark.parametrize(
    ("low", "high", "text"),
    [(0, 86400, "from 0 to 86400"), (0.1, 604800, "from 0.1 to 604800"),
     (0.00001, 3650, "from 0.00001 to 3650"), (1, 2592000, "from 1 to 2592000")],
)
def test_ranges_are_written_plainly(low: float, high: float, text: str) -> None:
    assert lim.range_text(low, high) == text


ANY_JSON_NUMBER = st.one_of(
    st.sampled_from(EXTREMES), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64), st.none(), st.booleans(), st.text(max_size=3),
)


@given(every=ANY_JSON_NUMBER, age=ANY_JSON_NUMBER, rows=ANY_JSON_NUMBER)
def test_a_stored_cleanup_policy_of_any_value_loads_clamped_and_keeps_a_limit(
    every: Any, age: Any, rows: Any
) -> None:
    policy = CleanupPolicy.from_json({"max_rows": rows, "max_age_days": age,
                                      "every_seconds": every})
    assert lim.MIN_EVERY_SECONDS <= policy.every_seconds <= lim.MAX_EVERY_SECONDS
    assert policy.max_rows is not None or policy.max_age_days is not None
    if policy.max_rows is not None:
        assert lim.MIN_MAX_ROWS <= policy.max_rows <= lim.MAX_MAX_ROWS
    if policy.max_age_days is not None:
        assert lim.MIN_MAX_AGE_DAYS <= policy.max_age_days <= lim.MAX_MAX_AGE_DAYS
    # ... and selecting rows with it, at the ends of time, raises nothing.
    rows_newest_first = [("a", lim.TIME_MAX), ("b", T0), ("c", lim.TIME_MIN)]
    for now in (T0, lim.TIME_MAX, lim.TIME_MIN):
        select_for_cleanup(rows_newest_first, policy, now)


@given(st.lists(st.tuples(ANY_JSON_NUMBER, ANY_JSON_NUMBER, ANY_JSON_NUMBER), max_size=6))
def test_a_policy_parsed_once_is_the_policy_parsed_every_time(
    stored: list[tuple[Any, Any, Any]],
) -> None:
    """The policies are kept parsed per distinct stored values: in any order of reads, even
    of equal but different values (1, 1.0, True) or unhashable ones ([], {}), each read gives
    what parsing it afresh gives."""
    stored = [*stored, (1, 1, 1), (1.0, 1.0, 1.0), (True, True, True), ([], {}, [])]
    for rows, age, every in stored:
        data = {"max_rows": rows, "max_age_days": age, "every_seconds": every}
        assert CleanupPolicy.from_json(data) == CleanupPolicy._parse(rows, age, every)
        assert ArchivePolicy.from_json(data) == ArchivePolicy._parse(age, every)


def _replayed(events: Sequence[Any]) -> Scheduler:
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Scheduler)
    return aggregate


def test_a_log_with_out_of_range_settings_loads_and_every_timer_computes() -> None:
    """The defect that stopped the service for good: every_seconds 1e12 in the log."""
    scheduler = Scheduler.create(T0)
    # An older version accepted these; they are stored as they came (no validation here).
    scheduler.trigger_event(
        Scheduler.SettingsChanged, interval_seconds=1e300,
        executed_cleanup={"max_rows": None, "max_age_days": 1e300, "every_seconds": 1e12},
        failed_cleanup={"max_rows": 0, "max_age_days": -3, "every_seconds": -1},
        actor="old-version", timestamp=T0,
    )
    scheduler.record_cleanup("executed", "run-1", 0, "scheduler", T0)
    scheduler.dispatch("e-1", False, T0)
    scheduler.release("e-1", T0)
    loaded = _replayed(scheduler.collect_events())
    assert loaded.interval_seconds == lim.MAX_INTERVAL_SECONDS
    assert loaded.policy("executed") == CleanupPolicy(
        max_rows=None, max_age_days=lim.MAX_MAX_AGE_DAYS, every_seconds=lim.MAX_EVERY_SECONDS)
    assert loaded.policy("failed").every_seconds == lim.MIN_EVERY_SECONDS
    for years in (0, 1, 10, 100, 7000):
        now = T0 + timedelta(days=365 * years)
        assert loaded.cleanup_due("executed", now) <= lim.TIME_MAX
        assert loaded.cleanup_due("failed", now) <= lim.TIME_MAX
        start = loaded.next_start(now, False)
        assert start is not None and start >= now
    assert loaded.next_start(lim.TIME_MAX, False) == lim.TIME_MAX
    assert set(loaded.settings_json()["executed_cleanup"]) == {
        "max_rows", "max_age_days", "every_seconds"}


def test_a_snapshot_holding_out_of_range_values_is_clamped_when_used() -> None:
    scheduler = Scheduler.create(T0)
    scheduler.collect_events()
    scheduler.interval_seconds = 1e300  # as a snapshot of an older version may hold them
    scheduler.cleanup["executed"] = {"max_rows": 1, "max_age_days": 1e300, "every_seconds": 1e12}
    scheduler.last_cleanup["executed"] = "not a time"
    scheduler.last_finished_at = lim.TIME_MAX - timedelta(seconds=1)
    snapshot = Snapshot.take(scheduler)
    restored = snapshot.mutate(None)
    assert isinstance(restored, Scheduler)
    assert restored.policy("executed").every_seconds == lim.MAX_EVERY_SECONDS
    assert restored.cleanup_due("executed", T0) == T0  # an unreadable last run: due now
    assert restored.next_start(T0, False) == T0 + timedelta(days=1)  # the interval, clamped
    assert restored.settings_json()["interval_seconds"] == lim.MAX_INTERVAL_SECONDS


def test_the_interval_is_clamped_in_the_pure_rule_too() -> None:
    assert next_start(T0, running=None, last_finished_at=T0, interval_seconds=1e300,
                      candidate_front=False) == T0 + timedelta(days=1)
    assert next_start(T0, running=None, last_finished_at=T0, interval_seconds=-5,
                      candidate_front=False) == T0
    assert DEFAULT_INTERVAL_SECONDS == 5.0


def test_a_clock_set_back_a_year_waits_one_interval_not_a_year() -> None:
    """The last end and the last cleanup were recorded with a clock a year ahead; once the
    clock is right again, the queue and the cleanup wait one interval or period, no more."""
    ahead = T0 + timedelta(days=365)
    scheduler = Scheduler.create(ahead)
    scheduler.change_settings(30.0, {"every_seconds": 60}, None, "op", ahead)
    scheduler.dispatch("e-1", False, ahead)
    scheduler.release("e-1", ahead)
    scheduler.record_cleanup("executed", "r1", 0, "scheduler", ahead)
    assert scheduler.next_start(T0, False) == T0 + timedelta(seconds=30)
    assert scheduler.cleanup_due("executed", T0) == T0 + timedelta(seconds=60)
