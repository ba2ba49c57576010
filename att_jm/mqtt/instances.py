"""The connections of an instance among several on one PostgreSQL store (att_jm/service/
standby.py): its own status connection, and the service's session guarded by the lease.

- `InstanceConnection`: client `{client_id}.{instance}`, a clean session, on a network thread
  of paho's own (it lives through the instance's standby and active phases, and the writer's
  loop drives only the service's session; it wakes once a second and sends a PINGREQ every 30
  s, nothing the writer notices). It publishes the instance's status, retained, with a Last
  Will; with `requests`, it subscribes to them (QoS 1) and publishes what `answer` returns
  for each on its ResponseTopic, with its CorrelationData.
- `GuardedConnection`: the service's session (`ServiceConnection`, the shared client id) that
  connects only while `may_connect()` says so (the lease is held and trusted): a former
  leader that wakes up from a pause never takes the session back from the new one, not even
  by a reconnect already scheduled. `abandon()` leaves without a word of its own: a
  DISCONNECT "with Will Message", so the broker announces the service `offline` unless a new
  leader takes the session within the Will's delay.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from att_jm.config import MqttEndpoint
from att_jm.mqtt.adapter import WILL_DELAY_SECONDS, ServiceConnection
from att_jm.mqtt.common import (
    FloodGuardClient,
    connect_properties,
    json_publish_properties,
    new_client,
    reply_properties,
)
from att_jm.mqtt.driven import KEEPALIVE_SECONDS
from att_jm.mqtt.fast_paths import use_fast_paths

log = structlog.get_logger("att_jm.mqtt")

#: (topic, payload, ResponseTopic, CorrelationData) -> the reply to publish (None: none).
Answer = Callable[[str, bytes, str | None, bytes | None], dict[str, Any] | None]


class InstanceConnection:
    """An instance's own connection: its retained status on `topic`, `offline` as its Last
    Will. Thread-safe: paho's own network thread drives it."""

    def __init__(
        self, endpoint: MqttEndpoint, *, client_id: str, topic: str,
        body: Callable[[], dict[str, Any]], requests: str | None = None,
        answer: Answer | None = None, fast_paths: bool | None = None,
    ) -> None:
        """`fast_paths` (as `ServiceConnection`'s; None: as ATT_JM_MQTT_FAST_PATHS says): a
        request holding more than 1,000 MQTT properties is refused before paho parses it
        (`FloodGuardClient`); without them paho parses everything (docs/security.md)."""
        self.topic = topic
        self._body = body
        self._json = json_publish_properties()
        self._requests = requests
        self._answer = answer
        guarded = requests is not None and use_fast_paths(fast_paths, client_id=client_id)
        self.client = new_client(endpoint, client_id,
                                 kind=FloodGuardClient if guarded else Client)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._endpoint = endpoint

    def start(self, last_will: dict[str, Any]) -> None:
        """Connect in the background (retrying for ever), `last_will` retained if the
        connection is lost for longer than the Will's delay."""
        will = json_publish_properties(will=True)
        will.WillDelayInterval = WILL_DELAY_SECONDS
        self.client.will_set(self.topic, orjson.dumps(last_will), qos=1, retain=True,
                             properties=will)
        self.client.connect_async(self._endpoint.host, self._endpoint.port,
                                  keepalive=KEEPALIVE_SECONDS, clean_start=True,
                                  properties=connect_properties(None))
        self.client.loop_start()

    def publish(self) -> None:
        """Publish the status (what `body()` says now), retained; again after a reconnect."""
        self.client.publish(self.topic, orjson.dumps(self._body()), qos=1, retain=True,
                            properties=self._json)

    def stop(self, offline: dict[str, Any], timeout: float = 2.0) -> None:
        """Publish `offline`, retained, wait for its PUBACK (at most `timeout` s) and
        disconnect normally (no Last Will)."""
        if self.connected.is_set():
            info = self.client.publish(self.topic, orjson.dumps(offline), qos=1, retain=True,
                                       properties=self._json)
            with contextlib.suppress(RuntimeError, ValueError):  # lost: the Will says offline
                info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("mqtt.instance_connect_refused", reason=str(reason))
            return
        self.connected.set()
        if self._requests is not None:  # a retained request is never answered at subscribe
            client.subscribe(self._requests, options=SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
        self.publish()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        """A request: its answer on its ResponseTopic (never raises: paho's thread)."""
        if self._answer is None:
            return
        try:
            properties = message.properties
            response = getattr(properties, "ResponseTopic", None)
            correlation = getattr(properties, "CorrelationData", None)
            reply = self._answer(message.topic, bytes(message.payload),
                                 response if isinstance(response, str) else None,
                                 None if correlation is None else bytes(correlation))
            if reply is not None and isinstance(response, str):
                client.publish(response, orjson.dumps(reply), qos=1,
                               properties=reply_properties(
                                   None if correlation is None else bytes(correlation),
                                   packed=False))
        except Exception:
            log.exception("mqtt.instance_request_failed", topic=message.topic[:200])

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()


#: DISCONNECT reason 0x04: the broker publishes the Last Will (after its delay) as if the
#: connection had been lost.
_WITH_WILL = 0x04


class GuardedConnection(ServiceConnection):
    """The service's session, connecting only while `may_connect()` is true."""

    def __init__(self, endpoint: MqttEndpoint, *, may_connect: Callable[[], bool],
                 **kwargs: Any) -> None:
        super().__init__(endpoint, **kwargs)
        self._may_connect = may_connect

    def _wants_connection(self) -> bool:
        return super()._wants_connection() and self._may_connect()

    def _reconnect(self, now: float) -> None:
        if not self._may_connect():  # a (re)connect scheduled before the lease was lost
            self._next_attempt = None
            log.error("mqtt.connect_refused_without_lease")
            return
        super()._reconnect(now)

    def abandon(self, timeout: float = 2.0) -> None:
        """Leave without publishing anything: DISCONNECT with reason "Disconnect with Will
        Message" (nothing in flight is acknowledged; the broker keeps the session and its
        messages for the next leader, and publishes the Will unless that one connects within
        its delay)."""
        self._stopped = True
        self._next_attempt = None
        if self.client.socket() is None:
            return
        deadline = self._drain_until = self._monotonic() + timeout
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT,
                                                     identifier=_WITH_WILL))
        while self.client.socket() is not None and self._monotonic() < deadline:
            self._serve(0.05, ())
        self.connected = False
        self._drain_until = None
