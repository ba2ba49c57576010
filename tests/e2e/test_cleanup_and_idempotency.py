"""Auto Cleanup per table, and exactly one effect per notification id and per command; on an
SQLite and on a PostgreSQL store."""

from __future__ import annotations

from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS

from .conftest import Operator

pytestmark = BOTH_BACKENDS


def _run_notifications(operator: Operator, script: str, count: int, prefix: str) -> None:
    operator.add_job(f"job-{prefix}", script, prefix)
    for number in range(count):
        operator.notify(prefix, {"id": f"{prefix}-{number}", "channel": f"c{number}"})


def test_cleanup_run_keeps_max_rows_per_table_newest_first(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    _run_notifications(operator, "ipx-update", 5, "ok")
    _run_notifications(operator, "always-fail", 4, "ko")
    operator.wait_view("executed", lambda v: v["total"] == 5)
    operator.wait_view("failed", lambda v: v["total"] == 4)
    operator.ok("settings.set", {
        "executed_cleanup": {"max_rows": 2, "max_age_days": None, "every_seconds": 3600},
        "failed_cleanup": {"max_rows": 3, "max_age_days": None, "every_seconds": 3600},
    })
    assert operator.ok("cleanup.run", {"table": "executed"}) == {"executed": 3}
    executed = operator.view("executed")
    assert [row["notification_id"] for row in executed["rows"]] == ["ok-4", "ok-3"]
    assert operator.view("failed")["total"] == 4  # only the table asked for
    assert operator.ok("cleanup.run", {"table": "all"}) == {"executed": 0, "failed": 1}
    assert operator.view("failed")["total"] == 3


def test_periodic_cleanup_removes_rows_older_than_max_age(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    _run_notifications(operator, "always-fail", 2, "old")
    operator.wait_view("failed", lambda v: v["total"] == 2)
    # 0.00002 days = 1.7 s; the cleanup runs every second (the shortest period allowed).
    operator.ok("settings.set", {
        "failed_cleanup": {"max_rows": None, "max_age_days": 0.00002, "every_seconds": 1},
    })
    operator.wait_view("failed", lambda v: v["total"] == 0, timeout=10)
    assert operator.view("executed")["total"] == 0


def test_the_same_notification_id_twice_runs_once_whatever_the_topic(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("a", "ipx-update", "t1")
    operator.add_job("b", "ipx-update", "t2")
    operator.notify("t1", {"id": "same", "channel": "x"})
    operator.notify("t1", {"id": "same", "channel": "x"})
    operator.notify("t2", {"id": "same", "channel": "x"})
    # A later notification on each topic runs its job: the service takes a topic's messages
    # in order, so once both ran, every copy of "same" has been handled (and anything one of
    # them enqueued has run or waits in the queue).
    operator.notify("t1", {"id": "after-1", "channel": "x"})
    operator.notify("t2", {"id": "after-2", "channel": "x"})
    executed = operator.wait_view("executed", lambda v: {"after-1", "after-2"} <= {
        row["notification_id"] for row in v["rows"]})
    assert sorted((row["notification_id"], row["job"]) for row in executed["rows"]) == [
        ("after-1", "a"), ("after-2", "b"), ("same", "a")]
    assert operator.view("queue")["total"] == 0


def test_a_retained_notification_does_not_run_again_after_a_restart(
    operator: Operator, mqtt: TestClient
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("a", "ipx-update", "t")
    mqtt.publish(operator.service.notification_topic("t"), {"id": "kept", "channel": "x"},
                 retain=True)
    operator.wait_view("executed", lambda v: v["total"] == 1)
    operator.service.restart()
    # The broker sends the retained copy at the service's SUBSCRIBE, before anything
    # published on its topic later: once this later notification ran, the copy was handled.
    operator.notify("t", {"id": "after-restart", "channel": "x"})
    executed = operator.wait_view("executed", lambda v: any(
        row["notification_id"] == "after-restart" for row in v["rows"]))
    assert sorted(row["notification_id"] for row in executed["rows"]) == [
        "after-restart", "kept"]
    assert operator.view("queue")["total"] == 0


def test_a_command_redelivered_with_the_same_correlation_data_runs_once(operator: Operator) -> None:
    first = operator.command("job.add", {"name": "x", "script": "ipx-update", "trigger": "t"},
                             correlation=b"corr-1")
    again = operator.command("job.add", {"name": "x", "script": "ipx-update", "trigger": "t"},
                             correlation=b"corr-1")
    assert first["ok"] is True
    assert again == first
    other = operator.command("job.add", {"name": "x", "script": "ipx-update", "trigger": "t"},
                             correlation=b"corr-2")
    assert other["ok"] is False
    assert other["error"]["code"] == "conflict"
