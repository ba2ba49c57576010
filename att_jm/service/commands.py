"""`att-jm serve` and `att-jm rebuild`."""

from __future__ import annotations

import signal
import time
from types import FrameType

import structlog

from att_jm.config import Settings
from att_jm.logs import configure
from att_jm.runner import become_subreaper, check_script_isolation
from att_jm.service.bootstrap import bootstrap
from att_jm.service.lock import ViewsLock
from att_jm.store import open_store
from projections.rebuild import catch_up
from projections.views import Views

log = structlog.get_logger("att_jm")


def serve(settings: Settings) -> int:
    """Run the Job Manager until SIGTERM or SIGINT; the exit code."""
    configure(settings.log_format)
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


def rebuild(settings: Settings) -> int:
    """Rebuild every view from the first event of the log; refuses while the service runs."""
    configure(settings.log_format)
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
