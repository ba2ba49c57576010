"""Where each core's time goes during the ingest: CPU seconds per process, service and baseline.

Usage: python -m bench.cores [--count 20000] [--rounds 3] [--serve "FLAGS"]

The ingest of `bench.ingest` (N QoS 1 notifications published at once into a fresh broker
and `att-jm serve`, one job matching every one, the entries queued), and its baseline (the
bare paho subscriber committing each drained batch), each round watched the same way, with
the CPU time (user + system, from each process's CPU clock) every process spent between the first
publish and the moment the N-th notification was committed:

- service: the writer (`att-jm serve`), the relay it starts, the broker, and this process
  (the publisher of the burst and the observer of the view topics);
- baseline: the subscriber, the broker, this process.

It also stops a second clock when the N-th entry is visible in the queue view (the views
file `views.get` reads: what an operator sees) and a third when the relay has published
every event of the burst, and prints per process the CPU seconds, the
share of one core during the run, and the CPU microseconds per notification (median of the
rounds). The sum of the shares against 2.0 (this machine's cores) says whether the run was
bound by the cores or by waiting.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from att_jm.domain.ids import execution_id
from att_jm.log.backend import views_location
from att_jm.relay.window import published_position
from bench.harness import Broker, broker_and_service
from bench.ingest import (
    POLL_SECONDS,
    Watch,
    notification,
    prepared,
    publish_burst,
    publisher,
    wait_for_enqueued,
    wait_for_row,
)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (its threads included) so far, to the
    nanosecond: read from the process's own CPU clock (Linux's `clock_getcpuclockid(pid)`,
    which Python does not wrap: the clock id is `(~pid << 3) | CPUCLOCK_SCHED`). Where that
    clock cannot be read, from /proc/PID/stat, in clock ticks (10 ms each): a process that
    used 5 ms while a short round ran reads 0 there."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def children(pid: int) -> list[int]:
    """The live children of `pid`."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def service_children(writer: int) -> dict[str, int]:
    """The writer's relay and, once a script ran as the script user, its spawner, by name."""
    found: dict[str, int] = {}
    for child in children(writer):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        for name in ("relay", "spawner"):
            if f"att_jm.{name}".encode() in argv:
                found[name] = child
    if "relay" not in found:
        raise RuntimeError(f"no relay among the writer's children {children(writer)}")
    return found


def sample(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def service_round(count: int, serve_args: Sequence[str] = ()) -> dict[str, Any]:
    """One ingest into the service (`att-jm serve` given `serve_args` too): wall seconds to
    the log, to the queue view and to the last event published, and the CPU seconds of each
    process until the log held the N-th entry."""
    with broker_and_service(extra_args=serve_args) as (broker, service):
        client = prepared(broker, service, Watch(10**12))
        writer = service.pid
        if writer is None or broker.pid is None:
            raise RuntimeError("the service or the broker is not running")
        pids = {"writer": writer, "relay": service_children(writer)["relay"],
                "broker": broker.pid, "publisher": os.getpid()}
        entry = execution_id(f"n-{count - 1}", "ingest")
        before = sample(pids)
        started = publish_burst(client, service.notification_topic("ingest"), count)
        in_log = wait_for_enqueued(service.store, entry.hex) - started
        after = sample(pids)
        views_db = Path(views_location(str(service.store)))
        in_view = wait_for_row(views_db, "SELECT 1 FROM queue WHERE id = ?", str(entry)) - started
        published = wait_for_published(str(service.store)) - started
        client.loop_stop()
        client.disconnect()
        return {"log": in_log, "view": in_view, "events": published,
                "cpu": spent(before, after)}


def wait_for_published(store: str, timeout: float = 600) -> float:
    """perf_counter once the relay recorded every event of the log as published (its
    position file, written at most every `SAVE_EVERY` s: the clock is that much late at most)."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        end = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
    finally:
        db.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (published_position(store) or 0) >= end:
            return time.perf_counter()
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"the relay did not publish up to {end} within {timeout} s")


def baseline_round(count: int) -> dict[str, Any]:
    """One ingest into the bare subscriber: wall seconds and CPU seconds per process."""
    with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            done, ready = Watch(1), Watch(1)
            client = publisher(broker.port, {"bench/done/ready": ready, "bench/done": done})
            subscriber = subprocess.Popen(
                [sys.executable, "-m", "bench.baseline_subscriber", str(broker.port),
                 "att/channel-manager/notifications/+", str(Path(tmp) / "baseline.db"),
                 str(count), "bench/done"],
            )
            if not ready.done.wait(30) or broker.pid is None:
                raise RuntimeError("baseline subscriber did not start")
            pids = {"subscriber": subscriber.pid, "broker": broker.pid, "publisher": os.getpid()}
            last = hashlib.blake2b(notification(count - 1), digest_size=16).digest()
            before = sample(pids)
            started = publish_burst(client, "att/channel-manager/notifications/ingest", count)
            elapsed = wait_for_row(
                Path(tmp) / "baseline.db", "SELECT 1 FROM inbox WHERE key = ?", last
            ) - started
            after = sample(pids)
            if not done.done.wait(60):
                raise RuntimeError("baseline subscriber did not finish")
            subscriber.wait(30)
            client.loop_stop()
            client.disconnect()
            return {"log": elapsed, "view": elapsed, "events": elapsed,
                    "cpu": spent(before, after)}
        finally:
            broker.stop()


def median_of(rounds: Iterable[Mapping[str, Any]], pick: Callable[[Mapping[str, Any]], float],
              ) -> float:
    return statistics.median(pick(r) for r in rounds)


def table(name: str, rounds: list[dict[str, Any]], count: int) -> list[str]:
    wall = median_of(rounds, lambda r: r["log"])
    view = median_of(rounds, lambda r: r["view"])
    events = median_of(rounds, lambda r: r["events"])
    lines = [f"{name}: {count / wall:,.0f} msg/s to the log ({wall:.2f} s), "
             f"{count / view:,.0f} msg/s to the queue view ({view:.2f} s), every event "
             f"published after {events:.2f} s; median of {len(rounds)} round(s)",
             f"  {'process':<11} {'cpu s':>7} {'cores':>6} {'us/msg':>7}"]
    total = 0.0
    for process in rounds[0]["cpu"]:
        cpu = statistics.median(r["cpu"][process] for r in rounds)
        total += cpu
        lines.append(f"  {process:<11} {cpu:7.2f} {cpu / wall:6.2f} {cpu / count * 1e6:7.1f}")
    lines.append(f"  {'all':<11} {total:7.2f} {total / wall:6.2f} {total / count * 1e6:7.1f}"
                 f"   (of {os.cpu_count()} cores)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", default="", metavar="FLAGS",
                        help="more flags for att-jm serve, e.g. '--compact-states true'")
    args = parser.parse_args()
    service: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        baseline.append(baseline_round(args.count))
        service.append(service_round(args.count, args.serve.split()))
    print("\n".join(table("service", service, args.count)))
    print("\n".join(table("baseline", baseline, args.count)))


if __name__ == "__main__":
    main()
