"""The floor under a command's reply: the MQTT round trip, and the same round trip through a
responder that first commits to SQLite as the service's store does (WAL, synchronous=FULL).

Usage: python -m bench.floor [--count 2000] [--rounds 3] [--rows 2]
       python -m bench.floor respond PORT TOPIC STORE ROWS   (one responder)

Each round starts a fresh broker (the project's mosquitto.conf, as every benchmark) and two
responders, bare paho v5 clients in processes of their own, like `bench.latency`'s echo:
- `echo` answers each request to its ResponseTopic with its payload and CorrelationData;
- `durable` first inserts ROWS rows of ~300 bytes (the size of a stored event) into an SQLite
  file in one transaction, in WAL mode with synchronous=FULL (the commit `fdatasync`s the WAL
  before it returns), then answers the same way: a reply that says "stored" can leave no
  sooner on this disk.
The probe sends `count` requests to each, alternating, one at a time (2 ms apart), and times
each from `publish()` to the reply's arrival. A `settings.set` stores 2 rows (the change and
the command's record) and replies after its commit: `bench.latency` measures it against the
round trip (the suite's target is <= 2x its p99); this shows what the commit alone adds on
this machine's disk, with none of the service's work (bench/README.md, session 16).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from bench.harness import Broker
from bench.latency import TIMEOUT, Probe, new_client, new_properties, percentile

LIFETIME_SECONDS = 900  # a responder stops by itself even if nobody stops it
GAP_SECONDS = 0.002
WARMUP = 100
STATE = b"x" * 300  # about a stored event's size


def open_store(path: str) -> sqlite3.Connection:
    """An SQLite file set up as the service's store commits: WAL, synchronous=FULL."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
               "originator BLOB NOT NULL, version INTEGER NOT NULL, state BLOB NOT NULL, "
               "UNIQUE (originator, version))")
    return db


def respond(port: int, topic: str, store: str, rows: int) -> None:
    """Answer every request on `topic`, after committing `rows` rows to `store` ("-": none)."""
    db = None if store == "-" else open_store(store)
    client = new_client("bench-floor")

    def on_connect(c: Client, u: Any, f: ConnectFlags, rc: ReasonCode, p: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_message(c: Client, u: Any, message: MQTTMessage) -> None:
        if db is not None:
            db.execute("BEGIN")
            db.executemany("INSERT INTO events (originator, version, state) VALUES (?, ?, ?)",
                           [(uuid.uuid4().bytes, n, STATE) for n in range(rows)])
            db.execute("COMMIT")
        properties = new_properties(PacketTypes.PUBLISH)
        properties.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]  # a request carries properties
        c.publish(message.properties.ResponseTopic, message.payload, qos=1,  # type: ignore[union-attr]  # idem
                  properties=properties)

    client.on_connect = on_connect
    client.on_message = on_message
    threading.Timer(LIFETIME_SECONDS, lambda: os._exit(0)).start()
    client.connect("127.0.0.1", port)
    client.loop_forever(retry_first_connection=False)
    os._exit(0)


def one_round(count: int, rows: int) -> tuple[dict[str, list[float]], int]:
    """Seconds of `count` round trips through each responder, alternating; the rows the
    durable responder's store holds at the end (its commits are real)."""
    with tempfile.TemporaryDirectory(prefix="att-jm-floor-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker").start()
        reply = f"bench/floor/reply/{uuid.uuid4().hex}"
        probe = Probe(broker.port, [reply])
        stores = {"echo": "-", "durable": str(root / "store.db")}
        responders = [
            subprocess.Popen([sys.executable, "-m", "bench.floor", "respond", str(broker.port),
                              f"bench/floor/{name}", store, str(rows)])
            for name, store in stores.items()
        ]
        try:
            times: dict[str, list[float]] = {name: [] for name in stores}
            for name in stores:  # until both answer
                ready(probe, f"bench/floor/{name}", reply)
            for n in range(WARMUP + count):
                for name in stores:
                    seconds = request(probe, f"bench/floor/{name}", reply)
                    if n >= WARMUP:
                        times[name].append(seconds)
                    time.sleep(GAP_SECONDS)
                probe.forget()
            with sqlite3.connect(stores["durable"]) as db:
                stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
            return times, stored
        finally:
            for process in responders:
                process.terminate()
                process.wait(10)
            probe.close()
            broker.stop()


def request(probe: Probe, topic: str, reply: str, timeout: float = TIMEOUT) -> float:
    correlation = uuid.uuid4().bytes
    properties = new_properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = reply
    properties.CorrelationData = correlation
    started = probe.publish(topic, b"x" * 40, properties)
    answer = probe.expect(lambda a: a.correlation == correlation, f"reply from {topic}", timeout)
    return answer.at - started


def ready(probe: Probe, topic: str, reply: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            request(probe, topic, reply, 0.2)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["respond"]:
        respond(int(args[1]), args[2], args[3], int(args[4]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2)
    options = parser.parse_args(args)
    results: dict[str, list[list[float]]] = {"echo": [], "durable": []}
    stored = []
    for _ in range(options.rounds):
        times, rows = one_round(options.count, options.rows)
        stored.append(rows)
        for name, values in times.items():
            results[name].append(values)
    print(f"round trips, {options.count:,} each, {options.rounds} rounds: median (min-max) of "
          f"the rounds, ms; durable: {options.rows} rows committed (WAL, synchronous=FULL)")
    ratios = []
    for q in (0.5, 0.99):
        line = []
        per_round = {name: [percentile(t, q) * 1e3 for t in results[name]] for name in results}
        for name, values in per_round.items():
            line.append(f"{name} p{round(q * 100)} {statistics.median(values):.2f} "
                        f"({min(values):.2f}-{max(values):.2f})")
        ratios.append((q, [d / e for d, e in zip(per_round["durable"], per_round["echo"],
                                                   strict=True)]))
        print("  " + "   ".join(line))
    for q, values in ratios:
        print(f"  durable / echo at p{round(q * 100)}: {statistics.median(values):.2f}x "
              f"({min(values):.2f}-{max(values):.2f})")
    print(f"  rows the durable responder stored, per round: {', '.join(map(str, stored))} "
          f"({WARMUP + options.count:,} requests and its first answer each)")


if __name__ == "__main__":
    main()
