"""The console's static server: the built files of `console/dist` and `config.json`, on a
loopback port, read-only.

What it serves is fixed at start: every regular file under the build directory (held in
memory, each with its Content-Type), `/` as `index.html`, and `/config.json` (the broker's
WebSocket URL and the topic prefix). Anything else is 404 (no directory listing, no path
outside the build), any method but GET and HEAD is 405, and a request whose Host is not this
server's own name is refused (400: a DNS-rebinding page cannot read it through another name).
Every answer carries a Content-Security-Policy that lets the page run only its own scripts
and styles and connect only to this server and the broker's WebSocket listener, plus
`X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and no referrer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Final
from urllib.parse import urlsplit

import orjson
import structlog

from att_jm.logs import configure

log = structlog.get_logger("att_jm.console")

DIST: Final = Path(__file__).resolve().parents[2] / "console" / "dist"
DEFAULT_PORT: Final = 8090
DEFAULT_WS_URL: Final = "ws://127.0.0.1:9001"
MAX_FILE_BYTES: Final = 8 * 1024 * 1024
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_WS_URL: Final = re.compile(r"wss?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/\-]*)?")
_PREFIX: Final = re.compile(r"[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*")
_HOST: Final = re.compile(r"[A-Za-z0-9.\-]+")
_LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost")


class ConsoleError(Exception):
    """The console cannot be served as asked (the message says why)."""


@dataclass(frozen=True)
class Asset:
    """One file served: its bytes, Content-Type and ETag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


@dataclass(frozen=True)
class ConsoleSettings:
    """Where the console is served and what its page is told."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    ws_url: str = DEFAULT_WS_URL
    topic_prefix: str = "att"
    root: Path = DIST
    allowed_hosts: tuple[str, ...] = field(default=())
    log_format: str | None = None


def ws_origin(url: str) -> str:
    """`ws://host:port/path` -> `ws://host:port` (ConsoleError for anything else: the value
    goes into a header and into the page's configuration)."""
    if not _WS_URL.fullmatch(url):
        raise ConsoleError(f"the broker's WebSocket URL must be ws://host:port or wss://host:port, "
                           f"not {url[:100]!r}")
    parts = urlsplit(url)
    if parts.port is not None and not 1 <= parts.port <= 65535:
        raise ConsoleError(f"port {parts.port} of {url!r} is not a port")
    return f"{parts.scheme}://{parts.netloc}"


def check_prefix(prefix: str) -> str:
    if len(prefix) > 128 or not _PREFIX.fullmatch(prefix):
        raise ConsoleError(f"topic prefix {prefix[:100]!r}: 1-128 characters of A-Z a-z 0-9 . _ - "
                           "in levels separated by '/'")
    return prefix


def content_security_policy(ws: str) -> str:
    return "; ".join((
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
        "worker-src blob:",  # MQTT.js runs its keep-alive timer in a worker made from a blob
        f"connect-src 'self' {ws}", "base-uri 'none'", "form-action 'none'",
        "frame-ancestors 'none'",
    ))


def load_assets(root: Path) -> dict[str, Asset]:
    """URL path -> asset for every regular file under `root` with a known type (`/` is
    `index.html`); ConsoleError when the build is missing."""
    index = root / "index.html"
    if not index.is_file():
        raise ConsoleError(
            f"the console is not built ({index} is missing): run ./run.sh, or "
            "`cd console && npm ci && npm run build`")
    base = root.resolve()
    assets: dict[str, Asset] = {}
    for path in sorted(base.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        kind = CONTENT_TYPES.get(path.suffix)
        if kind is None or path.stat().st_size > MAX_FILE_BYTES:
            continue
        if base not in path.resolve().parents:
            continue
        assets["/" + path.relative_to(base).as_posix()] = Asset.of(path.read_bytes(), kind)
    assets["/"] = assets["/index.html"]
    return assets


class ConsoleApp:
    """What the handler answers with: the assets, config.json and the headers."""

    def __init__(self, settings: ConsoleSettings, port: int) -> None:
        origin = ws_origin(settings.ws_url)
        self.assets = load_assets(settings.root)
        self.assets["/config.json"] = Asset.of(orjson.dumps({
            "ws_url": settings.ws_url, "topic_prefix": check_prefix(settings.topic_prefix),
        }), "application/json")
        self.headers: list[tuple[str, str]] = [
            ("Content-Security-Policy", content_security_policy(origin)),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
        ]
        names = {settings.host, *_LOOPBACK_NAMES, *settings.allowed_hosts}
        self.hosts = frozenset(f"{name}:{port}".lower() for name in names)


def make_handler(app: ConsoleApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "att-jm-console"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _refuse(self, code: int, text: str, extra: Sequence[tuple[str, str]] = ()) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            for name, value in (*app.headers, *extra):
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _answer(self, *, body: bool) -> None:
            host = (self.headers.get("Host") or "").strip().lower()
            if host not in app.hosts:
                self._refuse(400, "unknown Host: open the console at the address it printed")
                return
            path = self.path.split("?", 1)[0].split("#", 1)[0]
            asset = app.assets.get(path)
            if asset is None:
                self._refuse(404, "not found")
                return
            if self.headers.get("If-None-Match") == asset.etag:
                self.send_response(304)
                for name, value in app.headers:
                    self.send_header(name, value)
                self.send_header("ETag", asset.etag)
                self.end_headers()
                return
            self.send_response(200)
            for name, value in app.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", asset.content_type)
            self.send_header("Content-Length", str(len(asset.body)))
            self.send_header("ETag", asset.etag)
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                self.wfile.write(asset.body)

        def _not_allowed(self) -> None:
            self._refuse(405, "method not allowed", (("Allow", "GET, HEAD"),))

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = _not_allowed

        def log_message(self, format: str, *args: object) -> None:
            """Requests are not logged one by one (only errors, below)."""

        def log_error(self, format: str, *args: object) -> None:
            log.warning("console.request_error", message=(format % args)[:300])

    return Handler


def build_server(settings: ConsoleSettings) -> ThreadingHTTPServer:
    """The bound server (port 0: a free one), ready to `serve_forever()`."""
    if not _HOST.fullmatch(settings.host):
        raise ConsoleError(f"host {settings.host[:100]!r} must be a name or an IPv4 address")
    server = ThreadingHTTPServer((settings.host, settings.port), BaseHTTPRequestHandler)
    server.daemon_threads = True
    port = int(server.server_address[1])
    server.RequestHandlerClass = make_handler(ConsoleApp(settings, port))
    return server


def serve(settings: ConsoleSettings) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    configure(settings.log_format)
    try:
        server = build_server(settings)
    except (ConsoleError, OSError) as error:
        log.error("console.not_started", error=str(error))
        return 1
    host, port = str(server.server_address[0]), int(server.server_address[1])
    stopper = threading.Thread(target=server.shutdown, daemon=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopper.is_alive():
            stopper.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("console.listening", url=f"http://{host}:{port}/", broker=settings.ws_url,
             topic_prefix=settings.topic_prefix, root=str(settings.root))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log.info("console.stopped")
    return 0


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> ConsoleSettings:
    parser = argparse.ArgumentParser(
        prog="python -m att_jm.console",
        description="Serve the ATT Job Manager's browser console on a loopback port.")
    parser.add_argument("--host", default=env.get("ATT_JM_CONSOLE_HOST", "127.0.0.1"),
                        help="address to listen on (ATT_JM_CONSOLE_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int,
                        default=int(env.get("ATT_JM_CONSOLE_PORT", DEFAULT_PORT)),
                        help=f"port (ATT_JM_CONSOLE_PORT; default {DEFAULT_PORT}; 0: a free one)")
    parser.add_argument("--broker-ws", default=env.get("ATT_JM_CONSOLE_BROKER_WS", DEFAULT_WS_URL),
                        help="the broker's WebSocket listener the page connects to "
                             f"(ATT_JM_CONSOLE_BROKER_WS; default {DEFAULT_WS_URL})")
    parser.add_argument("--topic-prefix", default=env.get("ATT_JM_TOPIC_PREFIX", "att"),
                        help="P in the topics (ATT_JM_TOPIC_PREFIX; default att)")
    parser.add_argument("--root", type=Path, default=Path(env.get("ATT_JM_CONSOLE_ROOT", DIST)),
                        help="the built console (ATT_JM_CONSOLE_ROOT; default console/dist)")
    parser.add_argument("--allow-host", action="append", default=[],
                        help="another name the console may be opened by (repeatable)")
    parser.add_argument("--log-format", choices=("json", "console"),
                        default=env.get("ATT_JM_LOG_FORMAT") or None)
    ns = parser.parse_args(argv)
    if not 0 <= ns.port <= 65535:
        parser.error(f"--port {ns.port} is not a port")
    return ConsoleSettings(
        host=ns.host, port=ns.port, ws_url=ns.broker_ws, topic_prefix=ns.topic_prefix,
        root=ns.root, allowed_hosts=tuple(ns.allow_host), log_format=ns.log_format,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return serve(parse_args(argv, os.environ))
