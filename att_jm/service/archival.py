"""Automatic archival: `att-jm audit archive --before NOW - max_age_days` run by the writer.

The setting `archive` (`settings.set`, off by default) says how old the sealed rows must be
and how often to look; the directory comes from the service configuration only
(`archive_dir`, never from MQTT). When due, the writer starts ONE child process, at a lower
priority, and follows it from its timers without blocking (`step`): its exit is polled, its
outcome logged (`archive.done`, `archive.nothing` or `archive.failed`). A failure never
stops the service: the next period tries again. A stop of the service terminates the child;
the archival is crash-safe and the next run finishes what it left (`att_jm.audit.archiving`).

The child gets the store through the environment (`ATT_JM_STORE`, never on its command line:
a PostgreSQL URL may hold a password), with the service's views and `compact_states`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

import orjson
import structlog

from att_jm.domain import limits as lim
from att_jm.domain.cleanup import ArchivePolicy

log = structlog.get_logger("att_jm.service")

#: The exit code of `audit archive` when there is nothing to archive (a normal outcome).
EXIT_NOTHING: Final = 1
#: The child's niceness: the writer goes first on busy cores.
NICE: Final = 10
#: How much of the child's stderr a failure logs (its last bytes).
STDERR_TAIL_BYTES: Final = 2000
#: How long a stop waits for the terminated child before it kills it.
STOP_SECONDS: Final = 5.0
#: How often a running child's exit is polled.
POLL_SECONDS: Final = 0.5
#: The lock file in the archive directory: held (flock) by the running child alone, so a
#: child left by a service that was killed keeps the next one from starting a second.
LOCK_NAME: Final = ".att-jm-archive.lock"


def _lower_priority(pid: int) -> None:
    """The child at niceness NICE (set from here: a preexec_fn is unsafe with threads)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, NICE)


def _tail(handle: IO[bytes], limit: int = STDERR_TAIL_BYTES) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - limit))
    return handle.read().decode("utf-8", "replace").strip()


class AutoArchive:
    """The archival child of the writer: at most one at a time."""

    def __init__(self, *, policy: Callable[[], ArchivePolicy], directory: str | None,
                 env: dict[str, str], clock: Callable[[], datetime],
                 counted: Callable[[str], None] = lambda outcome: None) -> None:
        self._policy = policy
        self._counted = counted
        self.directory = directory
        self._env = env
        self._clock = clock
        self._process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._err: IO[bytes] | None = None
        # The last start: the first run is one period after the service's start (a child
        # left by a killed predecessor has that long to finish; the lock covers the rest).
        self._last: datetime | None = clock()
        self._refused = False

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        return None if self._process is None else self._process.pid

    def due(self, now: datetime) -> datetime | None:
        """When the next run is due (None: off)."""
        policy = self._policy()
        if policy.max_age_days is None:
            return None
        if self._last is None:
            return now
        return lim.add_seconds(min(self._last, now), policy.every_seconds)

    def wait_seconds(self) -> float | None:
        """How long the loop may sleep before `step` has something to do."""
        if self._process is not None:
            return POLL_SECONDS
        now = self._clock()
        due = self.due(now)
        return None if due is None else max(0.0, (due - now).total_seconds())

    def step(self) -> None:
        """From the writer's timers: the running child's exit polled, or a due run started."""
        if self._process is not None:
            if self._process.poll() is not None:
                self._finished()
            return
        now = self._clock()
        due = self.due(now)
        if due is None or due > now:
            return
        self._last = now
        if self.directory is None:
            if not self._refused:
                log.warning("archive.refused", reason="a PostgreSQL store needs the setting "
                            "archive_dir (ATT_JM_ARCHIVE_DIR) for automatic archival")
                self._refused = True
            return
        self._start(now, self._policy())

    def _start(self, now: datetime, policy: ArchivePolicy) -> None:
        if policy.max_age_days is None:
            return
        before = now - timedelta(days=policy.max_age_days)
        lock = -1
        try:
            Path(self.directory or ".").mkdir(parents=True, exist_ok=True)
            lock = os.open(Path(self.directory or ".") / LOCK_NAME,
                           os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("archive.busy", directory=self.directory,
                            reason="another archival holds the lock; the next period retries")
                return
            self._out = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in _finished
            self._err = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in _finished
            self._process = subprocess.Popen(
                [sys.executable, "-m", "att_jm", "audit", "archive", "--json", "--no-progress",
                 "--before", before.astimezone(UTC).isoformat(),
                 "--output", os.path.join(self.directory or ".", "")],
                stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                env=self._env, start_new_session=True, pass_fds=(lock,),
            )
            _lower_priority(self._process.pid)
        except OSError as error:
            self._close_files()
            self._process = None
            self._counted("failed")
            log.warning("archive.failed", error=str(error), directory=self.directory)
            return
        finally:
            if lock >= 0:
                os.close(lock)  # the child's copy keeps the lock until it exits
        log.info("archive.started", before=before.isoformat(), directory=self.directory,
                 pid=self._process.pid)

    def _finished(self) -> None:
        process, out, err = self._process, self._out, self._err
        if process is None or out is None or err is None:
            return
        code = process.returncode
        self._process = None
        try:
            out.seek(0)
            text = out.read(1 << 20)
            result: Any = None
            with contextlib.suppress(ValueError):
                result = orjson.loads(text)
            if code == 0 and isinstance(result, dict):
                self._counted("done")
                log.info("archive.done", output=result.get("archive"),
                         **{k: result.get(k) for k in ("position", "rows", "seals", "size",
                                                       "deleted", "finished_interrupted",
                                                       "set_aside")})
            elif code == EXIT_NOTHING and isinstance(result, dict) and isinstance(
                    result.get("error"), dict) and result["error"].get("code") == \
                    "nothing_to_archive":
                self._counted("nothing")
                log.info("archive.nothing", reason=result["error"].get("message"))
            else:
                self._counted("failed")
                log.warning("archive.failed", exit_code=code, directory=self.directory,
                            stderr=_tail(err), stdout=text[-STDERR_TAIL_BYTES:].decode(
                                "utf-8", "replace"))
        finally:
            self._close_files()

    def _close_files(self) -> None:
        for handle in (self._out, self._err):
            if handle is not None:
                handle.close()
        self._out = self._err = None

    def stop(self) -> None:
        """At a stop: the running child terminated (killed after STOP_SECONDS)."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
            process.send_signal(signal.SIGCONT)  # a stopped (paused) child ends now too
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
        log.info("archive.stopped", directory=self.directory, exit_code=process.returncode,
                 note="crash-safe: the next run finishes it")
        self._process = None
        self._close_files()


def child_environment(store: str, views_path: str, compact: bool) -> dict[str, str]:
    """The child's environment: the service's, with its store, views and compact_states."""
    env = dict(os.environ)
    env["ATT_JM_STORE"] = store
    env["ATT_JM_VIEWS_DB"] = views_path
    env["ATT_JM_COMPACT_STATES"] = "true" if compact else "false"
    return env
