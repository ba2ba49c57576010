"""Shared paho plumbing: clients, CONNECT properties and JSON PUBLISH properties.

Decisions (measured on mosquitto 2.0.11, see /work/shared/notes/mqtt.md):
- Every client speaks MQTT v5 with paho's callback API version 2.
- TCP_NODELAY on every socket: request/response p50 drops from ~88 ms to ~2.4 ms.
- Reconnect delay from 50 ms doubling up to 2 s: a restarted broker is found again quickly.
- CONNECT carries ReceiveMaximum 100 by default, so the in-flight window does not depend on the
  broker's config. Without it mosquitto uses its `max_inflight_messages` (20); with N it sends N
  unacknowledged messages to a consumer that does not ack (measured: 10 -> 10, 1000 -> 1000).
  A manual-ack consumer committing each drained batch to SQLite ran at the same rate with
  20, 100 or 1000 (~7,000-8,500 msg/s, noise larger than the differences), so the window is
  kept small: it bounds the redelivery after a crash, which idempotency absorbs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import structlog
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.config import MqttEndpoint

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike  # defined for type checkers only

log = structlog.get_logger("att_jm.mqtt")

JSON_CONTENT_TYPE: Final = "application/json"
_CONTENT_TYPE: Final = len(JSON_CONTENT_TYPE).to_bytes(2, "big") + JSON_CONTENT_TYPE.encode()
RECONNECT_MIN_DELAY: Final = 0.05
RECONNECT_MAX_DELAY: Final = 2
DEFAULT_RECEIVE_MAXIMUM: Final = 100

SocketHook = Callable[[Client, Any, "SocketLike"], None]
READ_CHUNK: Final = 64 * 1024
ClientT = TypeVar("ClientT", bound=Client)


class BufferedClient(Client):
    """A paho client that reads the socket 64 KiB at a time (a fast path: see
    `att_jm.mqtt.fast_paths`).

    paho reads each packet with one `recv` for its type byte, one per length byte and one
    for the rest: 3-4 system calls per message, the largest single cost of a burst. This
    subclass serves those reads from a buffer filled by one `recv` of up to 64 KiB.
    `buffered()` tells a caller that drives the loop itself (`ServiceConnection.poll`)
    that bytes wait in the buffer, which `select()` cannot see. It overrides paho's
    private `_sock_recv(bufsize)` (checked by signature at start and by behaviour in
    tests/integration/test_mqtt_paho_internals.py: packets read right across 64 KiB reads).
    Not for use with paho's own loop threads, whose `select()` would not see the buffer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self.on_pre_connect = self._forget_buffer  # a new connection starts empty

    def _forget_buffer(self, client: Client, userdata: Any) -> None:
        self._rbuf = b""
        self._rpos = 0

    def buffered(self) -> bool:
        """Whether received bytes wait in the buffer."""
        return self._rpos < len(self._rbuf)

    def _sock_recv(self, bufsize: int) -> bytes:
        pos = self._rpos
        if pos < len(self._rbuf):
            chunk = self._rbuf[pos : pos + bufsize]
            self._rpos = pos + len(chunk)
            return chunk
        data = super()._sock_recv(max(bufsize, READ_CHUNK))
        if len(data) <= bufsize:
            return data
        self._rbuf = data
        self._rpos = bufsize
        return data[:bufsize]


def drain(sock: socket.socket, deadline: float) -> None:
    """Read and drop what arrives on `sock` until the peer closes it or `deadline` passes
    (time.monotonic)."""
    import select  # noqa: PLC0415 -- only at a stop
    import time  # noqa: PLC0415

    try:
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                return
            if not sock.recv(65536):
                return  # the broker closed its side: nothing unread is left
    except OSError:
        return


class PublishingClient(BufferedClient):
    """A `BufferedClient` that handles a plain PUBACK cheaply, for a client that publishes a lot.

    paho decodes every PUBACK into a new ReasonCode and a new Properties (a third of a
    publishing loop's CPU). A PUBACK that says success (or "no matching subscribers")
    without properties, what mosquitto sends, is handled here with shared ones, as paho's own
    `_handle_pubackcomp` would; any other goes to paho. Overrides paho's private
    `_handle_pubackcomp(cmd)` and calls its `_do_on_publish(mid, reason_code, properties)`
    (a fast path: see `att_jm.mqtt.fast_paths`; tests/integration/test_mqtt_paho_internals.py
    checks that it releases the same mids with the same reasons as paho's own).
    """

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        size = len(packet)
        # packet id, then (v5) an optional reason code and an optional property length
        if cmd != "PUBACK" or not 2 <= size <= 4 or (size == 4 and packet[3] != 0):
            return super()._handle_pubackcomp(cmd)
        reason = _PUBACK_REASONS.get(packet[2] if size > 2 else 0)
        if reason is None:  # a failure, or a code paho should check itself
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _PUBACK_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


#: What a fast-path receiver gets for one QoS 1 or QoS 0 PUBLISH: mid (0 means QoS 0: a QoS 1
#: PUBLISH with packet id 0 is malformed, never decoded here), topic (raw bytes), payload,
#: ResponseTopic, CorrelationData, the RETAIN flag.
InboundHandler = Callable[[int, bytes, bytes, str | None, bytes | None, bool], None]
_PUBACK: Final = 0x40
_MQTT_V5: Final = 5
#: A PUBLISH the fast path cannot decode (malformed, or QoS 2) still goes to paho's parser,
#: which takes time quadratic in the number of its properties (it copies the rest of the
#: packet after each one, and the whole list of User Properties after each of those; the
#: figures are in docs/security.md); with more than this many it is refused as paho refuses
#: a malformed packet (MQTT_ERR_PROTOCOL: the connection is closed), without paho's parse.
#: A thousand cost paho little against the keepalive.
PAHO_PROPERTY_LIMIT: Final = 1000


class ServiceClient(PublishingClient):
    """A `PublishingClient` that also receives QoS 0 and 1 messages and acknowledges them
    cheaply: the writer's client.

    paho turns every received PUBLISH into an MQTTMessage with a Properties object (whose
    constructor alone builds a dozen dictionaries), matches it against the callbacks and
    then calls on_message: the largest part of receiving. A v5 QoS 0 or 1 PUBLISH is decoded
    here (`_decode_publish`: every property MQTT 5 allows on a PUBLISH, in one linear pass)
    and handed to `on_inbound`; only a malformed one (or QoS 2, which the service never
    subscribes to) goes through paho as before (which then calls `on_message`), and not even
    that when it holds more than PAHO_PROPERTY_LIMIT properties. `ack_many` writes the
    PUBACKs of a whole batch in one send. Overrides paho's private `_handle_publish()` and
    uses `_in_packet`, `_protocol` and `_packet_queue(command, packet, mid, qos)` (a fast
    path: see `att_jm.mqtt.fast_paths`; tests/integration/test_mqtt_paho_internals.py
    compares it with paho's own decoding and `Client.ack`).
    """

    on_inbound: InboundHandler | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self.on_inbound
        if handler is None or self._protocol != _MQTT_V5:
            return super()._handle_publish()
        in_packet = self._in_packet
        packet = in_packet["packet"]
        command = in_packet["command"]
        qos = (command >> 1) & 0x03
        if qos == 1:
            decoded = _decode_publish(packet)
        else:  # QoS 0 (a publisher's choice); QoS 2 never comes (subscribed at 1 at most)
            decoded = _decode_publish(packet, 0) if qos == 0 else None
        if decoded is not None:
            handler(*decoded, bool(command & 0x01))
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        if _flood(packet, qos, "the fast path cannot decode (malformed, or QoS 2)"):
            return MQTTErrorCode.MQTT_ERR_PROTOCOL  # what paho returns for a malformed packet
        return super()._handle_publish()

    def ack_many(self, mids: Sequence[int]) -> None:
        """Send the PUBACK of each of `mids` (QoS 1), all in one write."""
        if mids:
            packet = b"".join(bytes((_PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in mids)
            self._packet_queue(_PUBACK, packet, 0, 0)


class FloodGuardClient(Client):
    """A paho client that lets paho parse what it receives (and acknowledge it, call
    `on_message`), except a v5 PUBLISH holding more than PAHO_PROPERTY_LIMIT properties: it
    is refused as paho refuses a malformed packet (the connection is closed), without paho's
    parse, quadratic in their number. For a connection on paho's own thread that receives
    little (an instance's read requests, `att_jm.mqtt.instances`); overrides paho's private
    `_handle_publish()` and reads `_in_packet` and `_protocol` (a fast path: see
    `att_jm.mqtt.fast_paths`)."""

    def _handle_publish(self) -> MQTTErrorCode:
        if self._protocol == _MQTT_V5:
            in_packet = self._in_packet
            qos = (in_packet["command"] >> 1) & 0x03
            if _flood(in_packet["packet"], qos, "received"):
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
        return super()._handle_publish()


def _flood(packet: bytes | bytearray, qos: int, which: str) -> bool:
    """Whether a PUBLISH's packet holds more than PAHO_PROPERTY_LIMIT properties (then
    logged as refused); `which`: what the log says of it."""
    if _count_properties(packet, qos, PAHO_PROPERTY_LIMIT) <= PAHO_PROPERTY_LIMIT:
        return False
    log.error("mqtt.publish_refused", qos=qos, size=len(packet),
              reason=f"more than {PAHO_PROPERTY_LIMIT} properties in a PUBLISH {which}")
    return True


# The property identifiers MQTT 5.0 allows on a PUBLISH (section 3.3.2.3), by their value's
# encoding: a byte, a two or four byte integer, a variable byte integer, a UTF-8 string or
# binary data (both: two bytes of length, then the bytes), a pair of UTF-8 strings.
_PAYLOAD_FORMAT: Final = 0x01  # byte
_MESSAGE_EXPIRY: Final = 0x02  # four bytes
_CONTENT_TYPE_ID: Final = 0x03  # string
_RESPONSE_TOPIC: Final = 0x08  # string
_CORRELATION_DATA: Final = 0x09  # binary
_SUBSCRIPTION_ID: Final = 0x0B  # variable byte integer, may repeat
_TOPIC_ALIAS: Final = 0x23  # two bytes
_USER_PROPERTY: Final = 0x26  # string pair, may repeat
#: Identifier -> the length of its value (after the identifier), for fixed-size values.
_FIXED: Final = {_PAYLOAD_FORMAT: 1, _MESSAGE_EXPIRY: 4, _TOPIC_ALIAS: 2}
_VARINT_BYTES: Final = 4  # a variable byte integer's longest form


def _decode_publish(  # noqa: PLR0912 -- one inlined pass: the hot path of every message
    packet: bytes | bytearray, qos: int = 1,
) -> tuple[int, bytes, bytes, str | None, bytes | None] | None:
    """(mid, topic, payload, ResponseTopic, CorrelationData) of a v5 QoS 1 (or `qos` 0: mid
    0) PUBLISH's packet (what follows the fixed header); None when it is malformed (paho then
    decides, as it always did).

    One pass over the property block, whatever it holds: each property MQTT 5 allows on a
    PUBLISH is read in constant time, or skipped (by its length) when the service does not
    use it: User Properties, Subscription Identifiers, Topic Alias, Payload Format Indicator,
    Message Expiry Interval, Content Type. Nothing is copied but the topic, the payload,
    ResponseTopic and CorrelationData. Malformed: the block or a property runs past its end,
    a property ends elsewhere than where the block does, an identifier that is not one of
    those (or is written in more than one byte), a variable byte integer longer than four
    bytes, a ResponseTopic that is not UTF-8, packet id 0 at QoS 1. The values skipped are
    not checked (as before: neither was Content Type's; mosquitto checks every property of
    what it receives before it forwards it).
    """
    try:
        size = (packet[0] << 8) | packet[1]
        pos = 2 + size
        topic = bytes(packet[2:pos])
        mid = 0
        if qos:
            mid = (packet[pos] << 8) | packet[pos + 1]
            if mid == 0:
                raise _Malformed
            pos += 2
        length = packet[pos]  # the properties' length, a variable byte integer
        if length & 0x80:
            length, pos = _varint(packet, pos)
        else:
            pos += 1
        end = pos + length
        if end > len(packet):
            raise _Malformed
        response: str | None = None
        correlation: bytes | None = None
        while pos < end:
            identifier = packet[pos]
            if identifier == _CONTENT_TYPE_ID:
                pos += 3 + ((packet[pos + 1] << 8) | packet[pos + 2])
            elif identifier == _USER_PROPERTY:  # two strings
                pos += 3 + ((packet[pos + 1] << 8) | packet[pos + 2])
                pos += 2 + ((packet[pos] << 8) | packet[pos + 1])
            elif identifier in (_RESPONSE_TOPIC, _CORRELATION_DATA):
                start = pos + 3
                pos = start + ((packet[pos + 1] << 8) | packet[pos + 2])
                if pos > end:
                    raise _Malformed
                if identifier == _RESPONSE_TOPIC:
                    response = packet[start:pos].decode()
                else:
                    correlation = bytes(packet[start:pos])
            elif identifier in _FIXED:
                pos += 1 + _FIXED[identifier]
            elif identifier == _SUBSCRIPTION_ID:
                pos = _varint(packet, pos + 1)[1]
            else:  # not allowed on a PUBLISH, or not one byte
                raise _Malformed
        if pos != end:
            raise _Malformed
        return mid, topic, bytes(packet[end:]), response, correlation
    except (IndexError, ValueError):  # ValueError: _Malformed, UnicodeDecodeError
        return None


class _Malformed(ValueError):
    """A PUBLISH the fast path leaves to paho."""


def _varint(packet: bytes | bytearray, pos: int) -> tuple[int, int]:
    """The variable byte integer at `pos` and where it ends; IndexError when it is cut,
    _Malformed when it is longer than four bytes."""
    value = 0
    for offset in range(_VARINT_BYTES):
        byte = packet[pos + offset]
        value |= (byte & 0x7F) << (7 * offset)
        if not byte & 0x80:
            return value, pos + offset + 1
    raise _Malformed


def _count_properties(packet: bytes | bytearray, qos: int, limit: int) -> int:
    """How many properties a PUBLISH's packet holds, as far as they can be told apart (to the
    first that is malformed), counting no further than `limit` + 1: cheap, for a packet
    about to go to paho's parser."""
    count = 0
    try:
        length, pos = _varint(packet, 2 + ((packet[0] << 8) | packet[1]) + (2 if qos else 0))
        end = min(pos + length, len(packet))
        while pos < end and count <= limit:
            identifier = packet[pos]
            count += 1
            if identifier == _USER_PROPERTY:
                pos += 3 + ((packet[pos + 1] << 8) | packet[pos + 2])
                pos += 2 + ((packet[pos] << 8) | packet[pos + 1])
            elif identifier in (_CONTENT_TYPE_ID, _RESPONSE_TOPIC, _CORRELATION_DATA):
                pos += 3 + ((packet[pos + 1] << 8) | packet[pos + 2])
            elif identifier in _FIXED:
                pos += 1 + _FIXED[identifier]
            elif identifier == _SUBSCRIPTION_ID:
                pos = _varint(packet, pos + 1)[1]
            else:  # paho stops at it too
                break
    except (IndexError, _Malformed):
        pass
    return count


def reply_properties(correlation: bytes | None, *, packed: bool = True) -> Properties:
    """PUBLISH properties ContentType application/json (+ CorrelationData); `packed`: packed
    at once without paho's property machinery (~25 us a reply otherwise; a fast path), else
    paho's own `Properties`. ValueError for CorrelationData over 65535 bytes."""
    if correlation is not None and len(correlation) > 0xFFFF:
        raise ValueError("CorrelationData longer than 65535 bytes")
    if not packed:
        return json_publish_properties(correlation_data=correlation)
    body = b"\x03" + _CONTENT_TYPE
    if correlation is not None:
        body += b"\x09" + len(correlation).to_bytes(2, "big") + correlation
    return _Packed(_variable_int(len(body)) + body)


def _variable_int(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Packed(Properties):
    """Properties given as their packed bytes (only `pack()` is used on a publish)."""

    _packed: bytes

    def __init__(self, packed: bytes) -> None:  # paho's __init__ (a dozen dicts) skipped
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)  # paho's __setattr__ checks names

    def pack(self) -> bytes:
        return self._packed

    def __repr__(self) -> str:
        return f"Properties(packed={self._packed!r})"

    __str__ = __repr__


def set_tcp_nodelay(client: Client, userdata: Any, sock: SocketLike) -> None:
    """Disable Nagle's algorithm on a TCP socket; other sockets are left alone."""
    if not isinstance(sock, socket.socket):  # also true for ssl.SSLSocket
        return
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return


def add_socket_open_hook(client: Client, hook: SocketHook) -> None:
    """Run `hook` when a socket opens, after whatever already runs then (e.g. TCP_NODELAY)."""
    previous = client.on_socket_open

    def both(c: Client, userdata: Any, sock: SocketLike) -> None:
        if previous is not None:
            previous(c, userdata, sock)
        hook(c, userdata, sock)

    client.on_socket_open = both


def new_client(endpoint: MqttEndpoint, client_id: str, *, manual_ack: bool = False,
               kind: type[Client] = Client) -> Client:
    """A v5 client for `endpoint` (credentials, TLS for mqtts://), not yet connected
    (`kind`: paho's Client, or `FloodGuardClient`).

    TLS verifies the broker's certificate against `endpoint.tls_ca` (the system's trust
    store when None) and presents `tls_cert`/`tls_key` when given.
    """
    return _configured(kind, endpoint, client_id, manual_ack)


def new_buffered_client(
    endpoint: MqttEndpoint, client_id: str, *, manual_ack: bool = False,
    kind: type[BufferedClient] = BufferedClient,
) -> BufferedClient:
    """`new_client`, reading 64 KiB at a time, for a caller that drives its own network loop
    (`kind`: `PublishingClient` for one that mostly publishes)."""
    return _configured(kind, endpoint, client_id, manual_ack)


def _configured(
    kind: type[ClientT], endpoint: MqttEndpoint, client_id: str, manual_ack: bool
) -> ClientT:
    client = kind(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:  # the broker's certificate is verified (the site's CA, or the system's)
        client.tls_set(ca_certs=endpoint.tls_ca, certfile=endpoint.tls_cert,
                       keyfile=endpoint.tls_key)
    client.on_socket_open = set_tcp_nodelay
    client.reconnect_delay_set(
        min_delay=RECONNECT_MIN_DELAY,  # type: ignore[arg-type]  # paho annotates int but only does float arithmetic and sleeps with it
        max_delay=RECONNECT_MAX_DELAY,
    )
    return client


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated


#: The PUBACK reason codes that say success (Success, No matching subscribers), built once
#: and shared: read-only.
_PUBACK_REASONS: Final = {
    code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0x00, 0x10)
}
_PUBACK_PROPERTIES: Final = _properties(PacketTypes.PUBACK)


class PackedProperties(Properties):
    """Properties packed once, at the first publish, for an object that never changes after
    it is built and is shared by every publish (paho packs them again on each: ~20% of a
    publishing loop's CPU)."""

    def pack(self) -> bytes:
        packed: bytes | None = self.__dict__.get("_packed")
        if packed is None:
            packed = bytes(super().pack())  # type: ignore[no-untyped-call]  # paho leaves it unannotated
            object.__setattr__(self, "_packed", packed)  # not a property: paho's checks skipped
        return packed


def connect_properties(
    session_expiry_seconds: int | None, *, receive_maximum: int | None = DEFAULT_RECEIVE_MAXIMUM,
    maximum_packet_size: int | None = None,
) -> Properties:
    """CONNECT properties: SessionExpiryInterval when given (None = session ends with the
    connection), ReceiveMaximum when given (None = the broker's default window),
    MaximumPacketSize when given (the broker then drops, and logs, any larger message for
    this client instead of sending it: measured on mosquitto 2.0.11, "Dropping too large
    outgoing PUBLISH", also for messages queued while the client was away)."""
    properties = _properties(PacketTypes.CONNECT)
    if session_expiry_seconds is not None:
        properties.SessionExpiryInterval = session_expiry_seconds
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    if maximum_packet_size is not None:
        properties.MaximumPacketSize = maximum_packet_size
    return properties


def inbound_packet_limit(max_payload_bytes: int) -> int:
    """The largest packet the service accepts: four times the payload limit (so a payload a
    little over it still arrives and is recorded `too_large`) plus room for a topic of 64 KiB
    and the properties. A larger message is dropped by the broker, never held in memory."""
    return 4 * max_payload_bytes + 64 * 1024 + 1024


def json_publish_properties(
    *,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    message_expiry_seconds: int | None = None,
    will: bool = False,
    packed: bool = False,
) -> Properties:
    """PUBLISH (or, with `will`, Last Will) properties: ContentType application/json + the given.

    `packed`: packed once for all (`PackedProperties`): never change the object afterwards.
    """
    packet_type = PacketTypes.WILLMESSAGE if will else PacketTypes.PUBLISH
    properties = (
        PackedProperties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated
        if packed else _properties(packet_type)
    )
    properties.ContentType = JSON_CONTENT_TYPE
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation_data is not None:
        properties.CorrelationData = correlation_data
    if message_expiry_seconds is not None:
        properties.MessageExpiryInterval = message_expiry_seconds
    return properties
