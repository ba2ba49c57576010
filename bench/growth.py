"""Growth curves: a long queue and a long log (issue 16.4).

    python -m bench.growth queue [--entries 100000] [--small 1000] [--requests 300]
    python -m bench.growth log [--events 10000000] [--sizes 10000,1000000]

queue: a store whose queue holds `--entries` waiting entries (a job that matches every
notification, an interval of a day so that nothing runs), built through the real domain and
store with the views up to date; the real `att-jm serve` started on it; then
- `views.get` round trips (p50, p99) of the queue view as published (its first page, capped
  in rows and bytes), of a page deep in the queue (`offset` half-way, `limit` 100) and of one
  row by id, each `--requests` times;
- the bytes of the retained queue view message;
- the peak RSS of the writer and of its relay after the start and the requests;
beside the same on a queue of `--small` entries.

log: for logs of each size (built once by bench.biglog through the real application and
cached), the store's bytes on disk (events, views), the start-up of `att-jm serve` (spawn to
online), `att-jm rebuild` (spawn to exit) and the peak RSS after starting and taking 2,000
notifications (bench.scale's measures).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from att_jm.application import JobManager, UnitOfWork
from att_jm.store import open_store
from bench.biglog import cached_log
from bench.harness import Broker, Service, TestClient, populate_scripts_dir
from bench.scale import child_pids, memory_round, peak_rss_kib, rebuild_round, startup_round
from projections.views import Views


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def build_queue(store: Path, entries: int, batch: int = 1000) -> list[str]:
    """A store whose queue holds `entries` waiting entries; their ids, in queue order."""
    clock = Clock()
    app = open_store(str(store))
    views = Views(str(store.with_suffix(".views.db")))
    manager = JobManager(app, check_script=lambda name: name, clock=clock)

    def commit(work: Callable[[UnitOfWork], object]) -> None:
        uow = UnitOfWork()
        work(uow)
        uow.collect()
        views.apply(manager.commit(uow))

    commit(lambda uow: manager.handle_command(
        uow, "bench", "settings.set", "t", b'{"interval_seconds": 86400}', None))
    commit(lambda uow: manager.handle_command(
        uow, "bench", "job.add", "t",
        b'{"name": "q", "script": "ok", "trigger": "t", "command": "{channel}"}', None))
    topic = "att/channel-manager/notifications/t"
    ids: list[str] = []
    for start in range(0, entries, batch):
        uow = UnitOfWork()
        clock.now += timedelta(seconds=1)
        for number in range(start, min(entries, start + batch)):
            payload = orjson.dumps({"id": f"n-{number}", "channel": f"channel {number % 97}"})
            manager.receive_notification(uow, "t", topic, payload)
            uow.collect()
        ids.extend(str(key) for key in uow.enqueued)
        views.apply(manager.commit(uow))
    manager.close()
    views.close()
    return ids


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def queue_round(entries: int, requests: int) -> dict[str, float]:
    """The figures of one queue of `entries`."""
    with tempfile.TemporaryDirectory(prefix="att-jm-growth-") as tmp:
        root = Path(tmp)
        store = root / "store" / "att-jm.db"
        store.parent.mkdir()
        built = time.perf_counter()
        ids = build_queue(store, entries)
        built = time.perf_counter() - built
        broker = Broker(root / "broker").start()
        # The requests come as fast as the replies: over the default per-actor rate.
        service = Service(broker, store=store, scripts_dir=populate_scripts_dir(root / "scripts"),
                          log_path=root / "att-jm.log",
                          extra_args=["--command-rate", "100000", "--command-burst", "100000"])
        try:
            started = time.perf_counter()
            service.start(timeout=300)
            start_seconds = time.perf_counter() - started
            out: dict[str, float] = {"build_s": built, "start_s": start_seconds}
            with TestClient(broker.url) as client:
                views = client.subscribe(service.view_topic("queue"))
                view = views.wait_for(None, timeout=60)
                out["view_bytes"] = len(view.payload)
                out["view_rows"] = len(orjson.loads(view.payload)["rows"])
                topic = service.command_topic("views.get", "growth")
                asks: dict[str, dict[str, Any]] = {
                    "first_page": {"view": "queue"},
                    "deep_page": {"view": "queue", "offset": entries // 2, "limit": 100},
                    "one_row": {"view": "queue", "id": ids[entries // 2]},
                }
                for name, args in asks.items():
                    seconds = []
                    for _ in range(requests):
                        asked = time.perf_counter()
                        reply = client.request(topic, args)
                        seconds.append(time.perf_counter() - asked)
                        assert reply["ok"], reply
                    out[f"{name}_p50_ms"] = statistics.median(seconds) * 1000
                    out[f"{name}_p99_ms"] = _percentile(seconds, 0.99) * 1000
            assert service.pid is not None
            out["writer_rss_mib"] = peak_rss_kib(service.pid) / 1024
            relays = child_pids(service.pid)
            out["relay_rss_mib"] = sum(peak_rss_kib(pid) for pid in relays) / 1024
            return out
        finally:
            service.stop()
            broker.stop()


def disk_bytes(store: Path) -> dict[str, int]:
    """Bytes of the store's files: the events (with the write index), the views."""
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")
                   if not p.name.endswith(".views.db") and ".views.db" not in p.name)

    views = store.with_suffix(".views.db")
    return {"store": size(store),
            "views": sum(p.stat().st_size for p in views.parent.glob(views.name + "*"))}


def log_figures(sizes: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for events in sizes:
        store = cached_log(events)
        rebuild, _ = rebuild_round(store)
        start, empty = startup_round(store)
        rows.append({"events": events, **disk_bytes(store), "start_s": start,
                     "empty_start_s": empty, "rebuild_events_per_s": rebuild,
                     "rss_mib": memory_round(store) / 1024})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    queue = sub.add_parser("queue", help="a queue of 100,000 entries")
    queue.add_argument("--entries", type=int, default=100_000)
    queue.add_argument("--small", type=int, default=1_000)
    queue.add_argument("--requests", type=int, default=300)
    log = sub.add_parser("log", help="a log of 10 million events")
    log.add_argument("--events", type=int, default=10_000_000)
    log.add_argument("--sizes", default="10000,1000000", help="smaller logs for the curve")
    args = parser.parse_args(argv)
    if args.what == "queue":
        for entries in (args.small, args.entries):
            figures = queue_round(entries, args.requests)
            print(f"queue of {entries:,}: " + ", ".join(
                f"{name} {value:,.2f}" for name, value in figures.items()))
    else:
        sizes = [int(size) for size in args.sizes.split(",") if size] + [args.events]
        for row in log_figures(sizes):
            print(f"log of {row['events']:,} events: " + ", ".join(
                f"{name} {value:,.2f}" for name, value in row.items() if name != "events"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
