"""Rebuild, start-up and memory on a log of 1,000,000 events, each with its baseline.

Usage: python -m bench.scale [--events 1000000] [--small 10000] [--rounds 3]

- rebuild: `att-jm rebuild` (a new process, timed from start to exit) over the whole log,
  as log events per second; baseline: a raw `sqlite3` select of every row + `orjson.loads`
  of its state, in this process. Target >= 0.5x.
- start-up: `att-jm serve` spawned until its `online` status is on the broker, with the big
  log and up-to-date views; baseline: the same on an empty store. Target <= 2x.
- memory: peak RSS (VmHWM) of the service, writer + relay, after starting on the big log
  (Auto Cleanup keeping 1,000 rows per table) and taking 2,000 live notifications;
  baseline: the same on a log of `--small` events. Target <= 1.3x.
The logs are built once by `bench.biglog` (real domain and store) and cached in the temp dir.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from att_jm.log.codec import loads_state
from bench.biglog import cached_log, copy_log
from bench.harness import Broker, Service, TestClient, populate_scripts_dir
from bench.suite import Figure


def raw_read(store: Path) -> tuple[int, float]:
    """(rows, seconds) of a plain select of every stored row + the decoding of each state
    (`att_jm.log.codec.loads_state`: orjson.loads of its JSON)."""
    started = time.perf_counter()
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    rows = 0
    for _, _, state in db.execute("SELECT rowid, topic, state FROM stored_events ORDER BY rowid"):
        loads_state(state)
        rows += 1
    db.close()
    return rows, time.perf_counter() - started


def rebuild_round(store: Path) -> tuple[float, float]:
    """(rebuild events/s, raw events/s) over the same log."""
    with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
        copy = copy_log(store, Path(tmp))
        rows, raw_seconds = raw_read(copy)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "att_jm", "rebuild", "--store", str(copy),
             "--log-format", "json"],
            check=True, capture_output=True, timeout=600,
        )
        return rows / (time.perf_counter() - started), rows / raw_seconds


def _service(tmp: Path, broker: Broker, store: Path | None) -> Service:
    return Service(
        broker, store=store or tmp / "empty" / "att-jm.db",
        scripts_dir=populate_scripts_dir(tmp / "scripts"), log_path=tmp / "att-jm.log",
    )


def startup_round(store: Path) -> tuple[float, float]:
    """(seconds to online with the big log, seconds to online on an empty store)."""
    out = []
    for log in (store, None):
        with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
            root = Path(tmp)
            broker = Broker(root / "broker").start()
            service = _service(root, broker, copy_log(log, root / "store") if log else None)
            try:
                started = time.perf_counter()
                service.start(timeout=120)
                out.append(time.perf_counter() - started)
            finally:
                service.stop()
                broker.stop()
    return out[0], out[1]


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def child_pids(pid: int) -> list[int]:
    """The relay processes whose parent is `pid` (not the scripts the service runs, which come
    and go: one that ended between the listing and the reading made a round fail)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                relay = b"att_jm.relay" in (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == pid and relay:
                found.append(int(entry.name))
    return found


def memory_round(store: Path, notifications: int = 2000) -> int:
    """Peak RSS (KiB) of a service started on `store` after `notifications` live ones: the
    writer's plus its relay's (each process's own peak; their sum bounds the service's)."""
    with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker").start()
        service = _service(root, broker, copy_log(store, root / "store"))
        try:
            service.start(timeout=120)
            with TestClient(broker.url) as client:
                events = client.subscribe(service.topic("job-manager/events/notification.received"))
                for number in range(notifications):
                    client.publish(service.notification_topic("alarm"),
                                   {"id": f"live-{number}", "channel": "c"})
                events.wait_for_count(notifications, timeout=120)
            assert service.pid is not None
            return sum(peak_rss_kib(pid) for pid in (service.pid, *child_pids(service.pid)))
        finally:
            service.stop()
            broker.stop()


def _sizes(quick: bool) -> tuple[int, int]:
    return (20_000, 2_000) if quick else (1_000_000, 10_000)


def rebuild_figures(quick: bool, rounds: int) -> list[Figure]:
    big = cached_log(_sizes(quick)[0])
    pairs = [rebuild_round(big) for _ in range(rounds)]
    return [Figure(f"rebuild of {_sizes(quick)[0]:,} events", "events/s",
                   [p[0] for p in pairs], [p[1] for p in pairs], ("ratio>=", 0.5),
                   ">= 0.5x raw select + orjson.loads")]


def startup_figures(quick: bool, rounds: int) -> list[Figure]:
    big = cached_log(_sizes(quick)[0])
    pairs = [startup_round(big) for _ in range(rounds)]
    return [Figure(f"start-up with {_sizes(quick)[0]:,} events", "s",
                   [p[0] for p in pairs], [p[1] for p in pairs], ("ratio<=", 2.0),
                   "<= 2x empty store")]


def memory_figures(quick: bool, rounds: int) -> list[Figure]:
    events, small = _sizes(quick)
    big, little = cached_log(events), cached_log(small)
    heavy = [memory_round(big) / 1024 for _ in range(rounds)]
    light = [memory_round(little) / 1024 for _ in range(rounds)]
    return [Figure(f"peak RSS after {events:,} events", "MiB", heavy, light, ("ratio<=", 1.3),
                   f"<= 1.3x after {small:,} events")]


def measure(events: int = 1_000_000, small: int = 10_000, rounds: int = 3) -> dict[str, Any]:
    big, little = cached_log(events), cached_log(small)
    result: dict[str, Any] = {"rebuild": ([], []), "startup": ([], []), "memory": ([], [])}
    for _ in range(rounds):
        for figure, pair in (("rebuild", rebuild_round(big)), ("startup", startup_round(big)),
                             ("memory", (memory_round(big), memory_round(little)))):
            result[figure][0].append(pair[0])
            result[figure][1].append(pair[1])
    return result


def _line(label: str, values: list[float], unit: str) -> str:
    spread = f"({min(values):,.2f}-{max(values):,.2f})"
    return f"{label:<34} {statistics.median(values):>12,.2f} {spread} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.events, args.small, args.rounds)
    rebuild, raw = result["rebuild"]
    big, empty = result["startup"]
    heavy, light = result["memory"]
    print(f"scale: {args.events:,}-event log, {args.rounds} rounds, median (min-max)")
    print(_line("rebuild", rebuild, "events/s"))
    print(_line("raw select + orjson.loads", raw, "events/s"))
    print(f"  ratio {statistics.median(rebuild) / statistics.median(raw):.2f}x (target >= 0.5x)")
    print(_line(f"start-up, {args.events:,} events", big, "s"))
    print(_line("start-up, empty store", empty, "s"))
    print(f"  ratio {statistics.median(big) / statistics.median(empty):.2f}x (target <= 2x)")
    print(_line(f"peak RSS, {args.events:,} events", heavy, "KiB"))
    print(_line(f"peak RSS, {args.small:,} events", light, "KiB"))
    print(f"  ratio {statistics.median(heavy) / statistics.median(light):.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
