"""Automatic retries and the events stream against the real service."""

from __future__ import annotations

import time
from datetime import datetime

from helpers.broker import Broker
from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS
from helpers.service import ServiceFactory

from .conftest import Operator, new_id


@BOTH_BACKENDS
def test_a_job_with_retries_fails_twice_then_succeeds_and_its_attempts_are_events(
    operator: Operator, mqtt: TestClient,
) -> None:
    events = mqtt.subscribe(operator.service.topic("job-manager/events/#"))
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("flaky", "fail-until", "t", command="3",
                     retry={"max_attempts": 3, "delay_seconds": 0.5, "backoff": 2})
    operator.notify("t", {"id": new_id()})
    waiting = operator.wait_view("queue", lambda v: v["total"] == 1
                                 and v["rows"][0]["not_before"] is not None)
    row = waiting["rows"][0]
    assert (row["attempt"], row["feedback"]) == (2, "attempt 1 failed on purpose")
    started = time.monotonic()
    executed = operator.wait_view("executed", lambda v: v["total"] == 1, timeout=20)
    assert time.monotonic() - started >= 1.0  # 0.5 s, then 1 s (backoff 2)
    assert executed["rows"][0]["attempt"] == 3
    assert executed["rows"][0]["feedback"] == "attempt 3 succeeded"
    kinds = [m.json()["type"] for m in events.messages()]
    assert kinds.count("execution.attempt_failed") == 2
    assert kinds.count("execution.started") == 3
    assert operator.view("failed")["total"] == 0


def test_the_last_failed_attempt_goes_to_failed(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("flaky", "fail-until", "t", command="9", retry={"max_attempts": 2})
    operator.notify("t", {"id": new_id()})
    failed = operator.wait_view("failed", lambda v: v["total"] == 1)
    assert failed["rows"][0]["attempt"] == 2


@BOTH_BACKENDS
def test_every_event_is_published_position_1_included(
    broker: Broker, service_factory: ServiceFactory, mqtt: TestClient,
) -> None:
    """The relay of a first start publishes from the start of the log: the scheduler's
    creation (position 1) and the start's own mark are events like the others."""
    events = mqtt.subscribe("att/job-manager/events/#")
    service_factory()
    positions = sorted(m.json()["position"] for m in events.wait_for_count(2, lambda m: True))
    assert positions[:2] == [1, 2]


def test_a_drained_entry_s_start_is_published_while_its_script_runs(
    operator: Operator, mqtt: TestClient,
) -> None:
    """At a hand-over (one script's end starts the next queued entry) the relay is told of
    that commit's events when the new script ends or RELAY_DEFER_SECONDS (0.02 s) later,
    whichever comes first: a long script's start is published at once, not at its end nor
    at the relay's own look at the log (every 0.5 s). Each of the two hand-overs' events
    arrives within 0.15 s of its time."""
    events = mqtt.subscribe(operator.service.topic("job-manager/events/#"))
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("sleepy", "sleep-then-ok", "t", command="{seconds}")
    for name in ("one", "two", "three"):
        operator.notify("t", {"id": name, "seconds": "1"})
    enqueued = events.wait_for_count(3, lambda m: m.json()["type"] == "execution.enqueued")
    ids = {m.json()["data"]["notification_id"]: m.json()["data"]["aggregate_id"]
           for m in enqueued}
    for name in ("two", "three"):  # started by the end of the one before: hand-overs
        entry = ids[name]
        started = events.wait_for(
            lambda m, entry=entry: m.json()["type"] == "execution.started"  # type: ignore[misc]
            and m.json()["data"]["aggregate_id"] == entry, timeout=15)
        arrived = time.time()
        at = datetime.fromisoformat(started.json()["at"]).timestamp()
        assert arrived - at < 0.15, (name, arrived - at)
        finished = events.wait_for(
            lambda m, entry=entry: m.json()["type"] == "execution.succeeded"  # type: ignore[misc]
            and m.json()["data"]["aggregate_id"] == entry, timeout=15)
        assert datetime.fromisoformat(finished.json()["at"]).timestamp() - at > 0.9
