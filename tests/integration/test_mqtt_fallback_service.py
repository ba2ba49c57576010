"""The real service (`python -m att_jm serve`, its events relay a child process) on paho's
documented paths only: ATT_JM_MQTT_FAST_PATHS=false, what an operator sets when a paho
release breaks the fast paths (see att_jm/mqtt/fast_paths.py)."""

from __future__ import annotations

import json
import time

from helpers.broker import Broker
from helpers.mqtt import TestClient
from helpers.requests import ok, wait_view
from helpers.service import Service, ServiceFactory

DOCUMENTED_PATHS = {"ATT_JM_MQTT_FAST_PATHS": "false"}


def paths_chosen(service: Service) -> dict[str, list[bool]]:
    """client id -> the `fast` of each `mqtt.paths` line in the service's log (both
    processes write to it), in order."""
    chosen: dict[str, list[bool]] = {}
    for line in service.log_text().splitlines():
        if '"mqtt.paths"' not in line:
            continue
        record = json.loads(line)
        chosen.setdefault(record["client_id"], []).append(record["fast"])
    return chosen


def wait_paths(service: Service, expected: dict[str, list[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while paths_chosen(service) != expected:
        assert time.monotonic() < deadline, (paths_chosen(service), service.log_text()[-3000:])
        time.sleep(0.05)


def test_the_service_runs_jobs_answers_and_restarts_on_paho_s_documented_paths(
    broker: Broker, service_factory: ServiceFactory, mqtt: TestClient,
) -> None:
    service = service_factory(env=DOCUMENTED_PATHS)
    assert paths_chosen(service)["att-job-manager"] == [False]  # the writer's connection
    events = mqtt.subscribe(service.topic("job-manager/events/#"))

    # a command gets its reply
    job = ok(mqtt, service, "job.add", {"name": "ipx", "script": "ipx-update",
                                        "trigger": "channel-up"})
    assert job["name"] == "ipx"
    ok(mqtt, service, "settings.set", {"interval_seconds": 0})

    # a notification runs a job, and its events are relayed
    mqtt.publish(service.notification_topic("channel-up"), {"id": "n-1", "channel": "BBC One"})
    executed = wait_view(mqtt, service, "executed", lambda v: v["total"] == 1)
    assert executed["rows"][0]["notification_id"] == "n-1"
    assert executed["rows"][0]["feedback"] == "IPX updated for channel BBC One"
    events.wait_for(lambda m: m.json()["type"] == "execution.succeeded")

    # a clean stop leaves nothing un-acknowledged in the service's session: taking the
    # session over, only a message published afterwards arrives
    service.stop()
    with TestClient(broker.url, client_id=service.client_id, clean_start=False,
                    session_expiry=600, manual_ack=True) as probe:
        notifications = probe.collect(service.notification_topic("+"))
        commands = probe.collect(service.topic("job-manager/commands/+/+"))
        mqtt.publish(service.notification_topic("channel-up"),
                     {"id": "n-2", "channel": "ITV"})
        notifications.wait_for(lambda m: m.json()["id"] == "n-2")
        assert [m.json()["id"] for m in notifications.messages()] == ["n-2"]
        assert commands.messages() == []
    # ... which the restarted service, still on the documented paths, runs once; n-1 is
    # not run again
    service.start()
    assert paths_chosen(service)["att-job-manager"] == [False, False]
    executed = wait_view(mqtt, service, "executed", lambda v: v["total"] == 2)
    assert sorted(row["notification_id"] for row in executed["rows"]) == ["n-1", "n-2"]
    assert wait_view(mqtt, service, "failed", lambda v: True)["total"] == 0
    assert '"mqtt.fast_paths_refused"' not in service.log_text()


def test_the_relay_takes_the_documented_paths_too(service_factory: ServiceFactory) -> None:
    service = service_factory(env=DOCUMENTED_PATHS)
    wait_paths(service, {"att-job-manager": [False], "att-job-manager.events": [False]},
               timeout=5.0)
