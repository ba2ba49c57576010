"""The service's MQTT connection, driven by its caller's thread, against a real mosquitto."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from helpers.broker import Broker
from helpers.mqtt import TestClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from att_jm.config import parse_mqtt_url
from att_jm.mqtt.adapter import Inbound, ServiceConnection

PREFIX = "att"


class Harness:
    """A ServiceConnection plus what it delivered, polled by the test's own thread."""

    def __init__(self, broker: Broker, client_id: str = "conn-under-test") -> None:
        self.received: list[Inbound] = []
        self.connects = 0
        self.connection = ServiceConnection(
            parse_mqtt_url(broker.url), client_id=client_id, prefix=PREFIX,
            session_expiry_seconds=600, deliver=self.received.append,
            on_connect=self._connected,
        )

    def _connected(self) -> None:
        self.connects += 1

    def poll_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached while polling")
            self.connection.poll(0.05)


def connected(broker: Broker, client_id: str = "conn-under-test") -> Harness:
    h = Harness(broker, client_id)
    h.connection.start({"state": "online"}, {"state": "offline"})
    h.poll_until(lambda: h.connection.connected)
    return h


@pytest.fixture
def harness(broker: Broker) -> Iterator[Harness]:
    h = connected(broker)
    yield h
    h.connection.stop({"state": "offline"})


def notification_topic(n: int) -> str:
    return f"{PREFIX}/channel-manager/notifications/t{n % 3}"


def test_a_burst_arrives_complete_in_order_with_its_properties(
    harness: Harness, mqtt: TestClient
) -> None:
    count = 3000
    for n in range(count):  # fire and forget: the broker queues them
        mqtt.client.publish(notification_topic(n), f'{{"id": "n-{n}", "pad": "{"x" * (n % 700)}"}}',
                            qos=1)
    acked = 0

    def ack_and_check() -> bool:  # the broker sends at most ReceiveMaximum un-acked ones
        nonlocal acked
        for message in harness.received[acked:]:
            harness.connection.ack(message)
        acked = len(harness.received)
        return acked >= count

    harness.poll_until(ack_and_check, timeout=30)
    assert [m.payload for m in harness.received] == [
        f'{{"id": "n-{n}", "pad": "{"x" * (n % 700)}"}}'.encode() for n in range(count)
    ]
    assert [m.topic for m in harness.received] == [
        notification_topic(n).encode() for n in range(count)
    ]
    assert {m.generation for m in harness.received} == {1}


def test_unacknowledged_messages_come_back_after_a_reconnect_and_acked_ones_do_not(
    broker: Broker, mqtt: TestClient
) -> None:
    first = connected(broker, "conn-session")
    for n in range(10):
        mqtt.publish(notification_topic(n), {"id": f"n-{n}"})
    first.poll_until(lambda: len(first.received) == 10)
    for message in first.received[:4]:
        first.connection.ack(message)
    first.connection.poll(0.2)
    sock = first.connection.client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the connection dies without a DISCONNECT
    first.poll_until(lambda: first.connects == 2, timeout=15)
    first.poll_until(lambda: len(first.received) >= 16, timeout=15)
    again = [m.payload for m in first.received[10:]]
    assert again == [f'{{"id":"n-{n}"}}'.encode() for n in range(4, 10)]
    assert {m.generation for m in first.received[10:]} == {2}
    first.connection.ack(first.received[0])  # an ack of the old connection is dropped
    first.connection.stop({"state": "offline"})


def test_a_reply_with_correlation_data_reaches_the_requester(
    harness: Harness, mqtt: TestClient
) -> None:
    replies = mqtt.subscribe(f"{PREFIX}/job-manager/replies/tester/#")
    harness.connection.reply(f"{PREFIX}/job-manager/replies/tester/1", b"corr-1", {"ok": True})
    harness.connection.poll(0.05)
    message = replies.wait_for(lambda m: True, timeout=10)
    assert message.json() == {"ok": True}
    assert message.prop("CorrelationData") == b"corr-1"


def test_await_acks_returns_once_the_broker_acknowledged_the_replies(
    harness: Harness, mqtt: TestClient
) -> None:
    replies = mqtt.subscribe(f"{PREFIX}/job-manager/replies/tester/#")
    mids = [harness.connection.reply(f"{PREFIX}/job-manager/replies/tester/{n}", b"c", {"n": n})
            for n in range(3)]
    assert all(isinstance(mid, int) for mid in mids)
    began = time.monotonic()
    harness.connection.await_acks([mid for mid in mids if mid is not None], 5.0)
    assert time.monotonic() - began < 1.0  # the PUBACKs, not the timeout
    assert len(replies.wait_for_count(3, timeout=10)) == 3


def test_await_acks_gives_up_after_its_timeout_or_when_something_arrives(
    harness: Harness, mqtt: TestClient
) -> None:
    never = 65_000  # no message with this id was published: no PUBACK comes
    began = time.monotonic()
    harness.connection.await_acks([never], 0.2)
    assert 0.2 <= time.monotonic() - began < 2.0
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"x")
        began = time.monotonic()
        harness.connection.await_acks([never], 5.0, read_fd)  # a wake descriptor is readable
        assert time.monotonic() - began < 1.0
    finally:
        os.close(read_fd)
        os.close(write_fd)
    mqtt.client.publish(notification_topic(1), b'{"id": "n-1"}', qos=1)
    began = time.monotonic()
    harness.connection.await_acks([never], 5.0)  # a message arrives
    assert time.monotonic() - began < 2.0
    assert [m.payload for m in harness.received] == [b'{"id": "n-1"}']


def test_poll_wakes_up_at_once_when_its_wake_descriptor_becomes_readable(
    harness: Harness,
) -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"x")
        started = time.monotonic()
        harness.connection.poll(5.0, read_fd)
        assert time.monotonic() - started < 1.0
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_it_reconnects_after_a_broker_restart_and_republishes_its_online_status(
    broker: Broker, mqtt: TestClient
) -> None:
    h = connected(broker, "conn-restart")
    broker.stop()
    h.poll_until(lambda: not h.connection.connected, timeout=15)
    broker.start()
    h.poll_until(lambda: h.connects == 2, timeout=20)
    with TestClient(broker.url) as watcher:
        assert watcher.retained(f"{PREFIX}/job-manager/status") == {"state": "online"}
        watcher.publish(notification_topic(1), {"id": "after-restart"})
        h.poll_until(lambda: any(m.payload == b'{"id":"after-restart"}' for m in h.received))
    h.connection.stop({"state": "offline"})
    with TestClient(broker.url) as watcher:
        assert watcher.retained(f"{PREFIX}/job-manager/status") == {"state": "offline"}


def test_commands_with_any_properties_arrive_with_their_reply_topic_and_correlation(
    harness: Harness, mqtt: TestClient
) -> None:
    # Plain request properties take the fast path; a UserProperty sends it through paho.
    topic = f"{PREFIX}/job-manager/commands/alice/views.get"
    for user_property in (False, True):
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = f"{PREFIX}/job-manager/replies/alice/x"
        properties.CorrelationData = b"corr-%d" % user_property
        if user_property:
            properties.UserProperty = [("trace", "1")]
        mqtt.publish(topic, {"view": "jobs"}, properties=properties)
    harness.poll_until(lambda: len(harness.received) == 2)
    for message, user_property in zip(harness.received, (False, True), strict=True):
        assert message.topic == topic.encode()
        assert message.payload == b'{"view":"jobs"}'
        assert message.response_topic == f"{PREFIX}/job-manager/replies/alice/x"
        assert message.correlation == b"corr-%d" % user_property
        assert message.qos == 1


def test_one_write_acknowledges_a_whole_batch_and_nothing_comes_back(
    broker: Broker, mqtt: TestClient
) -> None:
    first = connected(broker, "conn-batch-ack")
    for n in range(50):
        mqtt.publish(notification_topic(n), {"id": f"n-{n}"})
    first.poll_until(lambda: len(first.received) == 50)
    first.connection.ack_all(first.received)
    first.connection.poll(0.2)
    first.connection.stop({"state": "offline"})
    again = connected(broker, "conn-batch-ack")
    # The broker sends what the session still holds at the reconnect, before anything
    # published later: once this one arrived, nothing else came back.
    mqtt.publish(notification_topic(0), {"id": "after"})
    again.poll_until(lambda: any(m.payload == b'{"id":"after"}' for m in again.received))
    assert [m.payload for m in again.received] == [b'{"id":"after"}']
    again.connection.stop({"state": "offline"})
