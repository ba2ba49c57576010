"""Automatic retries of a job, through the application with a fake clock over real files."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from helpers.application import Harness
from helpers.clock import Clock
from helpers.postgres import BOTH_BACKENDS

from att_jm.application import INTERRUPTED
from att_jm.domain.executions import Execution
from att_jm.domain.times import iso

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL

RETRY = {"max_attempts": 3, "delay_seconds": 10, "backoff": 2}


def _queue_row(jm: Harness) -> dict[str, Any]:
    (row,) = jm.rows("queue")
    return row


def test_a_failed_attempt_is_queued_again_after_its_delay_until_the_last_one_fails(
    jm: Harness, clock: Clock,
) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry=RETRY)
    jm.notify("alarm", {"id": "n-1"})
    first = jm.run_next(result=2, feedback="no signal")
    row = _queue_row(jm)
    assert (row["state"], row["attempt"], row["feedback"]) == ("queued", 2, "no signal")
    assert row["not_before"] == iso(clock() + timedelta(seconds=10))
    assert jm.rows("failed") == []
    clock.advance(9.9)
    assert jm.dispatch() is None  # not before its time
    assert jm.manager.next_start(clock()) == clock() + timedelta(seconds=0.1)
    clock.advance(0.1)
    second = jm.run_next(result=2, feedback="still no signal")
    assert second.execution_id == first.execution_id and second.attempt == 2
    assert _queue_row(jm)["not_before"] == iso(clock() + timedelta(seconds=20))  # backoff 2
    clock.advance(20)
    third = jm.run_next(result=2, feedback="gave up")
    assert third.attempt == 3
    (failed,) = jm.rows("failed")
    assert (failed["attempt"], failed["feedback"]) == (3, "gave up")
    assert jm.rows("queue") == []
    attempts = [e.attempt for e in jm.events(Execution.AttemptFailed)]
    assert attempts == [2, 3]


def test_a_success_on_a_retry_ends_in_executed(jm: Harness, clock: Clock) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry={"max_attempts": 2})
    jm.notify("alarm", {"id": "n-1"})
    jm.run_next(result=2, feedback="first try failed")
    assert _queue_row(jm)["not_before"] == iso(clock())  # no delay: at once
    jm.run_next(result=3, feedback="ok")
    (done,) = jm.rows("executed")
    assert done["attempt"] == 2 and jm.rows("failed") == []


def test_without_a_policy_a_failure_goes_to_failed_as_before(jm: Harness) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("plain")
    jm.notify("alarm", {"id": "n-1"})
    jm.run_next(result=2)
    assert len(jm.rows("failed")) == 1 and jm.events(Execution.AttemptFailed) == []


def test_the_interval_still_holds_between_any_two_runs(jm: Harness, clock: Clock) -> None:
    jm.ok("settings.set", {"interval_seconds": 60})
    jm.add_job("flaky", retry={"max_attempts": 2, "delay_seconds": 5})
    jm.notify("alarm", {"id": "n-1"})
    jm.run_next(result=2)
    ended = clock()
    clock.advance(5)
    assert jm.dispatch() is None  # its delay is over, the interval is not
    assert jm.manager.next_start(clock()) == ended + timedelta(seconds=60)
    clock.advance(55)
    assert jm.dispatch() is not None


def test_ready_entries_run_while_a_retry_waits_then_it_takes_its_turn(
    jm: Harness, clock: Clock,
) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry={"max_attempts": 2, "delay_seconds": 30})
    jm.add_job("other", trigger="other")
    jm.notify("alarm", {"id": "n-1"})
    retried = jm.run_next(result=2)
    jm.notify("other", {"id": "n-2"})
    jm.notify("other", {"id": "n-3"})
    ran = jm.run_next(result=3)
    assert ran.job == "other"
    clock.advance(30)
    again = jm.run_next(result=3)  # queued again before n-3 arrived: its turn comes first
    assert again.execution_id == retried.execution_id


@pytest.mark.parametrize("command", ["queue.execute-now", "failed.execute"])
def test_an_operator_may_run_a_waiting_retry_now(
    jm: Harness, clock: Clock, command: str,
) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry={"max_attempts": 3, "delay_seconds": 3600})
    jm.notify("alarm", {"id": "n-1"})
    first = jm.run_next(result=2)
    assert jm.dispatch() is None
    jm.ok(command, {"id": first.execution_id})
    assert _queue_row(jm)["not_before"] is None
    started = jm.dispatch()
    assert started is not None and started.attempt == 2


def test_an_operator_may_remove_a_waiting_retry(jm: Harness) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry={"max_attempts": 3, "delay_seconds": 3600})
    jm.notify("alarm", {"id": "n-1"})
    first = jm.run_next(result=2)
    jm.ok("queue.remove", {"id": first.execution_id})
    assert jm.rows("queue") == [] and jm.manager.next_start(jm.clock()) is None


def test_an_interrupted_attempt_is_retried_too(jm: Harness, clock: Clock) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry={"max_attempts": 2, "delay_seconds": 1})
    jm.notify("alarm", {"id": "n-1"})
    assert jm.dispatch() is not None
    jm.unit(jm.manager.interrupt_running)  # a restart finds it running
    row = _queue_row(jm)
    assert (row["attempt"], row["feedback"]) == (2, INTERRUPTED)


def test_queued_entries_keep_the_policy_they_were_enqueued_with(jm: Harness) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry={"max_attempts": 2})
    jm.notify("alarm", {"id": "n-1"})
    jm.ok("job.update", {"name": "flaky", "retry": None})
    jm.run_next(result=2)
    assert _queue_row(jm)["attempt"] == 2  # still retried
    jm.notify("alarm", {"id": "n-2"})
    jm.run_next(result=3)  # the retry of n-1
    jm.run_next(result=2)  # n-2: enqueued without a policy
    assert [row["notification_id"] for row in jm.rows("failed")] == ["n-2"]


def test_the_policy_is_shown_in_the_jobs_view_and_validated(jm: Harness) -> None:
    jm.add_job("flaky", retry={"max_attempts": 5, "delay_seconds": 2.5, "backoff": 1.5})
    (job,) = jm.rows("jobs")
    assert job["retry"] == {"max_attempts": 5, "delay_seconds": 2.5, "backoff": 1.5}
    code, message = jm.error("job.add", {"name": "x", "script": "backup.sh", "trigger": "t",
                                         "retry": {"max_attempts": 0}})
    assert code == "invalid" and "from 1 to 100" in message
    code, message = jm.error("job.update", {"name": "flaky", "retry": {"backoff": 11}})
    assert code == "invalid" and "retry.backoff" in message
    code, _ = jm.error("job.update", {"name": "flaky", "retry": {"every": 1}})
    assert code == "invalid"


def test_retries_survive_a_restart(
    jm: Harness, clock: Clock, open_harness: Any,
) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("flaky", retry={"max_attempts": 2, "delay_seconds": 60})
    jm.notify("alarm", {"id": "n-1"})
    jm.run_next(result=2)
    restarted: Harness = open_harness()
    assert restarted.dispatch() is None
    clock.advance(60)
    started = restarted.dispatch()
    assert started is not None and started.attempt == 2


def test_a_retry_of_an_entry_sent_to_the_front_waits_for_the_interval(
    jm: Harness, clock: Clock,
) -> None:
    jm.ok("settings.set", {"interval_seconds": 60})
    jm.add_job("flaky", retry={"max_attempts": 2})
    jm.notify("alarm", {"id": "n-1"})
    first = jm.dispatch()  # the first run of all starts at once
    assert first is not None
    clock.advance(1)
    assert jm.finish(first.execution_id, result=2)
    jm.ok("settings.set", {"interval_seconds": 60})
    assert jm.dispatch() is None  # queued again as a new arrival: the interval holds
    clock.advance(60)
    assert jm.dispatch() is not None
