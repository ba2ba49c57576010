"""`python -m att_jm.metrics`: `/metrics` (Prometheus text format) and `/healthz` on a
loopback port, for the store of the site's settings (or `--store`).

A process of its own, apart from the writer: it reads the writer's stats block, the store
(read-only) and the relay's position file (`att_jm.metrics.watch`), twice a second from a
thread of its own (so a stall is timed without scrapes) and at each request. It refuses to
listen on an address that is not loopback unless `--allow-non-loopback` says so, and answers
only requests whose Host is one of its own names (400 otherwise: a DNS-rebinding page cannot
read it through another name). GET and HEAD only; `/` lists the two paths.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Final

import orjson
import structlog

from att_jm.config import ConfigError, load_settings
from att_jm.log.backend import is_postgres, redact
from att_jm.logs import configure
from att_jm.metrics.exposition import render
from att_jm.metrics.health import DEFAULT_STALE_SECONDS, check
from att_jm.metrics.watch import Watch

log = structlog.get_logger("att_jm.metrics")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9108
#: Seconds between two looks of the exporter's own thread.
LOOK_EVERY: Final = 0.5
_LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")
_INDEX: Final = b"att-jm metrics exporter: /metrics (Prometheus text format), /healthz\n"


class ExporterError(Exception):
    """The exporter cannot run as asked (the message says why)."""


@dataclass(frozen=True)
class ExporterSettings:
    store: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    stale_seconds: float = DEFAULT_STALE_SECONDS
    allow_non_loopback: bool = False
    allowed_hosts: tuple[str, ...] = ()
    log_format: str | None = None


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP address, or `localhost`) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Exporter:
    """The watch, the lock around it, and the answers."""

    def __init__(self, settings: ExporterSettings, port: int) -> None:
        self.settings = settings
        self.watch = Watch(settings.store)
        self.lock = threading.Lock()
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        names = {host, *_LOOPBACK_NAMES, *settings.allowed_hosts}
        self.any_host = "*" in names
        self.hosts = frozenset(f"{name}:{port}".lower() for name in names)

    def look(self) -> None:
        with self.lock:
            self.watch.look()

    def metrics(self, accept: str) -> tuple[int, bytes, str]:
        with self.lock:
            obs = self.watch.look()
        body, content_type = render(obs, check(obs, self.settings.stale_seconds),
                                    self.settings.stale_seconds, accept)
        return 200, body, content_type

    def healthz(self) -> tuple[int, bytes, str]:
        with self.lock:
            obs = self.watch.look()
        health = check(obs, self.settings.stale_seconds)
        return (200 if health.ok else 503), orjson.dumps(health.body) + b"\n", \
            "application/json"

    def host_allowed(self, host: str) -> bool:
        return self.any_host or host.strip().lower() in self.hosts


def make_handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "att-jm-metrics"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer()

        def _answer(self) -> None:
            if not exporter.host_allowed(self.headers.get("Host") or ""):
                self._send(400, b"unknown Host\n", "text/plain; charset=utf-8")
                return
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    self._send(*exporter.metrics(self.headers.get("Accept") or ""))
                elif path == "/healthz":
                    self._send(*exporter.healthz())
                elif path == "/":
                    self._send(200, _INDEX, "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")
            except Exception as error:  # answered 500, logged; the server goes on
                log.exception("metrics.request_failed", path=path, error=repr(error))
                self._send(500, b"internal error\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_allowed(self) -> None:
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = _not_allowed

        def log_message(self, format: str, *args: object) -> None:
            """Requests are not logged one by one (errors are, below)."""

        def log_error(self, format: str, *args: object) -> None:
            log.warning("metrics.request_error", message=(format % args)[:300])

    return Handler


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def build_server(settings: ExporterSettings) -> tuple[ThreadingHTTPServer, Exporter]:
    """The bound server (port 0: a free one) and its exporter; ExporterError for an address
    that is not loopback without `allow_non_loopback`."""
    if not settings.allow_non_loopback and not is_loopback(settings.host):
        raise ExporterError(
            f"{settings.host!r} is not a loopback address: the metrics are served on loopback "
            "only, unless --allow-non-loopback (ATT_JM_METRICS_ALLOW_NON_LOOPBACK=1) says so")
    server_class = _V6Server if ":" in settings.host else ThreadingHTTPServer
    server = server_class((settings.host.strip("[]"), settings.port), BaseHTTPRequestHandler)
    server.daemon_threads = True
    exporter = Exporter(settings, int(server.server_address[1]))
    server.RequestHandlerClass = make_handler(exporter)
    return server, exporter


def serve(settings: ExporterSettings) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    configure(settings.log_format)
    try:
        server, exporter = build_server(settings)
    except (ExporterError, OSError) as error:
        log.error("metrics.not_started", error=str(error))
        return 1
    stop = threading.Event()

    def looker() -> None:
        while not stop.wait(LOOK_EVERY):
            try:
                exporter.look()
            except Exception as error:  # logged; the next look tries again
                log.exception("metrics.look_failed", error=repr(error))

    stopper = threading.Thread(target=server.shutdown, daemon=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not stopper.is_alive():
            stopper.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exporter.look()  # the counters start at the log's end now
    thread = threading.Thread(target=looker, name="metrics-look", daemon=True)
    thread.start()
    host, port = settings.host, int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics.listening", url=f"http://{shown}:{port}/metrics",
             store=redact(settings.store), stale_seconds=settings.stale_seconds)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        server.server_close()
        thread.join(5)
        exporter.watch.close()
    log.info("metrics.stopped")
    return 0


def _env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str],
               prog: str = "python -m att_jm.metrics") -> ExporterSettings:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the ATT Job Manager's metrics (/metrics, Prometheus text format) "
                    "and health (/healthz) on a loopback port (docs/metrics.md).")
    parser.add_argument("--store", help="the store file (default: the site's settings, "
                        "ATT_JM_STORE, else ./var/att-jm.db)")
    parser.add_argument("--config", help="a settings file (default: as every att-jm verb "
                        "finds it: ATT_JM_CONFIG, var/att-jm.toml)")
    parser.add_argument("--host", default=env.get("ATT_JM_METRICS_HOST") or DEFAULT_HOST,
                        help=f"address to listen on (ATT_JM_METRICS_HOST; default "
                             f"{DEFAULT_HOST}); loopback only unless --allow-non-loopback")
    parser.add_argument("--port", type=int,
                        default=int(env.get("ATT_JM_METRICS_PORT") or DEFAULT_PORT),
                        help=f"port (ATT_JM_METRICS_PORT; default {DEFAULT_PORT}; 0: a free one)")
    parser.add_argument("--stale-seconds", type=float,
                        default=float(env.get("ATT_JM_METRICS_STALE_SECONDS")
                                      or DEFAULT_STALE_SECONDS),
                        help="/healthz fails when the writer has not turned its loop, or the "
                             "relay's position has not moved while positions wait, for this "
                             "long (ATT_JM_METRICS_STALE_SECONDS; default "
                             f"{DEFAULT_STALE_SECONDS:g})")
    parser.add_argument("--allow-non-loopback", action="store_true",
                        default=_env_flag(env.get("ATT_JM_METRICS_ALLOW_NON_LOOPBACK")),
                        help="allow --host to be an address that is not loopback "
                             "(ATT_JM_METRICS_ALLOW_NON_LOOPBACK=1)")
    parser.add_argument("--allow-host", action="append", default=[],
                        help="another Host name requests may use (repeatable; '*': any)")
    parser.add_argument("--log-format", choices=("json", "console"),
                        default=env.get("ATT_JM_LOG_FORMAT") or None)
    ns = parser.parse_args(argv)
    if not 0 <= ns.port <= 65535:
        parser.error(f"--port {ns.port} is not a port")
    if not 1.0 <= ns.stale_seconds <= 3600.0:
        parser.error(f"--stale-seconds {ns.stale_seconds:g}: 1 to 3600 (the writer's loop "
                     "turns at least once a second)")
    try:
        store = load_settings({"store": ns.store}, env, ns.config).store
    except ConfigError as error:
        parser.error(str(error))
    if is_postgres(store):
        parser.error(f"{redact(store)}: the exporter reads an SQLite store and the writer's "
                     "stats block beside it; on PostgreSQL watch each instance's retained "
                     "status (docs/deployment.md, Monitoring)")
    return ExporterSettings(
        store=store, host=ns.host, port=ns.port, stale_seconds=ns.stale_seconds,
        allow_non_loopback=ns.allow_non_loopback, allowed_hosts=tuple(ns.allow_host),
        log_format=ns.log_format,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m att_jm.metrics") -> int:
    """Parse `argv` (default: the process's), serve; the exit code (`att-jm metrics` would
    call `main(rest, prog="att-jm metrics")`)."""
    return serve(parse_args(argv, os.environ, prog))
