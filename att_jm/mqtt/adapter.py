"""The service's MQTT connection: a persistent QoS 1 session with manual acknowledgement,
driven by the writer thread itself (no network thread).

paho runs without its loop thread: the writer calls `poll()` to wait for the socket
(and the writer's own wake-up descriptor), and every read, write, keepalive and
reconnect happens in that one thread. Why: with paho's network thread, every message
and every publish crossed threads under the GIL, and a publish waited for the writer
to block before the network thread could send it (the writer then held the GIL for up
to the 5 ms switch interval); received bytes were read with 3-4 `recv` calls a packet.
Here a publish or an ack is written to the socket when it is made, received bytes are
read 64 KiB at a time (`BufferedClient`), and nothing waits for a thread switch.

Nothing is acknowledged until the writer says its effect is committed. A reconnect bumps
`generation`: acks of an earlier connection are dropped (the broker redelivers those
messages, and idempotency absorbs them).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
import structlog
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from att_jm.config import MqttEndpoint
from att_jm.mqtt.common import (
    RECONNECT_MAX_DELAY,
    RECONNECT_MIN_DELAY,
    BufferedClient,
    connect_properties,
    json_publish_properties,
    new_buffered_client,
)

log = structlog.get_logger("att_jm.mqtt")

KEEPALIVE_SECONDS: Final = 30
#: Longest a blocking TCP connect to the broker may take (paho's default is 5 s); the
#: writer waits for it, so it is kept short. A broker that is down refuses at once.
CONNECT_TIMEOUT_SECONDS: Final = 2.0
#: poll() returns at least this often so that keepalive and reconnects are serviced.
HOUSEKEEPING_SECONDS: Final = 1.0


@dataclass(slots=True)
class Inbound:
    """One received message, as the writer needs it."""

    mid: int
    qos: int
    generation: int
    topic: bytes
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


class ServiceConnection:
    """Subscribes to notifications and commands; publishes replies, views, events, status.

    Single-threaded: every method must be called from the writer thread.
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        prefix: str,
        session_expiry_seconds: int,
        deliver: Callable[[Inbound], None],
        on_connect: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix = prefix
        self.status_topic = f"{prefix}/job-manager/status"
        self.filters = (
            f"{prefix}/channel-manager/notifications/+",
            f"{prefix}/job-manager/commands/+/+",
        )
        self._deliver = deliver
        self.paused = False
        self._stopped = False
        self._connected_hook = on_connect
        self._session_expiry = session_expiry_seconds
        self._online: bytes = b"{}"
        self.generation = 0
        self.connected = False
        self._monotonic = monotonic
        self._next_attempt: float | None = None  # when to (re)connect; None: not now
        self._delay = RECONNECT_MIN_DELAY
        self.client: BufferedClient = new_buffered_client(endpoint, client_id, manual_ack=True)
        self.client.connect_timeout = CONNECT_TIMEOUT_SECONDS
        # No in-flight cap: paho rescans its whole outgoing queue on every PUBACK while one is
        # set (a quarter of the writer's CPU in a burst); the broker and loopback keep up.
        self.client.max_inflight_messages_set(0)
        self._json = json_publish_properties()  # read-only once built: shared by every publish
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._endpoint = endpoint

    # Life cycle --------------------------------------------------------------------------

    def start(self, online: dict[str, Any], offline: dict[str, Any]) -> None:
        """Connect (on the next `poll()`, retrying for ever) with `offline` as the Last Will."""
        self._online = orjson.dumps(online)
        self.client.will_set(
            self.status_topic, orjson.dumps(offline), qos=1, retain=True,
            properties=json_publish_properties(will=True),
        )
        self.client.connect_async(
            self._endpoint.host, self._endpoint.port, keepalive=KEEPALIVE_SECONDS,
            clean_start=False, properties=connect_properties(self._session_expiry),
        )
        self._next_attempt = self._monotonic()

    def pause(self, status: dict[str, Any]) -> None:
        """Stop receiving: publish `status` (retained), then disconnect normally.

        For a writer that cannot commit: mosquitto 2.0 does not hold back QoS 1 messages
        beyond ReceiveMaximum once acknowledgements have flowed (measured: thousands arrive
        after the acks stop), so staying connected would fill the inbox without bound. The
        broker keeps the persistent session and queues what arrives; nothing was
        acknowledged, so nothing is lost. `resume()` connects again.
        """
        if self.paused:
            return
        self.paused = True
        self._next_attempt = None
        self._disconnect(orjson.dumps(status))
        log.warning("mqtt.paused", reason="the store refuses commits")

    def resume(self) -> None:
        """Connect again after `pause()` (on the next `poll()`, retrying)."""
        if not self.paused:
            return
        self.paused = False
        self._delay = RECONNECT_MIN_DELAY
        self._next_attempt = self._monotonic()
        log.info("mqtt.resumed")

    def stop(self, offline: dict[str, Any], timeout: float = 5.0) -> None:
        """Publish `offline`, disconnect normally (the persistent session stays)."""
        deadline = self._monotonic() + timeout
        if self.paused:  # connect once more, so that the retained status says offline
            self.resume()
            while not self.connected and self._monotonic() < deadline:
                self.poll(0.05)
        self._stopped = True
        self._next_attempt = None
        if self.connected:
            self._disconnect(orjson.dumps(offline), deadline)
        else:
            self.client.disconnect()

    def _disconnect(self, status: bytes, deadline: float | None = None) -> None:
        """Publish `status` retained, send DISCONNECT after it and write both out.

        The broker reads a connection's packets in order, so the status it gets before the
        normal DISCONNECT is stored; no wait for its PUBACK is needed.
        """
        if self.connected:
            self.client.publish(self.status_topic, status, qos=1, retain=True,
                                properties=self._json)
        self.client.disconnect()
        end = deadline if deadline is not None else self._monotonic() + 2.0
        while self.client.socket() is not None and self._monotonic() < end:
            self.poll(0.05)
        self.connected = False

    # The network -------------------------------------------------------------------------

    def poll(self, timeout: float, wake_fd: int | None = None) -> None:
        """Wait up to `timeout` s for the broker or for `wake_fd` to be readable (the caller
        empties it), then do every pending read, write, keepalive and reconnect. Received
        messages go to `deliver` on the way."""
        client = self.client
        now = self._monotonic()
        if client.socket() is None and self._next_attempt is not None:
            if now >= self._next_attempt:
                self._reconnect(now)
            if self._next_attempt is not None:
                timeout = min(timeout, max(0.0, self._next_attempt - now))
        sock = client.socket()
        readers: list[Any] = [] if wake_fd is None else [wake_fd]
        writers: list[Any] = []
        if sock is not None:
            readers.append(sock)
            if client.want_write():
                writers.append(sock)
            if client.buffered():
                timeout = 0.0
        wait = max(0.0, min(timeout, HOUSEKEEPING_SECONDS))
        try:
            readable, writable, _ = select.select(readers, writers, [], wait)
        except (OSError, ValueError):  # the socket broke under us: reading tells paho
            readable, writable = ([] if sock is None else [sock]), []
        if sock is not None and client.socket() is sock:
            if sock in readable or client.buffered():
                self._read()
            if client.socket() is not None and (sock in writable or client.want_write()):
                client.loop_write()
            if client.socket() is not None:
                client.loop_misc()  # keepalive: PINGREQ when due, drop a dead connection

    def _read(self) -> None:
        """Read and handle every packet that has arrived (64 KiB per recv)."""
        client = self.client
        while client.socket() is not None:
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or not client.buffered():
                return

    def _reconnect(self, now: float) -> None:
        try:
            self.client.reconnect()
        except (OSError, ValueError) as error:  # refused, unreachable, TLS, DNS
            log.warning("mqtt.connect_failed", error=str(error), retry_in=self._delay)
            self._next_attempt = now + self._delay
            self._delay = min(self._delay * 2, RECONNECT_MAX_DELAY)
            return
        self._next_attempt = None  # CONNACK decides; a lost connection schedules the next

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("mqtt.connect_refused", reason=str(reason))
            return
        self.generation += 1
        self.connected = True
        self._delay = RECONNECT_MIN_DELAY
        # Retained notifications come again on every resubscribe and are deduplicated by id.
        # A retained command would run again after every restart (one without
        # CorrelationData has no key to deduplicate it): commands never take retained copies
        # at subscribe time (Retain Handling 2); live ones are delivered as usual.
        notifications, commands = self.filters
        client.subscribe([
            (notifications, SubscribeOptions(qos=1)),
            (commands, SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)),
        ])
        self.publish(self.status_topic, self._online, retain=True)
        if self._connected_hook is not None:
            self._connected_hook()
        log.info(
            "mqtt.connected", session_present=flags.session_present, generation=self.generation
        )

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False
        if not (self.paused or self._stopped):
            self._next_attempt = self._monotonic() + self._delay
            self._delay = min(self._delay * 2, RECONNECT_MAX_DELAY)
        log.warning("mqtt.disconnected", reason=str(reason))

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        # Never raise: paho would drop the connection's read loop on an exception.
        try:
            properties = message.properties
            response = getattr(properties, "ResponseTopic", None)
            correlation = getattr(properties, "CorrelationData", None)
            self._deliver(
                Inbound(
                    mid=message.mid, qos=message.qos, generation=self.generation,
                    topic=bytes(getattr(message, "_topic", b"")), payload=bytes(message.payload),
                    response_topic=response if isinstance(response, str) else None,
                    correlation=bytes(correlation) if correlation is not None else None,
                )
            )
        except Exception:
            log.exception("mqtt.message_dropped_before_queueing", mid=message.mid)

    # Output ------------------------------------------------------------------------------

    def ack(self, message: Inbound) -> None:
        """Acknowledge a committed message, unless it came on an earlier connection."""
        if message.qos > 0 and message.generation == self.generation and self.connected:
            self.client.ack(message.mid, message.qos)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish at QoS 1 (written at once; paho keeps it for resending while disconnected)."""
        self.client.publish(
            topic, payload, qos=1, retain=retain,
            properties=properties or self._json,
        )

    def reply(self, response_topic: str, correlation: bytes | None, body: dict[str, Any]) -> None:
        try:
            self.publish(
                response_topic, orjson.dumps(body),
                properties=json_publish_properties(correlation_data=correlation),
            )
        except ValueError as error:  # a ResponseTopic with wildcards or bad UTF-8
            log.warning("command.reply_refused", response_topic=response_topic, error=str(error))

