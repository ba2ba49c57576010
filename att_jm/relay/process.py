"""The relay process: its settings, signals, lock and loop (`python -m att_jm.relay`)."""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Protocol

import structlog

from att_jm.config import ConfigError, load_settings
from att_jm.log.backend import is_postgres
from att_jm.log.rows import AuditError
from att_jm.logs import configure
from att_jm.relay.loop import Relay
from att_jm.relay.priority import Priority
from att_jm.relay.window import position_path

log = structlog.get_logger("att_jm.relay")


# The process -------------------------------------------------------------------------------


class _Held(Protocol):
    def close(self) -> None: ...


def _lock(store: str, relay_stopping: Callable[[], bool]) -> _Held | None:
    """Take the store's relay lock, waiting for a previous relay to finish; None if stopped
    meanwhile. An SQLite store's: a file lock next to its position file; a PostgreSQL
    store's: an advisory lock of the database, held by a session of its own (a relay on
    another machine counts too)."""
    if is_postgres(store):
        return _session_lock(store, relay_stopping)
    path = position_path(store)
    handle = open(path + ".lock", "ab")  # noqa: SIM115 -- held for the process's life
    waited = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if not waited:
                log.info("relay.waiting_for_previous", lock=path + ".lock")
                waited = True
            if relay_stopping():
                handle.close()
                return None
            time.sleep(0.05)


def _session_lock(store: str, relay_stopping: Callable[[], bool]) -> _Held | None:
    from att_jm.store.postgres import SessionLock  # noqa: PLC0415 -- psycopg on demand

    lock = SessionLock(store, "relay")
    waited = False
    while not lock.try_acquire():
        if not waited:
            log.info("relay.waiting_for_previous", lock="advisory lock of the store")
            waited = True
        if relay_stopping():
            lock.release()
            return None
        time.sleep(0.05)
    return lock


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m att_jm.relay",
        description="Publish the stored events of ATT_JM_STORE on P/job-manager/events/{type}.",
    )
    parser.add_argument("--after", type=int, default=0, metavar="N",
                        help="without a position file, start after log position N (default 0)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings({}, os.environ if environ is None else environ, None)
    except ConfigError as error:
        print(f"att_jm.relay: {error}", file=sys.stderr)  # noqa: T201 -- before logging is set up
        return 2
    configure(settings.log_format)
    structlog.contextvars.bind_contextvars(process="relay")
    priority = Priority(settings.relay_nice)
    stop_r, stop_w = os.pipe()
    for fd in (stop_r, stop_w):
        os.set_blocking(fd, False)
    stop_requested: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signal.Signals(signum).name)  # no logging in a handler
        if relay is not None:
            relay.stop(stop_requested[0])

    relay: Relay | None = None
    signal.set_wakeup_fd(stop_w)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    # The answers go to stdout, where nothing else writes (logs go to stderr): when it is the
    # writer's pipe; a terminal or a file (run by hand) is left alone, nobody asks there.
    out = sys.stdout.fileno()
    answers = out if stat.S_ISFIFO(os.fstat(out).st_mode) else None
    if answers is not None:
        os.set_blocking(answers, False)
    try:
        lock = _lock(settings.store, lambda: bool(stop_requested))
    except Exception as error:  # noqa: BLE001 -- the database is not reachable: restarted later
        log.error("relay.no_store", store=settings.store_shown, error=repr(error))
        return 2
    if lock is None:
        return 0
    try:
        relay = Relay(settings, max(0, args.after), wake_fd=stdin, stop_fd=stop_r,
                      answer_fd=answers, priority=priority)
        if stop_requested:
            relay.stop(stop_requested[0])
        return relay.run()
    except AuditError as error:  # no store (yet), or not one
        log.error("relay.no_store", store=settings.store_shown, error=str(error))
        return 2
    except Exception:  # the writer restarts it; it resumes from its position file
        log.exception("relay.failed", store=settings.store_shown)
        return 1
    finally:
        lock.close()
