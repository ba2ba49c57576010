"""The paho members the fast paths rely on, by behaviour against a real mosquitto, and the
same behaviour from paho's documented paths (`fast_paths=False`).

Each test compares the fast path with paho's own handling of the same packets, or checks
what the broker does after it (redeliveries, its log), so a paho release that changes what
a private member does fails here even when its name and signature stay (those are checked
in tests/unit/test_mqtt_fast_paths.py)."""

from __future__ import annotations

import os
import random
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from helpers.broker import Broker, BrokerFactory, free_port
from helpers.mqtt import TestClient, paho_parses, publish_properties
from paho.mqtt.client import Client, MQTTMessageInfo
from paho.mqtt.enums import MQTTErrorCode

from att_jm.config import MqttEndpoint, parse_mqtt_url
from att_jm.mqtt import driven
from att_jm.mqtt.adapter import Inbound, ServiceConnection
from att_jm.mqtt.common import BufferedClient, PublishingClient
from att_jm.mqtt.publisher import PublishConnection

PREFIX = "att"
NOTIFICATIONS = f"{PREFIX}/channel-manager/notifications"
COMMANDS = f"{PREFIX}/job-manager/commands"
EVENTS = f"{PREFIX}/job-manager/events/x"
MODES = pytest.mark.parametrize("fast", [True, False], ids=["fast", "documented"])


class Service:
    """A ServiceConnection and what it delivered, polled by the test's own thread."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str, *, fast: bool) -> None:
        self.received: list[Inbound] = []
        self.connects = 0
        self.connection = ServiceConnection(
            endpoint, client_id=client_id, prefix=PREFIX, session_expiry_seconds=600,
            deliver=self.received.append, on_connect=self._connected, fast_paths=fast,
        )
        assert self.connection.fast_paths is fast
        self.connection.start({"state": "online"}, {"state": "offline"})
        self.poll_until(lambda: self.connection.connected)

    def _connected(self) -> None:
        self.connects += 1

    def poll_until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "condition not reached while polling"
            self.connection.poll(0.05)

    def receive(
        self, count: int, *, ack: bool = True, since: int | None = None, timeout: float = 30.0,
    ) -> list[Inbound]:
        """Poll until `count` messages arrived after the first `since` (those received so
        far), acknowledging them (so the broker's window of 100 un-acked keeps moving) unless
        `ack` is false; those messages."""
        start = len(self.received) if since is None else since
        acked = start

        def enough() -> bool:
            nonlocal acked
            if ack:
                self.connection.ack_all(self.received[acked:])
                acked = len(self.received)
            return len(self.received) - start >= count

        self.poll_until(enough, timeout)
        return self.received[start:]

    def barrier(self) -> None:
        """Publish once and wait for its PUBACK: the broker has read everything sent before."""
        mid = self.connection.publish(f"{PREFIX}/job-manager/barrier", b"{}")
        self.connection.await_acks([mid], 10.0)
        self.poll_until(lambda: True)

    def kill_socket(self) -> None:
        """The connection dies without a DISCONNECT (it reconnects on the next polls)."""
        sock = self.connection.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def endpoint(broker: Broker) -> MqttEndpoint:
    return parse_mqtt_url(broker.url)


def shape(message: Inbound) -> tuple[Any, ...]:
    """What a receiver gets of a message, without its connection's own mid and generation."""
    return (message.topic, message.payload, message.response_topic, message.correlation,
            message.qos, message.retain)


# _handle_publish + _in_packet + _protocol (ServiceClient) -----------------------------------


def test_a_publish_decoded_by_the_fast_path_is_what_paho_decodes(
    endpoint: MqttEndpoint, mqtt: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = Service(endpoint, "decode-fast", fast=True)
    documented = Service(endpoint, "decode-documented", fast=False)
    decoded_fast: list[int] = []
    handler = fast.connection.client.on_inbound  # type: ignore[attr-defined]  # ServiceClient's
    assert handler is not None

    def counting(mid: int, *rest: Any) -> None:
        decoded_fast.append(mid)
        handler(mid, *rest)

    fast.connection.client.on_inbound = counting  # type: ignore[attr-defined]
    paho_handled = paho_parses(monkeypatch)
    props = publish_properties

    sent = [
        (f"{NOTIFICATIONS}/up", b'{"id":"n-1"}', None),
        (f"{NOTIFICATIONS}/cha\u00eene-\u00fc", b'{"id":"n-2"}',
         props(ContentType="application/json")),
        (f"{NOTIFICATIONS}/empty", b"", None),
        (f"{NOTIFICATIONS}/big", bytes(range(256)) * 800, props(PayloadFormatIndicator=0)),
        (f"{COMMANDS}/alice/job.add", b'{"name":"a"}', props(
            ContentType="application/json", ResponseTopic=f"{PREFIX}/job-manager/replies/alice/1",
            CorrelationData=b"\x00\xffcorr", MessageExpiryInterval=60,
            PayloadFormatIndicator=1)),
        (f"{COMMANDS}/alice/views.get", b"{}", props(
            ResponseTopic=f"{PREFIX}/job-manager/replies/alice/2", CorrelationData=b"")),
        # a User Property: decoded by the fast path too
        (f"{COMMANDS}/bob/job.add", b"{}", props(UserProperty=[("k", "v")],
                                                 CorrelationData=b"c")),
    ]
    for topic, payload, properties in sent:
        mqtt.publish(topic, payload, properties=properties)
    # published retained: the flag comes with the live copy too (Retain As Published)
    sent.append((f"{NOTIFICATIONS}/kept", b'{"id":"n-3"}', None))
    mqtt.publish(f"{NOTIFICATIONS}/kept", b'{"id":"n-3"}', retain=True)
    got_fast = fast.receive(len(sent))
    got_documented = documented.receive(len(sent))
    assert [shape(m) for m in got_fast] == [shape(m) for m in got_documented]
    assert [m.topic for m in got_fast] == [topic.encode() for topic, _, _ in sent]
    assert [m.payload for m in got_fast] == [payload for _, payload, _ in sent]
    assert got_fast[4].response_topic == f"{PREFIX}/job-manager/replies/alice/1"
    assert (got_fast[4].correlation, got_fast[5].correlation) == (b"\x00\xffcorr", b"")
    assert [m.retain for m in got_fast] == [False] * (len(sent) - 1) + [True]
    assert len(decoded_fast) == len(sent)
    # paho decoded every message of the documented connection, none of the fast one's
    assert paho_handled.count(id(documented.connection.client)) == len(sent)
    assert paho_handled.count(id(fast.connection.client)) == 0
    fast.connection.stop({"state": "offline"})
    documented.connection.stop({"state": "offline"})


# _sock_recv (BufferedClient) -----------------------------------------------------------------


@MODES
def test_packets_are_read_right_across_64_kib_reads(
    endpoint: MqttEndpoint, mqtt: TestClient, monkeypatch: pytest.MonkeyPatch, fast: bool,
) -> None:
    calls = {"ours": 0, "paho": 0}
    paho_recv, our_recv = Client._sock_recv, BufferedClient._sock_recv

    def counting_paho(self: Client, bufsize: int) -> bytes:
        calls["paho"] += 1
        return paho_recv(self, bufsize)

    def counting_ours(self: BufferedClient, bufsize: int) -> bytes:
        calls["ours"] += 1
        return our_recv(self, bufsize)

    monkeypatch.setattr(Client, "_sock_recv", counting_paho)
    monkeypatch.setattr(BufferedClient, "_sock_recv", counting_ours)
    service = Service(endpoint, f"reads-{fast}", fast=fast)
    chunk = 64 * 1024
    rng = random.Random(13)  # noqa: S311 -- sizes, not secrets
    # packets ending just before, on and just after 64 KiB reads, larger than one or two
    # reads, and many small ones packed into one read
    sizes = [chunk - 60, chunk - 59, chunk - 58, chunk, chunk + 1, 2 * chunk + 7, 1, 0, 3]
    sizes += [rng.randrange(0, 3000) for _ in range(400)]
    sizes += [rng.randrange(chunk - 200, chunk + 200) for _ in range(20)]
    payloads = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    for n, payload in enumerate(payloads):  # queued by the broker: nothing is read meanwhile
        mqtt.publish(f"{NOTIFICATIONS}/t{n % 3}", payload)
    before = dict(calls)
    got = service.receive(len(payloads), timeout=60)
    assert [m.payload for m in got] == payloads
    assert [m.topic for m in got] == [f"{NOTIFICATIONS}/t{n % 3}".encode()
                                      for n in range(len(payloads))]
    ours, theirs = calls["ours"] - before["ours"], calls["paho"] - before["paho"]
    if fast:  # paho asks ours 3+ times a packet; ours asks the socket far less often
        assert ours >= 3 * len(payloads)
        assert theirs < len(payloads) / 4
    else:  # paho's own reads: 3+ system calls a packet
        assert (ours, theirs >= 3 * len(payloads)) == (0, True)
    service.connection.stop({"state": "offline"})


# ack_many + _packet_queue (ServiceClient) / Client.ack -----------------------------------------


@MODES
def test_the_acknowledged_mids_and_only_they_are_not_redelivered(
    endpoint: MqttEndpoint, mqtt: TestClient, fast: bool,
) -> None:
    service = Service(endpoint, f"acks-{fast}", fast=fast)
    for n in range(12):
        mqtt.publish(f"{NOTIFICATIONS}/t", {"id": f"n-{n}"})
    first = service.receive(12, ack=False)
    acked = {0, 2, 3, 7, 11}
    service.connection.ack_all([first[n] for n in sorted(acked)])
    service.barrier()  # the broker read the PUBACKs
    mark = len(service.received)
    service.kill_socket()
    service.poll_until(lambda: service.connects == 2)
    mqtt.publish(f"{NOTIFICATIONS}/t", {"id": "marker"})  # after any redelivery
    again = service.receive(13 - len(acked), ack=False, since=mark)
    assert [m.payload for m in again] == [
        *(f'{{"id":"n-{n}"}}'.encode() for n in range(12) if n not in acked), b'{"id":"marker"}'
    ]
    assert {m.generation for m in again} == {2}
    service.connection.ack_all(again)
    service.barrier()
    service.connection.stop({"state": "offline"})


@MODES
def test_an_ack_of_an_earlier_connection_is_not_sent(
    endpoint: MqttEndpoint, mqtt: TestClient, fast: bool,
) -> None:
    service = Service(endpoint, f"old-acks-{fast}", fast=fast)
    mqtt.publish(f"{NOTIFICATIONS}/t", {"id": "n-0"})
    (first,) = service.receive(1, ack=False)
    mark = len(service.received)
    service.kill_socket()
    service.poll_until(lambda: service.connects == 2)
    (again,) = service.receive(1, ack=False, since=mark)
    assert (again.payload, again.generation) == (first.payload, 2)
    service.connection.ack(first)  # dropped: an earlier connection's
    service.barrier()
    mark = len(service.received)
    service.kill_socket()
    service.poll_until(lambda: service.connects == 3)
    (third,) = service.receive(1, since=mark)
    assert (third.payload, third.generation) == (first.payload, 3)
    service.barrier()
    service.connection.stop({"state": "offline"})


# _handle_pubackcomp + _do_on_publish (PublishingClient) ---------------------------------------


@MODES
def test_pubacks_release_the_same_mids_with_the_same_outcome(
    endpoint: MqttEndpoint, mqtt: TestClient, monkeypatch: pytest.MonkeyPatch, fast: bool,
) -> None:
    handled = {"ours": 0, "paho": 0}
    paho_handler, our_handler = Client._handle_pubackcomp, PublishingClient._handle_pubackcomp

    def counting_paho(self: Client, cmd: Any) -> MQTTErrorCode:
        handled["paho"] += 1
        return paho_handler(self, cmd)

    def counting_ours(self: PublishingClient, cmd: Any) -> MQTTErrorCode:
        handled["ours"] += 1
        return our_handler(self, cmd)

    monkeypatch.setattr(Client, "_handle_pubackcomp", counting_paho)
    monkeypatch.setattr(PublishingClient, "_handle_pubackcomp", counting_ours)
    acked: list[tuple[int, bool]] = []
    connection = PublishConnection(endpoint, client_id=f"pubacks-{fast}", fast_paths=fast,
                                   on_acked=lambda mid, ok: acked.append((mid, ok)))
    connection.start()
    deadline = time.monotonic() + 15
    while not connection.connected:
        assert time.monotonic() < deadline
        connection.poll(0.05)
    infos: list[MQTTMessageInfo] = []

    def publish(count: int) -> None:
        for n in range(count):  # as PublishConnection.publish does, keeping paho's info
            infos.append(connection.client.publish(EVENTS, b'{"n":%d}' % n, qos=1,
                                                   properties=connection._json))
        deadline = time.monotonic() + 15
        while len(acked) < len(infos):
            assert time.monotonic() < deadline
            connection.poll(0.05)

    publish(40)  # no subscriber: "No matching subscribers", a success
    events = mqtt.subscribe(EVENTS)
    publish(40)  # "Success"
    assert acked == [(info.mid, True) for info in infos]  # each once, in order
    assert all(info.is_published() for info in infos)  # paho released each
    assert connection.oversized() == []  # nothing is left in paho's queue
    assert len(events.wait_for_count(40)) == 40
    if fast:  # every plain PUBACK handled by ours, none left to paho
        assert handled == {"ours": 80, "paho": 0}
    else:
        assert handled == {"ours": 0, "paho": 80}
    connection.stop()


# _out_messages + _out_message_mutex (PublishConnection.oversized/forget, both modes) -----------


@MODES
def test_forgotten_publishes_are_never_sent(
    endpoint: MqttEndpoint, mqtt: TestClient, fast: bool,
) -> None:
    events = mqtt.subscribe(EVENTS)
    acked: list[int] = []
    connection = PublishConnection(endpoint, client_id=f"forget-{fast}", fast_paths=fast,
                                   on_acked=lambda mid, ok: acked.append(mid))
    small = [connection.publish(EVENTS, b'{"n":%d}' % n) for n in range(3)]
    big = connection.publish(EVENTS, b'{"pad":"' + b"x" * 5000 + b'"}')
    last = connection.publish(EVENTS, b'{"n":9}')
    connection.max_packet_size = 1000  # as if a CONNACK said so
    assert connection.oversized() == [big]
    connection.forget([big, small[1]])
    connection.max_packet_size = None
    assert connection.oversized() == []
    connection.start()
    deadline = time.monotonic() + 15
    while len(acked) < 3:
        assert time.monotonic() < deadline
        connection.poll(0.05)
    assert acked == [small[0], small[2], last]
    got = events.wait_for_count(3)
    assert [m.payload for m in got] == [b'{"n":0}', b'{"n":2}', b'{"n":9}']
    connection.stop()


def test_without_paho_s_queue_oversized_and_forget_do_nothing_and_say_so(
    endpoint: MqttEndpoint,
) -> None:
    connection = PublishConnection(endpoint, client_id="no-queue", fast_paths=False,
                                   on_acked=lambda mid, ok: None)
    connection.publish(EVENTS, b"x" * 5000)
    connection.max_packet_size = 1000
    del connection.client._out_messages  # what a paho without it would look like
    with structlog.testing.capture_logs() as logs:
        assert connection.oversized() == []
        connection.forget([1])
    assert [line["event"] for line in logs] == ["mqtt.queue_unreadable"]  # once


# The drain before a close (paho's documented on_socket_close) --------------------------------


def _unclean(broker: Broker, client_id: str) -> list[str]:
    return re.findall(rf"Client {re.escape(client_id)} (?:disconnected due to|closed its "
                      rf"connection)[^\n]*", broker.log_text())


def _wait_for_log(broker: Broker, pattern: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, broker.log_text()):
        assert time.monotonic() < deadline, broker.log_text()[-2000:]
        time.sleep(0.02)


def _stop_with_unread_bytes(broker: Broker, mqtt: TestClient, client_id: str,
                            fast: bool, *, paused: bool = False) -> None:
    """Stop a connection while the broker's messages wait unread in its socket. `paused`:
    the broker is stopped (SIGSTOP) during the stop, so that whatever the client sends (its
    status, DISCONNECT, and a reset or a FIN) is waiting when it reads again; without it,
    whether the broker reads the DISCONNECT before a reset arrives is a race."""
    service = Service(parse_mqtt_url(broker.url), client_id, fast=fast)
    status = mqtt.subscribe(service.connection.status_topic)
    status.wait_for(lambda m: m.json() == {"state": "online"})
    for n in range(50):  # the broker sends them on at once; nobody reads them
        mqtt.publish(f"{NOTIFICATIONS}/t", {"id": f"n-{n}", "pad": "x" * 500})
    sock = service.connection.client.socket()
    assert isinstance(sock, socket.socket)
    readable, _, _ = select.select([sock], [], [], 5)
    assert readable  # unread bytes wait in the socket
    status.clear()
    pid = broker.pid
    assert pid is not None
    if paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        # paused, the drain reads until this deadline (nothing closes the broker's side)
        service.connection.stop({"state": "offline"}, timeout=1.0 if paused else 5.0)
    finally:
        if paused:
            os.kill(pid, signal.SIGCONT)
    assert status.wait_for().json() == {"state": "offline"}
    _wait_for_log(broker, rf"Client {re.escape(client_id)} (disconnected|closed)")


@MODES
@pytest.mark.parametrize("paused", [False, True], ids=["live", "paused"])
def test_a_stop_with_unread_bytes_is_a_clean_disconnect(
    broker: Broker, mqtt: TestClient, fast: bool, paused: bool,
) -> None:
    client_id = f"drain-{fast}-{paused}"
    _stop_with_unread_bytes(broker, mqtt, client_id, fast, paused=paused)
    assert _unclean(broker, client_id) == []
    assert f"Client {client_id} disconnected." in broker.log_text()


@MODES
def test_without_the_drain_the_same_stop_is_a_lost_client(
    broker: Broker, mqtt: TestClient, monkeypatch: pytest.MonkeyPatch, fast: bool,
) -> None:
    # What the test above would see if the drain did not run: it can tell. The broker is
    # paused so that the reset waits behind the DISCONNECT every time (live, it is a race
    # that a quiet machine mostly wins).
    monkeypatch.setattr(driven, "drain", lambda sock, deadline: None)
    client_id = f"no-drain-{fast}"
    _stop_with_unread_bytes(broker, mqtt, client_id, fast, paused=True)
    assert _unclean(broker, client_id) != []


# TLS ------------------------------------------------------------------------------------------


@pytest.fixture
def tls_broker(broker_factory: BrokerFactory, tmp_path: Path) -> Iterator[tuple[Broker, int, Path]]:
    cert, key = tmp_path / "broker.crt", tmp_path / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    port = free_port()
    broker = broker_factory(extra_config=[f"listener {port} 127.0.0.1", f"certfile {cert}",
                                          f"keyfile {key}"])
    yield broker, port, cert


@MODES
def test_a_burst_over_tls_arrives_complete_and_without_delay(
    tls_broker: tuple[Broker, int, Path], fast: bool,
) -> None:
    broker, port, ca = tls_broker
    endpoint = MqttEndpoint("127.0.0.1", port, None, None, True, tls_ca=str(ca))
    service = Service(endpoint, f"tls-{fast}", fast=fast)
    payloads = [bytes([n % 251]) * ((n * 997) % 40_000) for n in range(300)]
    with TestClient(broker.url) as mqtt:
        for payload in payloads:
            mqtt.client.publish(f"{NOTIFICATIONS}/t", payload, qos=1)
        started = time.monotonic()
        got = service.receive(len(payloads), timeout=30)
        assert [m.payload for m in got] == payloads
        # bytes TLS already decrypted are read at once, not at the next 1 s housekeeping
        for _ in range(5):
            mqtt.publish(f"{NOTIFICATIONS}/t", b"{}")
            sent = time.monotonic()
            service.receive(1)
            assert time.monotonic() - sent < 0.5
    assert time.monotonic() - started < 20
    service.connection.stop({"state": "offline"})

