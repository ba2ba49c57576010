"""Latency and commands: one notification, or one command, at a time against an idle service.

Usage: python -m bench.latency [--count 1000] [--commands 1000] [--rounds 3]
       python -m bench.latency echo PORT REQUEST_TOPIC   (the round-trip baseline's responder)

Each round starts a fresh broker and `att-jm serve` (interval 0, one job `stamp` running
`tests/scripts/stamp-start`) and measures, on that same broker:
1. Round trip (baseline): a QoS 1 request with ResponseTopic + CorrelationData, of the same size
   as a notification, answered by `echo` (a bare paho v5 client in another process); the
   requester's clock runs from `publish()` to the arrival of the answer. TCP_NODELAY both ends.
   One round trip is measured just before each notification of 3. and each pair of commands
   of 4. (interleaved, 2 x `count` in all), so that the baseline meets the broker in the
   same state as the service does: the same noise of the shared machine, and the same
   retained messages (a 1,000-row view is ~260 KB), which mosquitto writes to disk at each of
   its saves (every 100 changes with the shipped `mosquitto.conf`: each QoS 1 message
   delivered and each retained one counts). Measured alone before the service ran, the round
   trip met only the saves of an almost empty broker.
   Also measured, for reference only: `count` round trips back to back before the service
   series (the baseline as it was measured until 2026-12-01).
2. Spawn (baseline): `subprocess.Popen` options of the runner, the same script, `count` times
   in a bare loop; from just before `subprocess.run` to the time the script stamps itself.
3. Latency: `count` notifications, one at a time (the next once the previous execution
   succeeded, so the queue is idle), from `publish()` to
   - enqueue: the arrival of its `execution.enqueued` event, which the service publishes right
     after the transaction holding it is committed (so this is "Enqueued committed" plus one
     broker hop back to the observer);
   - started event: the arrival of its `execution.started` event (committed, not yet spawned);
   - start: the time the script itself stamped on starting (`$EPOCHREALTIME`, the wall clock,
     compared with `time.time_ns()` taken just before `publish()`).
4. Commands: `count` times `views.get` of the `settings` view, then `settings.set` toggling
   `interval_seconds`, each from `publish()` to the arrival of its correlated reply.
Times are milliseconds; each round yields p50 and p99 (nearest rank) of every series.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.mqtt.common import set_tcp_nodelay  # the same TCP_NODELAY hook as the service
from bench.harness import Service, broker_and_service, script_spawn_options, shared_file
from bench.spawnloop import run_loop

ECHO_REQUESTS = "bench/echo/request"
ECHO_LIFETIME_SECONDS = 900  # the echo process stops by itself even if nobody stops it
WARMUP = 20  # unmeasured requests before each series
GAP_SECONDS = 0.002  # pause after each measured cycle, so the next one meets an idle service
TIMEOUT = 30.0  # for any one answer
SCRIPT = "stamp-start"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `q` of all values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def new_properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated


def new_client(prefix: str) -> Client:
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    client.on_socket_open = set_tcp_nodelay
    return client


@dataclass(frozen=True)
class Arrival:
    """One received message and when it arrived (perf_counter, taken first in the callback)."""

    at: float
    topic: str
    payload: bytes
    correlation: bytes | None

    def json(self) -> Any:
        return orjson.loads(self.payload)


class Probe:
    """The measuring client: publishes, and timestamps everything it receives on arrival."""

    def __init__(self, port: int, filters: Sequence[str]) -> None:
        self._arrivals: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self._backlog: list[Arrival] = []
        self._subscribed = threading.Event()
        self.client = new_client("bench-probe")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(topic, 1) for topic in filters])
        if not self._subscribed.wait(TIMEOUT):
            raise RuntimeError("the probe got no SUBACK")

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        at = time.perf_counter()
        correlation = getattr(message.properties, "CorrelationData", None)
        self._arrivals.put(Arrival(at, message.topic, bytes(message.payload),
                                   None if correlation is None else bytes(correlation)))

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> float:
        """Publish at QoS 1; the perf_counter time just before."""
        started = time.perf_counter()
        self.client.publish(topic, payload, qos=1, properties=properties)
        return started

    def expect(
        self, predicate: Callable[[Arrival], bool], what: str, timeout: float = TIMEOUT
    ) -> Arrival:
        """The first message received (earlier or within `timeout`) for which `predicate` holds."""
        for index, arrival in enumerate(self._backlog):
            if predicate(arrival):
                return self._backlog.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            try:
                arrival = self._arrivals.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no {what} within {timeout} s") from None
            if predicate(arrival):
                return arrival
            self._backlog.append(arrival)

    def forget(self) -> None:
        """Drop what arrived and was not asked for (events of other executions, views)."""
        self._backlog.clear()

    def request(self, topic: str, payload: bytes, reply_topic: str) -> tuple[float, Arrival]:
        """Publish with ResponseTopic + CorrelationData; (seconds to the reply, the reply)."""
        correlation = uuid.uuid4().bytes
        properties = new_properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = correlation
        started = self.publish(topic, payload, properties)
        reply = self.expect(lambda a: a.correlation == correlation, f"reply on {topic}")
        return reply.at - started, reply

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def command(probe: Probe, service: Service, reply_topic: str, name: str,
            args: dict[str, Any]) -> float:
    """Send one command as actor `bench`; seconds to its reply (which must be ok).

    Then pause GAP_SECONDS: the service finishes what follows a reply (its timers, view
    publications) before the next request, as between two operators' commands.
    """
    seconds, reply = probe.request(service.command_topic(name, "bench"), orjson.dumps(args),
                                   reply_topic)
    body = reply.json()
    if body.get("ok") is not True:
        raise RuntimeError(f"{name} {args} failed: {body}")
    time.sleep(GAP_SECONDS)
    return seconds


# Baselines -------------------------------------------------------------------------------


def echo(port: int, topic: str) -> None:
    """Answer every request on `topic` to its ResponseTopic with its payload and CorrelationData.

    Stops when the broker goes away, or after ECHO_LIFETIME_SECONDS whatever happens.
    """
    client = new_client("bench-echo")

    def on_connect(c: Client, u: Any, f: ConnectFlags, rc: ReasonCode, p: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_disconnect(c: Client, u: Any, f: DisconnectFlags, rc: ReasonCode, p: Any) -> None:
        c.disconnect()  # ends loop_forever instead of reconnecting

    def on_message(c: Client, u: Any, message: MQTTMessage) -> None:
        response = getattr(message.properties, "ResponseTopic", None)
        if response:
            properties = new_properties(PacketTypes.PUBLISH)
            properties.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]  # a ResponseTopic implies properties
            c.publish(response, message.payload, qos=1, properties=properties)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    threading.Timer(ECHO_LIFETIME_SECONDS, lambda: os._exit(0)).start()
    client.connect("127.0.0.1", port)
    client.loop_forever(retry_first_connection=False)
    os._exit(0)  # the lifetime timer's thread would keep the interpreter alive


class Echo:
    """The round-trip baseline: an `echo` process, and one measured round trip at a time."""

    def __init__(self, probe: Probe, port: int, size: int) -> None:
        self.probe = probe
        self.payload = b"x" * size
        self.reply_topic = f"bench/echo/reply/{uuid.uuid4().hex}"
        probe.client.subscribe(self.reply_topic, qos=1)
        self._responder = subprocess.Popen([sys.executable, "-m", "bench.latency", "echo",
                                            str(port), ECHO_REQUESTS])
        deadline = time.monotonic() + TIMEOUT
        while True:  # until the echo is subscribed and answers
            try:
                request = new_properties(PacketTypes.PUBLISH)
                request.ResponseTopic = self.reply_topic
                request.CorrelationData = b"ping"
                probe.publish(ECHO_REQUESTS, self.payload, request)
                probe.expect(lambda a: a.correlation == b"ping", "echo ping", 0.2)
                break
            except RuntimeError:
                if time.monotonic() > deadline or self._responder.poll() is not None:
                    self.close()
                    raise

    def once(self) -> float:
        """Seconds of one request/answer round trip of `size` bytes."""
        seconds, _ = self.probe.request(ECHO_REQUESTS, self.payload, self.reply_topic)
        return seconds

    def close(self) -> None:
        self._responder.terminate()
        self._responder.wait(10)


def round_trips(echo: Echo, count: int) -> list[float]:
    """Seconds of `count` round trips back to back (the former baseline, shown for reference)."""
    times = [echo.once() for _ in range(WARMUP + count)][WARMUP:]
    echo.probe.forget()
    return times


def script_environment(scripts_dir: Path, execution_id: str) -> dict[str, str]:
    """The environment the runner gives a script (PATH, LANG, HOME, ATT_JM_*)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(scripts_dir),
            "ATT_JM_COMMAND": "", "ATT_JM_EXECUTION_ID": execution_id, "ATT_JM_JOB": "spawn",
            "ATT_JM_TRIGGER": "spawn", "ATT_JM_ATTEMPT": "1"}


def read_stamps(path: Path) -> dict[str, int]:
    """execution id -> nanoseconds since the epoch, from the lines `stamp-start` wrote."""
    stamps = {}
    for line in path.read_text().splitlines():
        stamp, _, execution_id = line.partition(" ")
        seconds, _, micros = stamp.partition(".")
        stamps[execution_id] = (int(seconds) * 1_000_000 + int(micros.ljust(6, "0"))) * 1000
    return stamps


def spawn(scripts_dir: Path, stamps: Path, count: int) -> list[float]:
    """Seconds from `subprocess.run` of the script to its own start stamp, `count` times, run
    in a fresh interpreter (`bench.spawnloop`: the loop's cost must not depend on what the
    benchmark's own process measured before)."""
    shared_file(stamps)
    answer = run_loop(
        mode="stamps", script=scripts_dir / SCRIPT, args=[str(stamps)], count=WARMUP + count,
        cwd=scripts_dir, env=script_environment(scripts_dir, ""),
        options=script_spawn_options(), prefix="spawn-",
    )
    started: dict[str, int] = answer["started"]
    stamped = read_stamps(stamps)
    return [(stamped[key] - started[key]) / 1e9 for key in list(started)[WARMUP:]]


# The service -----------------------------------------------------------------------------


@dataclass
class Series:
    """Seconds per measured item, by series name."""

    values: dict[str, list[float]]

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(seconds)


def notifications(probe: Probe, service: Service, stamps: Path, count: int, echo: Echo) -> Series:
    """Publish `count` notifications one at a time, each after one round trip through `echo`;
    enqueue, started-event and start times, and the round trips."""
    events = service.topic("job-manager/events/")
    topic = service.notification_topic("latency")
    series = Series({})
    published: dict[str, int] = {}
    for n in range(WARMUP + count):
        rtt = echo.once()
        time.sleep(GAP_SECONDS)
        if n >= WARMUP:
            series.add("rtt", rtt)
        nid = f"lat-{n:06d}"
        payload = orjson.dumps({"id": nid, "channel": "c"})
        wall = time.time_ns()
        sent = probe.publish(topic, payload)
        enqueued = probe.expect(
            lambda a: a.topic == events + "execution.enqueued"
            and a.json()["data"]["notification_id"] == nid, "execution.enqueued",  # noqa: B023 -- used before nid changes
        )
        execution_id = enqueued.json()["data"]["aggregate_id"]

        def of_execution(arrival: Arrival, kind: str) -> bool:
            return (arrival.topic == events + kind
                    and arrival.json()["data"]["aggregate_id"] == execution_id)  # noqa: B023 -- idem

        started = probe.expect(lambda a: of_execution(a, "execution.started"), "started")
        finished = probe.expect(lambda a: of_execution(a, "execution.succeeded")
                                or of_execution(a, "execution.failed"), "finished")
        if finished.topic.endswith("failed"):
            raise RuntimeError(f"{SCRIPT} failed: {finished.json()}")
        probe.forget()
        if n >= WARMUP:
            series.add("enqueue", enqueued.at - sent)
            series.add("started_event", started.at - sent)
            published[execution_id] = wall
        time.sleep(GAP_SECONDS)
    stamped = read_stamps(stamps)
    for execution_id, wall in published.items():
        series.add("start", (stamped[execution_id] - wall) / 1e9)
    return series


def commands(probe: Probe, service: Service, reply_topic: str, count: int, echo: Echo) -> Series:
    """`views.get` of the settings view and `settings.set`, `count` times each, alternating,
    each pair after one round trip through `echo`."""
    series = Series({})
    for n in range(WARMUP + count):
        rtt = echo.once()
        time.sleep(GAP_SECONDS)
        if n >= WARMUP:
            series.add("rtt", rtt)
        views_get = command(probe, service, reply_topic, "views.get", {"view": "settings"})
        settings_set = command(probe, service, reply_topic, "settings.set",
                               {"interval_seconds": n % 2})
        if n >= WARMUP:
            series.add("views_get", views_get)
            series.add("settings_set", settings_set)
    command(probe, service, reply_topic, "settings.set", {"interval_seconds": 0})
    probe.forget()
    return series


def one_round(count: int, command_count: int,
              store: str | None = None) -> dict[str, list[float]]:
    """Every series of one round on a fresh broker and service, in seconds (`store`: a given
    empty store, e.g. a PostgreSQL URL; None: an SQLite file)."""
    with broker_and_service(store=store) as (broker, service):
        root = service.log_path.parent
        stamps = shared_file(root / "stamps.txt")
        reply_topic = service.topic(f"job-manager/replies/bench/{uuid.uuid4().hex}")
        events = [service.topic(f"job-manager/events/execution.{kind}")
                  for kind in ("enqueued", "started", "succeeded", "failed")]
        probe = Probe(broker.port, [*events, reply_topic])
        try:
            command(probe, service, reply_topic, "settings.set", {"interval_seconds": 0})
            command(probe, service, reply_topic, "job.add", {
                "name": "stamp", "script": SCRIPT, "trigger": "latency", "command": str(stamps),
            })
            size = len(orjson.dumps({"id": f"lat-{0:06d}", "channel": "c"}))
            values = {"spawn": spawn(service.scripts_dir, root / "spawn-stamps.txt", count)}
            echo = Echo(probe, broker.port, size)
            try:
                values["rtt_burst"] = round_trips(echo, count)
                measured = notifications(probe, service, stamps, count, echo).values
                for name, series in commands(probe, service, reply_topic, command_count,
                                             echo).values.items():
                    measured[name] = measured.get(name, []) + series
            finally:
                echo.close()
            return values | measured
        finally:
            probe.close()


SERIES = ("rtt", "rtt_burst", "spawn", "enqueue", "started_event", "start", "views_get",
          "settings_set")


def measure(count: int, rounds: int, command_count: int | None = None) -> dict[str, list[float]]:
    """Per round, p50 and p99 in milliseconds of every series: keys like `enqueue_p99`."""
    result: dict[str, list[float]] = {}
    for _ in range(rounds):
        values = one_round(count, count if command_count is None else command_count)
        for name in SERIES:
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                result.setdefault(f"{name}_{label}", []).append(percentile(values[name], q) * 1e3)
    return result


def _row(result: dict[str, list[float]], key: str) -> str:
    values = result[key]
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["echo"]:
        echo(int(args[1]), args[2])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=None, help="default: --count")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(args)
    result = measure(options.count, options.rounds, options.commands)
    print(f"latency, {options.count:,} one at a time, {options.rounds} rounds: "
          "median (min-max) of the rounds, ms")
    labels = {
        "rtt": "MQTT round trip (baseline)", "rtt_burst": "round trips back to back (info)",
        "spawn": "spawn to script start (baseline)",
        "enqueue": "publish -> enqueued event", "started_event": "publish -> started event",
        "start": "publish -> script start", "views_get": "views.get -> reply",
        "settings_set": "settings.set -> reply",
    }
    print(f"  {'series':<34} {'p50':>22} {'p99':>22}")
    for name, label in labels.items():
        print(f"  {label:<34} {_row(result, name + '_p50'):>22} {_row(result, name + '_p99'):>22}")


if __name__ == "__main__":
    main()
