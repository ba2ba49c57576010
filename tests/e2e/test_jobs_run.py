"""Notifications in, jobs run one at a time, Executed and Failed out: the real service."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS

from .conftest import Operator, new_id


@BOTH_BACKENDS
def test_a_notification_matching_two_jobs_enqueues_both_and_both_run(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx-a", "ipx-update", "channel-up")
    operator.add_job("ipx-b", "ipx-update", "channel-up", command="channel={channel}")
    operator.notify("channel-up", {"id": "n-1", "channel": "BBC One"})
    executed = operator.wait_view("executed", lambda v: v["total"] == 2)
    rows = {row["job"]: row for row in executed["rows"]}
    assert rows["ipx-a"]["result"] == 3
    assert rows["ipx-b"]["command"] == "channel=BBC One"
    assert rows["ipx-b"]["feedback"] == "IPX updated for channel BBC One"
    assert rows["ipx-a"]["notification_id"] == "n-1"
    assert rows["ipx-a"]["trigger"] == "channel-up"


def test_a_notification_matching_no_job_is_recorded_and_runs_nothing(
    operator: Operator, mqtt: TestClient
) -> None:
    events = mqtt.subscribe(operator.service.topic("job-manager/events/#"))
    operator.add_job("ipx", "ipx-update", "channel-up", match={"region": "north"})
    operator.notify("channel-down", {"id": "n-none", "channel": "x"})
    operator.notify("channel-up", {"id": "n-south", "channel": "x", "region": "south"})
    received = events.wait_for_count(
        2, lambda m: m.json()["type"] == "notification.received"
    )
    assert {m.json()["data"]["notification_id"] for m in received} == {"n-none", "n-south"}
    assert all(m.json()["data"]["enqueued"] == [] for m in received)
    assert operator.view("queue")["total"] == 0


def test_a_match_condition_on_a_nested_field_filters(
    operator: Operator, mqtt: TestClient
) -> None:
    received = mqtt.subscribe(operator.service.topic("job-manager/events/notification.received"))
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("north", "ipx-update", "up", match={"site.region": "north"})
    operator.notify("up", {"id": "a", "channel": "c1", "site": {"region": "south"}})
    operator.notify("up", {"id": "b", "channel": "c2", "site": {"region": "north"}})
    executed = operator.wait_view("executed", lambda v: v["total"] == 1)
    assert executed["rows"][0]["notification_id"] == "b"
    # "a" was handled before "b" (same topic, in order): its event says what it enqueued
    events = {m.json()["data"]["notification_id"]: m.json()["data"]
              for m in received.wait_for_count(2, timeout=15)}
    assert events["a"]["enqueued"] == []
    assert events["b"]["enqueued"] != []
    assert operator.view("queue")["total"] == 0
    assert operator.view("executed")["total"] == 1


@BOTH_BACKENDS
def test_a_failing_script_lands_in_failed_with_its_feedback_and_can_run_again(
    operator: Operator,
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("bad", "always-fail", "t")
    operator.notify("t", {"id": new_id()})
    failed = operator.wait_view("failed", lambda v: v["total"] == 1)
    row = failed["rows"][0]
    assert row["result"] == 2
    assert row["attempt"] == 1
    assert "always fails" in row["feedback"]
    result = operator.ok("failed.execute", {"id": row["id"]})
    assert result["attempt"] == 2
    failed = operator.wait_view(
        "failed", lambda v: v["total"] == 1 and v["rows"][0]["attempt"] == 2
    )
    assert failed["rows"][0]["id"] == row["id"]


def test_a_timed_out_script_is_killed_with_its_children(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("hang", "spawn-child-and-hang", "t", command="stubborn", timeout_seconds=2)
    operator.notify("t", {"id": new_id()})
    operator.wait_view("queue", lambda v: v["total"] == 1 and v["rows"][0]["state"] == "running")
    scripts = operator.service.scripts_dir.resolve()
    deadline = time.monotonic() + 5
    while len(_processes_in(scripts)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_processes_in(scripts)) >= 2  # the script and the child it forked
    failed = operator.wait_view("failed", lambda v: v["total"] == 1, timeout=20)
    assert failed["rows"][0]["feedback"] == "timed out after 2 s"
    assert _processes_in(scripts) == []


def _processes_in(directory: Path) -> list[int]:
    """Pids of the live processes whose working directory is `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == directory:
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_two_queued_entries_start_at_least_the_interval_apart(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 1.5})
    operator.add_job("quick", "ipx-update", "t")
    operator.notify("t", {"id": "first", "channel": "a"})
    operator.notify("t", {"id": "second", "channel": "b"})
    executed = operator.wait_view("executed", lambda v: v["total"] == 2, timeout=20)
    rows = {row["notification_id"]: row for row in executed["rows"]}
    gap = _seconds(rows["second"]["started_at"]) - _seconds(rows["first"]["finished_at"])
    assert gap >= 1.5 - 0.002  # the rows carry millisecond timestamps


@BOTH_BACKENDS
def test_execute_now_skips_the_wait_and_queue_remove_refuses_a_running_entry(
    operator: Operator,
) -> None:
    operator.ok("settings.set", {"interval_seconds": 30})
    operator.add_job("sleepy", "sleep-then-ok", "t", command="{seconds}")
    operator.notify("t", {"id": "one", "seconds": 1})
    operator.notify("t", {"id": "two", "seconds": 0})
    operator.notify("t", {"id": "three", "seconds": 0})
    queue = operator.wait_view(
        "queue", lambda v: v["total"] == 3 and v["rows"][0]["state"] == "running"
    )
    running, second, third = queue["rows"]
    assert operator.error("queue.remove", {"id": running["id"]})["code"] == "conflict"
    operator.ok("queue.remove", {"id": second["id"]})
    operator.ok("queue.execute-now", {"id": third["id"]})
    executed = operator.wait_view("executed", lambda v: v["total"] == 2, timeout=10)
    assert {row["notification_id"] for row in executed["rows"]} == {"one", "three"}
    assert operator.view("queue")["total"] == 0
    assert operator.error("queue.remove", {"id": second["id"]})["code"] == "not_found"


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_the_views_follow_the_log_while_a_script_runs(
    operator: Operator, mqtt: TestClient
) -> None:
    """While a script runs the views take the log's events a little later (in one go every
    few dozen executions of a draining queue), but the published views do not wait for the
    script's end, and a views.get sees every committed batch."""
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("long", "sleep-then-ok", "slow", command="{seconds}")
    operator.add_job("quick", "ok", "fast")
    events = mqtt.subscribe(operator.service.topic("job-manager/events/#"))
    queue = mqtt.subscribe(operator.service.view_topic("queue"))
    operator.notify("slow", {"id": "n-long", "seconds": "6"})
    events.wait_for(lambda m: m.json()["type"] == "execution.started")
    begun = time.monotonic()
    # Nothing asks for the views: the retained one shows the entry anyway, long before the
    # script ends.
    operator.notify("fast", {"id": "n-1"})
    queue.wait_for(
        lambda m: [row["notification_id"] for row in m.json()["rows"]] == ["n-long", "n-1"],
        timeout=2.0)
    # (~0.25 s: the relay publishes a view at most every 0.25 s; ~1 s if the writer slept
    # until its next look around instead of waking for the views)
    assert time.monotonic() - begun < 0.75
    # Asked right after its commit (its event seen): the reply includes it.
    operator.notify("fast", {"id": "n-2"})
    events.wait_for(lambda m: m.json()["type"] == "execution.enqueued"
                    and m.json()["data"]["notification_id"] == "n-2")
    rows = operator.view("queue")["rows"]
    assert [(row["notification_id"], row["state"]) for row in rows] == [
        ("n-long", "running"), ("n-1", "queued"), ("n-2", "queued")]
    assert operator.view("executed")["total"] == 0  # the script still runs
    operator.wait_view("executed", lambda v: v["total"] == 3)
