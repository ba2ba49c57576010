"""The writer's handle on the relay process: start, wake up, ask, watch, stop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Final

import structlog

from att_jm.config import ENV_PREFIX, Settings, env_name
from att_jm.log.backend import is_postgres
from att_jm.relay.constants import RELAY_SETTINGS
from att_jm.relay.window import position_path
from att_jm.timeline import TIMELINE_ENV

log = structlog.get_logger("att_jm.relay")


# The writer's handle ------------------------------------------------------------------------

RESTART_DELAYS: Final = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_SECONDS: Final = 30.0  # a relay that lived this long restarts after the first delay
CHECK_EVERY: Final = 0.1  # `check()` looks at the child at most this often


def relay_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without any ATT_JM_* variable, plus the relay's settings from `settings`."""
    env = {key: value for key, value in environ.items() if not key.startswith(ENV_PREFIX)
           or key == TIMELINE_ENV}  # the marks of bench/timeline.py: both processes or none
    env["ATT_JM_CONFIG"] = "none"  # exactly the writer's settings, no file of its own
    for name in RELAY_SETTINGS:
        value = settings.views_path() if name == "views_db" else getattr(settings, name)
        if value is not None:
            path = name in ("store", "views_db") and not is_postgres(str(value))
            env[env_name(name)] = str(Path(value).resolve()) if path else str(value)
    return env


class EventsRelay:
    """The writer's handle on the relay process: start, wake up, watch, stop.

    Every method is cheap and never raises into the writer for the child's sake; call them
    from the writer's thread.
    """

    def __init__(
        self, settings: Settings, *, python: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        #: The relay's position file (None: a PostgreSQL store keeps it in a table).
        self.position_file = (None if is_postgres(settings.store)
                              else position_path(str(Path(settings.store).resolve())))
        self._python = python
        self._environ = os.environ if environ is None else environ
        self._monotonic = monotonic
        self._process: subprocess.Popen[bytes] | None = None
        self._stdin: int | None = None
        self._after: int | None = None
        self._started_at = 0.0
        self._failures = 0
        self._restart_at: float | None = None
        self._next_check = 0.0
        self._last_hint = -1
        self._answers: int | None = None  # the relay's stdout: the positions it confirmed
        self._answered: set[int] = set()  # answers since the last `ask`
        self._partial = b""

    @property
    def pid(self) -> int | None:
        """The running child's process id (None between a death and its restart)."""
        return None if self._process is None else self._process.pid

    def start(self, after: int) -> None:
        """Start the relay; without a position file it begins after log position `after`."""
        if self._after is not None:
            raise RuntimeError("the events relay is started already")
        self._after = after
        self._spawn()

    def notify(self, position: int) -> None:
        """Tell the relay that `position` is committed (one line; dropped if the pipe is full)."""
        fd = self._stdin
        if fd is None or position == self._last_hint:
            return
        try:
            os.write(fd, b"%d\n" % position)
        except OSError:  # full (the relay is busy and will read to the end) or gone: check()
            return
        self._last_hint = position

    def ask(self, position: int) -> bool:
        """Tell the relay that `position` is committed and ask to be told once its PUBACK has
        arrived (`confirmed`); False when there is no relay to ask."""
        fd = self._stdin
        if fd is None or self._answers is None:
            return False
        try:
            os.write(fd, b"w%d\n" % position)
        except OSError:
            return False
        self._last_hint = position
        self._answered.clear()  # late answers to earlier questions
        return True

    def answers_fd(self) -> int | None:
        """Readable when the relay answered an `ask`."""
        return self._answers

    def confirmed(self, position: int) -> bool:
        """Whether the relay answered the `ask` of `position`: it is confirmed, or the relay
        cannot say so soon (it is not connected), or the relay is gone."""
        fd = self._answers
        if fd is None:
            return True
        data = b""
        try:
            while chunk := os.read(fd, 4096):
                data += chunk
            self._close_answers()  # EOF: the relay is gone
            return True
        except BlockingIOError:
            pass
        except OSError:
            self._close_answers()
            return True
        if data:
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()[-64:]
            for line in lines:
                with contextlib.suppress(ValueError):
                    self._answered.add(int(line))
        return position in self._answered

    def notify_views(self) -> None:
        """Tell the relay that the views took a batch (dropped if the pipe is full)."""
        if self._stdin is not None:
            with contextlib.suppress(OSError):
                os.write(self._stdin, b"v\n")

    def check(self) -> None:
        """Restart the relay, with back-off, if it died (it resumes from its position file)."""
        now = self._monotonic()
        if now < self._next_check or self._after is None:
            return
        self._next_check = now + CHECK_EVERY
        process = self._process
        if process is None:
            if self._restart_at is not None and now >= self._restart_at:
                self._spawn()
            return
        code = process.poll()
        if code is None:
            return
        if now - self._started_at >= STABLE_SECONDS:
            self._failures = 0
        delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
        self._failures += 1
        log.error("relay.died", pid=process.pid, returncode=code, restart_in=delay)
        self._close_stdin()
        self._process = None
        self._restart_at = now + delay

    def stop(self, timeout: float = 10.0) -> int | None:
        """Close the relay's stdin (it drains and exits), wait; SIGKILL after `timeout` s.
        Its exit code (None if it was not running)."""
        self._after = None
        self._restart_at = None
        process = self._process
        self._close_stdin()
        if process is None:
            return None
        self._process = None
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("relay.killed", pid=process.pid, after_seconds=timeout)
            process.kill()
            return process.wait()

    def _spawn(self) -> None:
        self._restart_at = None
        self._last_hint = -1
        try:
            process = subprocess.Popen(
                [self._python, "-m", "att_jm.relay", "--after", str(self._after)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=relay_environ(self.settings, self._environ),
                # Its own process group: a Ctrl-C or a group kill aimed at the writer does not
                # stop it before the writer's last commits; its stdin's EOF does.
                process_group=0,
            )
        except OSError as error:
            delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
            self._failures += 1
            log.error("relay.start_failed", error=repr(error), restart_in=delay)
            self._restart_at = self._monotonic() + delay
            return
        assert process.stdin is not None and process.stdout is not None  # noqa: S101 -- PIPEs
        self._stdin = process.stdin.fileno()
        os.set_blocking(self._stdin, False)
        self._answers = process.stdout.fileno()
        os.set_blocking(self._answers, False)
        self._answered.clear()
        self._partial = b""
        self._process = process
        self._started_at = self._monotonic()
        log.info("relay.spawned", pid=process.pid, after=self._after)

    def _close_stdin(self) -> None:
        if self._process is not None:
            _close(self._process.stdin)
        self._stdin = None
        self._close_answers()

    def _close_answers(self) -> None:
        if self._process is not None:
            _close(self._process.stdout)
        self._answers = None


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with contextlib.suppress(OSError):
            pipe.close()
