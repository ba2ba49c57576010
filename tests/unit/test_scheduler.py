"""The dispatch rule (`next_start`) and the Scheduler aggregate: settings, dispatch, cleanup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.domain import Snapshot

from att_jm.domain.cleanup import ArchivePolicy, CleanupPolicy
from att_jm.domain.ids import SCHEDULER_ID
from att_jm.domain.scheduler import DEFAULT_INTERVAL_SECONDS, Scheduler, next_start
from att_jm.errors import InvalidInput

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# The pure rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("front", [True, False, None])
def test_nothing_starts_while_an_execution_runs(front: bool | None) -> None:
    assert next_start(at(100), running="e1", last_finished_at=at(0), interval_seconds=5,
                      candidate_front=front) is None


def test_nothing_starts_when_the_queue_is_empty() -> None:
    assert next_start(at(100), running=None, last_finished_at=at(0), interval_seconds=5,
                      candidate_front=None) is None
    assert next_start(at(100), running=None, last_finished_at=None, interval_seconds=5,
                      candidate_front=None) is None


def test_an_entry_sent_to_the_front_starts_at_once_without_waiting_for_the_interval() -> None:
    assert next_start(at(1), running=None, last_finished_at=at(0), interval_seconds=60,
                      candidate_front=True) == at(1)


def test_the_first_execution_ever_starts_at_once() -> None:
    assert next_start(at(0), running=None, last_finished_at=None, interval_seconds=60,
                      candidate_front=False) == at(0)


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        (1, 5, 5),  # waits until the interval after the end of the last one
        (4.999, 5, 5),
        (5, 5, 5),
        (7, 5, 7),  # the interval has passed: now
        (0, 0, 0),  # interval 0: right after the previous one
        (3, 0, 3),
        (0.5, 2.5, 2.5),
    ],
)
def test_other_entries_wait_the_interval_after_the_last_finish(
    now: float, interval: float, expected: float
) -> None:
    assert next_start(at(now), running=None, last_finished_at=at(0), interval_seconds=interval,
                      candidate_front=False) == at(expected)


# The aggregate ------------------------------------------------------------------------------


def new_scheduler() -> Scheduler:
    scheduler = Scheduler.create(T0)
    scheduler.collect_events()
    return scheduler


def test_a_new_scheduler_has_the_contract_defaults() -> None:
    scheduler = Scheduler.create(T0)
    assert scheduler.id == SCHEDULER_ID
    assert scheduler.created_on == T0
    assert scheduler.settings_json() == {
        "interval_seconds": 5.0,
        "executed_cleanup": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 3600.0},
        "failed_cleanup": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 3600.0},
        "archive": {"max_age_days": None, "every_seconds": 3600.0},
    }
    assert scheduler.interval_seconds == DEFAULT_INTERVAL_SECONDS
    assert scheduler.running is None
    assert scheduler.last_finished_at is None
    assert scheduler.policy("executed") == CleanupPolicy()


def test_a_settings_change_merges_the_given_fields_into_the_current_settings() -> None:
    scheduler = new_scheduler()
    assert scheduler.change_settings(None, {"max_rows": 10}, None, "alice", at(1)) is True
    assert scheduler.change_settings(2.0, None, {"every_seconds": 60.0}, "bob", at(2)) is True
    assert scheduler.settings_json() == {
        "interval_seconds": 2.0,
        "executed_cleanup": {"max_rows": 10, "max_age_days": 7.0, "every_seconds": 3600.0},
        "failed_cleanup": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 60.0},
        "archive": {"max_age_days": None, "every_seconds": 3600.0},
    }
    first, second = scheduler.collect_events()
    assert isinstance(first, Scheduler.SettingsChanged)
    assert isinstance(second, Scheduler.SettingsChanged)
    # Each event holds the whole settings, so replay needs no merging.
    assert first.interval_seconds == 5.0
    assert first.executed_cleanup == {"max_rows": 10, "max_age_days": 7.0,
                                      "every_seconds": 3600.0}
    assert first.failed_cleanup == CleanupPolicy().to_json()
    assert (first.actor, first.timestamp) == ("alice", at(1))
    assert (second.actor, second.timestamp) == ("bob", at(2))


def test_a_cleanup_limit_may_be_cleared_while_the_other_stays_set() -> None:
    scheduler = new_scheduler()
    scheduler.change_settings(None, {"max_rows": None}, {"max_age_days": None}, "alice", at(1))
    assert scheduler.policy("executed") == CleanupPolicy(max_rows=None, max_age_days=7.0)
    assert scheduler.policy("failed") == CleanupPolicy(max_rows=1000, max_age_days=None)


@pytest.mark.parametrize(
    ("executed", "failed", "table"),
    [
        ({"max_rows": None, "max_age_days": None}, None, "executed"),
        (None, {"max_rows": None, "max_age_days": None}, "failed"),
    ],
)
def test_clearing_both_cleanup_limits_at_once_is_invalid(
    executed: dict[str, Any] | None, failed: dict[str, Any] | None, table: str
) -> None:
    scheduler = new_scheduler()
    with pytest.raises(InvalidInput, match=f"{table}_cleanup: at least one of"):
        scheduler.change_settings(None, executed, failed, "alice", at(1))
    assert scheduler.collect_events() == []
    assert scheduler.settings_json()[f"{table}_cleanup"] == CleanupPolicy().to_json()


def test_clearing_the_last_remaining_cleanup_limit_is_invalid_and_changes_nothing() -> None:
    scheduler = new_scheduler()
    scheduler.change_settings(None, {"max_rows": None}, None, "alice", at(1))
    scheduler.collect_events()
    with pytest.raises(InvalidInput, match="executed_cleanup"):
        scheduler.change_settings(3.0, {"max_age_days": None}, None, "alice", at(2))
    assert scheduler.collect_events() == []
    assert scheduler.interval_seconds == 5.0  # the valid part of a refused change is not kept
    assert scheduler.policy("executed") == CleanupPolicy(max_rows=None, max_age_days=7.0)


@pytest.mark.parametrize(
    ("interval", "executed", "failed"),
    [
        (None, None, None),
        (5.0, None, None),
        (5, {}, {}),
        (None, {"max_rows": 1000, "max_age_days": 7, "every_seconds": 3600}, None),
        (None, None, {"max_age_days": 7.0}),
    ],
)
def test_a_settings_change_that_changes_nothing_records_no_event(
    interval: float | None, executed: dict[str, Any] | None, failed: dict[str, Any] | None
) -> None:
    scheduler = new_scheduler()
    assert scheduler.change_settings(interval, executed, failed, "alice", at(1)) is False
    assert scheduler.collect_events() == []


def test_dispatch_marks_the_execution_running_until_it_is_released() -> None:
    scheduler = new_scheduler()
    scheduler.dispatch("e1", False, at(1))
    assert scheduler.running == "e1"
    assert scheduler.next_start(at(2), False) is None
    with pytest.raises(RuntimeError, match="e1 is running"):
        scheduler.dispatch("e2", True, at(2))
    scheduler.release("e1", at(3))
    assert scheduler.running is None
    assert scheduler.last_finished_at == at(3)
    dispatched, released = scheduler.collect_events()
    assert isinstance(dispatched, Scheduler.Dispatched)
    assert (dispatched.execution_id, dispatched.front, dispatched.timestamp) == ("e1", False, at(1))
    assert isinstance(released, Scheduler.Released)
    assert (released.execution_id, released.timestamp) == ("e1", at(3))


def test_releasing_an_execution_that_is_not_running_records_nothing() -> None:
    scheduler = new_scheduler()
    scheduler.release("e1", at(1))
    scheduler.dispatch("e1", False, at(2))
    scheduler.collect_events()
    scheduler.release("other", at(3))
    assert scheduler.collect_events() == []
    assert scheduler.running == "e1"


def test_the_interval_is_measured_from_the_end_of_the_previous_execution() -> None:
    scheduler = new_scheduler()
    scheduler.dispatch("e1", False, at(0))
    scheduler.release("e1", at(60))  # a long run: started at 0, ended at 60
    assert scheduler.next_start(at(61), False) == at(65)
    assert scheduler.next_start(at(61), True) == at(61)
    assert scheduler.next_start(at(70), False) == at(70)
    scheduler.change_settings(0.0, None, None, "alice", at(61))
    assert scheduler.next_start(at(61), False) == at(61)


def test_cleanup_is_due_at_once_until_it_first_ran_then_every_every_seconds() -> None:
    scheduler = new_scheduler()
    assert scheduler.cleanup_due("executed", at(5)) == at(5)
    scheduler.record_cleanup("executed", "run-1", 4, "scheduler", at(10))
    assert scheduler.cleanup_due("executed", at(11)) == at(3610)
    assert scheduler.cleanup_due("failed", at(11)) == at(11)
    scheduler.change_settings(None, {"every_seconds": 60}, None, "alice", at(12))
    assert scheduler.cleanup_due("executed", at(12)) == at(70)
    events = scheduler.collect_events()
    ran = events[0]
    assert isinstance(ran, Scheduler.CleanupRan)
    assert (ran.table, ran.cleanup, ran.removed, ran.actor) == ("executed", "run-1", 4, "scheduler")


def test_replaying_the_events_rebuilds_the_same_scheduler() -> None:
    scheduler = Scheduler.create(T0)
    scheduler.change_settings(1.5, {"max_rows": 3}, {"max_age_days": None}, "alice", at(1))
    scheduler.dispatch("e1", True, at(2))
    scheduler.release("e1", at(3))
    scheduler.record_cleanup("failed", "run", 0, "scheduler", at(4))
    replayed: Any = None
    for event in scheduler.collect_events():
        replayed = event.mutate(replayed)
    assert vars(replayed) == vars(scheduler)


def test_a_snapshot_of_the_scheduler_restores_the_same_state() -> None:
    scheduler = Scheduler.create(T0)
    scheduler.change_settings(0.0, {"every_seconds": 10}, None, "alice", at(1))
    scheduler.dispatch("e1", False, at(2))
    scheduler.release("e1", at(3))
    scheduler.record_cleanup("executed", "run", 2, "scheduler", at(4))
    scheduler.collect_events()
    restored = Snapshot.take(scheduler).mutate(None)
    assert isinstance(restored, Scheduler)
    assert vars(restored) == vars(scheduler)
    assert restored.cleanup_due("executed", at(5)) == at(14)


def test_automatic_archival_is_off_by_default_and_set_and_cleared_by_merging() -> None:
    scheduler = new_scheduler()
    assert scheduler.archive_policy() == ArchivePolicy(max_age_days=None, every_seconds=3600.0)
    assert scheduler.change_settings(None, None, None, "alice", at(1),
                                     {"max_age_days": 0.5}) is True
    assert scheduler.change_settings(None, None, None, "alice", at(2),
                                     {"every_seconds": 60}) is True
    assert scheduler.archive_policy() == ArchivePolicy(max_age_days=0.5, every_seconds=60)
    assert scheduler.change_settings(None, None, None, "alice", at(3),
                                     {"max_age_days": 0.5}) is False  # nothing changes
    assert scheduler.change_settings(None, None, None, "bob", at(4),
                                     {"max_age_days": None}) is True
    assert scheduler.settings_json()["archive"] == {"max_age_days": None, "every_seconds": 60}
    events = scheduler.collect_events()
    assert [getattr(e, "archive", None) for e in events][-1] == {"max_age_days": None,
                                                                  "every_seconds": 60}


@pytest.mark.parametrize(("stored", "policy"), [
    (None, ArchivePolicy()),  # a SettingsChanged written before automatic archival: off
    ("junk", ArchivePolicy()),
    ({"max_age_days": 0, "every_seconds": 0}, ArchivePolicy(0.00001, 1.0)),
    ({"max_age_days": float("nan"), "every_seconds": float("inf")},
     ArchivePolicy(3650.0, 3600.0)),
    ({"max_age_days": 1e300, "every_seconds": 1e300}, ArchivePolicy(3650.0, 30 * 86400.0)),
    ({"max_age_days": "7", "every_seconds": True}, ArchivePolicy(3650.0, 3600.0)),
])
def test_a_stored_bad_archive_setting_loads_clamped(stored: Any, policy: ArchivePolicy) -> None:
    assert ArchivePolicy.from_json(stored) == policy


def test_the_state_holds_archive_only_once_a_settings_change_carried_it() -> None:
    # A snapshot taken by a version before automatic archival lacks it; the replay of that
    # version's events must lack it too, or `audit verify` would call the snapshot edited.
    scheduler = new_scheduler()
    assert "archive" not in vars(scheduler)
    assert scheduler.archive_policy() == ArchivePolicy()
    scheduler.change_settings(2.0, None, None, "alice", at(1))
    assert vars(scheduler)["archive"] == {"max_age_days": None, "every_seconds": 3600.0}
