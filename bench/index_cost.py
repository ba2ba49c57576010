"""What the write index costs a commit: the same commits with and without its statements.

    python -m bench.index_cost [--commits 2000] [--rounds 5]

In one process, over a real SQLite store file with `synchronous=FULL` (as the writer runs
it): a notification that enqueues one execution, committed alone (the idle-queue case, one
commit per notification), then its execution started and finished (two more commits), for
`--commits` notifications; once with the index's changes in each transaction (as the
service runs) and once without (the index's `write` replaced by nothing), A and B
interleaved round by round. Then, with the index, the queue drained as the writer drains it:
`--commits` notifications enqueued first, then one commit per execution that records the
end of one and the start of the next (`handover`), and the WAL frames (pages) such a commit
writes (its `fdatasync` grows with them). Prints the median microseconds per commit of each
kind and the difference (docs/adr/0001-write-side-queue.md quotes it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from att_jm.application import JobManager, UnitOfWork
from att_jm.domain.runs import Outcome
from att_jm.store import open_store
from att_jm.vocabulary import Result

#: The drain checkpoints the WAL every this many commits (the service: every 0.5 s).
CHECKPOINT_EVERY = 20


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def one_round(directory: Path, commits: int, *, index: bool) -> dict[str, list[float]]:
    """Per-commit seconds of each kind (notify, start, finish) for `commits` notifications."""
    clock = Clock()
    manager = JobManager(open_store(str(directory / "store.db")), check_script=lambda name: name,
                         clock=clock)
    queued: list[str] = []
    if not index:  # no index statements; the next entry is the one just enqueued
        manager.model.index.write = _skip  # type: ignore[method-assign]
        manager.model.index.next_queued = (  # type: ignore[method-assign]
            lambda now: (queued[-1], False) if queued else None)
    spent: dict[str, list[float]] = {"notify": [], "start": [], "finish": []}
    uow = UnitOfWork()
    manager.handle_command(uow, "bench", "settings.set", "t", b'{"interval_seconds": 0}', None)
    manager.handle_command(uow, "bench", "job.add", "t",
                           b'{"name": "j", "script": "s", "trigger": "up"}', None)
    uow.collect()
    manager.commit(uow)
    topic = "att/channel-manager/notifications/up"
    for n in range(commits):
        uow = UnitOfWork()
        manager.receive_notification(uow, "up", topic, b'{"id": "n-%d"}' % n)
        uow.collect()
        queued.append(str(next(iter(uow.enqueued))))
        spent["notify"].append(_timed(manager, uow))
        uow = UnitOfWork()
        run = manager.dispatch(uow)
        assert run is not None
        uow.collect()
        spent["start"].append(_timed(manager, uow))
        uow = UnitOfWork()
        manager.finish(uow, run.execution_id, Outcome(Result.SUCCEEDED, "ok", 0, 0.01), clock())
        uow.collect()
        spent["finish"].append(_timed(manager, uow))
    manager.close()
    return spent


def drain_round(directory: Path, commits: int) -> tuple[list[float], float]:
    """Per-commit seconds of `commits` handovers (a queue of `commits` drained), and the WAL
    frames per handover commit."""
    clock = Clock()
    manager = JobManager(open_store(str(directory / "store.db")), check_script=lambda name: name,
                         clock=clock)
    uow = UnitOfWork()
    manager.handle_command(uow, "bench", "settings.set", "t", b'{"interval_seconds": 0}', None)
    manager.handle_command(uow, "bench", "job.add", "t",
                           b'{"name": "j", "script": "s", "trigger": "up"}', None)
    uow.collect()
    manager.commit(uow)
    topic = "att/channel-manager/notifications/up"
    for n in range(commits + 1):
        uow = UnitOfWork()
        manager.receive_notification(uow, "up", topic, b'{"id": "q-%d"}' % n)
        uow.collect()
        manager.commit(uow)
    uow = UnitOfWork()
    run = manager.dispatch(uow)
    uow.collect()
    manager.commit(uow)
    db = manager.model.log.connection
    spent: list[float] = []
    frames: list[float] = []
    for n in range(commits):
        if n % CHECKPOINT_EVERY == 0:  # as the service's checkpoint thread: the WAL then
            _, written, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # starts
            if n:                                                     # over, file kept
                frames.append(written / CHECKPOINT_EVERY)
        assert run is not None
        uow = UnitOfWork()
        manager.finish(uow, run.execution_id, Outcome(Result.SUCCEEDED, "ok", 0, 0.01), clock())
        run = manager.dispatch(uow, chained=True)
        uow.collect()
        spent.append(_timed(manager, uow))
    manager.close()
    return spent, statistics.median(frames)


def _skip(*_: Any, **__: Any) -> None:
    return None


def _timed(manager: JobManager, uow: UnitOfWork) -> float:
    manager.encode(uow)  # as the writer does while handling: not part of the commit
    started = time.perf_counter()
    manager.commit(uow)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000, help="notifications per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of A and B, interleaved")
    args = parser.parse_args(argv)
    medians: dict[tuple[bool, str], list[float]] = {}
    for _ in range(args.rounds):
        for index in (True, False):
            with tempfile.TemporaryDirectory() as directory:
                spent = one_round(Path(directory), args.commits, index=index)
            for kind, seconds in spent.items():
                medians.setdefault((index, kind), []).append(statistics.median(seconds))
    handovers: list[float] = []
    frames: list[float] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as directory:
            drained, per_commit = drain_round(Path(directory), args.commits)
        handovers.append(statistics.median(drained))
        frames.append(per_commit)
    print(f"{'commit':8} {'with index µs':>14} {'without µs':>11} {'difference µs':>14}")
    for kind in ("notify", "start", "finish"):
        with_index = statistics.median(medians[(True, kind)]) * 1e6
        without = statistics.median(medians[(False, kind)]) * 1e6
        print(f"{kind:8} {with_index:14.1f} {without:11.1f} {with_index - without:14.1f}")
    print(f"handover {statistics.median(handovers) * 1e6:14.1f}  (a queue of {args.commits} "
          f"drained: one execution's end and the next one's start; "
          f"{statistics.median(frames):.1f} WAL pages a commit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
