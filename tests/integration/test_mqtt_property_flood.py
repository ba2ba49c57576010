"""The real service (`python -m att_jm serve`, fast paths on: the default) and a real mosquitto,
against a PUBLISH carrying 200,000 empty MQTT v5 User Properties (1 MB, under the service's
Maximum Packet Size, so the broker forwards it): a notification (QoS 1 and QoS 0) and a
command (views.get, which even an auditor may publish) like that are handled as any other,
and the writer goes on answering and running jobs at once. paho's own parser, which the fast
path used to hand such a packet to, takes minutes over it (quadratic in the number of
properties): past the keepalive, so the broker dropped the connection before the PUBACK and
sent the message again, for ever.

Without a broker: tests/unit/test_mqtt_property_flood.py. paho's documented paths
(ATT_JM_MQTT_FAST_PATHS=false) have no such defence: docs/security.md. An instance's own
connection (a standby's read requests) refuses such a flood (the last test)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from helpers.broker import Broker
from helpers.mqtt import TestClient, paho_parses, publish_properties
from helpers.requests import ok, wait_view
from helpers.service import Service, ServiceFactory
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

from att_jm.config import parse_mqtt_url
from att_jm.mqtt.adapter import Inbound, ServiceConnection
from att_jm.mqtt.instances import InstanceConnection

FLOOD = 200_000
EMPTY_USER_PROPERTY = b"\x26\x00\x00\x00\x00"
#: How long a normal command may take to be answered after the flood: a few seconds (the
#: flood's own decoding takes milliseconds; paho's parser took minutes).
ANSWERED_WITHIN = 5.0


class PrePacked(Properties):
    """PUBLISH properties given as their packed bytes (paho's own `pack()` of 200,000 User
    Properties concatenates bytes one property at a time: quadratic, minutes), with the
    ResponseTopic and CorrelationData they hold."""

    _packed: bytes
    expected: tuple[str | None, bytes | None]

    def __init__(self, packed: bytes, response_topic: str | None,
                 correlation: bytes | None) -> None:
        # paho's __init__ and __setattr__ skipped
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)
        object.__setattr__(self, "expected", (response_topic, correlation))

    def pack(self) -> bytes:
        return self._packed

    def __repr__(self) -> str:
        return f"PrePacked({len(self._packed)} bytes)"

    __str__ = __repr__


def string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def flood(response_topic: str | None = None, correlation: bytes | None = None, *,
          count: int = FLOOD) -> PrePacked:
    """`count` empty User Properties, ContentType, and ResponseTopic and CorrelationData when
    given (in the middle and at the end of the flood)."""
    half = EMPTY_USER_PROPERTY * (count // 2)
    block = b"\x03" + string("application/json") + half
    if response_topic is not None:
        block += b"\x08" + string(response_topic)
    block += EMPTY_USER_PROPERTY * (count - count // 2)
    if correlation is not None:
        block += b"\x09" + string(correlation)
    length = bytes(VariableByteIntegers.encode(len(block)))  # type: ignore[no-untyped-call]
    return PrePacked(length + block, response_topic, correlation)


def writer_events(service: Service) -> list[str]:
    """The events the writer's process logged (its relay's carry a `process`)."""
    events = []
    for line in service.log_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "process" not in record:
                events.append(record.get("event", ""))
    return events


def test_a_flood_of_user_properties_is_handled_and_the_writer_goes_on_at_once(
    service_factory: ServiceFactory, mqtt: TestClient,
) -> None:
    service = service_factory()
    ok(mqtt, service, "job.add", {"name": "ipx", "script": "ipx-update",
                                  "trigger": "channel-up"})
    ok(mqtt, service, "settings.set", {"interval_seconds": 0})
    reply_topic = service.topic(f"job-manager/replies/tester/{uuid.uuid4().hex}")
    replies = mqtt.subscribe(reply_topic)

    # the flood: two notifications (QoS 1, QoS 0) and a command, each a 1 MB packet
    notification = service.notification_topic("channel-up")
    mqtt.publish(notification, {"id": "flood-1", "channel": "BBC One"}, properties=flood(),
                 timeout=10)
    mqtt.publish(notification, {"id": "flood-0", "channel": "BBC Two"}, qos=0,
                 properties=flood(), timeout=10)
    mqtt.publish(service.command_topic("views.get"), {"view": "jobs"},
                 properties=flood(reply_topic, b"flood-corr"), timeout=10)

    # a normal command right behind it is answered within seconds
    started = time.monotonic()
    jobs = ok(mqtt, service, "views.get", {"view": "jobs"}, timeout=ANSWERED_WITHIN)
    assert time.monotonic() - started < ANSWERED_WITHIN
    assert [row["name"] for row in jobs["rows"]] == ["ipx"]
    # ... and the flooded command was answered too, on its ResponseTopic with its
    # CorrelationData (it came first)
    flooded = replies.wait_for(timeout=ANSWERED_WITHIN)
    assert flooded.prop("CorrelationData") == b"flood-corr"
    assert flooded.json()["ok"] is True
    assert flooded.json()["result"] == jobs

    # a normal notification still runs its job, as the flooded ones did
    mqtt.publish(notification, {"id": "n-1", "channel": "ITV"})
    executed = wait_view(mqtt, service, "executed", lambda v: v["total"] == 3)
    assert sorted(row["notification_id"] for row in executed["rows"]) == [
        "flood-0", "flood-1", "n-1"]
    assert wait_view(mqtt, service, "failed", lambda v: True)["total"] == 0

    # one connection all along: nothing was dropped, refused or sent again
    events = writer_events(service)
    assert events.count("mqtt.connected") == 1, service.log_text()[-3000:]
    assert "mqtt.disconnected" not in events
    assert "mqtt.publish_refused" not in events


# The fast path against paho's documented paths, on the same messages from the broker ----------


class Receiver:
    """A ServiceConnection polled by the test's thread, and what it delivered."""

    def __init__(self, broker: Broker, client_id: str, *, fast: bool) -> None:
        self.received: list[Inbound] = []
        self.connection = ServiceConnection(
            parse_mqtt_url(broker.url), client_id=client_id, prefix="att",
            session_expiry_seconds=600, deliver=self.received.append, fast_paths=fast)
        assert self.connection.fast_paths is fast
        self.connection.start({"state": "online"}, {"state": "offline"})
        self.poll_until(lambda: self.connection.connected)

    def poll_until(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "condition not reached while polling"
            self.connection.poll(0.05)

    def receive(self, count: int) -> list[Inbound]:
        def enough() -> bool:
            self.connection.ack_all(self.received)
            return len(self.received) >= count

        self.poll_until(enough)
        return self.received


def test_user_properties_at_qos_0_and_1_are_decoded_by_the_fast_path_as_paho_decodes_them(
    broker: Broker, mqtt: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = Receiver(broker, "flood-fast", fast=True)
    documented = Receiver(broker, "flood-documented", fast=False)
    paho_parsed = paho_parses(monkeypatch)
    props = publish_properties

    notifications = "att/channel-manager/notifications"
    commands = "att/job-manager/commands/alice"
    sent: list[tuple[str, bytes, Any, int]] = [
        (f"{notifications}/up", b'{"id":"u-1"}', props(UserProperty=[("k", "v")]), 1),
        (f"{notifications}/up", b'{"id":"u-0"}', props(UserProperty=[("k", "v")]), 0),
        (f"{notifications}/up", b'{"id":"p-0"}', None, 0),
        (f"{commands}/views.get", b"{}", props(
            UserProperty=[("", ""), ("tr\u00e4ce", "x" * 300), ("k", "v")],
            ContentType="application/json", PayloadFormatIndicator=1,
            MessageExpiryInterval=600, ResponseTopic="att/job-manager/replies/alice/9",
            CorrelationData=b"\x00c"), 1),
        (f"{commands}/views.get", b"{}", props(
            ResponseTopic="att/job-manager/replies/alice/10", CorrelationData=b"d"), 0),
        # 2,000 User Properties around the ResponseTopic: ~40 ms for paho's parser
        (f"{commands}/job.add", b'{"name":"a"}',
         flood("att/job-manager/replies/a/1", b"corr", count=2000), 1),
        (f"{notifications}/up", b'{"id":"f-0"}', flood(count=2000), 0),
    ]
    for topic, payload, properties, qos in sent:
        mqtt.publish(topic, payload, qos=qos, properties=properties)
    got_fast = fast.receive(len(sent))
    got_documented = documented.receive(len(sent))

    def expected(properties: Properties | None) -> tuple[str | None, bytes | None]:
        if isinstance(properties, PrePacked):
            return properties.expected
        return (getattr(properties, "ResponseTopic", None),
                getattr(properties, "CorrelationData", None))

    def shape(message: Inbound) -> tuple[Any, ...]:
        return (message.topic, message.payload, message.response_topic, message.correlation,
                message.qos)

    assert [shape(m) for m in got_fast] == [shape(m) for m in got_documented]
    assert [shape(m) for m in got_fast] == [
        (topic.encode(), payload, *expected(properties), qos)
        for topic, payload, properties, qos in sent]
    # paho parsed every message of the documented connection, none of the fast one's
    assert paho_parsed.count(id(documented.connection.client)) == len(sent)
    assert paho_parsed.count(id(fast.connection.client)) == 0
    fast.connection.stop({"state": "offline"})
    documented.connection.stop({"state": "offline"})


# An instance's own connection (paho's path, on paho's thread) ---------------------------------


def test_an_instances_connection_refuses_a_flooded_request_and_answers_the_next_at_once(
    broker: Broker, mqtt: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A standby's read requests come through paho's parser on the instance's connection: a
    flood there is refused before that parser (the connection closes, reconnects within a
    second or two), and the next request is answered; with paho's parser it would have
    stalled that connection for minutes."""
    answered: list[bytes | None] = []

    def answer(topic: str, payload: bytes, response: str | None,
               correlation: bytes | None) -> dict[str, Any]:
        answered.append(correlation)
        return {"ok": True, "result": len(answered)}

    paho_parsed = paho_parses(monkeypatch)
    connection = InstanceConnection(
        parse_mqtt_url(broker.url), client_id="att-job-manager.jm-a",
        topic="att/job-manager/instances/jm-a/status", body=lambda: {"state": "standby"},
        requests="att/job-manager/instances/jm-a/commands/#", answer=answer, fast_paths=True)
    connection.start({"state": "offline", "reason": "lost"})
    try:
        assert connection.connected.wait(10)
        replies = mqtt.subscribe("att/job-manager/replies/alice/#")
        request = "att/job-manager/instances/jm-a/commands/alice/views.get"
        mqtt.publish(request, {"view": "jobs"}, properties=flood(
            "att/job-manager/replies/alice/flood", b"flooded"), timeout=10)
        started = time.monotonic()
        sent = 0
        while not answered:  # requests sent while it reconnects are lost (a clean session)
            assert time.monotonic() - started < ANSWERED_WITHIN, "no request answered"
            sent += 1
            mqtt.publish(request, {"view": "jobs"}, properties=publish_properties(
                ResponseTopic="att/job-manager/replies/alice/1",
                CorrelationData=b"normal-%d" % sent))
            time.sleep(0.2)
        reply = replies.wait_for(timeout=ANSWERED_WITHIN)
        assert reply.prop("CorrelationData") == answered[0] != b"flooded"
        assert b"flooded" not in answered
        assert paho_parsed.count(id(connection.client)) == len(answered)  # never the flood
    finally:
        connection.stop({"state": "offline"})
