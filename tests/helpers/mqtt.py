"""A small synchronous MQTT v5 test client: publish and wait, collect, request/reply, retained."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

Payload = bytes | str | Mapping[str, Any] | list[Any]
DEFAULT_TIMEOUT = 5.0


class MqttTestError(AssertionError):
    """The broker refused or did not answer in time (an AssertionError: pytest shows it plainly)."""


def encode(payload: Payload) -> bytes:
    """bytes as they are, str as UTF-8, a dict or list as compact JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    """`mqtt://[user:password@]host:port` -> (host, port, user, password)."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"not an mqtt:// URL: {url!r}")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, parts.port or 1883, user, password


@dataclass(frozen=True)
class Message:
    """One received PUBLISH."""

    topic: str
    payload: bytes
    properties: Properties | None
    retain: bool
    qos: int
    mid: int
    dup: bool

    def json(self) -> Any:
        return json.loads(self.payload)

    def prop(self, name: str) -> Any:
        """A v5 property by paho name (`CorrelationData`, `ContentType`, ...), or None."""
        return getattr(self.properties, name, None) if self.properties is not None else None

    @property
    def user_properties(self) -> dict[str, str]:
        pairs: list[tuple[str, str]] = self.prop("UserProperty") or []
        return dict(pairs)


@dataclass(eq=False)
class Subscription:
    """Messages received for one topic filter, in arrival order (thread-safe)."""

    topic_filter: str
    _client: TestClient
    _messages: list[Message] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def _add(self, message: Message) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    def messages(self) -> list[Message]:
        with self._changed:
            return list(self._messages)

    def clear(self) -> None:
        with self._changed:
            self._messages.clear()

    def wait_for(
        self,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Message:
        """The first message received so far or within `timeout` for which `predicate` holds."""
        found = self.wait_for_count(1, predicate, timeout)
        return found[0]

    def wait_for_count(
        self,
        count: int,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Message]:
        """The first `count` messages for which `predicate` holds (waiting up to `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matching = [m for m in self._messages if predicate is None or predicate(m)]
                if len(matching) >= count:
                    return matching[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MqttTestError(
                        f"{len(matching)}/{count} matching messages on {self.topic_filter!r} "
                        f"after {timeout} s; received: "
                        f"{[(m.topic, m.payload[:200]) for m in self._messages[-10:]]}"
                    )
                self._changed.wait(remaining)

    def barrier(self, topic: str, timeout: float = DEFAULT_TIMEOUT) -> list[Message]:
        """Publish a marker on `topic` (which this subscription's filter must cover) and wait
        until it arrives; the messages received before it. The broker delivers a
        subscription's messages in the order it took them, so whatever it took before the
        marker (from any client) has arrived by then: an empty list proves that nothing
        came, without sleeping."""
        marker = f"barrier-{uuid.uuid4().hex}".encode()
        self._client.publish(topic, marker, qos=1)
        self.wait_for(lambda m: m.payload == marker, timeout)
        with self._changed:
            index = next(i for i, m in enumerate(self._messages) if m.payload == marker)
            return self._messages[:index]

    def unsubscribe(self) -> None:
        self._client.unsubscribe(self)


class TestClient:
    """A connected paho v5 client with blocking calls; use as a context manager.

    `clean_start=False` with `session_expiry > 0` gives a persistent session; `manual_ack=True`
    withholds PUBACKs until `ack(message)`. TCP_NODELAY is set on the socket.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        clean_start: bool = True,
        session_expiry: int = 0,
        manual_ack: bool = False,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, Payload, bool] | None = None,
        keepalive: int = 30,
    ) -> None:
        self.host, self.port, url_user, url_password = parse_url(url)
        owner = username if username is not None else url_user
        # A site's broker takes only client ids of their user: the name, or the name and ".".
        self.client_id = client_id or (
            f"{owner}.test-{uuid.uuid4().hex[:12]}" if owner else f"test-{uuid.uuid4().hex[:12]}")
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._keepalive = keepalive
        self._lock = threading.Condition()
        self._connected = False
        self._connect_result: ReasonCode | None = None
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._subscriptions: list[Subscription] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            manual_ack=manual_ack,
        )
        user = username if username is not None else url_user
        if user is not None:
            secret = password if password is not None else url_password
            self.client.username_pw_set(user, secret)
        if will is not None:
            topic, payload, retain = will
            self.client.will_set(topic, encode(payload), qos=1, retain=retain)
        # Reconnect fast (paho's minimum is 1 s): mosquitto 2.0.11 drops the connection after
        # every v5 publish it denies. paho annotates int but sleeps any float.
        self.client.reconnect_delay_set(min_delay=cast(int, 0.1), max_delay=2)
        self.client.on_socket_open = _set_nodelay
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # --- paho callbacks (network thread: record and notify, never raise) --------------------
    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._connect_result = reason
            self._connected = not reason.is_failure
            self._lock.notify_all()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._connected = False
            self._lock.notify_all()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._acks[mid] = reason
            self._lock.notify_all()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._subacks[mid] = reasons
            self._lock.notify_all()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            return
        message = Message(
            topic=topic,
            payload=bytes(msg.payload),
            properties=getattr(msg, "properties", None),
            retain=bool(msg.retain),
            qos=msg.qos,
            mid=msg.mid,
            dup=bool(msg.dup),
        )
        with self._lock:
            targets = [
                s for s in self._subscriptions if paho.topic_matches_sub(s.topic_filter, topic)
            ]
        for subscription in targets:
            subscription._add(message)

    # --- connection ---------------------------------------------------------------------------
    def connect(self, timeout: float = DEFAULT_TIMEOUT) -> TestClient:
        properties = None
        if self._session_expiry > 0:
            properties = new_properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry
        self.client.connect(
            self.host,
            self.port,
            keepalive=self._keepalive,
            clean_start=self._clean_start,
            properties=properties,
        )
        self.client.loop_start()
        self.wait_connected(timeout)
        return self

    def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait for a successful CONNACK (also after paho reconnects on its own)."""
        with self._lock:
            if not self._lock.wait_for(
                lambda: self._connected or _failed(self._connect_result), timeout
            ):
                raise MqttTestError(f"no CONNACK from {self.host}:{self.port} within {timeout} s")
            if not self._connected:
                raise MqttTestError(f"connection refused: {self._connect_result}")

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def close(self) -> None:
        """DISCONNECT (a persistent session stays on the broker) and stop the network thread."""
        # paho can race into its 1 s reconnect delay while disconnecting; no public switch.
        self.client._reconnect_on_failure = False
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Vanish without DISCONNECT, like a crashed process (the Will fires, nothing is acked)."""
        # loop_stop() alone waits up to 1 s in select() or in the reconnect delay; flagging the
        # thread first (paho has no public way) and shutting the socket wakes it at once.
        self.client._thread_terminate = True
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()
        if sock is not None:
            sock.close()

    def __enter__(self) -> TestClient:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- publish ------------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: Payload,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        *,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ReasonCode | None:
        """Publish and wait for the PUBACK; returns its v5 reason code (None for QoS 0).

        With `check`, a failure reason code (e.g. "Not authorized") raises MqttTestError.
        After a denied publish mosquitto 2.0.11 closes the connection; paho reconnects within
        ~0.1 s (`wait_connected()`), and a clean-start client has lost its subscriptions then.
        """
        info = self.client.publish(
            topic, encode(payload), qos=qos, retain=retain, properties=properties
        )
        if qos == 0:
            info.wait_for_publish(timeout)
            return None
        with self._lock:
            if not self._lock.wait_for(lambda: info.mid in self._acks, timeout):
                raise MqttTestError(f"no PUBACK for {topic!r} within {timeout} s")
            reason = self._acks.pop(info.mid)
        if check and reason.is_failure:
            raise MqttTestError(f"publish to {topic!r} refused: {reason}")
        return reason

    # --- subscribe ----------------------------------------------------------------------------
    def subscribe(
        self, topic_filter: str, qos: int = 1, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Subscription:
        """Subscribe and wait for the SUBACK; messages are collected from before the SUBACK on."""
        subscription = self.collect(topic_filter)
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        if mid is None:
            raise MqttTestError(f"subscribe to {topic_filter!r} was not sent")
        with self._lock:
            if not self._lock.wait_for(lambda: mid in self._subacks, timeout):
                raise MqttTestError(f"no SUBACK for {topic_filter!r} within {timeout} s")
            reasons = self._subacks.pop(mid)
        if any(reason.is_failure for reason in reasons):
            raise MqttTestError(f"subscribe to {topic_filter!r} refused: {reasons}")
        return subscription

    def collect(self, topic_filter: str) -> Subscription:
        """Collect messages matching `topic_filter` without sending SUBSCRIBE.

        For a resumed persistent session, whose subscriptions live on the broker: call it
        before `connect()` so nothing the broker sends right after the CONNACK is missed.
        """
        subscription = Subscription(topic_filter, self)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop collecting; UNSUBSCRIBE only when no other Subscription uses the same filter."""
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
            still_used = any(
                s.topic_filter == subscription.topic_filter for s in self._subscriptions
            )
        if not still_used:
            self.client.unsubscribe(subscription.topic_filter)

    def ack(self, message: Message) -> None:
        """Send the PUBACK of a message received with `manual_ack=True`."""
        self.client.ack(message.mid, message.qos)

    # --- request / reply and retained state ------------------------------------------------
    def request_message(
        self,
        topic: str,
        payload: Payload,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        properties: Properties | None = None,
    ) -> Message:
        """Publish with ResponseTopic + CorrelationData; return the reply message.

        Without `response_topic`, a command topic `P/job-manager/commands/{actor}/{command}`
        gets its reply on `P/job-manager/replies/{actor}/{random}`.
        """
        reply_topic = response_topic or default_reply_topic(topic)
        correlation = correlation_data if correlation_data is not None else uuid.uuid4().bytes
        props = properties if properties is not None else new_properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        replies = self.subscribe(reply_topic, timeout=timeout)
        try:
            self.publish(topic, payload, properties=props, timeout=timeout)
            return replies.wait_for(lambda m: m.prop("CorrelationData") == correlation, timeout)
        finally:
            replies.unsubscribe()

    def request(
        self,
        topic: str,
        payload: Payload,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        properties: Properties | None = None,
    ) -> dict[str, Any]:
        """`request_message` decoded: the reply's JSON object."""
        reply = self.request_message(
            topic, payload, response_topic, correlation_data, timeout, properties
        )
        decoded = reply.json()
        if not isinstance(decoded, dict):
            raise MqttTestError(f"reply on {reply.topic!r} is not a JSON object: {decoded!r}")
        return decoded

    def retained_message(self, topic: str, timeout: float = DEFAULT_TIMEOUT) -> Message:
        """The retained message of `topic` (waits until one exists, up to `timeout`)."""
        subscription = self.subscribe(topic, timeout=timeout)
        try:
            return subscription.wait_for(lambda m: m.retain and m.topic == topic, timeout)
        finally:
            subscription.unsubscribe()

    def retained(self, topic: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The decoded JSON of the retained message of `topic`."""
        return self.retained_message(topic, timeout).json()


def default_reply_topic(command_topic: str) -> str:
    """`P/job-manager/commands/{actor}/...` -> a fresh `P/job-manager/replies/{actor}/{random}`."""
    levels = command_topic.split("/")
    try:
        index = levels.index("commands")
    except ValueError:
        raise ValueError(f"give a response_topic for {command_topic!r}") from None
    if index + 1 >= len(levels):
        raise ValueError(f"give a response_topic for {command_topic!r}")
    prefix = "/".join(levels[:index])
    return f"{prefix}/replies/{levels[index + 1]}/{uuid.uuid4().hex}"


def _failed(reason: ReasonCode | None) -> bool:
    return reason is not None and reason.is_failure


def _set_nodelay(client: paho.Client, userdata: Any, sock: Any) -> None:
    # Not a TCP socket (e.g. a websocket wrapper): nothing to tune.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def new_properties(packet_type: int) -> Properties:
    """An empty v5 Properties for a CONNECT or PUBLISH (`PacketTypes.PUBLISH`)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it unannotated


def publish_properties(**values: object) -> Any:
    """PUBLISH properties with these values (`ResponseTopic=...`, `UserProperty=[...]`)."""
    properties = new_properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def paho_parses(monkeypatch: Any) -> list[int]:
    """The `id` of the paho client each time paho's own `_handle_publish` parses a PUBLISH
    from now on (a fast path's override of it calls it only for what it leaves to paho)."""
    parsed: list[int] = []
    original = paho.Client._handle_publish

    def counted(self: paho.Client) -> Any:
        parsed.append(id(self))
        return original(self)

    monkeypatch.setattr(paho.Client, "_handle_publish", counted)
    return parsed
