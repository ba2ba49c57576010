"""A clean stop is always clean: 100 SIGTERMs right after activity, each leaving the retained
status `offline` (not the Last Will's `lost`) and a normal DISCONNECT in the broker's log.

Before: about one clean stop in ten closed the socket with unread bytes, mosquitto logged
"disconnected due to out of memory" and published the Last Will."""

from __future__ import annotations

import re

import orjson
from helpers.broker import Broker
from helpers.mqtt import TestClient
from helpers.service import ServiceFactory

STOPS = 100


def _status(client: TestClient, topic: str) -> dict[str, object]:
    subscription = client.subscribe(topic)
    try:
        message = subscription.wait_for(lambda m: True, 5)
    finally:
        subscription.unsubscribe()
    decoded = orjson.loads(message.payload)
    assert isinstance(decoded, dict)
    return decoded


def test_every_stop_right_after_activity_is_clean(
    broker: Broker, service_factory: ServiceFactory, mqtt: TestClient,
) -> None:
    service = service_factory()
    mqtt.request(service.command_topic("job.add"),
                 {"name": "ipx", "script": "ipx-update", "trigger": "t"})
    mqtt.request(service.command_topic("settings.set"), {"interval_seconds": 0})
    with TestClient(broker.url) as burst:
        for stop in range(STOPS):
            if stop:
                service.start()
            for n in range(20):  # activity: events and views on their way, a script running
                burst.publish(service.notification_topic("t"),
                              {"id": f"s{stop}-{n}", "channel": "c"}, qos=0)
            burst.publish(service.command_topic("views.get"), {"view": "queue"})
            service.stop()
            status = _status(mqtt, service.status_topic)
            assert status.get("state") == "offline" and "reason" not in status, (stop, status)
    log = broker.log_text()
    unclean = re.findall(r"Client att-job-manager(?:\.events)? (?:disconnected due to|"
                        r"closed its connection)[^\n]*", log)
    assert unclean == []
    assert log.count("Client att-job-manager disconnected.") == STOPS
    starts = service.log_text().count("--- start #")
    assert starts == STOPS
