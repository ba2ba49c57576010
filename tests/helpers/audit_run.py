"""A scripted run of the Job Manager on a real store (SQLite files, or a PostgreSQL schema),
driven like the service's writer.

Each unit of work is handled, committed in one transaction, applied to the views and sealed
when due, as `att_jm.service.Writer` does; time comes from a clock the run advances. After
every commit the run records the views as the service would publish them then, keyed by
log position: what the audit's point-in-time views must reproduce.

With `marks=True` the run also brackets itself as the writer does: `Ledger.Opened` at start,
before anything else is written (`Sealer.open_log`), and, on `stop()`, the final seals with
`Ledger.Closed` (`Sealer.close_log`); `restart()` stops (cleanly or not) and starts again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import orjson

from att_jm.application import JobManager, UnitOfWork
from att_jm.application.sealer import Sealer
from att_jm.domain.runs import Outcome
from att_jm.log.backend import is_postgres, views_location
from att_jm.log.tail import Tail
from att_jm.store import log_position, open_store
from att_jm.vocabulary import Result
from helpers.clock import Clock
from projections.rebuild import catch_up
from projections.views import VIEWS, Views

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
R = TypeVar("R")


class ScriptedRun:
    """A store, its views and sealer, and the JobManager: in `directory`, or on `store` (a
    path or a PostgreSQL URL; its views where the service puts them); `compact`: the
    service's setting `compact_states`."""

    def __init__(self, directory: Path, *, seal_every: int = 20, marks: bool = False,
                 store: str | None = None, compact: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.seal_every = seal_every
        self.marks = marks
        self.compact = compact  # states stored compact (compact_states); may change at restart
        self.clock = Clock(T0)
        self.store = store or str(directory / "att-jm.db")
        self.views_path = (views_location(self.store) if is_postgres(self.store)
                           else str(directory / "att-jm.views.db"))
        self.published: dict[int, dict[str, Any]] = {}
        self.seals: list[dict[str, Any]] = []  # what the service publishes on .../seals
        self.tails: list[Tail] = []  # what each start found (with `marks`)
        self._start()

    def _start(self) -> None:
        self.app = open_store(self.store, compact=self.compact)
        self.sealer = Sealer(self.app, self.store, every_events=self.seal_every,
                             every_seconds=3600.0)
        if self.marks:  # first, before anything else is written
            self.tails.append(self.sealer.open_log(self.clock()))
        self.views = Views(self.views_path)
        catch_up(self.app, self.views)
        self.manager = JobManager(self.app, check_script=lambda name: name,
                                  clock=self.clock)
        self._record()

    def close(self) -> None:
        """Close everything without a last seal (as a crash would leave the log)."""
        self.manager.close()
        self.sealer.close()
        self.views.close()
        self.app.close()

    def stop(self) -> None:
        """A clean stop: the final seals and `Ledger.Closed`, then close."""
        self.clock.advance(1)
        recordings, seals = self.sealer.close_log(self.clock())
        self.views.apply(recordings)
        self.seals.extend(seal.message() for seal in seals)
        self._record()
        self.close()

    def restart(self, *, clean: bool = True, between: Callable[[], object] | None = None,
                ) -> Tail:
        """Stop (`clean`: with `stop()`, else as a crash), run `between` while stopped (an
        intruder, say), start again; what the start found."""
        if clean:
            self.stop()
        else:
            self.close()
        if between is not None:
            between()
        self.clock.advance(1)
        self._start()
        return self.tails[-1]

    # Units of work ---------------------------------------------------------------------

    def unit(self, work: Callable[[UnitOfWork], R]) -> R:
        """Handle `work`, commit it, apply the views, seal when due; its result."""
        uow = UnitOfWork()
        result = work(uow)
        uow.collect()
        recordings = self.manager.commit(uow)
        self.views.apply(recordings)
        if uow.spoiled:
            self.manager.reload()
        self._record()
        if self.sealer.pending() >= self.sealer.every_events:
            self.seal()
        return result

    def seal(self) -> None:
        """Seal every waiting row now (as the service does when due or at a clean stop)."""
        recordings, seals = self.sealer.seal(self.clock())
        self.views.apply(recordings)
        self.seals.extend(seal.message() for seal in seals)
        self._record()

    def _record(self) -> None:
        position = log_position(self.app)
        self.published[position] = {name: self.views.payload(name, 1000) for name in VIEWS}

    @property
    def position(self) -> int:
        return log_position(self.app)

    # What the outside world does -------------------------------------------------------

    def command(self, name: str, args: dict[str, Any] | None = None, *,
                actor: str = "alice") -> dict[str, Any]:
        payload = orjson.dumps(args or {})
        topic = f"att/job-manager/commands/{actor}/{name}"
        self.clock.advance(1)
        reply = self.unit(lambda uow: self.manager.handle_command(
            uow, actor, name, topic, payload, uuid4().bytes))
        assert isinstance(reply, dict), reply
        return reply

    def ok(self, name: str, args: dict[str, Any] | None = None, *, actor: str = "alice") -> Any:
        reply = self.command(name, args, actor=actor)
        assert reply["ok"] is True, reply
        return reply["result"]

    def notify(self, trigger: str, payload: dict[str, Any] | bytes, *,
               retained: bool = False) -> str:
        """`retained`: it comes with the RETAIN flag (published retained, or the broker's
        kept copy at a subscribe)."""
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.clock.advance(1)
        topic = f"att/channel-manager/notifications/{trigger}"
        return self.unit(lambda uow: self.manager.receive_notification(
            uow, trigger, topic, body, retained=retained))

    def run_next(self, result: int = 3, feedback: str | None = "ok", *,
                 exit_code: int | None = 0) -> str | None:
        """Start the next queued entry (when the interval allows) and finish it; its id."""
        self.clock.advance(10)
        dispatch = self.unit(self.manager.dispatch)
        if dispatch is None:
            return None
        at = self.clock.advance(2)
        outcome = Outcome(result=Result(result), feedback=feedback, exit_code=exit_code,
                          duration_seconds=2.0)
        self.unit(lambda uow: self.manager.finish(uow, dispatch.execution_id, outcome, at))
        return dispatch.execution_id

    def cleanup(self, table: str) -> int:
        self.clock.advance(1)
        return self.unit(lambda uow: self.manager.cleanup(uow, table, "scheduler"))


def typical_day(run: ScriptedRun) -> dict[str, str]:
    """Jobs, notifications, successes, failures and every operator action; ids by role."""
    ids: dict[str, str] = {}
    run.ok("settings.set", {"interval_seconds": 0})
    run.ok("job.add", {"name": "ipx", "script": "ipx-update", "trigger": "channel-up",
                       "command": "channel={channel}"})
    run.ok("job.add", {"name": "paris", "script": "ipx-update", "trigger": "channel-up",
                       "match": {"site": "paris"}}, actor="bob")
    run.ok("job.add", {"name": "down", "script": "always-fail", "trigger": "channel-down"})
    for n in range(6):
        run.notify("channel-up", {"id": f"up-{n}", "channel": f"C{n}",
                                  "site": "paris" if n % 2 else "lyon"})
    run.notify("channel-down", {"id": "down-1", "channel": "C9"})
    run.notify("channel-up", b"not json")
    run.notify("channel-up", {"id": "no-channel"})  # ipx is skipped: no {channel}
    ids["first"] = str(run.run_next())
    ids["failed"] = str(run.run_next(2, "exit code 1: refused", exit_code=1))
    run.ok("failed.execute", {"id": ids["failed"]}, actor="carol")
    ids["retried"] = str(run.run_next())
    for _ in range(3):
        run.run_next()
    queued = run.views.rows("queue", 100)
    ids["removed"] = queued[-1]["id"]
    run.ok("queue.remove", {"id": ids["removed"]}, actor="bob")
    ids["front"] = queued[-2]["id"]
    run.ok("queue.execute-now", {"id": ids["front"]}, actor="bob")
    run.run_next(2, "timed out after 300 s", exit_code=None)
    run.ok("job.update", {"name": "ipx", "command": "ch={channel}"}, actor="bob")
    run.ok("job.remove", {"name": "down"})
    run.ok("settings.set", {"executed_cleanup": {"max_rows": 2}})
    run.ok("executed.remove", {"id": ids["first"]})
    while run.run_next() is not None:
        pass
    failed = run.views.rows("failed", 100)
    if failed:
        run.ok("failed.delete", {"id": failed[0]["id"]}, actor="carol")
    run.cleanup("executed")
    run.notify("channel-up", {"id": "late", "channel": "C7", "site": "paris"})
    return ids
