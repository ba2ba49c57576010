"""What the application costs the writer's CPU per message, in one process, without MQTT.

    python -m bench.handling [--count 3000] [--batch 200] [--rounds 5]

Over a real SQLite store file, as the writer runs the application for a batch (the
notifications' existence prefetched in one query, each message handled, the batch's events
encoded and committed in one transaction), three series:

- a notification alone in its batch (one job matches it: a queue entry), as in
  `bench.latency`;
- notifications in batches of `--batch`, as in `bench.ingest`'s burst;
- a `settings.set` alone in its batch (a real change each time: the interval toggles), as in
  `bench.latency`'s commands.

The store runs with `synchronous=OFF` here: the figure is the CPU (`time.process_time`, this
process's user + system time) the handling and the commit's SQL take, not the disk's flush.
Prints per series the median over `--rounds` of the CPU microseconds per message, with each
round's figure: no broker, no other process and no disk wait in it, so a change of the domain
or the application shows apart from the round trips' noise. On a virtual machine whose host
is busy the CPU clock runs on while the vCPU waits for the host (rounds 30-60% above the
others): compare medians of interleaved runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from att_jm.application import JobManager, UnitOfWork
from att_jm.store import open_store
from bench.index_cost import Clock

TRIGGER = "up"
TOPIC = "att/channel-manager/notifications/up"


def _manager(directory: Path) -> JobManager:
    """A store with one job matching every notification, interval 0, no flush at a commit."""
    manager = JobManager(open_store(str(directory / "store.db")),
                         check_script=lambda name: name, clock=Clock())
    manager.model.log.connection.execute("PRAGMA synchronous=OFF")
    uow = UnitOfWork()
    manager.handle_command(uow, "bench", "settings.set", "setup", b'{"interval_seconds": 0}',
                           None)
    manager.handle_command(uow, "bench", "job.add", "setup",
                           b'{"name": "j", "script": "s", "trigger": "up"}', None)
    uow.collect()
    manager.commit(uow)
    return manager


def _notifications(manager: JobManager, uow: UnitOfWork, first: int, count: int) -> None:
    payloads = [b'{"id": "n-%d", "channel": "c"}' % n for n in range(first, first + count)]
    manager.prefetch_notifications(uow, payloads)
    for payload in payloads:
        manager.receive_notification(uow, TRIGGER, TOPIC, payload)


def _settings_set(manager: JobManager, uow: UnitOfWork, first: int, count: int) -> None:
    for n in range(first, first + count):
        reply = manager.handle_command(uow, "bench", "settings.set", f"c-{n}",
                                       b'{"interval_seconds": %d}' % ((n + 1) % 2), b"c%d" % n)
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            raise RuntimeError(f"settings.set was not done: {reply!r}")


def cpu_per_message(handle: Callable[[JobManager, UnitOfWork, int, int], None], batch: int,
                    count: int) -> float:
    """CPU microseconds per message for `count` messages handled `batch` at a time."""
    with tempfile.TemporaryDirectory(prefix="att-jm-handling-") as directory:
        manager = _manager(Path(directory))
        try:
            started = time.process_time_ns()
            done = 0
            while done < count:
                uow = UnitOfWork()
                handle(manager, uow, done, batch)
                done += batch
                uow.collect()
                manager.encode(uow)
                manager.commit(uow)
            return (time.process_time_ns() - started) / done / 1e3
        finally:
            manager.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="messages per series, alone")
    parser.add_argument("--batch", type=int, default=200, help="notifications per batch")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    series = (
        ("notification, alone", _notifications, 1, args.count),
        (f"notifications, {args.batch} a batch", _notifications, args.batch,
         max(args.batch, args.count * 5 // args.batch * args.batch)),
        ("settings.set, alone", _settings_set, 1, args.count),
    )
    print(f"application CPU per message, {args.rounds} rounds: median (each round), µs")
    for name, handle, batch, count in series:
        figures = [cpu_per_message(handle, batch, count) for _ in range(args.rounds)]
        rounds = " ".join(f"{figure:.1f}" for figure in figures)
        print(f"  {name:32} {statistics.median(figures):7.1f}   ({rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
