"""A paho connection driven by its caller's thread: `poll()`, reconnects with back-off.

paho runs without its loop thread: the caller's `poll()` waits for the socket (and the
caller's own wake-up descriptors), and every read, write, keepalive and reconnect happens
in that one thread. Why: with paho's network thread, every message and every publish
crossed threads under the GIL, and a publish waited for the caller to block before the
network thread could send it (the caller then held the GIL for up to the 5 ms switch
interval); received bytes were read with 3-4 `recv` calls a packet. Here a publish or an
ack is written to the socket when it is made, received bytes are read 64 KiB at a time
(`BufferedClient`, with the fast paths), and nothing waits for a thread switch.

`fast_paths` (None: ATT_JM_MQTT_FAST_PATHS, true when unset) chooses the paho subclasses of
`att_jm.mqtt.common`, which override private paho members, or paho's documented paths only
(a plain `Client`): see `att_jm.mqtt.fast_paths`, which also refuses the fast paths on a paho
outside the tested range.

A connection that drops is retried from `poll()`, 50 ms doubling up to 2 s; each
successful CONNACK bumps `generation`. Subclasses say what to do once connected.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.config import MqttEndpoint
from att_jm.mqtt.common import (
    RECONNECT_MAX_DELAY,
    RECONNECT_MIN_DELAY,
    BufferedClient,
    drain,
    json_publish_properties,
    new_buffered_client,
    new_client,
)
from att_jm.mqtt.fast_paths import use_fast_paths

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike  # defined for type checkers only

log = structlog.get_logger("att_jm.mqtt")

KEEPALIVE_SECONDS: Final = 30
#: Longest a blocking TCP connect to the broker may take (paho's default is 5 s); the
#: caller waits for it, so it is kept short. A broker that is down refuses at once.
CONNECT_TIMEOUT_SECONDS: Final = 2.0
#: poll() returns at least this often so that keepalive and reconnects are serviced.
HOUSEKEEPING_SECONDS: Final = 1.0
#: Without the fast paths, paho's `loop_read` handles one packet a call: at most this many
#: are read in one go while more bytes wait (then writes, keepalive and wake-ups get a turn).
DOCUMENTED_PACKETS_PER_READ: Final = 256


class DrivenConnection:
    """The shared machinery: one paho client, polled and reconnected by its caller: a `kind`
    of `BufferedClient` with the fast paths, a plain paho `Client` without them.

    Single-threaded: every method must be called from the caller's one thread.
    """

    def __init__(
        self, endpoint: MqttEndpoint, *, client_id: str, manual_ack: bool,
        monotonic: Callable[[], float] = time.monotonic,
        kind: type[BufferedClient] = BufferedClient,
        fast_paths: bool | None = None,
    ) -> None:
        self.generation = 0
        self.connected = False
        #: The broker's Maximum Packet Size from the last CONNACK (MQTT v5); None: it set none
        #: (the protocol's own limit, 268,435,455 bytes, applies).
        self.max_packet_size: int | None = None
        self.connack_properties: Properties | None = None  # the last CONNACK's
        self._stopped = False
        self._monotonic = monotonic
        self._next_attempt: float | None = None  # when to (re)connect; None: not now
        self._delay = RECONNECT_MIN_DELAY
        #: Whether the fast paths are used (see `att_jm.mqtt.fast_paths`).
        self.fast_paths = use_fast_paths(fast_paths, client_id=client_id)
        self.client: Client
        #: Whether received bytes wait where `select()` cannot see them.
        self._buffered: Callable[[], bool]
        if self.fast_paths:
            buffered = new_buffered_client(endpoint, client_id, manual_ack=manual_ack, kind=kind)
            self.client, self._buffered = buffered, buffered.buffered
        else:
            self.client = new_client(endpoint, client_id, manual_ack=manual_ack)
            self._buffered = self._tls_pending
        #: Until then (time.monotonic), after our DISCONNECT, the socket is drained before it
        #: is closed (see `_drain_before_close`); None: closed at once.
        self._drain_until: float | None = None
        self.client.on_socket_close = self._drain_before_close
        self.client.connect_timeout = CONNECT_TIMEOUT_SECONDS
        # No in-flight cap: paho rescans its whole outgoing queue on every PUBACK while one is
        # set (a quarter of the writer's CPU in a burst); the broker and loopback keep up.
        self.client.max_inflight_messages_set(0)
        self._json = json_publish_properties()  # read-only once built: shared by every publish
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._endpoint = endpoint

    def _connect_soon(self, *, clean_start: bool, properties: Properties) -> None:
        """Connect on the next `poll()`, retrying for ever."""
        self.client.connect_async(
            self._endpoint.host, self._endpoint.port, keepalive=KEEPALIVE_SECONDS,
            clean_start=clean_start, properties=properties,
        )
        self._next_attempt = self._monotonic()

    def _wants_connection(self) -> bool:
        """Whether a lost connection is to be retried."""
        return not self._stopped

    def _connected(self, client: Client, flags: ConnectFlags) -> None:
        """Called once a CONNACK accepted the connection (after `generation` moved on)."""

    def _close(self, deadline: float) -> None:
        """Send DISCONNECT and write everything queued before it out, then read until the
        broker closes the connection (a clean close: no Last Will), until `deadline`."""
        self._drain_until = deadline
        self.client.disconnect()
        while self.client.socket() is not None and self._monotonic() < deadline:
            self._serve(0.05, ())
        self.connected = False
        self._drain_until = None

    def _drain_before_close(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        """paho's `on_socket_close` (documented; both modes): after our DISCONNECT, read until
        the broker closes its side (or `_drain_until`). Closing a socket with unread bytes
        makes the kernel reset the connection, and mosquitto then treats a clean DISCONNECT as
        a lost client ("disconnected due to out of memory") and publishes the Last Will:
        about one clean stop in ten right after activity left the retained status `offline,
        lost`. Other closes (a lost connection) are not drained."""
        deadline = self._drain_until
        if deadline is not None and isinstance(sock, socket.socket):
            self._drain_until = None
            drain(sock, deadline)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Within it, what is published or acknowledged leaves in as few TCP segments as
        possible, at its end (TCP_CORK): the broker wakes up once for a reply and its PUBACKs,
        or for the events of a commit, instead of once per packet."""
        sock = self.client.socket()
        if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET,
                                                                       socket.AF_INET6):
            yield
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # closed meanwhile: nothing left to send
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    # The network -------------------------------------------------------------------------

    def _serve(self, timeout: float, wake_fds: Sequence[int]) -> set[int]:
        """Wait up to `timeout` s for the broker or for one of `wake_fds` to be readable
        (the caller empties them), then do every pending read, write, keepalive and
        reconnect; which of `wake_fds` are readable. paho's callbacks run on the way."""
        client = self.client
        now = self._monotonic()
        if client.socket() is None and self._next_attempt is not None:
            if now >= self._next_attempt:
                self._reconnect(now)
            if self._next_attempt is not None:
                timeout = min(timeout, max(0.0, self._next_attempt - now))
        sock = client.socket()
        readers: list[Any] = list(wake_fds)
        writers: list[Any] = []
        if sock is not None:
            readers.append(sock)
            if client.want_write():
                writers.append(sock)
            if self._buffered():
                timeout = 0.0
        wait = max(0.0, min(timeout, HOUSEKEEPING_SECONDS))
        try:
            readable, writable, _ = select.select(readers, writers, [], wait)
        except (OSError, ValueError):  # the socket broke under us: reading tells paho
            readable, writable = ([] if sock is None else [sock]), []
        if sock is not None and client.socket() is sock:
            if sock in readable or self._buffered():
                self._read()
            if client.socket() is not None and (sock in writable or client.want_write()):
                client.loop_write()
            if client.socket() is not None:
                client.loop_misc()  # keepalive: PINGREQ when due, drop a dead connection
        return {fd for fd in wake_fds if fd in readable}

    def _read(self) -> None:
        """Read and handle every packet that has arrived (64 KiB per recv with the fast paths;
        paho's `loop_read` reads up to one packet a call without them)."""
        client = self.client
        if self.fast_paths:
            buffered = self._buffered
            while client.socket() is not None:
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or not buffered():
                    return
            return
        for _ in range(DOCUMENTED_PACKETS_PER_READ):
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            sock = client.socket()
            if sock is None or not (self._tls_pending() or _readable_now(sock)):
                return

    def _tls_pending(self) -> bool:
        """Whether TLS holds decrypted bytes not yet read (`select()` cannot see them)."""
        sock = self.client.socket()
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

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
        self.max_packet_size = getattr(properties, "MaximumPacketSize", None)
        self.connack_properties = properties
        self._delay = RECONNECT_MIN_DELAY
        self._connected(client, flags)

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False
        if self._wants_connection():
            self._next_attempt = self._monotonic() + self._delay
            self._delay = min(self._delay * 2, RECONNECT_MAX_DELAY)
        if self._wants_connection():
            log.warning("mqtt.disconnected", reason=str(reason))
        else:  # our own DISCONNECT at a stop (or a pause)
            log.info("mqtt.disconnected", reason=str(reason))


def _readable_now(sock: SocketLike) -> bool:
    """Whether `sock` has bytes to read right now."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile: the next read tells paho
        return False
    return bool(readable)
