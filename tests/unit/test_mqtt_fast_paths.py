"""The writer's paho fast paths: PUBLISH decoding and packed reply properties, against
what paho itself encodes and decodes."""

from __future__ import annotations

import pytest
from paho.mqtt.client import Client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from att_jm.mqtt.common import ServiceClient, _decode_publish, reply_properties


def packet(topic: bytes, mid: int, properties: Properties | None, payload: bytes) -> bytes:
    """A v5 PUBLISH's variable header and payload, as paho would send them."""
    packed = b"\x00" if properties is None else bytes(properties.pack())  # type: ignore[no-untyped-call]
    return len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + packed + payload


def props(**values: object) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def test_the_service_client_still_finds_the_paho_internals_it_relies_on() -> None:
    for name in ("_handle_publish", "_packet_queue", "_send_puback"):
        assert name in vars(Client)
    assert "_handle_publish" in vars(ServiceClient)


def test_a_plain_notification_is_decoded() -> None:
    data = packet(b"att/channel-manager/notifications/up", 7, None, b'{"id":"n-1"}')
    assert _decode_publish(data) == (
        7, b"att/channel-manager/notifications/up", b'{"id":"n-1"}', None, None
    )


def test_a_command_with_its_request_properties_is_decoded() -> None:
    properties = props(ContentType="application/json", ResponseTopic="att/job-manager/replies/a/1",
                       CorrelationData=b"\x00\xffcorr", MessageExpiryInterval=30,
                       PayloadFormatIndicator=1)
    data = packet(b"att/job-manager/commands/a/job.add", 65535, properties, b"{}")
    assert _decode_publish(data) == (
        65535, b"att/job-manager/commands/a/job.add", b"{}", "att/job-manager/replies/a/1",
        b"\x00\xffcorr",
    )


def test_a_payload_of_any_size_and_an_invalid_utf8_topic_are_kept_as_bytes() -> None:
    payload = b"x" * 300_000
    data = packet(b"att/channel-manager/notifications/\xff", 1, props(CorrelationData=b""),
                  payload)
    assert _decode_publish(data) == (1, b"att/channel-manager/notifications/\xff", payload, None,
                                     b"")


@pytest.mark.parametrize("properties", [
    props(UserProperty=[("k", "v")]),
    props(TopicAlias=3),
    props(SubscriptionIdentifier=5),
])
def test_other_properties_are_left_to_paho(properties: Properties) -> None:
    assert _decode_publish(packet(b"t", 1, properties, b"{}")) is None


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\x05ab",  # the topic is cut
    packet(b"t", 1, None, b"")[:4],  # no property length
    b"\x00\x01t\x00\x01\x05\x08\x00\x09ab",  # a property longer than the packet
    b"\x00\x01t\x00\x01\x04\x08\x00\x02\xff\xfe",  # a ResponseTopic that is not UTF-8
    packet(b"t", 0, None, b"{}"),  # packet id 0 is not allowed at QoS 1
])
def test_a_malformed_packet_is_left_to_paho(data: bytes) -> None:
    assert _decode_publish(data) is None


@pytest.mark.parametrize("correlation", [None, b"", b"\x00\x01", b"c" * 300])
def test_reply_properties_pack_like_paho(correlation: bytes | None) -> None:
    expected = props(ContentType="application/json")
    if correlation is not None:
        expected.CorrelationData = correlation
    assert reply_properties(correlation).pack() == bytes(expected.pack())  # type: ignore[no-untyped-call]
    decoded = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    decoded.unpack(reply_properties(correlation).pack())  # type: ignore[no-untyped-call]
    assert getattr(decoded, "ContentType", None) == "application/json"
    assert getattr(decoded, "CorrelationData", None) == correlation
