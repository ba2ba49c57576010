"""The store's bytes per notification, measured on the real service (issue 16.2).

    python -m bench.bytes [--count 2000] [--compact]

A fresh broker and `att-jm serve` on a fresh SQLite store (interval 0, Auto Cleanup as
shipped, seals as shipped; states stored as plain JSON, the default, or with `--compact` the
service started with the setting `compact_states` on: ADR 0002); `--count` notifications
that match a job whose script succeeds (each runs to Executed), then `--count` that match
no job. After each phase the store file is checkpointed and its bytes in use are counted
(SQLite's `dbstat`: every table and index page in use, free pages left out), so a phase's
growth divided by `--count` is its bytes per notification. Also printed: the events each
phase wrote per notification, by type, with the average bytes of their stored state, and the
share of each table and index.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from bench.harness import TestClient, broker_and_service


def bytes_in_use(store: Path | str) -> dict[str, int]:
    """Bytes of the pages in use by each table and index of the SQLite store file (after a
    checkpoint, so that the WAL's pages are in the file)."""
    db = sqlite3.connect(store, timeout=30)
    try:
        db.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        return {str(name): int(size) for name, size in db.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name")}
    finally:
        db.close()


def events_after(store: Path | str, position: int) -> tuple[int, dict[str, tuple[int, float]]]:
    """(the log's end, {topic: (count, average state bytes)}) of the rows after `position`."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT topic, count(*), avg(length(state)), max(rowid) FROM stored_events "
            "WHERE rowid > ? GROUP BY topic", (position,)).fetchall()
        end = int(db.execute("SELECT coalesce(max(rowid), 0) FROM stored_events").fetchone()[0])
    finally:
        db.close()
    return end, {str(topic): (int(count), float(size)) for topic, count, size, _ in rows}


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"never: {what}")
        time.sleep(0.1)


def measure(count: int, *, compact: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    flags = ("--compact-states", "true") if compact else ()
    with broker_and_service(flags) as (broker, service), TestClient(broker.url) as client:
        assert client.request(service.command_topic("settings.set"),
                              {"interval_seconds": 0})["ok"]
        assert client.request(service.command_topic("job.add"), {
            "name": "ipx", "script": "ok", "trigger": "channel-up",
            "command": "channel={channel}"})["ok"]
        executed = client.subscribe(service.topic("job-manager/events/execution.succeeded"))
        received = client.subscribe(service.topic("job-manager/events/notification.received"))
        before = bytes_in_use(service.store)
        position, _ = events_after(service.store, 0)
        for phase, trigger in (("matching a job", "channel-up"), ("matching none", "other")):
            for number in range(count):
                client.publish(service.notification_topic(trigger), {
                    "id": f"{trigger}-{number:08d}", "channel": f"BBC {number % 50}",
                    "site": "north", "at": "2026-12-03T10:00:00Z"})
            received.wait_for_count(count, timeout=600)
            received.clear()
            if trigger == "channel-up":
                executed.wait_for_count(count, timeout=900)
            time.sleep(1.5)  # the seals of the last rows (every 60 s or 1,000 events) aside
            after = bytes_in_use(service.store)
            end, topics = events_after(service.store, position)
            out[phase] = {
                "bytes_per_notification": (sum(after.values()) - sum(before.values())) / count,
                "by_table": {name: (after.get(name, 0) - before.get(name, 0)) / count
                             for name in sorted(set(after) | set(before))
                             if after.get(name, 0) != before.get(name, 0)},
                "events_per_notification": {topic: (n / count, size)
                                            for topic, (n, size) in sorted(topics.items())},
            }
            before, position = after, end
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compact", action="store_true",
                        help="start the service with compact_states on (states stored compact)")
    args = parser.parse_args(argv)
    result = measure(args.count, compact=args.compact)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    print("states stored", "compact (compact_states on)" if args.compact else "as plain JSON")
    for phase, figures in result.items():
        print(f"{phase}: {figures['bytes_per_notification']:,.0f} bytes per notification")
        for name, size in figures["by_table"].items():
            print(f"  {name:34} {size:8,.1f}")
        for topic, (n, size) in figures["events_per_notification"].items():
            print(f"  {n:5.2f} x {topic:34} state {size:6.1f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
