"""A broker restart loses nothing: the session, its queue and the subscriptions come back."""

from __future__ import annotations

from helpers.broker import Broker
from helpers.mqtt import TestClient

from .conftest import Operator


def test_the_service_reconnects_and_resubscribes_after_a_broker_restart(
    operator: Operator, broker: Broker
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "t")
    broker.stop()
    broker.start()
    with TestClient(broker.url) as client:
        fresh = Operator(operator.service, client)
        fresh.notify("t", {"id": "after-restart", "channel": "c"})
        executed = fresh.wait_view("executed", lambda v: v["total"] == 1, timeout=20)
    assert executed["rows"][0]["notification_id"] == "after-restart"


def test_notifications_sent_while_the_service_is_down_survive_a_broker_restart(
    operator: Operator, broker: Broker
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "t")
    operator.service.stop()
    sent = [f"offline-{number}" for number in range(150)]
    for nid in sent:
        operator.notify("t", {"id": nid, "channel": "c"})
    operator.client.close()
    broker.stop()  # SIGTERM: mosquitto saves the sessions and their queues
    broker.start()
    operator.service.start()
    with TestClient(broker.url) as client:
        fresh = Operator(operator.service, client)
        executed = fresh.wait_view("executed", lambda v: v["total"] == len(sent), timeout=60)
    assert sorted(row["notification_id"] for row in executed["rows"]) == sorted(sent)
