"""The real `att-jm serve` process for end-to-end tests: start, wait for online, stop, kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol

import pytest

from att_jm.log.backend import is_postgres
from helpers.broker import REPO_ROOT, Broker
from helpers.mqtt import MqttTestError, TestClient

SCRIPT_SOURCES = (REPO_ROOT / "scripts", REPO_ROOT / "tests" / "scripts")


def reachable(directory: Path) -> None:
    """Let every user go through `directory`'s parents (o+x) and list it (o+rx): scripts run as
    an unprivileged user when the tests run as root, and temp dirs are 0700."""
    if os.geteuid() != 0:
        return
    directory.chmod(directory.stat().st_mode | 0o005)
    for parent in directory.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def populate_scripts_dir(target: Path, sources: Sequence[Path] = SCRIPT_SOURCES) -> Path:
    """Copy the files of `scripts/` and `tests/scripts/` into `target`, all executable (and
    reachable by the script user, see `reachable`)."""
    target.mkdir(parents=True, exist_ok=True)
    reachable(target)
    for source in sources:
        if not source.is_dir():
            continue
        for path in sorted(source.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            copy = target / path.name
            shutil.copy2(path, copy)
            copy.chmod(copy.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


class Service:
    """One `python -m att_jm serve` process bound to a broker, a store and a scripts dir.

    `start()` returns once the retained `P/job-manager/status` says `online` with this process's
    pid, so a restart never mistakes the previous run's status for its own.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        store: Path | str,
        scripts_dir: Path,
        log_path: Path,
        prefix: str = "att",
        client_id: str = "att-job-manager",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        mqtt_url: str | None = None,
        watch_url: str | None = None,
    ) -> None:
        self.broker = broker
        self.mqtt_url = mqtt_url or broker.url  # e.g. with user:password for an ACL broker
        #: How the test watches the retained status (a site's broker: a user who may read it).
        self.watch_url = watch_url or self.mqtt_url
        self.store = store
        self.scripts_dir = scripts_dir
        self.log_path = log_path
        self.prefix = prefix
        self.client_id = client_id
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.cwd = cwd or log_path.parent
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    # --- topics -------------------------------------------------------------------------------
    def topic(self, suffix: str) -> str:
        """`topic("job-manager/views/jobs")` -> `"att/job-manager/views/jobs"`."""
        return f"{self.prefix}/{suffix}"

    @property
    def status_topic(self) -> str:
        return self.topic("job-manager/status")

    def command_topic(self, command: str, actor: str = "tester") -> str:
        return self.topic(f"job-manager/commands/{actor}/{command}")

    def notification_topic(self, trigger: str) -> str:
        return self.topic(f"channel-manager/notifications/{trigger}")

    def view_topic(self, view: str) -> str:
        return self.topic(f"job-manager/views/{view}")

    # --- process ------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "att_jm", "serve",
            "--mqtt-url", self.mqtt_url,
            "--store", str(self.store),
            "--scripts", str(self.scripts_dir),
            "--topic-prefix", self.prefix,
            "--client-id", self.client_id,
            "--log-format", "json",
            *self.extra_args,
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATT_JM_")}
        env["ATT_JM_CONFIG"] = "none"  # no site settings file: exactly the flags given here
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        return env

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 20.0) -> Service:
        """Spawn the service; return when its own `online` status is on the broker."""
        if self.running:
            raise RuntimeError("service already running")
        if not is_postgres(str(self.store)):
            Path(self.store).parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self._close_log()
        log = self.log_path.open("ab")
        log.write(f"--- start #{self.starts}: {' '.join(self.argv())}\n".encode())
        log.flush()
        self._log = log
        with TestClient(self.watch_url) as watcher:
            status = watcher.subscribe(self.ready_topic)
            process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self._environment(),
            )
            self._process = process
            deadline = time.monotonic() + timeout
            while True:
                try:
                    status.wait_for(lambda m: self.is_ready(m.payload, process.pid), 0.1)
                    return self
                except MqttTestError:
                    pass
                if process.poll() is not None:
                    self._fail(f"att-jm exited with code {process.returncode} before online")
                if time.monotonic() >= deadline:
                    self.kill()
                    self._fail(f"att-jm was not online (pid {process.pid}) within {timeout} s")

    @property
    def ready_topic(self) -> str:
        """Where `start()` waits for the process to say it is ready: the retained status."""
        return self.status_topic

    def is_ready(self, payload: bytes, pid: int) -> bool:
        """Whether `payload` (on `ready_topic`) says that process `pid` is ready: online."""
        return _is_online_of(payload, pid)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, and require exit code 0 (a clean stop). Returns the exit code."""
        process = self._process
        if process is None:
            raise RuntimeError("service was never started")
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self._fail(f"att-jm did not stop within {timeout} s of SIGTERM")
        self._close_log()
        if process.returncode != 0:
            self._fail(f"att-jm exited with code {process.returncode} after SIGTERM")
        return process.returncode

    def kill(self) -> None:
        """SIGKILL, like a crash or power loss of the service host."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._close_log()

    def restart(self, timeout: float = 20.0) -> Service:
        self.stop()
        return self.start(timeout)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _fail(self, reason: str) -> NoReturn:
        self._close_log()
        pytest.fail(f"{reason}\n--- {self.log_path} ---\n{self.log_text()[-8000:]}")

    def __repr__(self) -> str:
        return f"Service(pid={self.pid}, prefix={self.prefix!r}, url={self.mqtt_url})"


def _is_online_of(payload: bytes, pid: int) -> bool:
    try:
        status: Any = json.loads(payload)
    except ValueError:
        return False
    return isinstance(status, dict) and status.get("state") == "online" and status.get("pid") == pid


class ServiceFactory(Protocol):
    """The `service_factory` fixture: a Service on the test's broker (started unless told)."""

    def __call__(
        self,
        *,
        broker: Broker | None = None,
        prefix: str = "att",
        client_id: str = "att-job-manager",
        store: Path | str | None = None,
        scripts_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        mqtt_url: str | None = None,
        start: bool = True,
    ) -> Service: ...
