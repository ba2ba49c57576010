"""A PUBLISH with very many MQTT v5 properties, without a broker: the fast path decodes any
property block in one linear pass (every property MQTT 5 allows on a PUBLISH, in any order
and number) to what paho's own parser makes of it, and never hands a well-formed packet to
paho's parser, whose time is quadratic in the number of properties (minutes for the ~200,000
empty User Properties a packet of the service's Maximum Packet Size can hold).

With a real broker and the real service: tests/integration/test_mqtt_property_flood.py."""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

from att_jm.mqtt.common import (
    PAHO_PROPERTY_LIMIT,
    FloodGuardClient,
    ServiceClient,
    _count_properties,
    _decode_publish,
)

TOPIC = b"att/channel-manager/notifications/channel-up"
COMMAND = b"att/job-manager/commands/auditor/views.get"
#: 200,000 empty User Properties: 1,000,000 bytes, under the service's Maximum Packet Size
#: (`inbound_packet_limit`: 1,115,136 bytes at the default payload limit).
FLOOD = 200_000
EMPTY_USER_PROPERTY = b"\x26\x00\x00\x00\x00"
#: A generous bound: the linear pass takes a few tens of ms for FLOOD properties, paho's
#: quadratic parser minutes. It guards against quadratic behaviour coming back, it is not a
#: benchmark (a loaded CI machine stays far under it).
LINEAR_BOUND_SECONDS = 0.5

#: The properties MQTT 5 allows on a PUBLISH: paho's name -> identifier.
PUBLISH_PROPERTIES = {
    "PayloadFormatIndicator": 0x01,
    "MessageExpiryInterval": 0x02,
    "ContentType": 0x03,
    "ResponseTopic": 0x08,
    "CorrelationData": 0x09,
    "SubscriptionIdentifier": 0x0B,
    "TopicAlias": 0x23,
    "UserProperty": 0x26,
}
REPEATABLE = {"SubscriptionIdentifier", "UserProperty"}


def varint(value: int) -> bytes:
    return bytes(VariableByteIntegers.encode(value))  # type: ignore[no-untyped-call]


def raw_packet(topic: bytes, mid: int | None, block: bytes, payload: bytes) -> bytearray:
    """A v5 PUBLISH's variable header and payload (what follows the fixed header) with
    property block `block` (without its length); `mid` None: QoS 0 (no packet id)."""
    header = len(topic).to_bytes(2, "big") + topic
    if mid is not None:
        header += mid.to_bytes(2, "big")
    # a bytearray, as paho's `_in_packet["packet"]` is
    return bytearray(header + varint(len(block)) + block + payload)


def string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def flood_block(count: int = FLOOD) -> bytes:
    """`count` empty User Properties between a ResponseTopic, a CorrelationData and the rest
    of a command's properties."""
    return (b"\x03" + string("application/json") + EMPTY_USER_PROPERTY * (count // 2)
            + b"\x08" + string("att/job-manager/replies/auditor/r-1")
            + EMPTY_USER_PROPERTY * (count - count // 2)
            + b"\x09" + string(b"\x00corr\xff") + b"\x02\x00\x00\x00\x3c")


def paho_decoded(packet: bytes | bytearray, qos: int = 1) -> tuple[Any, ...]:
    """What paho's own parser makes of `packet`: (mid, topic, payload, ResponseTopic,
    CorrelationData), with its Properties (Properties.unpack, as paho's PUBLISH decoding
    calls it); raises what paho raises for a malformed block."""
    size = int.from_bytes(packet[:2], "big")
    topic, pos = bytes(packet[2:2 + size]), 2 + size
    mid = 0
    if qos:
        mid, pos = int.from_bytes(packet[pos:pos + 2], "big"), pos + 2
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    _, used = properties.unpack(bytes(packet[pos:]))  # type: ignore[no-untyped-call]
    return (mid, topic, bytes(packet[pos + used:]), getattr(properties, "ResponseTopic", None),
            getattr(properties, "CorrelationData", None))


def new_service_client() -> ServiceClient:
    return ServiceClient(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)


def counted_paho_parser(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """paho's own parser replaced by one that only counts its calls (the list it appends to)."""
    calls: list[int] = []

    def paho_parser(self: Client) -> MQTTErrorCode:
        calls.append(1)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    monkeypatch.setattr(Client, "_handle_publish", paho_parser)
    return calls


def assert_refused_at_once(client: Client, calls: list[int]) -> None:
    """The packet in `client._in_packet` is refused as malformed, in linear time, logged,
    never parsed by paho (`calls`: `counted_paho_parser`'s)."""
    started = time.perf_counter()
    with structlog.testing.capture_logs() as logs:
        assert client._handle_publish() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert time.perf_counter() - started < LINEAR_BOUND_SECONDS
    assert calls == []
    assert [line["event"] for line in logs] == ["mqtt.publish_refused"]


# The flood -------------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [1, 0])
def test_two_hundred_thousand_user_properties_decode_in_linear_time(qos: int) -> None:
    payload = b'{"view":"jobs"}'
    data = raw_packet(COMMAND, 4242 if qos else None, flood_block(), payload)
    assert 1_000_000 < len(data) < 1_115_136
    started = time.perf_counter()
    decoded = _decode_publish(data, qos)
    elapsed = time.perf_counter() - started
    assert decoded == (4242 if qos else 0, COMMAND, payload,
                       "att/job-manager/replies/auditor/r-1", b"\x00corr\xff")
    assert elapsed < LINEAR_BOUND_SECONDS, f"{elapsed:.3f} s for {FLOOD} properties"


def test_the_flood_with_values_and_a_large_payload_is_decoded_whole() -> None:
    pairs = b"".join(b"\x26" + string(f"k{n}") + string("v\u00e9" * (n % 5))
                     for n in range(20_000))
    payload = bytes(range(256)) * 1000
    data = raw_packet(TOPIC, 1, pairs + b"\x0b\x01" + pairs, payload)
    started = time.perf_counter()
    assert _decode_publish(data) == (1, TOPIC, payload, None, None)
    assert time.perf_counter() - started < LINEAR_BOUND_SECONDS


@pytest.mark.parametrize("command", [0x32, 0x30, 0x3A, 0x33, 0x31],
                         ids=["qos1", "qos0", "qos1-dup", "qos1-retain", "qos0-retain"])
def test_the_service_client_hands_the_flood_to_its_receiver_never_to_paho(
    monkeypatch: pytest.MonkeyPatch, command: int,
) -> None:
    def paho_parser(self: Client) -> MQTTErrorCode:
        raise AssertionError("the packet went to paho's parser")

    monkeypatch.setattr(Client, "_handle_publish", paho_parser)
    client = new_service_client()
    qos = (command >> 1) & 3
    got: list[tuple[Any, ...]] = []
    client.on_inbound = lambda *args: got.append(args)
    client._in_packet["command"] = command
    client._in_packet["packet"] = raw_packet(COMMAND, 9 if qos else None, flood_block(), b"{}")
    started = time.perf_counter()
    assert client._handle_publish() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert time.perf_counter() - started < LINEAR_BOUND_SECONDS
    assert got == [(9 if qos else 0, COMMAND, b"{}", "att/job-manager/replies/auditor/r-1",
                    b"\x00corr\xff", bool(command & 1))]  # mid 0: QoS 0; the RETAIN flag


def test_a_malformed_flood_is_refused_as_paho_refuses_a_malformed_packet_without_its_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = counted_paho_parser(monkeypatch)
    client = new_service_client()
    client.on_inbound = lambda *args: pytest.fail("a malformed packet was delivered")
    client._in_packet["command"] = 0x32
    # the flood, then an identifier not allowed on a PUBLISH (Session Expiry Interval)
    client._in_packet["packet"] = raw_packet(
        TOPIC, 3, flood_block() + b"\x11\x00\x00\x00\x01", b"{}")
    assert_refused_at_once(client, calls)
    # a malformed packet with few properties still goes to paho, as before
    client._in_packet["packet"] = raw_packet(TOPIC, 3, EMPTY_USER_PROPERTY * 10 + b"\x11", b"")
    assert client._handle_publish() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert calls == [1]


@pytest.mark.parametrize("command", [0x32, 0x30], ids=["qos1", "qos0"])
def test_the_guard_client_lets_paho_parse_all_but_a_flood(
    monkeypatch: pytest.MonkeyPatch, command: int,
) -> None:
    """An instance's connection (paho's own path, on its own thread): well-formed floods are
    refused too, before paho's parser; anything with fewer properties goes to paho."""
    calls = counted_paho_parser(monkeypatch)
    client = FloodGuardClient(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    mid = 3 if command & 0x06 else None
    client._in_packet["command"] = command
    client._in_packet["packet"] = raw_packet(COMMAND, mid, flood_block(), b"{}")
    assert_refused_at_once(client, calls)
    for count in (0, PAHO_PROPERTY_LIMIT):
        client._in_packet["packet"] = raw_packet(COMMAND, mid, EMPTY_USER_PROPERTY * count,
                                                 b"{}")
        assert client._handle_publish() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert calls == [1, 1]


def test_paho_closes_the_connection_on_that_refusal_as_on_a_malformed_packet() -> None:
    # paho's own reading loop over a socket: the code `_handle_publish` returns is acted on
    client = new_service_client()
    client.on_inbound = lambda *args: pytest.fail("a malformed packet was delivered")
    lost: list[Any] = []
    client.on_disconnect = lambda *args: lost.append(args[3])
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    body = raw_packet(TOPIC, 3, flood_block() + b"\x11\x00\x00\x00\x01", b"{}")
    sender = threading.Thread(target=broker.sendall, args=(b"\x32" + varint(len(body)) + body,))
    sender.start()
    started = time.monotonic()
    deadline = started + 10
    rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    try:
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and time.monotonic() < deadline:
            select.select([ours], [], [], 0.1)
            rc = client.loop_read()
    finally:
        sender.join(10)
        broker.close()
    assert rc == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert time.monotonic() - started < 5  # 1 MB through a socket pair: paho's parse took minutes
    assert client.socket() is None  # closed
    assert len(lost) == 1 and lost[0].is_failure


def test_properties_are_counted_up_to_the_first_malformed_one_and_the_limit() -> None:
    limit = PAHO_PROPERTY_LIMIT
    assert _count_properties(raw_packet(TOPIC, 1, b"", b"x"), 1, limit) == 0
    assert _count_properties(raw_packet(TOPIC, None, flood_block(20), b""), 0, limit) == 24
    assert _count_properties(raw_packet(TOPIC, 1, flood_block(), b""), 1, limit) == limit + 1
    cut = raw_packet(TOPIC, 1, EMPTY_USER_PROPERTY * 7 + b"\x26\x00\x05ab", b"")
    assert _count_properties(cut, 1, limit) == 8
    assert _count_properties(bytearray(b"\x00\x05ab"), 1, limit) == 0


# Every property a PUBLISH may carry, mixed: the same values as paho's parser ------------------


def random_text(rng: random.Random, longest: int) -> str:
    alphabet = "abcXYZ019/+#-_ \u00e9\u00fc\u4e2d\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(longest + 1)))


#: Property name -> a value paho accepts for it (its range checks, valid UTF-8).
RANDOM_VALUES: dict[str, Callable[[random.Random], Any]] = {
    "PayloadFormatIndicator": lambda rng: rng.randrange(2),
    "MessageExpiryInterval": lambda rng: rng.choice([0, 1, 0xFFFFFFFF, rng.randrange(1 << 32)]),
    "TopicAlias": lambda rng: rng.choice([1, 0xFFFF, rng.randrange(1, 1 << 16)]),
    # variable byte integers of 1 to 4 bytes, at their edges
    "SubscriptionIdentifier": lambda rng: rng.choice([
        1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455, rng.randrange(1, 268435456)]),
    "CorrelationData": lambda rng: rng.randbytes(rng.choice([0, 1, 16, 300, 4000])),
    "UserProperty": lambda rng: (random_text(rng, 12), random_text(rng, rng.choice([0, 8, 200]))),
    "ContentType": lambda rng: random_text(rng, rng.choice([0, 20, 300])),
    "ResponseTopic": lambda rng: random_text(rng, rng.choice([0, 20, 300])),
}


def random_block(rng: random.Random) -> tuple[bytes, list[tuple[str, Any]]]:
    """A property block (without its length) of every kind of property, in random order and
    number (single ones at most once, as the protocol says), encoded one by one with paho's
    own `writeProperty`."""
    chosen: list[tuple[str, Any]] = []
    for name in PUBLISH_PROPERTIES:
        times = rng.choice([0, 1, 1, 3, 40]) if name in REPEATABLE else rng.randrange(2)
        chosen += [(name, RANDOM_VALUES[name](rng)) for _ in range(times)]
    rng.shuffle(chosen)
    writer = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    block = b"".join(
        bytes(writer.writeProperty(  # type: ignore[no-untyped-call]
            PUBLISH_PROPERTIES[name], writer.properties[PUBLISH_PROPERTIES[name]][0], value))
        for name, value in chosen)
    return block, chosen


@pytest.mark.parametrize("seed", range(300))
def test_mixed_property_blocks_decode_to_what_paho_decodes(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 -- test data, not secrets
    block, chosen = random_block(rng)
    qos = rng.choice([0, 1, 1])
    topic = random_text(rng, 40).encode()
    payload = rng.randbytes(rng.choice([0, 1, 50, 5000]))
    data = raw_packet(topic, rng.randrange(1, 1 << 16) if qos else None, block, payload)
    expected = paho_decoded(data, qos)
    assert _decode_publish(data, qos) == expected
    values = dict(chosen)
    assert expected[3:] == (values.get("ResponseTopic"), values.get("CorrelationData"))


def test_every_property_packed_by_paho_itself_decodes_to_what_paho_decodes() -> None:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.PayloadFormatIndicator = 1
    properties.MessageExpiryInterval = 3600
    properties.ContentType = "application/json"
    properties.ResponseTopic = "att/job-manager/replies/alice/\u00e9"
    properties.CorrelationData = b"\x00\x01"
    properties.SubscriptionIdentifier = 268435455
    properties.SubscriptionIdentifier = 5
    properties.TopicAlias = 7
    properties.UserProperty = [("a", "1"), ("", ""), ("a", "2")]
    block = bytes(properties.pack())  # type: ignore[no-untyped-call]
    data = bytearray(len(TOPIC).to_bytes(2, "big") + TOPIC + b"\x00\x07" + block + b"{}")
    assert _decode_publish(data) == paho_decoded(data) == (
        7, TOPIC, b"{}", "att/job-manager/replies/alice/\u00e9", b"\x00\x01")


def block_of(length: int) -> bytes:
    """A property block of exactly `length` bytes, of few (large) User Properties."""
    parts: list[bytes] = []
    left = length
    while left > 65540:
        parts.append(b"\x26" + string(b"k" * 60000) + string(b""))
        left -= 60005
    if left:
        assert left >= 5
        parts.append(b"\x26" + string(b"k" * (left - 5)) + string(b""))
    return b"".join(parts)


@pytest.mark.parametrize("length", [0, 127, 128, 16383, 16384, 2_097_151, 2_097_152])
def test_property_blocks_of_every_length_encoding(length: int) -> None:
    # the block's length takes 1 to 4 bytes
    block = block_of(length)
    assert len(block) == length
    data = raw_packet(TOPIC, 1, block, b"{}")
    assert _decode_publish(data) == paho_decoded(data) == (1, TOPIC, b"{}", None, None)


# Malformed blocks: left to paho, as before ------------------------------------------------


@pytest.mark.parametrize("block", [
    EMPTY_USER_PROPERTY * 100 + b"\x26\x00\x05ab",  # the name runs past the block
    EMPTY_USER_PROPERTY * 100 + b"\x26\x00\x00\x00\x05ab",  # the value runs past the block
    b"\x26\x00\x00",  # a User Property without its value
    EMPTY_USER_PROPERTY * 100 + b"\x11\x00\x00\x00\x01",  # Session Expiry: not on a PUBLISH
    b"\x0b\x80\x80\x80\x80\x01",  # a variable byte integer of five bytes
    b"\x0b\x80",  # a variable byte integer cut
    b"\xa6\x00\x00\x00\x00\x00",  # a User Property's identifier written in two bytes
    b"\x08\x00\x02\xff\xfe",  # a ResponseTopic that is not UTF-8
    b"\x09\x00\x09ab",  # CorrelationData past the block
    b"\x02\x00\x00",  # a Message Expiry Interval cut
    b"\xff",  # no such property
])
def test_a_malformed_block_is_left_to_paho(block: bytes) -> None:
    assert _decode_publish(raw_packet(TOPIC, 1, block, b"")) is None
    assert _decode_publish(raw_packet(TOPIC, None, block, b""), 0) is None


def test_a_block_longer_than_the_packet_or_its_length_too_long_is_left_to_paho() -> None:
    data = raw_packet(TOPIC, 1, EMPTY_USER_PROPERTY, b"")
    assert _decode_publish(data[:-1]) is None
    header = len(TOPIC).to_bytes(2, "big") + TOPIC + b"\x00\x01"
    assert _decode_publish(bytearray(header + b"\x80\x80\x80\x80\x00")) is None
    assert _decode_publish(bytearray(header + b"\x85\x00" + b"\x01\x00" * 2)) is None


@pytest.mark.parametrize("seed", range(200))
def test_damaged_packets_never_raise_and_agree_with_paho_when_both_decode(seed: int) -> None:
    rng = random.Random(10_000 + seed)  # noqa: S311 -- test data, not secrets
    block, _ = random_block(rng)
    data = raw_packet(TOPIC, 1, block, b"{}")
    for _ in range(rng.randrange(1, 4)):  # flip, drop or cut
        if not data:
            break
        where = rng.randrange(len(data))
        action = rng.randrange(3)
        if action == 0:
            data[where] = rng.randrange(256)
        elif action == 1:
            del data[where]
        else:
            del data[where:]
    ours = _decode_publish(data)
    try:
        theirs = paho_decoded(data)
    except Exception:  # noqa: BLE001 -- paho refuses it: ours may still skip what it checks
        return
    if ours is not None:
        assert ours == theirs
