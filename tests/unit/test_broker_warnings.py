"""What the service can check of a broker it did not configure: its CONNACK's properties."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from att_jm.config import MqttEndpoint
from att_jm.mqtt.adapter import ServiceConnection


def _connection() -> ServiceConnection:
    return ServiceConnection(MqttEndpoint("127.0.0.1", 1, None, None, False),
                             client_id="att-job-manager", prefix="att",
                             session_expiry_seconds=604800, deliver=lambda message: None)


def test_a_broker_that_grants_everything_asked_raises_no_warning() -> None:
    connection = _connection()
    connection.connack_properties = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    assert connection.broker_warnings() == []


def test_a_capped_session_no_retain_or_qos_0_are_named() -> None:
    connection = _connection()
    properties = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    properties.RetainAvailable = 0
    properties.MaximumQoS = 0
    connection.connack_properties = properties
    warnings = connection.broker_warnings()
    assert len(warnings) == 3
    assert "3600 s, not the 604800 s asked" in warnings[0]
