"""Executions: how many queued entries of a trivial script the service runs per second.

Usage: python -m bench.executions [--count 2000] [--rounds 3] [--cores]

Service: a fresh broker and `att-jm serve`, one job running `tests/scripts/ok` (`exit 0`).
One warm-up execution runs first (the scheduler then has a last end time), then the interval
is set to 3600 s and `count` notifications are published and enqueued (their `count`
`execution.enqueued` events seen). The clock starts when the reply to `settings.set
interval_seconds=0` arrives and stops at the `count`-th `execution.succeeded` event (any
`execution.failed` aborts the round). Executions per second = count / that time.
Baseline, same run: the same script run `count` times in a bare Python loop with
`subprocess.run`, in a fresh interpreter (`bench.spawnloop`), with the runner's options
(argv [script, Command], stdin empty, stdout and stderr captured, cwd the scripts directory,
the runner's environment, a new session).

`--cores` also prints where each core's time goes while the clock runs (CPU seconds, user +
system, median of the rounds, per execution; each process's own time from its CPU clock,
to the nanosecond, the scripts' from /proc/PID/stat in clock ticks): the writer itself, the
scripts it ran (their time as children of the writer or of its spawner), the spawner, its
relay, the broker, and this process (the event counter); for the baseline the loop and its
scripts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from paho.mqtt.client import Client, MQTTMessage

from bench.cores import TICKS, sample, service_children, spent
from bench.harness import Service, broker_and_service, populate_scripts_dir, script_spawn_options
from bench.latency import TIMEOUT, Probe, command, new_client, script_environment
from bench.spawnloop import run_loop

SCRIPT = "ok"
FINISH_TIMEOUT = 600.0


class Counter:
    """Counts `execution.enqueued`, `execution.succeeded` and `execution.failed` events.

    Its waiter is woken once, when the count it waits for is reached (or an execution
    failed), not at every event: the benchmark's own process is then one wake-up per event
    (paho's thread) rather than two, on the two cores the service also needs."""

    def __init__(self, port: int, service: Service) -> None:
        self.lock = threading.Condition()
        self.counts = {"execution.enqueued": 0, "execution.succeeded": 0, "execution.failed": 0}
        self.last_at = 0.0
        self.awaited: tuple[str, int] | None = None  # (kind, count) a `wait` waits for
        self.client = new_client("bench-counter")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        events = service.topic("job-manager/events/")
        self.client.subscribe([(events + kind, 1) for kind in self.counts])
        if not subscribed.wait(TIMEOUT):
            raise RuntimeError("the counter got no SUBACK")

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        at = time.perf_counter()
        kind = message.topic.rpartition("/")[2]
        with self.lock:
            self.counts[kind] += 1
            self.last_at = at
            awaited = self.awaited
            if kind == "execution.failed" or (
                    awaited is not None and kind == awaited[0] and self.counts[kind] >= awaited[1]):
                self.lock.notify_all()

    def reset(self) -> None:
        with self.lock:
            self.counts = dict.fromkeys(self.counts, 0)

    def wait(self, kind: str, count: int, timeout: float) -> float:
        """When the `count`-th `kind` event arrived (perf_counter); raises on a failure."""
        with self.lock:
            self.awaited = (kind, count)
            try:
                done = self.lock.wait_for(
                    lambda: self.counts[kind] >= count or self.counts["execution.failed"] > 0,
                    timeout,
                )
            finally:
                self.awaited = None
            if self.counts["execution.failed"]:
                raise RuntimeError(f"{self.counts['execution.failed']} executions failed")
            if not done:
                raise RuntimeError(f"{self.counts[kind]}/{count} {kind} within {timeout} s")
            return self.last_at

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def reaped_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the children `pid` has waited for, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / TICKS  # cutime, cstime (fields 16, 17)


def service_round(count: int, cpu: dict[str, float] | None = None) -> float:
    """Executions per second of the service, draining `count` queued entries at interval 0;
    with `cpu`, the CPU seconds per process while the clock ran go into it."""
    with broker_and_service() as (broker, service):
        reply_topic = service.topic(f"job-manager/replies/bench/{uuid.uuid4().hex}")
        probe = Probe(broker.port, [reply_topic])
        counter = Counter(broker.port, service)
        try:
            command(probe, service, reply_topic, "settings.set", {"interval_seconds": 0})
            command(probe, service, reply_topic, "job.add",
                    {"name": "ok", "script": SCRIPT, "trigger": "executions"})
            topic = service.notification_topic("executions")
            probe.publish(topic, orjson.dumps({"id": "warm-up"}))
            counter.wait("execution.succeeded", 1, TIMEOUT)
            command(probe, service, reply_topic, "settings.set", {"interval_seconds": 3600})
            counter.reset()
            for n in range(count):
                probe.publish(topic, orjson.dumps({"id": f"x-{n}"}))
            counter.wait("execution.enqueued", count, FINISH_TIMEOUT)
            time.sleep(0.5)  # let the coalesced view publications of the burst pass
            pids = processes(service, broker.pid)
            reapers = [pids[name] for name in ("writer", "spawner") if name in pids]
            before = (sample(pids), sum(map(reaped_seconds, reapers)))
            _, reply = probe.request(service.command_topic("settings.set", "bench"),
                                     b'{"interval_seconds": 0}', reply_topic)
            if reply.json().get("ok") is not True:
                raise RuntimeError(f"settings.set failed: {reply.json()}")
            finished = counter.wait("execution.succeeded", count, FINISH_TIMEOUT)
            if cpu is not None:
                used = spent(before[0], sample(pids))
                cpu.update(writer=used["writer"],
                           scripts=sum(map(reaped_seconds, reapers)) - before[1],
                           spawner=used.get("spawner", 0.0),
                           relay=used["relay"], broker=used["broker"], counter=used["counter"])
            return count / (finished - reply.at)
        finally:
            counter.close()
            probe.close()


def processes(service: Service, broker: int | None) -> dict[str, int]:
    """The pids whose CPU time `--cores` reads: the writer, its relay and its script
    spawner (as root with a script user where the writer does not start the scripts itself,
    ADR 0003; the scripts are then its children: its row is 0 otherwise), the broker, this
    process."""
    writer = service.pid
    if writer is None or broker is None:
        raise RuntimeError("the service or the broker is not running")
    return {"writer": writer, "broker": broker, "counter": os.getpid(),
            **service_children(writer)}


def baseline_round(count: int, scripts_dir: Path, cpu: dict[str, float] | None = None) -> float:
    """Executions per second of the same script in a bare `subprocess.run` loop, run in a
    fresh interpreter (`bench.spawnloop`: the loop's cost must not depend on what the
    benchmark's own process measured before)."""
    answer = run_loop(
        mode="rate", script=scripts_dir / SCRIPT, args=['{"id": "x-{n}"}'], count=count,
        cwd=scripts_dir, env=script_environment(scripts_dir, ""),
        options=script_spawn_options(),  # as root: as the script user, like the service
    )
    if cpu is not None:
        cpu.update(answer["cpu"])
    return float(answer["rate"])


def measure(count: int, rounds: int,
            cores: dict[str, list[dict[str, float]]] | None = None) -> dict[str, list[float]]:
    """Executions per second per round: `service` and `baseline`; with `cores`, each round's
    CPU seconds per process go into its `service` and `baseline` lists."""
    service: list[float] = []
    baseline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
        scripts_dir = populate_scripts_dir(Path(tmp) / "scripts")
        for _ in range(rounds):
            used: dict[str, dict[str, float]] = {"service": {}, "baseline": {}}
            baseline.append(baseline_round(count, scripts_dir, used["baseline"]))
            service.append(service_round(count, used["service"]))
            if cores is not None:
                for side, seconds in used.items():
                    cores.setdefault(side, []).append(seconds)
    return {"service": service, "baseline": baseline}


def cores_table(label: str, rate: float, rounds: list[dict[str, float]], count: int) -> list[str]:
    """Per process: CPU seconds, share of one core while the clock ran, us per execution."""
    wall = count / rate
    lines = [f"  {label}: {rate:,.0f} exec/s ({wall:.2f} s for {count:,}, "
             f"{wall / count * 1e6:,.0f} us each)",
             f"    {'process':<9} {'cpu s':>7} {'cores':>6} {'us/exec':>8}"]
    total = 0.0
    for process in rounds[0]:
        seconds = statistics.median(r[process] for r in rounds)
        total += seconds
        lines.append(f"    {process:<9} {seconds:7.2f} {seconds / wall:6.2f} "
                     f"{seconds / count * 1e6:8.0f}")
    lines.append(f"    {'all':<9} {total:7.2f} {total / wall:6.2f} {total / count * 1e6:8.0f}"
                 f"   (of {os.cpu_count()} cores)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", action="store_true",
                        help="also where each core's time goes (CPU per process)")
    args = parser.parse_args()
    cores: dict[str, list[dict[str, float]]] = {}
    result = measure(args.count, args.rounds, cores if args.cores else None)
    print(f"executions of {args.count:,} queued entries of `{SCRIPT}`, {args.rounds} rounds: "
          "median (min-max) executions/s")
    for label, values in (("att-jm serve, interval 0", result["service"]),
                          ("bare subprocess.run loop", result["baseline"])):
        print(f"  {label:<26} {statistics.median(values):>8,.0f} "
              f"({min(values):,.0f}-{max(values):,.0f})")
    ratio = statistics.median(result["service"]) / statistics.median(result["baseline"])
    print(f"  ratio {ratio:.2f}x (target >= 0.8x)")
    if args.cores:
        print("where each core's time goes while the clock runs (median of the rounds):")
        for side in ("service", "baseline"):
            print("\n".join(cores_table(side, statistics.median(result[side]), cores[side],
                                         args.count)))


if __name__ == "__main__":
    main()
