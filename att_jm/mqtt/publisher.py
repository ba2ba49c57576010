"""A publish-only QoS 1 connection, driven by its caller's thread (the events relay's).

A clean session that ends with the connection: it subscribes to nothing, so the broker
keeps nothing for it. paho keeps every publish until its PUBACK and sends the un-acked
ones again, in order, after a reconnect; `on_acked(mid, ok)` reports each PUBACK.

Packet size: a broker disconnects a client that sends a packet over the Maximum Packet
Size of its CONNACK, and paho would send the same packet again after the reconnect, for
ever. `payload_room(topic)` is the largest payload the broker takes on `topic`; the caller
keeps to it, and at a CONNACK (in its `on_connect`, before paho sends the un-acked
publishes again) asks `oversized()` for the queued ones over a smaller limit and
`forget`s them. Those two read and trim paho's outgoing queue (its private `_out_messages`,
under `_out_message_mutex`) in both modes: paho has no documented way to drop a queued
publish (see `att_jm.mqtt.fast_paths`; tests/integration/test_mqtt_paho_internals.py checks
them by behaviour).

With the fast paths (`fast_paths`) plain PUBACKs are handled by `PublishingClient` and the
publish properties are packed once; without them paho handles every PUBACK itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

import structlog
from paho.mqtt import __version__ as paho_version
from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.config import MqttEndpoint
from att_jm.mqtt.common import PublishingClient, connect_properties, json_publish_properties
from att_jm.mqtt.driven import DrivenConnection

log = structlog.get_logger("att_jm.mqtt")

# A QoS 1 PUBLISH besides its topic and payload: the fixed header (1 byte + a remaining
# length of at most 4), the topic's length (2), the packet id (2); the properties are added.
_PUBLISH_OVERHEAD: Final = 1 + 4 + 2 + 2
MAX_MQTT_PACKET: Final = 268_435_455  # the protocol's limit (a 4-byte remaining length)


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
        fast_paths: bool | None = None,
    ) -> None:
        """`fast_paths`: use them (True), paho's documented paths only (False), or as
        ATT_JM_MQTT_FAST_PATHS says (None; true when unset)."""
        super().__init__(endpoint, client_id=client_id, manual_ack=False, monotonic=monotonic,
                         kind=PublishingClient, fast_paths=fast_paths)
        self._json = json_publish_properties(packed=self.fast_paths)
        packed: bytes = self._json.pack()  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        self._overhead = _PUBLISH_OVERHEAD + len(packed)
        self._on_acked = on_acked
        self._connected_hook = on_connect
        self._queue_lost = False  # paho's queue was not found (logged once)
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

    def payload_room(self, topic: str) -> int:
        """The largest payload (bytes) of a publish on `topic` whose packet the broker takes:
        its CONNACK's Maximum Packet Size (the protocol's limit before the first CONNACK or
        without one) less the packet's other bytes."""
        return (self.max_packet_size or MAX_MQTT_PACKET) - self._overhead - len(topic.encode())

    def oversized(self) -> list[int]:
        """The message ids of the publishes paho keeps (to send, or to send again) whose
        packet is over the broker's limit, in publish order (none when paho's queue cannot
        be read: see `_queue`)."""
        limit = self.max_packet_size or MAX_MQTT_PACKET
        found = self._queue()
        if found is None:
            return []
        mutex, queue = found
        with mutex:
            return [mid for mid, message in queue.items()
                    if len(message.payload) + len(message.topic.encode()) + self._overhead
                    > limit]

    def forget(self, mids: Iterable[int]) -> None:
        """Drop these publishes from paho's queue: they are never sent (again). Only from
        `on_connect` (or while disconnected): none of them is then in flight."""
        found = self._queue()
        if found is None:
            return
        mutex, queue = found
        with mutex:
            for mid in mids:
                queue.pop(mid, None)

    def _queue(self) -> tuple[AbstractContextManager[Any], MutableMapping[int, MQTTMessage]] | None:
        """paho's outgoing queue (mid -> message) and its lock (module docstring); None, with
        an error in the log once, on a paho that has them no more: then a publish over a
        broker's smaller limit is sent again after each reconnect, as with paho alone."""
        queue = getattr(self.client, "_out_messages", None)
        mutex = getattr(self.client, "_out_message_mutex", None)
        if isinstance(queue, MutableMapping) and isinstance(mutex, AbstractContextManager):
            return mutex, queue
        if not self._queue_lost:
            self._queue_lost = True
            log.error("mqtt.queue_unreadable", paho=paho_version,
                      effect="oversized publishes cannot be dropped")
        return None

    def _connected(self, client: Client, flags: ConnectFlags) -> None:
        log.info("mqtt.connected", generation=self.generation,
                 max_packet_size=self.max_packet_size)
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
