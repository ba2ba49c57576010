"""Builds large, realistic event logs through the real application code, fast.

A log here is what months of operation leave: notifications (most matching a
job), their executions started, succeeded or failed and released by the
scheduler, and Auto Cleanup removing all but `keep_rows` rows of each table.
Every event is made by the real domain and stored by the real store in big
batches; the views are kept up to date (so the service starts with them).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count as counter
from pathlib import Path
from typing import Any

import orjson

from att_jm.application import JobManager, UnitOfWork
from att_jm.application.sealer import Sealer
from att_jm.store import log_position, open_store
from projections.views import Views

EVENTS_PER_NOTIFICATION = 6  # received, enqueued, started, dispatched, finished, released


class FakeClock:
    """Time moves one second per notification: months of history in one run."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _commit(manager: JobManager, views: Views, uow: UnitOfWork) -> None:
    recordings = manager.commit(uow)
    views.apply(recordings)


def _command(manager: JobManager, views: Views, name: str, args: dict[str, Any]) -> None:
    uow = UnitOfWork()
    manager.handle_command(uow, "bench", name, f"att/job-manager/commands/bench/{name}",
                           orjson.dumps(args), None)
    uow.collect()
    _commit(manager, views, uow)


def _cleanup(manager: JobManager, views: Views, now: datetime) -> None:
    """One Auto Cleanup run of each table, to its end: chunk after chunk (one unit of work
    each), as the writer's timer goes on with a run until the table leaves `cleanup_due`."""
    for table in ("executed", "failed"):
        while True:
            uow = UnitOfWork()
            removed = manager.cleanup(uow, table, "scheduler")
            uow.collect()
            _commit(manager, views, uow)
            if not removed or table not in manager.cleanup_due(now):
                break


def build(store: Path, events: int, *, keep_rows: int = 1000, batch: int = 500,
          progress: Callable[[int], None] | None = None) -> int:
    """Fill a new store (and its views file) with about `events` events; the final position."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    app = open_store(str(store))
    views = Views(str(store.with_suffix(".views.db")))
    manager = JobManager(app, check_script=lambda name: None, clock=clock)
    sealer = Sealer(app, str(store), every_events=1000, every_seconds=3600.0)
    _command(manager, views, "settings.set", {
        "interval_seconds": 0,
        "executed_cleanup": {"max_rows": keep_rows, "max_age_days": None},
        "failed_cleanup": {"max_rows": keep_rows, "max_age_days": None},
    })
    for name, trigger in (("ipx", "channel-up"), ("audit", "channel-up"), ("rare", "alarm")):
        _command(manager, views, "job.add", {"name": name, "script": "ipx-update",
                                             "trigger": trigger, "command": "channel={channel}"})
    numbers = counter()
    since_cleanup = 0
    while log_position(app) < events:
        uow = UnitOfWork()
        for _ in range(batch):
            number = next(numbers)
            clock.now += timedelta(seconds=1)
            trigger = "alarm" if number % 50 == 0 else "channel-up"
            payload = orjson.dumps({"id": f"n-{number}", "channel": f"ch-{number % 97}",
                                    "site": {"region": "north" if number % 2 else "south"}})
            topic = f"att/channel-manager/notifications/{trigger}"
            manager.receive_notification(uow, trigger, topic, payload)
            uow.collect()
        # The entries the batch enqueued (kept as their creation events, see UnitOfWork).
        for key in list(uow.enqueued):
            entry = str(key)
            execution = manager.model.execution(uow, entry)
            execution.start(clock.now)
            manager.scheduler.dispatch(entry, False, clock.now)
            if execution.notification_id.endswith("7"):
                execution.fail("exit code 1: channel unreachable", 1, 0.2, clock.now)
            else:
                execution.succeed("IPX updated", 0, 0.1, clock.now)
            manager.scheduler.release(entry, clock.now)
            uow.touch(execution, manager.scheduler)
            uow.collect()
        _commit(manager, views, uow)
        if sealer.pending() >= sealer.every_events:  # sealed as the service does
            recordings, _ = sealer.seal(clock.now)
            views.apply(recordings)
        since_cleanup += batch
        if since_cleanup >= 2 * keep_rows:
            since_cleanup = 0
            _cleanup(manager, views, clock.now)
        if progress is not None:
            progress(log_position(app))
    _cleanup(manager, views, clock.now)
    recordings, _ = sealer.seal(clock.now)
    views.apply(recordings)
    sealer.close()
    position = log_position(app)
    left = len(views.rows("queue", 10))
    kept = {table: len(views.rows(table, keep_rows + 1)) for table in ("executed", "failed")}
    views.close()
    if left:  # each batch's entries are run and released: a log that months of use leave
        raise RuntimeError(f"bench.biglog: {left}+ entries left queued; the builder is broken")
    if max(kept.values()) > keep_rows:  # and Auto Cleanup keeps `keep_rows` of each table
        raise RuntimeError(f"bench.biglog: {kept} rows kept, more than {keep_rows}; the "
                           "builder's Auto Cleanup is broken")
    return position


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    position = build(args.store, args.events)
    print(f"{position:,} events in {time.perf_counter() - started:.1f} s -> {args.store}")


if __name__ == "__main__":
    main()


#: The cache's key changes with what the builder makes: "cleaned" since Auto Cleanup went in
#: chunks (the logs cached as "drained" since then kept ~110,000 executed rows).
CACHE = Path(tempfile.gettempdir()) / "att-jm-bench" / "cleaned"


def cached_log(events: int) -> Path:
    """A store of about `events` events (with its views), built once and reused by later runs.

    Callers copy it (`copy_log`) before letting a service write to it.
    """
    store = CACHE / f"log-{events}" / "att-jm.db"
    done = store.with_suffix(".complete")
    if not done.exists():
        shutil.rmtree(store.parent, ignore_errors=True)
        store.parent.mkdir(parents=True)
        build(store, events)
        done.write_text(str(events))
    return store


def copy_log(store: Path, target: Path) -> Path:
    """Copy a store and its views file to the folder `target`; the new store's path."""
    target.mkdir(parents=True, exist_ok=True)
    for source in (store, store.with_suffix(".views.db")):
        shutil.copyfile(source, target / source.name)
    return target / store.name
