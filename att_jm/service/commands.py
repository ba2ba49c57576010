"""`att-jm serve` and `att-jm rebuild`."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from att_jm.config import Settings
from att_jm.log.backend import is_postgres
from att_jm.logs import configure
from att_jm.runner import become_subreaper, check_script_isolation
from att_jm.service.bootstrap import bootstrap
from att_jm.service.lock import ViewsLock
from att_jm.store import open_store
from projections.rebuild import catch_up
from projections.views import Views

if TYPE_CHECKING:  # psycopg: PostgreSQL only
    from att_jm.service.standby import RebuildLease

log = structlog.get_logger("att_jm")


def serve(settings: Settings) -> int:
    """Run the Job Manager until SIGTERM or SIGINT; the exit code.

    On an SQLite store it is the only writer (a second one is refused by the views lock);
    on a PostgreSQL store it is one of several instances, active while it holds the lease
    (att_jm/service/standby.py)."""
    configure(settings.log_format)
    if is_postgres(settings.store):
        return _serve_instance(settings)
    lock = ViewsLock(settings.views_path())
    if not lock.acquire():
        log.error("service.already_running", views=settings.views_path())
        return 1
    problems = check_script_isolation(settings.script_user, settings.scripts)
    if problems:
        log.error("service.scripts_unsafe", script_user=settings.script_user, problems=problems)
        lock.release()
        return 1
    become_subreaper()
    writer = bootstrap(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No logging here: the handler runs on the main thread, possibly in the middle of a
        # log write holding the logger's lock, and would deadlock. The writer logs the stop.
        writer.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return writer.run()
    finally:
        lock.release()


def _serve_instance(settings: Settings) -> int:
    problems = check_script_isolation(settings.script_user, settings.scripts)
    if problems:
        log.error("service.scripts_unsafe", script_user=settings.script_user, problems=problems)
        return 1
    become_subreaper()
    from att_jm.service.standby import serve_instance  # noqa: PLC0415 -- psycopg: PostgreSQL only

    return serve_instance(settings)


def rebuild(settings: Settings) -> int:
    """Rebuild every view from the first event of the log; refuses while the service runs
    (SQLite: the views lock; PostgreSQL: the writer's lease, held by the rebuild meanwhile,
    so that no standby becomes active under it)."""
    configure(settings.log_format)
    lock: ViewsLock | RebuildLease
    if is_postgres(settings.store):
        from att_jm.service.standby import RebuildLease  # noqa: PLC0415 -- psycopg

        lock = RebuildLease(settings)
    else:
        lock = ViewsLock(settings.views_path())
    if not lock.acquire():
        log.error("rebuild.refused", reason="the service is running; stop it first")
        return 1
    try:
        started = time.monotonic()
        app = open_store(settings.store)
        views = Views(settings.views_path())
        views.reset()
        applied = catch_up(app, views)
        seconds = time.monotonic() - started
        log.info("rebuild.done", events_applied=applied, position=views.position,
                 seconds=round(seconds, 3))
        views.close()
        return 0
    finally:
        lock.release()
