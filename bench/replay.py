"""Replay: `att-jm audit views --position N` over a log of 1,000,000 events.

Usage: python -m bench.replay [--events 1000000] [--rounds 5] [--store PATH]

The log is generated first (or reused from `--store` when it is there): the real aggregates
run a realistic day of work (jobs, notifications matching zero to two jobs, executions that
start, succeed or fail, operators re-executing failures and removing rows, settings
changes, hourly Auto Cleanup, command records, rejections) and the real application saves
their events in big batches; the real sealer seals them every 1,000 events, as the service
does. Then, each round, in the same process:

- raw: `sqlite3` select of the rows + the decoding of each state (`att_jm.log.codec.loads_state`:
  orjson.loads of its JSON; the floor for reads), over
  the rows the replay reads (the view topics) and over the whole log;
- replay: the audit's point-in-time views at the last position (every view rebuilt in memory).

It prints events/s (log events covered per second) with the median of the rounds and min-max,
and the replay/raw ratios.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from att_jm.application.sealer import Sealer
from att_jm.audit.replay import replay_views
from att_jm.domain.commands import JobSpec
from att_jm.domain.executions import Execution
from att_jm.domain.ids import command_id, execution_id
from att_jm.domain.jobs import Job
from att_jm.domain.matching import fill_template, matches
from att_jm.domain.notifications import CommandRecord, Notification, Rejection
from att_jm.domain.scheduler import Scheduler
from att_jm.errors import InvalidInput
from att_jm.log.codec import loads_state
from att_jm.log.rows import readonly_uri
from att_jm.store import JobManagerApp, log_position, open_store
from projections.views import TOPICS

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
TRIGGERS = ("channel-up", "channel-down", "ad-break", "loudness")
JOBS = (
    ("ipx-update", "ipx-update", "channel-up", {"site": "paris"}, "channel={channel}"),
    ("ipx-down", "ipx-update", "channel-down", None, "channel={channel} state=down"),
    ("ad-log", "always-fail", "ad-break", None, None),
    ("loud-fix", "ipx-update", "loudness", {"level.alarm": True}, "fix {channel} {level.lufs}"),
    ("ad-check", "ipx-update", "ad-break", None, "check {channel} {break_id}"),
    ("paris-up", "ipx-update", "channel-up", {"site": "paris", "hd": True}, "hd={channel}"),
)
OPERATORS = ("alice", "bob", "carol")


class Generator:
    """A realistic log written through the real aggregates and application, in big batches."""

    def __init__(self, app: JobManagerApp, store: Path, seed: int, batch: int = 1000) -> None:
        self.app = app
        self.random = random.Random(seed)
        self.batch = batch
        self.sealer = Sealer(app, str(store), every_events=1000, every_seconds=3600.0)
        self.now = T0
        self.pending: list[Any] = []
        self.written = 0
        self.notifications = 0
        self.scheduler = Scheduler.create(self.now)
        self.jobs: dict[str, Job] = {}
        self.queue: deque[Execution] = deque()
        self.failed: dict[str, Execution] = {}
        self.finished: dict[str, deque[Execution]] = {"executed": deque(), "failed": deque()}
        self.last_cleanup = self.now
        self._emit(self.scheduler)

    def tick(self, low: float = 0.05, high: float = 2.0) -> datetime:
        self.now += timedelta(seconds=self.random.uniform(low, high))
        return self.now

    def _emit(self, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self.pending.extend(aggregate.collect_events())
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.app.save(*self.pending)
            self.written += len(self.pending)
            self.pending = []
            if self.sealer.pending() >= self.sealer.every_events:
                self.sealer.seal(self.now)

    def run(self, events: int) -> None:
        for name, script, trigger, match, command in JOBS:
            self.jobs[name] = Job.add(
                JobSpec(name, script, trigger, match, command), "alice", self.tick()
            )
            self._emit(self.jobs[name])
        self._command("alice", "settings.set", lambda: self.scheduler.change_settings(
            2.0, {"max_rows": 1000}, {"max_rows": 500, "max_age_days": 14.0}, "alice",
            self.now))
        steps: tuple[tuple[float, Callable[[], None]], ...] = (
            (0.45, self.notification), (0.40, self.run_next), (0.06, self.operator),
            (0.02, self.reject), (0.01, self.job_change), (0.06, self.cleanup_if_due),
        )
        weights = [w for w, _ in steps]
        actions = [a for _, a in steps]
        while self.written + len(self.pending) < events:
            self.random.choices(actions, weights)[0]()
        self.flush()
        self.sealer.seal(self.now)
        self.sealer.close()

    def notification(self) -> None:
        self.notifications += 1
        nid = f"cm-{self.notifications:08d}"
        trigger = self.random.choice(TRIGGERS)
        payload: dict[str, Any] = {
            "id": nid, "channel": f"CH-{self.random.randrange(400):03d}",
            "site": self.random.choice(("paris", "lyon", "nice")),
            "hd": self.random.random() < 0.5,
            "level": {"alarm": self.random.random() < 0.5, "lufs": -23.0},
        }
        if trigger == "ad-break" and self.random.random() < 0.7:
            payload["break_id"] = self.notifications
        at = self.tick()
        enqueued, skipped, executions = [], [], []
        for job in self.jobs.values():
            if job.removed or not job.enabled or job.trigger != trigger:
                continue
            if not matches(job.match, payload):
                continue
            try:
                command = fill_template(job.command, payload)
            except InvalidInput as error:
                skipped.append({"job": job.name, "reason": error.message})
                continue
            entry = execution_id(nid, job.name)
            enqueued.append({"job": job.name, "execution_id": str(entry)})
            executions.append(Execution.enqueue(
                entry, job.name, job.script, command, trigger, nid, job.timeout_seconds,
                "channel-manager", at,
            ))
        self.queue.extend(executions)
        self._emit(Notification.receive(nid, trigger, payload, enqueued, skipped, at),
                   *executions)

    def run_next(self) -> None:
        if not self.queue:
            return
        execution = self.queue.popleft()
        at = self.tick()
        execution.start(at)
        self.scheduler.dispatch(str(execution.id), False, at)
        self._emit(execution, self.scheduler)
        end = self.tick(0.1, 5.0)
        if self.random.random() < 0.8:
            execution.succeed('{"result": 3, "feedback": "ok"}', 0, 1.5, end)
            self.finished["executed"].append(execution)
        else:
            execution.fail("exit code 1: no route to host", 1, 2.5, end)
            self.failed[str(execution.id)] = execution
            self.finished["failed"].append(execution)
        self.scheduler.release(str(execution.id), end)
        self._emit(execution, self.scheduler)

    def operator(self) -> None:
        actor = self.random.choice(OPERATORS)
        at = self.tick()
        if self.failed and self.random.random() < 0.7:
            entry, execution = self.failed.popitem()
            if execution.status == "failed":
                execution.reexecute(actor, at)
                self.queue.appendleft(execution)
                self._emit(execution)
                self._record(actor, "failed.execute", {"id": entry})
        elif self.queue and self.random.random() < 0.5:
            execution = self.queue.pop()
            execution.remove_from_queue(actor, at)
            self._emit(execution)
            self._record(actor, "queue.remove", {"id": str(execution.id)})
        else:
            self._record(actor, "views.get", {"view": "queue"})

    def _record(self, actor: str, command: str, result: dict[str, Any]) -> None:
        record = CommandRecord.handled(
            command_id(actor, uuid4().bytes), actor, command, uuid4().bytes,
            {"ok": True, "result": result}, self.now,
        )
        self._emit(record)

    def _command(self, actor: str, command: str, change: Callable[[], object]) -> None:
        change()
        self._emit(self.scheduler)
        self._record(actor, command, {})

    def reject(self) -> None:
        self._emit(Rejection.reject(
            uuid4(), "notification", "att/channel-manager/notifications/channel-up", "invalid",
            '"id" must be a string of 1-200 characters', b'{"channel": "x"}', "channel-manager",
            self.tick(),
        ))

    def job_change(self) -> None:
        job = self.jobs[self.random.choice(list(self.jobs))]
        at = self.tick()
        if job.removed:
            job.readd(job.spec, "bob", at)
        elif self.random.random() < 0.2:
            job.remove("bob", at)
        else:
            job.update({"timeout_seconds": float(self.random.randrange(60, 600))}, "bob", at)
        self._emit(job)

    def cleanup_if_due(self) -> None:
        if self.now - self.last_cleanup < timedelta(hours=1):
            return
        self.last_cleanup = self.now
        for table, keep in (("executed", 1000), ("failed", 500)):
            rows = self.finished[table]
            run = uuid4().hex
            removed = 0
            while len(rows) > keep:
                execution = rows.popleft()
                if execution.clean_up(table, run, "scheduler", self.now):
                    removed += 1
                    self._emit(execution)
            self.scheduler.record_cleanup(table, run, removed, "scheduler", self.now)
            self._emit(self.scheduler)


def generate(path: Path, events: int, seed: int = 7, *, compact: bool = False) -> float:
    """Write a log of about `events` events to a new store at `path` (states stored compact
    when `compact`: the setting `compact_states`); seconds it took."""
    started = time.perf_counter()
    app = open_store(str(path), compact=compact)
    Generator(app, path, seed).run(events)
    app.close()
    return time.perf_counter() - started


def raw_read(path: Path, topics: tuple[str, ...] = ()) -> int:
    """sqlite3 select + loads_state of every state (of `topics` only, when given); rows read."""
    db = sqlite3.connect(readonly_uri(str(path)), uri=True)
    where = f"WHERE topic IN ({','.join('?' * len(topics))})" if topics else ""
    count = 0
    loads = loads_state
    for _, _, _, _, state in db.execute(
        f"SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "  # noqa: S608 -- fixed names, placeholders
        f"{where} ORDER BY rowid", topics,
    ):
        loads(state)
        count += 1
    db.close()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", type=Path, help="store file to reuse or create")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="att-jm-replay-") as tmp:
        path = args.store or Path(tmp) / "att-jm.db"
        if not path.exists():
            seconds = generate(path, args.events)
            print(f"generated {path} in {seconds:.1f} s")
        app = open_store(str(path), readonly=True)
        total = log_position(app)
        app.close()
        results: dict[str, list[float]] = {"raw-all": [], "raw-views": [], "replay": []}
        relevant = 0
        for _ in range(args.rounds):
            started = time.perf_counter()
            raw_read(path)
            results["raw-all"].append(time.perf_counter() - started)
            started = time.perf_counter()
            relevant = raw_read(path, TOPICS)
            results["raw-views"].append(time.perf_counter() - started)
            started = time.perf_counter()
            replay_views(str(path), position=total)
            results["replay"].append(time.perf_counter() - started)
        report(total, relevant, results)


def report(total: int, relevant: int, results: dict[str, list[float]]) -> None:
    print(f"log of {total:,} events, {relevant:,} of them read by the views; "
          f"{len(results['replay'])} rounds, median (min-max)")
    labels = {
        "raw-all": "raw select + orjson.loads, whole log",
        "raw-views": "raw select + orjson.loads, view topics",
        "replay": "audit views --position (replay)",
    }
    for key, label in labels.items():
        rates = [total / seconds for seconds in results[key]]
        median = statistics.median(results[key])
        print(f"{label:<40} {median:6.2f} s  {statistics.median(rates):>10,.0f} events/s "
              f"({min(rates):,.0f}-{max(rates):,.0f})")
    replay = statistics.median(results["replay"])
    print(f"replay / raw (same rows, view topics): "
          f"{statistics.median(results['raw-views']) / replay:.2f}x")
    print(f"replay / raw (whole log):              "
          f"{statistics.median(results['raw-all']) / replay:.2f}x")


if __name__ == "__main__":
    main()
