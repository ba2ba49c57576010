"""The switch between the fast paths and paho's documented paths, and what the fast paths
rely on in paho.

The fast paths (`att_jm.mqtt.common`: `BufferedClient`, `PublishingClient`, `ServiceClient`,
packed PUBLISH properties) override or call paho members that are not part of its API. A
connection uses them only when all of these hold:

- they are asked for: the connections' `fast_paths=` argument, or when it is None the
  environment variable ATT_JM_MQTT_FAST_PATHS (`true` when unset, `false` = documented paths);
- the installed paho is in the range they were tested with (`TESTED_PAHO`, the same range as
  the pin in pyproject.toml);
- every private method they override or call still takes the parameters they pass or expect
  (`PRIVATE_METHODS`), and a new client still has the attributes they read
  (`PRIVATE_ATTRIBUTES`).

Otherwise the connection logs why (an error when paho is the reason) and uses paho's documented
paths only: `Client(manual_ack=True)`, `on_message`, `Client.ack(mid, qos)` one message at a
time, paho's own PUBACK handling, paho's reads (3-4 `recv` a packet), plain `Properties`.
Slower, but correct. The drain before a close uses the documented `on_socket_close` in both
modes.

Not as safe, though: paho's parser takes time quadratic in the number of a PUBLISH's
properties (the ~200,000 empty User Properties that fit in the service's Maximum Packet Size
take it past the keepalive: docs/security.md has the figures), and the documented paths never see
a packet's bytes before paho parses it, so nothing can refuse such a packet first: anyone who
may publish a notification or a command can stall the writer. The fast paths decode any
property block in one linear pass (`ServiceClient`) and refuse a malformed one with more than
`PAHO_PROPERTY_LIMIT` properties without paho's parse. docs/security.md says so too.

One private use is not switched: `PublishConnection.oversized()/forget()` read and trim paho's
outgoing queue (`QUEUE_ATTRIBUTES`), because paho has no documented way to drop a queued publish.

tests/unit/test_mqtt_fast_paths.py checks each member by signature, and
tests/integration/test_mqtt_paho_internals.py by behaviour against a real mosquitto, in both
modes; tests/integration/test_mqtt_fallback_service.py runs the real service on the documented
paths.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Mapping, MutableMapping
from typing import Final

import paho.mqtt
import structlog
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

log = structlog.get_logger("att_jm.mqtt")

#: The environment variable read when a connection is given `fast_paths=None`.
FAST_PATHS_ENV: Final = "ATT_JM_MQTT_FAST_PATHS"
#: The paho releases the fast paths were tested with: from (inclusive), below (exclusive).
#: pyproject.toml pins paho-mqtt to the same range (a unit test compares them).
TESTED_PAHO: Final = ((2, 1), (2, 3))
TESTED_PAHO_SPEC: Final = (f">={TESTED_PAHO[0][0]}.{TESTED_PAHO[0][1]},"
                           f"<{TESTED_PAHO[1][0]}.{TESTED_PAHO[1][1]}")

#: paho's private methods the fast paths override or call -> the parameters (after `self`),
#: in order, that they pass or receive:
#: - `_sock_recv(bufsize)`: overridden by BufferedClient; paho asks for 1 byte, then the
#:   length bytes, then the rest of a packet, and calls it for nothing else.
#: - `_handle_publish()`: overridden by ServiceClient; reads `_in_packet`; paho's
#:   `_packet_read` returns the code it returns (MQTT_ERR_PROTOCOL, as for a malformed packet,
#:   closes the connection).
#: - `_handle_pubackcomp(cmd)`: overridden by PublishingClient; reads `_in_packet`.
#: - `_do_on_publish(mid, reason_code, properties)`: called by PublishingClient for a PUBACK;
#:   calls `on_publish` and releases the message from `_out_messages`.
#: - `_packet_queue(command, packet, mid, qos, info)`: called by ServiceClient.ack_many with
#:   the PUBACKs of a batch as one packet.
PRIVATE_METHODS: Final[Mapping[str, tuple[str, ...]]] = {
    "_sock_recv": ("bufsize",),
    "_handle_publish": (),
    "_handle_pubackcomp": ("cmd",),
    "_do_on_publish": ("mid", "reason_code", "properties"),
    "_packet_queue": ("command", "packet", "mid", "qos", "info"),
}
#: The keys of `_in_packet` the fast paths read: the fixed header's first byte, and the rest of
#: the packet after the fixed header.
IN_PACKET_KEYS: Final = ("command", "packet")
#: paho's private attributes the fast paths read (on a client just built).
PRIVATE_ATTRIBUTES: Final = ("_in_packet", "_protocol", "_out_messages", "_out_message_mutex")
#: Used in both modes by PublishConnection.oversized()/forget() (mid -> MQTTMessage, its lock).
QUEUE_ATTRIBUTES: Final = ("_out_messages", "_out_message_mutex")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def parse_switch(text: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off, any case) as a bool; ValueError otherwise."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{FAST_PATHS_ENV} must be true or false, not {text!r}")


def paho_version(text: str | None = None) -> tuple[int, ...]:
    """The installed paho's version (or `text`'s) as numbers: "2.2.0" -> (2, 2, 0); the
    first part that is not a number ends it ("2.3.0rc1" -> (2, 3))."""
    numbers: list[int] = []
    for part in (paho.mqtt.__version__ if text is None else text).split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def problems(version: str | None = None, client: type[Client] = Client) -> list[str]:
    """Why the fast paths cannot be used with paho `version` (the installed one) and its
    `client` class; empty when they can."""
    found: list[str] = []
    number = paho_version(version)
    low, high = TESTED_PAHO
    if not low <= number[:2] < high:
        found.append(f"paho-mqtt {version or paho.mqtt.__version__} is outside the tested "
                     f"range {TESTED_PAHO_SPEC}")
    for name, expected in PRIVATE_METHODS.items():
        method = getattr(client, name, None)
        if not callable(method):
            found.append(f"paho's Client.{name} is gone")
            continue
        try:
            parameters = tuple(inspect.signature(method).parameters)[1:]  # without self
        except (TypeError, ValueError):
            parameters = None
        if parameters != expected:
            found.append(f"paho's Client.{name} takes {parameters}, not {expected}")
    try:
        sample = client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    except Exception as error:  # noqa: BLE001 -- any failure means: do not rely on it
        found.append(f"a paho Client cannot be built to check it: {error!r}")
        return found
    missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(sample, name)]
    if missing:
        found.append(f"paho's Client has no {', '.join(missing)}")
        return found
    in_packet = getattr(sample, "_in_packet", None)
    if not isinstance(in_packet, dict) or not all(key in in_packet for key in IN_PACKET_KEYS):
        found.append(f"paho's Client._in_packet has no {IN_PACKET_KEYS}")
    if getattr(sample, "_protocol", None) != MQTTProtocolVersion.MQTTv5:
        found.append("paho's Client._protocol does not say MQTT v5 for a v5 client")
    if not isinstance(getattr(sample, "_out_messages", None), MutableMapping):
        found.append("paho's Client._out_messages is not a mapping")
    mutex = getattr(sample, "_out_message_mutex", None)
    if not (hasattr(mutex, "__enter__") and hasattr(mutex, "__exit__")):
        found.append("paho's Client._out_message_mutex is not a lock")
    return found


@functools.cache
def refusal() -> str | None:
    """Why the installed paho cannot carry the fast paths (None: it can); checked once."""
    return "; ".join(problems()) or None


def use_fast_paths(
    requested: bool | None, *, client_id: str, environ: Mapping[str, str] = os.environ,
) -> bool:
    """Whether a connection of `client_id` uses the fast paths: `requested`, or when None the
    setting in `environ` (FAST_PATHS_ENV; unset or empty: true), refused (with an error in the
    log) when the installed paho does not carry them. Logs the decision."""
    version = paho.mqtt.__version__
    source = f"fast_paths={requested}"
    if requested is None:
        text = environ.get(FAST_PATHS_ENV, "")
        source = f"{FAST_PATHS_ENV}={text}"
        try:
            requested = True if text.strip() == "" else parse_switch(text)
        except ValueError as error:
            log.error("mqtt.fast_paths_setting_invalid", client_id=client_id, error=str(error),
                      using="documented paths")
            requested = False
    if not requested:
        log.info("mqtt.paths", client_id=client_id, fast=False, paho=version,
                 reason=f"turned off ({source})")
        return False
    reason = refusal()
    if reason is not None:
        log.error("mqtt.fast_paths_refused", client_id=client_id, paho=version,
                  tested=TESTED_PAHO_SPEC, reason=reason, using="documented paths")
        return False
    log.info("mqtt.paths", client_id=client_id, fast=True, paho=version)
    return True
