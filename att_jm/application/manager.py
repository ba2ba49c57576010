"""The Job Manager: its use cases over one write model, as the writer calls them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from att_jm.application.commands import Commands
from att_jm.application.model import WriteModel
from att_jm.application.notifications import Notifications
from att_jm.application.rejections import Rejections
from att_jm.application.scheduling import Scheduling
from att_jm.application.unit import UnitOfWork
from att_jm.domain import commands as cmd
from att_jm.domain.jobs import Job
from att_jm.domain.ratelimit import TokenBuckets
from att_jm.domain.runs import Outcome, Run
from att_jm.domain.scheduler import Scheduler
from att_jm.errors import AttJmError
from att_jm.store import JobManagerApp, WriterLog

Reply = dict[str, Any]


class JobManager:
    """Notifications, commands, dispatch and cleanup as units of work.

    Each use case reads what it needs from the write model, calls the domain, and adds the
    touched aggregates to a UnitOfWork; `commit` stores a unit of work in one transaction.
    """

    def __init__(
        self,
        app: JobManagerApp,
        *,
        check_script: Callable[[str], object],
        clock: Callable[[], datetime],
        max_payload_bytes: int = 256 * 1024,
        may_send: Callable[[str, str], bool] | None = None,
        rate: TokenBuckets | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        self.model = WriteModel(app, clock)
        rejections = Rejections(clock)
        self.scheduling = Scheduling(self.model, clock)
        self.notifications = Notifications(self.model, rejections, clock=clock,
                                           max_payload_bytes=max_payload_bytes)
        self.commands = Commands(
            self.model, rejections, self.scheduling, check_script=check_script, clock=clock,
            max_payload_bytes=max_payload_bytes, may_send=may_send, rate=rate,
        )

    # The write model -------------------------------------------------------------------------

    @property
    def log(self) -> WriterLog:
        return self.model.log

    @property
    def scheduler(self) -> Scheduler:
        return self.model.scheduler

    @property
    def jobs(self) -> dict[str, Job]:
        return self.model.jobs

    def reload(self) -> None:
        self.model.reload()

    def encode(self, uow: UnitOfWork) -> None:
        self.model.encode(uow)

    def commit(self, uow: UnitOfWork) -> list[tuple[int, Any]]:
        return self.model.commit(uow)

    def close(self) -> None:
        self.model.close()

    # Notifications -----------------------------------------------------------------------

    def prefetch_notifications(self, uow: UnitOfWork, payloads: Iterable[bytes]) -> None:
        self.notifications.prefetch(uow, payloads)

    def receive_notification(self, uow: UnitOfWork, trigger: str, topic: str,
                             payload: bytes, *, retained: bool = False) -> str:
        return self.notifications.receive(uow, trigger, topic, payload, retained=retained)

    def reject_notification(self, uow: UnitOfWork, topic: str, error: AttJmError,
                            payload: bytes) -> None:
        self.notifications.reject(uow, topic, error, payload)

    # Commands ----------------------------------------------------------------------------

    def handle_command(
        self, uow: UnitOfWork, actor: str, name: str, topic: str, payload: bytes,
        correlation: bytes | None,
    ) -> Reply | cmd.ReadCommand:
        return self.commands.handle(uow, actor, name, topic, payload, correlation)

    def reject_command(self, uow: UnitOfWork, topic: str, error: AttJmError, payload: bytes,
                       actor: str) -> Reply:
        return self.commands.reject(uow, topic, error, payload, actor)

    # Scheduling and cleanup ----------------------------------------------------------------

    def next_start(self, now: datetime) -> datetime | None:
        return self.scheduling.next_start(now)

    def dispatch(self, uow: UnitOfWork, *, chained: bool = False) -> Run | None:
        return self.scheduling.dispatch(uow, chained=chained)

    def preload_next(self) -> None:
        self.scheduling.preload_next()

    def finish(self, uow: UnitOfWork, entry: str, outcome: Outcome, at: datetime) -> bool:
        return self.scheduling.finish(uow, entry, outcome, at)

    def interrupt_running(self, uow: UnitOfWork) -> list[str]:
        return self.scheduling.interrupt_running(uow)

    def cleanup_due(self, now: datetime) -> list[str]:
        return self.scheduling.cleanup_due(now)

    def next_cleanup(self, now: datetime) -> datetime:
        return self.scheduling.next_cleanup(now)

    def cleanup(self, uow: UnitOfWork, table: str, actor: str) -> int:
        return self.scheduling.cleanup(uow, table, actor)
