"""Ingest: N QoS 1 notifications published at once, until every one is durably enqueued.

Usage: python -m bench.ingest [--count 20000] [--rounds 3]

Service: a fresh broker and `att-jm serve`, one job matching every notification,
interval 3600 s so the entries queue. Baseline, same run: `bench.baseline_subscriber`
(bare paho v5, manual ack, one SQLite commit with a unique key per drained batch, then
the acks). Both are watched the same way: the clock runs from the first publish until
the N-th notification's row is committed in the subscriber's own SQLite file (the
service: the `Execution.Enqueued` event of the N-th notification in its log; the
baseline: the N-th payload's key in its table), read through a read-only connection
every millisecond. Both acknowledge a batch right after committing it. The
observer takes no `events/` messages (receiving 20,000 of them would load the shared
2-core machine with work the baseline does not cause); it counts what the service
publishes on the view topics.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from paho.mqtt.client import Client, MQTTMessage, topic_matches_sub
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from att_jm.domain.ids import execution_id
from att_jm.log.backend import is_postgres, views_location
from bench.harness import Broker, Service, broker_and_service

POLL_SECONDS = 0.001


@dataclass
class Watch:
    """Counts the messages of one subscription and fires when `target` have arrived."""

    target: int
    count: int = 0
    bytes: int = 0
    largest: int = 0
    rows: int = 0  # the most rows in one message
    topics: dict[str, int] = field(default_factory=dict)  # messages per topic
    seconds: float = 0.0  # how long it watched
    done: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.count = self.bytes = self.largest = self.rows = 0
        self.topics.clear()

    def add(self, message: MQTTMessage) -> None:
        self.topics[message.topic] = self.topics.get(message.topic, 0) + 1
        if message.payload.startswith(b"{"):
            self.rows = max(self.rows, len(orjson.loads(message.payload).get("rows", ())))
        self.count += 1
        self.bytes += len(message.payload)
        self.largest = max(self.largest, len(message.payload))
        if self.count >= self.target:
            self.done.set()


def publisher(port: int, watches: dict[str, Watch]) -> Client:
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(0)

    def on_message(c: Client, userdata: Any, message: MQTTMessage) -> None:
        for topic_filter, watch in watches.items():
            if topic_matches_sub(topic_filter, message.topic):
                watch.add(message)

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic_filter in watches:
        client.subscribe(topic_filter, qos=0)
    time.sleep(0.3)
    return client


def publish_burst(client: Client, topic: str, count: int) -> float:
    """Publish `count` notifications as fast as paho allows; when the first one went out."""
    payloads = [notification(n) for n in range(count)]
    started = time.perf_counter()
    for payload in payloads:
        client.publish(topic, payload, qos=1)
    return started


def notification(n: int) -> bytes:
    return orjson.dumps({"id": f"n-{n}", "channel": "c"})


def wait_for_row(db_path: Path, sql: str, key: object, timeout: float = 600) -> float:
    """Poll `db_path` read-only until `sql` (with `key`) finds a row; perf_counter then."""
    deadline = time.monotonic() + timeout
    while not db_path.exists():
        time.sleep(POLL_SECONDS)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        while time.monotonic() < deadline:
            try:
                if db.execute(sql, (key,)).fetchone() is not None:
                    return time.perf_counter()
            except sqlite3.OperationalError:  # the table is not created yet
                pass
            time.sleep(POLL_SECONDS)
    finally:
        db.close()
    raise RuntimeError(f"no row for {key!r} in {db_path} within {timeout} s")


def wait_for_enqueued(store: Path | str, execution: str) -> float:
    """perf_counter once the `Execution.Enqueued` row (version 1) of `execution` is committed
    in the store: an SQLite file, or a PostgreSQL store (bench/postgres.py)."""
    if is_postgres(str(store)):
        from bench.postgres import wait_for_pg_row  # noqa: PLC0415 -- psycopg for PostgreSQL only

        return wait_for_pg_row(str(store), execution)
    return wait_for_row(
        Path(store),
        "SELECT 1 FROM stored_events WHERE originator_id = ? AND originator_version = 1",
        execution,
    )


def prepared(broker: Broker, service: Service, views: Watch) -> Client:
    """A publisher that counts into `views` what the service publishes on its view topics,
    once the service queues every notification on `ingest` (one job, interval 3600 s)."""
    client = publisher(broker.port, {service.topic("job-manager/views/#"): views})
    commands = service.topic("job-manager/commands/bench")
    for name, args in (("settings.set", {"interval_seconds": 3600}),
                       ("job.add", {"name": "ingest", "script": "ipx-update",
                                    "trigger": "ingest"})):
        client.publish(f"{commands}/{name}", orjson.dumps(args), qos=1).wait_for_publish(10)
    time.sleep(0.5)
    return client


def service_round(count: int, store: str | None = None) -> tuple[float, Watch]:
    """Notifications per second into the service, and what it published on view topics
    (`store`: a given empty store, e.g. a PostgreSQL URL; None: an SQLite file)."""
    rate, _, views = service_rounds(count, store)
    return rate, views


def service_rounds(count: int, store: str | None = None) -> tuple[float, float | None, Watch]:
    """Notifications per second into the service with the clock stopped when the last is
    in the log, and (SQLite views) when it is visible in the queue view `views.get` reads
    (what an operator sees; None on PostgreSQL); what it published on view topics."""
    with broker_and_service(store=store) as (broker, service):
        views = Watch(10**12)
        client = prepared(broker, service, views)
        views.reset()
        entry = execution_id(f"n-{count - 1}", "ingest")
        started = publish_burst(client, service.notification_topic("ingest"), count)
        elapsed = wait_for_enqueued(service.store, entry.hex) - started
        visible = None
        if not is_postgres(str(service.store)):
            visible = wait_for_row(Path(views_location(str(service.store))),
                                   "SELECT 1 FROM queue WHERE id = ?", str(entry)) - started
        time.sleep(0.5)  # the last coalesced view messages
        views.seconds = time.perf_counter() - started
        client.loop_stop()
        client.disconnect()
        return count / elapsed, None if visible is None else count / visible, views


def baseline_round(count: int) -> float:
    """Notifications per second into the bare subscriber."""
    with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            done = Watch(1)
            ready = Watch(1)
            client = publisher(broker.port, {"bench/done/ready": ready, "bench/done": done})
            subscriber = subprocess.Popen(
                [sys.executable, "-m", "bench.baseline_subscriber", str(broker.port),
                 "att/channel-manager/notifications/+", str(Path(tmp) / "baseline.db"),
                 str(count), "bench/done"],
            )
            if not ready.done.wait(30):
                raise RuntimeError("baseline subscriber did not start")
            last = hashlib.blake2b(notification(count - 1), digest_size=16).digest()
            started = publish_burst(client, "att/channel-manager/notifications/ingest", count)
            elapsed = wait_for_row(
                Path(tmp) / "baseline.db", "SELECT 1 FROM inbox WHERE key = ?", last
            ) - started
            if not done.done.wait(60):
                raise RuntimeError("baseline subscriber did not finish")
            subscriber.wait(30)
            client.loop_stop()
            client.disconnect()
            return count / elapsed
        finally:
            broker.stop()


def measure(count: int, rounds: int) -> dict[str, Any]:
    service: list[float] = []
    visible: list[float] = []
    baseline: list[float] = []
    views: list[Watch] = []
    for _ in range(rounds):
        baseline.append(baseline_round(count))
        rate, in_view, watch = service_rounds(count)
        service.append(rate)
        if in_view is not None:
            visible.append(in_view)
        views.append(watch)
    return {"service": service, "visible": visible, "baseline": baseline, "views": views}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.count, args.rounds)
    service, baseline = result["service"], result["baseline"]
    print(f"ingest of {args.count:,} notifications, {args.rounds} rounds: median (min-max) msg/s")
    for label, values in (("att-jm serve", service), ("bare paho + SQLite batch", baseline)):
        print(f"  {label:<26} {statistics.median(values):>8,.0f} "
              f"({min(values):,.0f}-{max(values):,.0f})")
    ratio = statistics.median(service) / statistics.median(baseline)
    print(f"  ratio {ratio:.2f}x (target >= 0.8x)")
    for watch in result["views"]:
        print(f"  view topics: {watch.count} messages in {watch.seconds:.1f} s, "
              f"{watch.bytes:,} bytes, largest {watch.largest:,} bytes, {watch.rows} rows; "
              f"{watch.topics}")


if __name__ == "__main__":
    main()
