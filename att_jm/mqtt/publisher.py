"""A publish-only QoS 1 connection, driven by its caller's thread (the events relay's).

A clean session that ends with the connection: it subscribes to nothing, so the broker
keeps nothing for it. paho keeps every publish until its PUBACK and sends the un-acked
ones again, in order, after a reconnect; `on_acked(mid, ok)` reports each PUBACK.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from paho.mqtt.client import Client, ConnectFlags
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.config import MqttEndpoint
from att_jm.mqtt.common import PublishingClient, connect_properties, json_publish_properties
from att_jm.mqtt.driven import DrivenConnection

log = structlog.get_logger("att_jm.mqtt")



class PublishError(Exception):
    """paho refused to keep a publish (it will never be sent)."""


class PublishConnection(DrivenConnection):
    """Publishes JSON at QoS 1 (retained when asked: the views) and reports the PUBACKs.

    Single-threaded: every method must be called from the caller's one thread, and
    `on_acked` runs inside `poll()`.
    """

    def __init__(
        self, endpoint: MqttEndpoint, *, client_id: str, on_acked: Callable[[int, bool], None],
        on_connect: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(endpoint, client_id=client_id, manual_ack=False, monotonic=monotonic,
                         kind=PublishingClient)
        self._json = json_publish_properties(packed=True)
        self._on_acked = on_acked
        self._connected_hook = on_connect
        self.client.on_publish = self._on_publish

    def start(self) -> None:
        """Connect (on the next `poll()`, retrying for ever)."""
        self._connect_soon(clean_start=True,
                           properties=connect_properties(None, receive_maximum=None))

    def stop(self, timeout: float = 2.0) -> None:
        """Disconnect normally; publishes still un-acked are dropped."""
        self._stopped = True
        self._next_attempt = None
        self._close(self._monotonic() + timeout)

    def poll(self, timeout: float, wake_fds: Sequence[int] = ()) -> set[int]:
        """Wait up to `timeout` s for the broker or for one of `wake_fds` to be readable, then
        do every pending read, write, keepalive and reconnect; which of `wake_fds` are
        readable (the caller empties them)."""
        return self._serve(timeout, wake_fds)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1 (written at once, or when connected); the message id."""
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=self._json)
        # Any other code (no connection, connection lost while writing) leaves the message
        # in paho's queue, sent again after the reconnect; this one means it was not kept.
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise PublishError(f"paho refused a publish on {topic!r}: {info.rc.name}")
        return info.mid

    def _connected(self, client: Client, flags: ConnectFlags) -> None:
        log.info("mqtt.connected", generation=self.generation)
        if self._connected_hook is not None:
            self._connected_hook()

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Never raise: paho would drop the connection's read loop on an exception.
        try:
            self._on_acked(mid, not reason.is_failure)
        except Exception:
            log.exception("mqtt.puback_dropped", mid=mid)
