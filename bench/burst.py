"""Burst: N notifications published at once; time until every one is enqueued (committed).

Usage: python -m bench.burst [--count 5000] [--rounds 3]

Each round starts a fresh broker and a fresh `att-jm serve`, registers one job
for the trigger, sets a long interval (so entries queue), publishes N QoS 1
notifications as fast as paho allows, and stops the clock when the N-th
`execution.enqueued` event (published after its commit) arrives. The same run
measures the service with commit batching off (`--max-batch 1`) as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from typing import Any

import orjson
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness import broker_and_service, summary


def _client(port: int) -> Client:
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _request(client: Client, topic: str, body: dict[str, Any]) -> None:
    client.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(10)


def one_round(count: int, max_batch: int) -> tuple[float, float]:
    """(seconds to publish all, seconds until all are enqueued) for one fresh service."""
    with broker_and_service(["--max-batch", str(max_batch)]) as (broker, service):
        client = _client(broker.port)
        done = threading.Event()
        seen = 0

        def on_message(c: Client, userdata: Any, message: MQTTMessage) -> None:
            nonlocal seen
            seen += 1
            if seen >= count:
                done.set()

        client.on_message = on_message
        client.subscribe(service.topic("job-manager/events/execution.enqueued"), qos=0)
        commands = service.topic("job-manager/commands/bench")
        _request(client, f"{commands}/settings.set", {"interval_seconds": 3600})
        _request(client, f"{commands}/job.add",
                 {"name": "burst", "script": "ipx-update", "trigger": "burst"})
        time.sleep(0.5)
        topic = service.notification_topic("burst")
        payloads = [orjson.dumps({"id": f"b-{n}", "channel": "c"}) for n in range(count)]
        started = time.perf_counter()
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(120)
        published = time.perf_counter() - started
        if not done.wait(300):
            raise RuntimeError(f"only {seen}/{count} enqueued")
        enqueued = time.perf_counter() - started
        client.loop_stop()
        client.disconnect()
        return published, enqueued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for label, max_batch in (("batched commits (default)", 5000), ("one commit per message", 1)):
        rates, totals = [], []
        for _ in range(args.rounds):
            _, enqueued = one_round(args.count, max_batch)
            totals.append(enqueued)
            rates.append(args.count / enqueued)
        rows.append((label, totals, rates))
    print(f"burst of {args.count:,} notifications, {args.rounds} rounds, median (min-max)")
    print(f"{'case':<28} {'seconds to all enqueued':>26} {'notifications/s':>24}")
    for label, totals, rates in rows:
        seconds = f"{statistics.median(totals):.2f} ({min(totals):.2f}-{max(totals):.2f})"
        print(f"{label:<28} {seconds:>26} {summary(rates):>24}")
    batched, single = (statistics.median(row[2]) for row in rows)
    print(f"batching speed-up: {batched / single:.1f}x")


if __name__ == "__main__":
    main()
