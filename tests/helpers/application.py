"""The JobManager over a real store and views (SQLite files, or a PostgreSQL schema), driven
like the writer.

Each unit of work is handled, collected, committed in one transaction and applied to the
views, as `att_jm.service.Writer` does; time comes from a fake clock the tests advance.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from att_jm.application import JobManager, UnitOfWork
from att_jm.domain.commands import TraceGet, ViewsGet
from att_jm.domain.runs import Outcome, Run
from att_jm.log.rows import StoreReader
from att_jm.service.reads import Reads
from att_jm.store import open_store, read_log
from att_jm.vocabulary import Result
from helpers.clock import Clock
from helpers.store import ViewsSql, views_for
from projections.rebuild import catch_up
from projections.views import Views

SCRIPTS = frozenset({"backup.sh", "report.sh", "notify.sh"})
R = TypeVar("R")
Work = Callable[[UnitOfWork], Any]


def check_script(name: str) -> str:
    """The scripts port: refuses names that are not in the (imaginary) scripts directory."""
    if name not in SCRIPTS:
        raise FileNotFoundError(f"no executable {name!r} in the scripts directory")
    return name


class Harness:
    """A store, its views and a JobManager over them, driven like the writer. The store is
    `store` (a path or a PostgreSQL URL), else `<directory>/store.db`."""

    def __init__(self, directory: Path, clock: Clock, max_payload_bytes: int,
                 store: str | None = None) -> None:
        self.clock = clock
        self.store = store or str(directory / "store.db")
        self.app = open_store(self.store)
        self.views = Views(views_for(self.store, directory))
        #: The views read with SQL of a test's own (not the views' code).
        self.views_sql = ViewsSql(self.views.path)
        catch_up(self.app, self.views)
        self.manager = JobManager(
            self.app, check_script=check_script, clock=clock,
            max_payload_bytes=max_payload_bytes,
        )

    def close(self) -> None:
        self.manager.log.close()  # as a stop without the index's record (a crash) leaves it
        self.views_sql.close()
        self.views.close()
        self.app.close()

    # Units of work ---------------------------------------------------------------------------

    def batch(self, *works: Work, apply_views: bool = True) -> list[Any]:
        """Handle `works` in one unit of work, commit it, and bring the views up to date."""
        uow = UnitOfWork()
        results = []
        for work in works:
            results.append(work(uow))
            uow.collect()
        recordings = self.manager.commit(uow)
        if uow.spoiled:
            self.manager.reload()
        if apply_views:
            self.views.apply(recordings)
        return results

    def unit(self, work: Callable[[UnitOfWork], R], *, apply_views: bool = True) -> R:
        result: R = self.batch(work, apply_views=apply_views)[0]
        return result

    # Messages --------------------------------------------------------------------------------

    def command_work(
        self, name: str, args: Any = None, *, actor: str = "alice",
        correlation: bytes | None = None, raw: bytes | None = None,
    ) -> Work:
        payload = raw if raw is not None else orjson.dumps({} if args is None else args)
        topic = f"att/job-manager/commands/{actor}/{name}"
        return lambda uow: self.manager.handle_command(
            uow, actor, name, topic, payload, correlation
        )

    def command(
        self, name: str, args: Any = None, *, actor: str = "alice",
        correlation: bytes | None = None, raw: bytes | None = None,
    ) -> dict[str, Any]:
        reply = self.unit(
            self.command_work(name, args, actor=actor, correlation=correlation, raw=raw)
        )
        if isinstance(reply, ViewsGet | TraceGet):  # answered after the commit, as the writer
            reads = Reads(views=self.views, log=StoreReader(self.store), view_rows=100,
                          view_max_bytes=256 * 1024)
            try:
                reply = orjson.loads(orjson.dumps(reads.read(reply)))
            finally:
                assert reads.log is not None
                reads.log.close()
        assert isinstance(reply, dict)
        return reply

    def ok(self, name: str, args: Any = None, **kwargs: Any) -> Any:
        reply = self.command(name, args, **kwargs)
        assert reply["ok"] is True, reply
        return reply["result"]

    def error(self, name: str, args: Any = None, **kwargs: Any) -> tuple[str, str]:
        reply = self.command(name, args, **kwargs)
        assert reply["ok"] is False, reply
        assert set(reply) == {"ok", "error"}
        return reply["error"]["code"], reply["error"]["message"]

    def add_job(self, name: str, trigger: str = "alarm", **fields: Any) -> Any:
        return self.ok("job.add", {"name": name, "script": "backup.sh", "trigger": trigger,
                                   **fields})

    def notification_work(self, trigger: str, payload: dict[str, Any] | bytes) -> Work:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        topic = f"att/channel-manager/notifications/{trigger}"
        return lambda uow: self.manager.receive_notification(uow, trigger, topic, body)

    def notify(self, trigger: str, payload: dict[str, Any] | bytes) -> str:
        outcome = self.unit(self.notification_work(trigger, payload))
        assert isinstance(outcome, str)
        return outcome

    # Running ---------------------------------------------------------------------------------

    def dispatch(self) -> Run | None:
        return self.unit(self.manager.dispatch)

    def finish(
        self, entry: str, result: int = 3, feedback: str | None = "done",
        exit_code: int | None = 0, at: datetime | None = None,
    ) -> bool:
        outcome = Outcome(result=Result(result), feedback=feedback, exit_code=exit_code,
                          duration_seconds=1.0)
        when = self.clock() if at is None else at
        return self.unit(lambda uow: self.manager.finish(uow, entry, outcome, when))

    def run_next(self, result: int = 3, feedback: str = "done", seconds: float = 1.0) -> Run:
        """Start the next entry, let it run `seconds`, and record its end."""
        dispatch = self.dispatch()
        assert dispatch is not None
        self.clock.advance(seconds)
        assert self.finish(dispatch.execution_id, result, feedback)
        return dispatch

    # Reading ---------------------------------------------------------------------------------

    def events(self, *types: type[Any]) -> list[Any]:
        return [e for _, e in read_log(self.app, 0) if not types or isinstance(e, types)]

    def rows(self, view: str) -> list[dict[str, Any]]:
        return self.views.rows(view, 10**6)

    def ids(self, view: str) -> list[str]:
        return [row["id"] for row in self.rows(view)]
