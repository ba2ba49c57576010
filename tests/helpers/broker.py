"""A real mosquitto on a free loopback port, configured like the shipped `mosquitto.conf`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO_ROOT / "mosquitto.conf"
SHIPPED_ACL = REPO_ROOT / "mosquitto.acl"
MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")

# Options of the shipped file that name a place (port, directory, log, users) rather than a
# behaviour. The test broker replaces them; every other line (persistence, autosave, queues,
# in-flight window, expiry, TCP_NODELAY) is copied unchanged.
_SITE_OPTIONS = frozenset(
    {
        "listener",
        "port",
        "bind_address",
        "bind_interface",
        "socket_domain",
        "protocol",
        "http_dir",
        "mount_point",
        "cafile",
        "capath",
        "certfile",
        "keyfile",
        "require_certificate",
        "tls_version",
        "ciphers",
        "use_identity_as_username",
        "use_subject_as_username",
        "persistence_location",
        "persistence_file",
        "log_dest",
        "pid_file",
        "user",
        "allow_anonymous",
        "password_file",
        "acl_file",
        "include_dir",
        "per_listener_settings",
    }
)


class BrokerError(RuntimeError):
    """The test broker did not start or stop as asked."""


def find_mosquitto() -> str | None:
    """The mosquitto binary, or None when it is not installed."""
    for candidate in MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto")


def require_mosquitto() -> str:
    """The mosquitto binary; a missing one fails under CI=true and skips elsewhere."""
    binary = find_mosquitto()
    if binary is None:
        message = "mosquitto is not installed (./test.sh installs it: apt-get install mosquitto)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shipped_settings(conf: Path = SHIPPED_CONF) -> list[str]:
    """The behaviour lines of the shipped config, without comments and site options."""
    lines = []
    for raw in conf.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split(maxsplit=1)[0] in _SITE_OPTIONS:
            continue
        lines.append(line)
    return lines


def make_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Write a mosquitto password file with `mosquitto_passwd -b` for `users` (name -> password)."""
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        message = "mosquitto_passwd is not installed (it ships with the mosquitto package)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    path.write_text("", encoding="utf-8")
    for name, password in users.items():
        subprocess.run([passwd, "-b", str(path), name, password], check=True, capture_output=True)
    return path


class Broker:
    """One mosquitto process; `stop()`/`kill()` then `start()` keep the port and persistence.

    The generated config is the shipped `mosquitto.conf` with its place options replaced:
    a free loopback port, persistence under `directory/data/`, a log file, and `user root`
    when the tests run as root (mosquitto would otherwise drop to user `mosquitto`, fail to
    write into the root-owned temp dir and run on with persistence quietly off).
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        extra_config: Iterable[str] = (),
        binary: str | None = None,
        config: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        """`config`: a config file made elsewhere (a site's, by `att-jm setup`), used as it
        is: then `port` must be its listener's and `log_path` its log file."""
        self.binary = binary or require_mosquitto()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.persistence_dir = directory / "data"
        self.persistence_dir.mkdir(exist_ok=True)
        self.log_path = log_path or directory / "mosquitto.log"
        self.config_path = config or directory / "mosquitto.conf"
        self._given_config = config is not None
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self._fixed_port = port is not None
        self._started_once = False
        self._process: subprocess.Popen[bytes] | None = None
        self._options = (allow_anonymous, password_file, acl_file, list(extra_config))
        self._write_config()

    def _write_config(self) -> None:
        if self._given_config:
            return
        allow_anonymous, password_file, acl_file, extra = self._options
        lines = [f"# Generated by tests/helpers/broker.py from {SHIPPED_CONF}", *shipped_settings()]
        lines += [
            f"listener {self.port} {self.host}",
            "socket_domain ipv4",
            f"persistence_location {self.persistence_dir}/",
            f"log_dest file {self.log_path}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        if password_file is not None:
            lines.append(f"password_file {password_file}")
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
        lines += extra
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 10.0) -> Broker:
        """Start (or restart) on the same port and persistence directory; wait until it accepts."""
        if self.running:
            raise BrokerError("broker already running")
        deadline = time.monotonic() + timeout
        while True:
            process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._process = process
            if self._wait_accepting(process, deadline):
                self._started_once = True
                return self
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL)
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.url} within {timeout} s; "
                    f"log {self.log_path}:\n{self.log_text()[-4000:]}"
                )
            # It exited: the port is taken. Before the first start another free port will do
            # (a race with another test run); a restart must keep its port, so it retries.
            if not self._started_once and not self._fixed_port and not self._given_config:
                self.port = free_port()
                self._write_config()
            time.sleep(0.05)

    def _wait_accepting(self, process: subprocess.Popen[bytes], deadline: float) -> bool:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.01)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its database) and wait."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: what survives is only what autosave wrote."""
        self._terminate(signal.SIGKILL)

    def _terminate(self, sig: signal.Signals, timeout: float = 10.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise BrokerError(f"mosquitto ignored {sig.name} for {timeout} s") from None

    def __enter__(self) -> Broker:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Broker({self.url}, running={self.running}, dir={self.directory})"


class BrokerFactory(Protocol):
    """The `broker_factory` fixture: more brokers, or brokers with auth and the ACL."""

    def __call__(
        self,
        *,
        allow_anonymous: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        extra_config: Iterable[str] = (),
        start: bool = True,
    ) -> Broker: ...
