"""The event store: the eventsourcing Application, its persistence settings, and log reading."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Transcoder

from att_jm.domain.scheduler import Scheduler
from att_jm.transcoder import OrjsonTranscoder


class JobManagerApp(Application[UUID]):
    """The event-sourced application: every state change of the Job Manager is saved here."""

    name = "JobManager"
    snapshotting_intervals = {Scheduler: 500}  # noqa: RUF012 -- the library's declared ClassVar

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()


def sqlite_env(path: str, *, readonly: bool = False) -> dict[str, str]:
    """Persistence settings for an SQLite store file (created with its folder when missing)."""
    if readonly:
        dbname = f"file:{Path(path).resolve()}?mode=ro"
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        dbname = path
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": dbname,
        "SQLITE_LOCK_TIMEOUT": "10",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "CREATE_TABLE": "n" if readonly else "y",
    }


def open_store(path: str, *, readonly: bool = False) -> JobManagerApp:
    """The application over the SQLite store at `path`."""
    return JobManagerApp(env=sqlite_env(path, readonly=readonly))


def read_log(
    app: JobManagerApp, after: int, topics: Sequence[str] = (), page: int = 1000
) -> Iterator[tuple[int, DomainEventProtocol[Any]]]:
    """(position, event) of every stored event after `after`, in log order, page by page."""
    while True:
        notifications = app.recorder.select_notifications(
            start=after, limit=page, topics=topics, inclusive_of_start=False
        )
        for notification in notifications:
            yield notification.id, app.mapper.to_domain_event(notification)
        if len(notifications) < page:
            return
        after = notifications[-1].id


def log_position(app: JobManagerApp) -> int:
    """The position of the last stored event (0 for an empty log)."""
    return app.recorder.max_notification_id() or 0
