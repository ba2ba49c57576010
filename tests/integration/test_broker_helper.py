"""The test broker behaves like the shipped config: it restarts in place and persists sessions."""

from __future__ import annotations

import time
from pathlib import Path

from helpers.broker import Broker, shipped_settings
from helpers.mqtt import TestClient

SESSION_EXPIRY = 3600
AUTOSAVE_INTERVAL = 100  # mosquitto.conf: autosave_on_changes true, autosave_interval 100


def wait_for_file(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.01)


def persistent_consumer(broker: Broker) -> TestClient:
    """A consumer like the service's: persistent session, PUBACK only when it says so."""
    return TestClient(
        broker.url,
        client_id="helper-consumer",
        clean_start=False,
        session_expiry=SESSION_EXPIRY,
        manual_ack=True,
    )


def test_generated_config_keeps_the_shipped_delivery_and_persistence_settings(
    broker: Broker,
) -> None:
    config = broker.config_path.read_text().splitlines()
    for line in shipped_settings():
        assert line in config
    for line in (
        "persistence true",
        "autosave_on_changes true",
        f"autosave_interval {AUTOSAVE_INTERVAL}",
        "max_queued_messages 0",
        "set_tcp_nodelay true",
    ):
        assert line in config
    assert f"listener {broker.port} 127.0.0.1" in config
    assert broker.port != 1883


def test_broker_stops_and_restarts_on_the_same_port_keeping_retained_messages(
    broker: Broker,
) -> None:
    port = broker.port
    with TestClient(broker.url) as client:
        client.publish("helper/retained", {"n": 1}, retain=True)

    broker.stop()
    assert not broker.running
    broker.start()

    assert broker.running
    assert broker.port == port
    with TestClient(broker.url) as client:
        assert client.retained("helper/retained") == {"n": 1}


def test_unacked_and_queued_messages_of_a_persistent_session_survive_a_broker_sigkill(
    broker: Broker,
) -> None:
    consumer = persistent_consumer(broker).connect()
    received = consumer.subscribe("helper/work/#")
    with TestClient(broker.url) as producer:
        producer.publish("helper/work/first", b"first")
        first = received.wait_for(lambda m: m.payload == b"first")
        assert not first.dup
        consumer.drop()  # the consumer crashes without acking `first`
        # Queued for the offline session. More than `autosave_interval` changes make mosquitto
        # save its database (a message in flight to an ONLINE client is not such a change).
        for n in range(AUTOSAVE_INTERVAL + 20):
            producer.publish("helper/work/queued", str(n))
    wait_for_file(broker.persistence_dir / "mosquitto.db")

    broker.kill()
    broker.start()

    resumed = persistent_consumer(broker)
    again = resumed.collect("helper/work/#")
    resumed.connect()
    try:
        redelivered = again.wait_for(lambda m: m.payload == b"first")
        assert redelivered.dup
        assert redelivered.topic == "helper/work/first"
        queued = again.wait_for(lambda m: m.topic == "helper/work/queued")
        assert queued.payload == b"0"  # queued ones come back too, oldest first
    finally:
        resumed.close()
