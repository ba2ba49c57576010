"""The paho fast paths without a broker: PUBLISH decoding and packed reply properties
against what paho itself encodes and decodes, the signatures of the paho members they
override or call, the tested range and the switch to paho's documented paths.

Their behaviour against a real mosquitto: tests/integration/test_mqtt_paho_internals.py."""

from __future__ import annotations

import inspect
import threading
import tomllib
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import paho.mqtt
import pytest
import structlog
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.config import MqttEndpoint
from att_jm.mqtt import fast_paths
from att_jm.mqtt.adapter import ServiceConnection
from att_jm.mqtt.common import (
    BufferedClient,
    PublishingClient,
    ServiceClient,
    _decode_publish,
    reply_properties,
)
from att_jm.mqtt.fast_paths import (
    FAST_PATHS_ENV,
    PRIVATE_METHODS,
    TESTED_PAHO,
    TESTED_PAHO_SPEC,
    problems,
    use_fast_paths,
)
from att_jm.mqtt.publisher import PublishConnection

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
NOWHERE = MqttEndpoint("127.0.0.1", 1, None, None, False)


def packet(topic: bytes, mid: int, properties: Properties | None, payload: bytes) -> bytes:
    """A v5 PUBLISH's variable header and payload, as paho would send them."""
    packed = b"\x00" if properties is None else bytes(properties.pack())  # type: ignore[no-untyped-call]
    return len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + packed + payload


def props(**values: object) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


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
def test_other_properties_are_decoded_too(properties: Properties) -> None:
    assert _decode_publish(packet(b"t", 1, properties, b"{}")) == (1, b"t", b"{}", None, None)


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


# The paho members the fast paths rely on, by signature -------------------------------------

#: paho method -> (our subclass that overrides it, its parameters after `self`, what it returns)
OVERRIDDEN: dict[str, tuple[type[Client], tuple[str, ...], str]] = {
    # paho asks for the bytes it wants next: 1 (type), 1 per length byte, then the rest
    "_sock_recv": (BufferedClient, ("bufsize",), "bytes"),
    # called once per PUBLISH read into `_in_packet`; paho's `_packet_read` acts on the code
    "_handle_publish": (ServiceClient, (), "MQTTErrorCode"),
    # called with "PUBACK" or "PUBCOMP" once per such packet read into `_in_packet`
    "_handle_pubackcomp": (PublishingClient, ("cmd",), "MQTTErrorCode"),
}


def _called() -> dict[str, tuple[Any, ...]]:
    """paho method -> the arguments the fast paths call it with (after `self`)."""
    return {
        # PublishingClient, for a PUBACK of a message paho still holds
        "_do_on_publish": (7, ReasonCode(PacketTypes.PUBACK, identifier=0),
                           Properties(PacketTypes.PUBACK)),  # type: ignore[no-untyped-call]
        # ServiceClient.ack_many: the PUBACKs of a batch as one packet, no mid, QoS 0
        "_packet_queue": (0x40, b"\x40\x02\x00\x07", 0, 0),
    }


def parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)[1:]  # without self


def test_the_switch_lists_exactly_the_private_methods_tested_here() -> None:
    assert set(PRIVATE_METHODS) == set(OVERRIDDEN) | set(_called())


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_an_overridden_paho_method_takes_and_returns_what_our_override_does(name: str) -> None:
    ours, expected, returns = OVERRIDDEN[name]
    theirs = inspect.signature(getattr(Client, name))
    assert parameters(getattr(Client, name)) == expected == PRIVATE_METHODS[name]
    assert parameters(getattr(ours, name)) == expected
    assert all(p.default is inspect.Parameter.empty for p in list(theirs.parameters.values())[1:])
    assert theirs.return_annotation in (returns, MQTTErrorCode if returns != "bytes" else bytes)
    assert name in vars(ours)  # ours really replaces it (not a paho method of the same name)


@pytest.mark.parametrize("name", sorted(_called()))
def test_a_called_paho_method_accepts_the_arguments_we_pass(name: str) -> None:
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    signature = inspect.signature(getattr(Client, name))
    bound = signature.bind(client, *_called()[name])  # TypeError if a parameter moved
    assert tuple(bound.arguments)[1:] == PRIVATE_METHODS[name][: len(_called()[name])]
    assert signature.return_annotation in ("MQTTErrorCode", MQTTErrorCode)


def test_a_new_client_has_the_attributes_the_fast_paths_read() -> None:
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    in_packet = client._in_packet
    assert isinstance(in_packet, dict)
    assert in_packet["command"] == 0  # the fixed header's first byte, once read
    assert isinstance(in_packet["packet"], bytes | bytearray)  # the rest, once read
    assert client._protocol == MQTTProtocolVersion.MQTTv5
    assert isinstance(client._out_messages, MutableMapping)  # mid -> MQTTMessage
    assert isinstance(client._out_message_mutex, type(threading.RLock()))


def test_our_clients_shadow_no_paho_member_but_the_declared_overrides() -> None:
    paho_client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    theirs = set(dir(Client)) | set(vars(paho_client))
    for ours in (BufferedClient, PublishingClient, ServiceClient):
        shadowed = {name for name in vars(ours) if name in theirs and not name.startswith("__")}
        assert shadowed <= set(OVERRIDDEN), (ours, shadowed)
    added = set(vars(ServiceClient(CallbackAPIVersion.VERSION2,
                                   protocol=MQTTProtocolVersion.MQTTv5))) - set(vars(paho_client))
    assert added == {"_rbuf", "_rpos"}  # a paho that used these names would lose them here


# The tested range and the switch ------------------------------------------------------------


def test_pyproject_pins_paho_to_the_tested_range_and_the_installed_one_is_in_it() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    paho_pins = [line for line in dependencies if line.startswith("paho-mqtt")]
    assert paho_pins == [f"paho-mqtt{TESTED_PAHO_SPEC}"]
    assert TESTED_PAHO_SPEC == ">=2.1,<2.3"
    low, high = TESTED_PAHO
    installed = tuple(int(part) for part in paho.mqtt.__version__.split(".")[:2])
    assert low <= installed < high


def test_the_installed_paho_carries_the_fast_paths() -> None:
    assert problems() == []


@pytest.mark.parametrize("version", ["2.0.0", "2.3.0", "2.3.0rc1", "3.0.0", "1.6.1"])
def test_a_paho_outside_the_tested_range_is_refused(version: str) -> None:
    assert problems(version) == [f"paho-mqtt {version} is outside the tested range >=2.1,<2.3"]


@pytest.mark.parametrize("version", ["2.1.0", "2.1", "2.2.0", "2.2.7", "2.2.0.post1"])
def test_a_paho_in_the_tested_range_is_accepted(version: str) -> None:
    assert problems(version) == []


def test_a_changed_signature_a_missing_method_or_attribute_is_refused() -> None:
    class Changed(Client):
        def _handle_pubackcomp(self, cmd: Any, extra: int = 0) -> MQTTErrorCode:
            return MQTTErrorCode.MQTT_ERR_SUCCESS

        _packet_queue = None  # type: ignore[assignment]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            del self._out_messages

    found = problems(paho.mqtt.__version__, Changed)
    assert found == [
        "paho's Client._handle_pubackcomp takes ('cmd', 'extra'), not ('cmd',)",
        "paho's Client._packet_queue is gone",
        "paho's Client has no _out_messages",
    ]


def test_the_fast_paths_are_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAST_PATHS_ENV, raising=False)
    with structlog.testing.capture_logs() as logs:
        assert use_fast_paths(None, client_id="c") is True
    assert [(line["event"], line["fast"]) for line in logs] == [("mqtt.paths", True)]


@pytest.mark.parametrize(("text", "fast"), [
    ("", True), ("true", True), ("TRUE", True), ("1", True), ("on", True),
    ("false", False), ("False", False), ("0", False), ("no", False), (" off ", False),
])
def test_the_environment_variable_turns_them_on_or_off(
    monkeypatch: pytest.MonkeyPatch, text: str, fast: bool,
) -> None:
    monkeypatch.setenv(FAST_PATHS_ENV, text)
    assert use_fast_paths(None, client_id="c") is fast


def test_an_invalid_setting_is_logged_and_takes_the_documented_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAST_PATHS_ENV, "fast")
    with structlog.testing.capture_logs() as logs:
        assert use_fast_paths(None, client_id="c") is False
    assert logs[0]["event"] == "mqtt.fast_paths_setting_invalid"
    assert logs[0]["log_level"] == "error"
    assert "must be true or false, not 'fast'" in logs[0]["error"]


def test_a_parameter_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_PATHS_ENV, "false")
    assert use_fast_paths(True, client_id="c") is True
    monkeypatch.setenv(FAST_PATHS_ENV, "true")
    assert use_fast_paths(False, client_id="c") is False


def test_a_paho_that_cannot_carry_them_is_refused_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_paths, "refusal", lambda: "paho-mqtt 2.3.0 is outside the range")
    with structlog.testing.capture_logs() as logs:
        assert use_fast_paths(True, client_id="att-job-manager") is False
        connection = PublishConnection(NOWHERE, client_id="att-job-manager.events",
                                       on_acked=lambda mid, ok: None)
    assert type(connection.client) is Client
    refused = [line for line in logs if line["event"] == "mqtt.fast_paths_refused"]
    assert len(refused) == 2
    assert refused[0]["log_level"] == "error"
    assert refused[0]["reason"] == "paho-mqtt 2.3.0 is outside the range"
    assert refused[0]["tested"] == ">=2.1,<2.3"
    assert refused[0]["using"] == "documented paths"
    assert refused[1]["client_id"] == "att-job-manager.events"


def _service(fast_paths: bool | None) -> ServiceConnection:
    return ServiceConnection(NOWHERE, client_id="att-job-manager", prefix="att",
                             session_expiry_seconds=600, deliver=lambda message: None,
                             fast_paths=fast_paths)


def test_without_the_fast_paths_the_connections_use_a_plain_paho_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = _service(False)
    assert (type(service.client), service.fast_paths) == (Client, False)
    publisher = PublishConnection(NOWHERE, client_id="p", on_acked=lambda mid, ok: None,
                                  fast_paths=False)
    assert (type(publisher.client), publisher.fast_paths) == (Client, False)
    assert type(publisher._json) is Properties  # paho packs it on each publish
    monkeypatch.setenv(FAST_PATHS_ENV, "false")
    assert type(_service(None).client) is Client


def test_with_the_fast_paths_the_connections_use_our_subclasses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(FAST_PATHS_ENV, raising=False)
    assert type(_service(None).client) is ServiceClient
    assert type(_service(True).client) is ServiceClient
    publisher = PublishConnection(NOWHERE, client_id="p", on_acked=lambda mid, ok: None)
    assert type(publisher.client) is PublishingClient


@pytest.mark.parametrize("correlation", [None, b"", b"\x00\x01", b"c" * 300])
def test_documented_reply_properties_are_paho_properties_packed_the_same(
    correlation: bytes | None,
) -> None:
    documented = reply_properties(correlation, packed=False)
    assert type(documented) is Properties
    assert bytes(documented.pack()) == reply_properties(correlation).pack()  # type: ignore[no-untyped-call]


def test_a_correlation_over_65535_bytes_is_refused_in_both_modes() -> None:
    for packed in (True, False):
        with pytest.raises(ValueError, match="longer than 65535"):
            reply_properties(b"x" * 65536, packed=packed)

