"""The service's MQTT connection: a persistent QoS 1 session with manual acknowledgement.

paho's network thread only turns each message into an `Inbound` and hands it
to the writer; nothing is acknowledged until the writer says its effect is
committed. A reconnect bumps `generation`: acks of the old connection are
dropped (the broker redelivers those messages, and idempotency absorbs them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from att_jm.config import MqttEndpoint
from att_jm.mqtt.common import connect_properties, json_publish_properties, new_client

log = structlog.get_logger("att_jm.mqtt")


@dataclass(frozen=True)
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
    """Subscribes to notifications and commands; publishes replies, views, events, status."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        prefix: str,
        session_expiry_seconds: int,
        deliver: Callable[[Inbound], None],
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self.status_topic = f"{prefix}/job-manager/status"
        self.filters = (
            f"{prefix}/channel-manager/notifications/+",
            f"{prefix}/job-manager/commands/+/+",
        )
        self._deliver = deliver
        self.paused = False
        self._connected_hook = on_connect
        self._session_expiry = session_expiry_seconds
        self._online: bytes = b"{}"
        self.generation = 0
        self.connected = threading.Event()
        self.client = new_client(endpoint, client_id, manual_ack=True)
        # No in-flight cap: paho rescans its whole outgoing queue on every PUBACK while one is
        # set (a quarter of the writer's CPU in a burst); the broker and loopback keep up.
        self.client.max_inflight_messages_set(0)
        self._json = json_publish_properties()  # read-only once built: shared by every publish
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._endpoint = endpoint

    def start(self, online: dict[str, Any], offline: dict[str, Any]) -> None:
        """Connect in the background (retrying forever) with `offline` as the Last Will."""
        self._online = orjson.dumps(online)
        self.client.will_set(
            self.status_topic, orjson.dumps(offline), qos=1, retain=True,
            properties=json_publish_properties(will=True),
        )
        self._connect()

    def _connect(self) -> None:
        self.client.connect_async(
            self._endpoint.host, self._endpoint.port, keepalive=30, clean_start=False,
            properties=connect_properties(self._session_expiry),
        )
        self.client.loop_start()

    def pause(self, status: dict[str, Any], timeout: float = 2.0) -> None:
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
        info = self.client.publish(self.status_topic, orjson.dumps(status), qos=1, retain=True,
                                   properties=json_publish_properties())
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as error:
            log.warning("mqtt.status_not_published", error=str(error))
        self.client.disconnect()
        self.client.loop_stop()
        log.warning("mqtt.paused", reason="the store refuses commits")

    def resume(self) -> None:
        """Connect again after `pause()` (in the background, retrying)."""
        if not self.paused:
            return
        self.paused = False
        self._connect()
        log.info("mqtt.resumed")

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("mqtt.connect_refused", reason=str(reason))
            return
        self.generation += 1
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
        self.connected.set()
        if self._connected_hook is not None:
            self._connected_hook()
        log.info(
            "mqtt.connected", session_present=flags.session_present, generation=self.generation
        )

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        log.warning("mqtt.disconnected", reason=str(reason))

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        # Runs on paho's network thread: never raise, never block.
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

    def ack(self, message: Inbound) -> None:
        """Acknowledge a committed message, unless it came on an earlier connection."""
        if message.qos > 0 and message.generation == self.generation:
            self.client.ack(message.mid, message.qos)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish at QoS 1 (paho queues it while disconnected)."""
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

    def stop(self, offline: dict[str, Any], timeout: float = 5.0) -> None:
        """Publish `offline`, disconnect normally (the persistent session stays), stop the loop."""
        if self.paused:  # connect once more, so that the retained status says offline
            self.resume()
            self.connected.wait(timeout)
        if self.connected.is_set():
            info = self.client.publish(
                self.status_topic, orjson.dumps(offline), qos=1, retain=True,
                properties=json_publish_properties(),
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as error:
                log.warning("mqtt.offline_not_published", error=str(error))
        self.client.disconnect()
        self.client.loop_stop()
