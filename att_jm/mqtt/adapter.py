"""The service's MQTT connection: a persistent QoS 1 session with manual acknowledgement,
driven by the writer thread itself (no network thread: see `att_jm.mqtt.driven`).

Nothing is acknowledged until the writer says its effect is committed. A reconnect bumps
`generation`: acks of an earlier connection are dropped (the broker redelivers those
messages, and idempotency absorbs them).

With the fast paths (`fast_paths`, see `att_jm.mqtt.fast_paths`) every well-formed QoS 0 or
1 message is decoded by `ServiceClient` (in time linear in its size, whatever properties it
carries) and a batch's PUBACKs leave in one write; without them every message goes through
paho's `on_message` and each is acknowledged with `Client.ack(mid, qos)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from att_jm.config import MqttEndpoint
from att_jm.mqtt.common import (
    RECONNECT_MIN_DELAY,
    ServiceClient,
    connect_properties,
    json_publish_properties,
    reply_properties,
)
from att_jm.mqtt.driven import DrivenConnection
from att_jm.topics import Topics

log = structlog.get_logger("att_jm.mqtt")

WILL_DELAY_SECONDS = 5
#: The topic of a message whose topic is not UTF-8, without the fast paths (paho gives its
#: bytes to its private members only): not UTF-8 either, so it is refused the same way.
_NOT_UTF8 = b"\xff"


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
    #: The PUBLISH's RETAIN flag: a copy the broker kept (at subscribe), or one published
    #: retained (the notifications are subscribed with Retain As Published).
    retain: bool = False

    @classmethod
    def of(cls, message: MQTTMessage, generation: int) -> Inbound:
        """A message as paho decoded it (every message without the fast paths)."""
        properties = message.properties
        response = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        try:
            topic = message.topic.encode()
        except UnicodeDecodeError:  # paho keeps the raw bytes in a private member only
            topic = _NOT_UTF8
        return cls(
            mid=message.mid, qos=message.qos, generation=generation, topic=topic,
            payload=bytes(message.payload),
            response_topic=response if isinstance(response, str) else None,
            correlation=bytes(correlation) if correlation is not None else None,
            retain=bool(message.retain),
        )


def connack_warnings(properties: Properties | None, session_expiry: int) -> list[str]:
    """What a broker's CONNACK `properties` say it will not do that the service relies on (a
    broker the set-up did not configure: docs/security.md, "Your own broker"), for a session
    of `session_expiry` seconds asked."""
    warnings = []
    granted = getattr(properties, "SessionExpiryInterval", None)
    if granted is not None and granted < session_expiry:
        warnings.append(f"the broker keeps the session {granted} s, not the "
                        f"{session_expiry} s asked: longer outages lose messages")
    if getattr(properties, "RetainAvailable", 1) == 0:
        warnings.append("the broker has no retained messages: views and status are lost")
    if getattr(properties, "MaximumQoS", 1) == 0:
        warnings.append("the broker allows QoS 0 only: messages may be lost")
    return warnings


class ServiceConnection(DrivenConnection):
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
        max_packet: int | None = None,
        on_connect: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        fast_paths: bool | None = None,
    ) -> None:
        """`fast_paths`: use them (True), paho's documented paths only (False), or as
        ATT_JM_MQTT_FAST_PATHS says (None; true when unset)."""
        super().__init__(endpoint, client_id=client_id, manual_ack=True, monotonic=monotonic,
                         kind=ServiceClient, fast_paths=fast_paths)
        if isinstance(self.client, ServiceClient):
            self.client.on_inbound = self._on_inbound
        topics = Topics(prefix)
        self.status_topic = topics.status
        self.filters = topics.service_filters()
        self._deliver = deliver
        self.paused = False
        self._connected_hook = on_connect
        self._session_expiry = session_expiry_seconds
        self._max_packet = max_packet  # larger messages are dropped by the broker
        self._online: Callable[[], dict[str, Any]] = dict
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self._awaited: set[int] = set()  # mids of replies whose PUBACK is waited for
        self._delivered = False  # a message arrived during `await_acks`

    # Life cycle --------------------------------------------------------------------------

    def start(
        self, online: dict[str, Any] | Callable[[], dict[str, Any]], offline: dict[str, Any]
    ) -> None:
        """Connect (on the next `poll()`, retrying for ever) with `offline` as the Last Will;
        `online` (or what it returns then) is published, retained, on each connect: once per
        start, and again after each reconnect."""
        self._online = online if callable(online) else (lambda: online)
        will = json_publish_properties(will=True)
        # A reconnect within WILL_DELAY_SECONDS (a broken connection, a broker restart) does
        # not announce a crash: the broker publishes the Will only if the service stays away.
        will.WillDelayInterval = WILL_DELAY_SECONDS
        self.client.will_set(self.status_topic, orjson.dumps(offline), qos=1, retain=True,
                             properties=will)
        self._connect_soon(clean_start=False, properties=connect_properties(
            self._session_expiry, maximum_packet_size=self._max_packet))

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
        self._close(deadline if deadline is not None else self._monotonic() + 2.0)

    # The network -------------------------------------------------------------------------

    def poll(self, timeout: float, *wake_fds: int) -> set[int]:
        """Wait up to `timeout` s for the broker or for one of `wake_fds` to be readable,
        then do every pending read, write, keepalive and reconnect; which of `wake_fds` are
        readable (the caller empties them). Received messages go to `deliver` on the way."""
        return self._serve(timeout, wake_fds)

    def await_acks(self, mids: Collection[int], timeout: float, *wake_fds: int) -> None:
        """Serve the connection until the broker acknowledged `mids` (PUBACK), for at most
        `timeout` s, or until one of `wake_fds` is readable or a message arrived."""
        if not mids or not self.connected:
            return
        awaited = self._awaited
        awaited.clear()
        awaited.update(mids)
        deadline = self._monotonic() + timeout
        try:
            while awaited and self.connected:
                left = deadline - self._monotonic()
                if left <= 0 or self._serve(left, wake_fds) or self._delivered:
                    return
        finally:
            awaited.clear()
            self._delivered = False

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason: ReasonCode,
        properties: Properties,
    ) -> None:
        self._awaited.discard(mid)

    def _wants_connection(self) -> bool:
        return not (self.paused or self._stopped)

    def broker_warnings(self) -> list[str]:
        """`connack_warnings` of the last CONNACK."""
        return connack_warnings(self.connack_properties, self._session_expiry)

    def _connected(self, client: Client, flags: ConnectFlags) -> None:
        # Retained notifications come again on every resubscribe and are deduplicated by id;
        # Retain As Published tells the service which ones were published retained (it keeps
        # the last one of each trigger past an archival: `att_jm.application.index`).
        # A retained command would run again after every restart (one without
        # CorrelationData has no key to deduplicate it): commands never take retained copies
        # at subscribe time (Retain Handling 2); live ones are delivered as usual.
        notifications, commands = self.filters
        client.subscribe([
            (notifications, SubscribeOptions(qos=1, retainAsPublished=True)),
            (commands, SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)),
        ])
        self.publish(self.status_topic, orjson.dumps(self._online()), retain=True)
        if self._connected_hook is not None:
            self._connected_hook()
        log.info(
            "mqtt.connected", session_present=flags.session_present, generation=self.generation
        )
        for warning in self.broker_warnings():
            log.error("broker.unsuitable", warning=warning)

    def _on_inbound(
        self, mid: int, topic: bytes, payload: bytes, response: str | None,
        correlation: bytes | None, retain: bool,
    ) -> None:
        """A QoS 1 message (QoS 0: mid 0) decoded by `ServiceClient`'s fast path."""
        self._delivered = True
        self._deliver(Inbound(mid, 1 if mid else 0, self.generation, topic, payload, response,
                              correlation, retain))

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        """Any other message (every message without the fast paths), decoded by paho."""
        # Never raise: paho would drop the connection's read loop on an exception.
        try:
            self._delivered = True
            self._deliver(Inbound.of(message, self.generation))
        except Exception:
            log.exception("mqtt.message_dropped_before_queueing", mid=message.mid)

    # Output ------------------------------------------------------------------------------

    def ack(self, message: Inbound) -> None:
        """Acknowledge a committed message, unless it came on an earlier connection."""
        self.ack_all((message,))

    def ack_all(self, messages: Sequence[Inbound]) -> None:
        """Acknowledge committed messages (those of earlier connections are left to the
        broker, which sends them again): with the fast paths all QoS 1 PUBACKs in one write,
        without them one `Client.ack` each."""
        if not self.connected:
            return
        generation = self.generation
        client = self.client
        if isinstance(client, ServiceClient):
            client.ack_many([m.mid for m in messages if m.qos == 1 and m.generation == generation])
            for message in messages:
                if message.qos == 2 and message.generation == generation:  # never subscribed at 2
                    client.ack(message.mid, message.qos)
            return
        for message in messages:
            if message.qos > 0 and message.generation == generation:
                client.ack(message.mid, message.qos)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Publish at QoS 1 (written at once; paho keeps it for resending while disconnected);
        its message id."""
        return self.client.publish(
            topic, payload, qos=1, retain=retain,
            properties=properties or self._json,
        ).mid

    def reply(
        self, response_topic: str, correlation: bytes | None, body: dict[str, Any],
    ) -> int | None:
        """Publish a reply; its message id (None if it was refused)."""
        try:
            return self.publish(
                response_topic, orjson.dumps(body),
                properties=reply_properties(correlation, packed=self.fast_paths),
            )
        except ValueError as error:  # a ResponseTopic with wildcards or bad UTF-8
            log.warning("command.reply_refused", response_topic=response_topic, error=str(error))
            return None

