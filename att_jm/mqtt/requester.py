"""Operator request/response over MQTT v5: one command out, its correlated reply back.

Exceptions:
    RequesterError            anything that kept a request from getting its reply
    ├── RequestTimeout        no CONNACK, SUBACK, PUBACK or reply within the timeout
    ├── ConnectFailed         the broker could not be reached, refused us, or dropped us
    ├── RequestError          the broker refused the subscription or the command (e.g. Not
    │                         authorized), the arguments are too large, or the reply is malformed
    └── ServiceOffline        the service's retained status says `offline`, or there is none

A Requester uses a clean session that ends with the connection (no SessionExpiryInterval), so a
CLI run leaves nothing behind on the broker. Each request subscribes to its own reply topic and
waits for the SUBACK before publishing, so the reply cannot be missed.

With a `status_topic` (`P/job-manager/status`), the first request also subscribes to the
service's retained status, in the same round trip: the two SUBSCRIBEs go out back to back and
mosquitto sends a topic's retained message right after its SUBACK, so once the reply topic's
SUBACK is in, the status is too (when there is one; a broker that sends it later gets
`status_wait` seconds). `offline`, or no status at all, raises ServiceOffline before anything
is published; a status turning `offline` while a reply is awaited raises it too (`sent`).
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import orjson
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.config import MqttEndpoint
from att_jm.mqtt.common import connect_properties, json_publish_properties, new_client
from att_jm.topics import Topics

KEEPALIVE: Final = 30
DEFAULT_MAX_PAYLOAD: Final = 256 * 1024
STATUS_WAIT: Final = 0.5  # how long a missing retained status is waited for after its SUBACK


class RequesterError(Exception):
    """A request did not get its reply."""


class RequestTimeout(RequesterError):
    """Nothing came back in time."""


class ConnectFailed(RequesterError):
    """The broker could not be reached, refused the connection, or dropped it."""


class RequestError(RequesterError):
    """The broker refused the request, or the reply could not be understood."""


class ServiceOffline(RequesterError):
    """The service's retained status says `offline` (`status`), or there is none (`status` is
    None). `sent`: the command was already published (the status turned offline while its
    reply was awaited); otherwise nothing was sent."""

    def __init__(self, topic: str, status: dict[str, object] | None, *, sent: bool) -> None:
        self.topic = topic
        self.status = status
        self.sent = sent
        state = "no status" if status is None else "offline"
        super().__init__(f"the job manager is {state} ({topic})")


def parse_status(payload: bytes | None) -> dict[str, object] | None:
    """A retained status payload as an object; None when absent (no message, or an empty one,
    which clears a retained message); `{}` when it is not a JSON object (state unknown)."""
    if not payload:
        return None
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def check_level(value: str, what: str) -> str:
    """`value` if it is one MQTT topic level (non-empty, no `/ + #` or NUL), else ValueError."""
    if not value or any(c in value for c in "/+#\x00"):
        raise ValueError(f"{what} {value!r} must be one topic level: non-empty, no / + # or NUL")
    return value


def check_topic_name(topic: str) -> str:
    """`topic` if it can be published to or read as one topic (no wildcards), else ValueError."""
    if not topic or any(c in topic for c in "+#\x00"):
        raise ValueError(f"topic {topic!r} must be non-empty, without + # or NUL")
    return topic


def decode_reply(payload: bytes) -> dict[str, object]:
    """The reply envelope `{"ok": ...}` in `payload`, else RequestError."""
    try:
        reply = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise RequestError(f"the reply is not JSON: {error}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise RequestError("the reply is not an object with a boolean 'ok'")
    return reply


class _Mailbox:
    """What paho's network thread reports through the callbacks `attach` sets, kept keyed so a
    waiter can never miss an early answer: a CONNACK, a lost link, SUBACKs and PUBACKs by
    message id, the messages wanted (by correlation data, else by topic), the latest status."""

    def __init__(self, status_topic: str | None) -> None:
        self.changed = threading.Condition()
        self.status_topic = status_topic
        self.connack: ReasonCode | None = None
        self.lost: str | None = None
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self.wanted: set[bytes | str] = set()
        self.messages: dict[bytes | str, bytes] = {}
        self.status: bytes | None = None  # the latest message on the status topic

    def put(self, update: Callable[[], None]) -> None:
        with self.changed:
            update()
            self.changed.notify_all()

    def wait(self, ready: Callable[[], Any], deadline: float, waiting_for: str) -> Any:
        """The first truthy `ready()` before `deadline`; ConnectFailed if the link drops."""
        with self.changed:
            while True:
                value = ready()
                if value:
                    return value
                if self.lost is not None:
                    raise ConnectFailed(f"connection to the broker lost: {self.lost}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(f"no {waiting_for} in time")
                self.changed.wait(remaining)

    def want(self, key: bytes | str) -> None:
        """Keep the first message of `key` (a correlation, or a topic) from now on."""
        self.put(lambda: self.wanted.add(key))

    def forget(self, key: bytes | str) -> None:
        def drop() -> None:
            self.wanted.discard(key)
            self.messages.pop(key, None)

        self.put(drop)

    # paho's callbacks (its network thread: never raise, never block) ---------------------

    def attach(self, client: Client) -> None:
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.put(lambda: setattr(self, "connack", reason))

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.put(lambda: setattr(self, "lost", str(reason)))

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self.put(lambda: self.subacks.__setitem__(mid, codes))

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.put(lambda: self.pubacks.__setitem__(mid, reason))

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        key: bytes | str | None = bytes(correlation) if correlation is not None else None
        if key not in self.wanted:
            try:
                key = message.topic
            except UnicodeDecodeError:
                return
        payload = bytes(message.payload)
        if key == self.status_topic:
            self.put(lambda: setattr(self, "status", payload))
        self.put(lambda: self._keep(key, payload))

    def _keep(self, key: bytes | str | None, payload: bytes) -> None:
        if key in self.wanted and key not in self.messages:
            self.messages[key] = payload


class Requester:
    """A short-lived MQTT client for operator commands; use it as a context manager."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        actor: str,
        topic_prefix: str = "att",
        connect_timeout: float = 10.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        status_topic: str | None = None,
        status_wait: float = STATUS_WAIT,
    ) -> None:
        """`status_topic`: the service's retained status; requests then fail fast
        (ServiceOffline) when it says `offline` or is absent (see the module's doc)."""
        self.endpoint = endpoint
        self.actor = check_level(actor, "actor")
        self.topics = Topics(topic_prefix)
        self.connect_timeout = connect_timeout
        self.max_payload_bytes = max_payload_bytes
        self.status_topic = None if status_topic is None else check_topic_name(status_topic)
        self.status_wait = status_wait
        self._watching = False  # subscribed to the status topic (its SUBACK in)
        self._unwatchable = False  # the broker refused that subscription: no status check
        # A client id of its user (the site's broker requires it: `att_jm/site/clientid.c`).
        owner = endpoint.username or "att-jm"
        self.client_id = f"{owner}.cli-{uuid.uuid4().hex[:12]}"
        self._box = _Mailbox(self.status_topic)
        self._client = new_client(self.endpoint, self.client_id)
        self._box.attach(self._client)

    # Life cycle --------------------------------------------------------------------------

    def __enter__(self) -> Requester:
        self.connect()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect with a clean, non-persistent session; ConnectFailed or RequestTimeout."""
        where = f"{self.endpoint.host}:{self.endpoint.port}"
        try:
            self._client.connect(
                self.endpoint.host, self.endpoint.port, keepalive=KEEPALIVE, clean_start=True,
                properties=connect_properties(None, receive_maximum=None),
            )
        except (OSError, ValueError) as error:
            raise ConnectFailed(f"cannot connect to the broker at {where}: {error}") from None
        self._client.loop_start()
        deadline = time.monotonic() + self.connect_timeout
        try:
            reason: ReasonCode = self._box.wait(lambda: self._box.connack, deadline, "CONNACK")
        except RequesterError:
            self.close()
            raise
        if reason.is_failure:
            self.close()
            raise ConnectFailed(f"the broker at {where} refused the connection: {reason}")

    def close(self) -> None:
        """Disconnect and stop the network thread (safe to call twice)."""
        self._client.on_disconnect = None
        self._client.disconnect()
        self._client.loop_stop()

    # Requests ----------------------------------------------------------------------------

    def request(self, command: str, args: dict[str, object], timeout: float) -> dict[str, object]:
        """Send `command` with `args`; the reply envelope `{"ok": ..., "result" | "error": ...}`."""
        check_level(command, "command")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        payload = orjson.dumps(args)
        if len(payload) > self.max_payload_bytes:
            raise RequestError(
                f"the arguments are {len(payload)} bytes; the limit is {self.max_payload_bytes}"
            )
        started = time.monotonic()
        deadline = started + timeout
        reply_topic = self.topics.reply(self.actor, uuid.uuid4().hex)
        correlation = secrets.token_bytes(16)
        self._box.want(correlation)
        try:
            # The status first: its retained message arrives before the reply topic's SUBACK.
            watch = self._status_to_watch()
            status = None if watch is None else self._send_subscribe(watch)
            reply = self._send_subscribe(reply_topic)
            if status is not None:
                try:
                    self._await_suback(status, deadline)
                    self._watching = True
                except RequestError:  # not allowed to read it: requests go on unchecked
                    self._unwatchable = True
            self._await_suback(reply, deadline)
            self._check_online(min(deadline, started + self.status_wait))
            properties = json_publish_properties(
                response_topic=reply_topic, correlation_data=correlation,
                message_expiry_seconds=max(1, math.ceil(timeout)),
            )
            topic = self.topics.command(self.actor, command)
            self._publish(topic, payload, properties, deadline)
            body: bytes = self._box.wait(
                lambda: self._reply_or_offline(correlation), deadline, f"reply to {command}"
            )
        finally:
            self._box.forget(correlation)
            self._client.unsubscribe(reply_topic)
        return decode_reply(body)

    def _status_to_watch(self) -> str | None:
        """The status topic while it still needs subscribing to."""
        return None if self._watching or self._unwatchable else self.status_topic

    def _check_online(self, until: float) -> None:
        """ServiceOffline when the status says offline or, after waiting until `until` for
        it, there is none (a status that is not `offline` lets the request go on)."""
        topic = self.status_topic
        if topic is None or not self._watching:
            return
        with contextlib.suppress(RequestTimeout):  # absent: decided below
            self._box.wait(lambda: self._box.status is not None, until, "status")
        with self._box.changed:
            status = parse_status(self._box.status)
        if status is None or status.get("state") == "offline":
            raise ServiceOffline(topic, status, sent=False)

    def _reply_or_offline(self, correlation: bytes) -> bytes | None:
        """The reply, once in; ServiceOffline as soon as the status says offline (called with
        the mailbox's lock held)."""
        body = self._box.messages.get(correlation)
        if body is not None or self.status_topic is None or not self._watching:
            return body
        status = parse_status(self._box.status)
        if status is not None and status.get("state") == "offline":
            raise ServiceOffline(self.status_topic, status, sent=True)
        return None

    def get_retained(self, topic: str, timeout: float) -> dict[str, object] | None:
        """The JSON object retained on `topic`; None when nothing (or an empty payload) is there.

        Waits for the SUBACK of a second, private subscription as a barrier: mosquitto sends a
        topic's retained message right after its SUBACK, so once the barrier's SUBACK is in,
        no retained message means there is none.
        """
        check_topic_name(topic)
        deadline = time.monotonic() + timeout
        barrier = self.topics.reply(self.actor, uuid.uuid4().hex)
        self._box.want(topic)
        try:
            self._subscribe(topic, deadline)
            self._subscribe(barrier, deadline)
            with self._box.changed:
                payload = self._box.messages.get(topic)
        finally:
            self._box.forget(topic)
            self._client.unsubscribe([topic, barrier])
        if not payload:
            return None
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise RequestError(f"the message retained on {topic} is not JSON: {error}") from None
        if not isinstance(value, dict):
            raise RequestError(f"the message retained on {topic} is not a JSON object")
        return value

    def _subscribe(self, topic: str, deadline: float) -> None:
        self._await_suback(self._send_subscribe(topic), deadline)

    def _send_subscribe(self, topic: str) -> tuple[int, str]:
        """SUBSCRIBE to `topic` without waiting: its (mid, topic) for `_await_suback`."""
        _, mid = self._client.subscribe(topic, qos=1)
        if mid is None:
            raise ConnectFailed("not connected to the broker")
        return mid, topic

    def _await_suback(self, sent: tuple[int, str], deadline: float) -> None:
        mid, topic = sent
        codes: list[ReasonCode] = self._box.wait(
            lambda: self._box.subacks.pop(mid, None), deadline, f"SUBACK for {topic}"
        )
        refused = [code for code in codes if code.is_failure]
        if refused:
            raise RequestError(f"the broker refused the subscription to {topic}: {refused[0]}")

    def _publish(self, topic: str, payload: bytes, properties: Properties, deadline: float) -> None:
        info = self._client.publish(topic, payload, qos=1, properties=properties)
        if info.rc != 0:
            raise ConnectFailed(f"cannot publish to {topic} (paho error {info.rc})")
        reason: ReasonCode = self._box.wait(
            lambda: self._box.pubacks.pop(info.mid, None), deadline, f"PUBACK for {topic}"
        )
        if reason.is_failure:
            raise RequestError(f"the broker refused the command on {topic}: {reason}")
