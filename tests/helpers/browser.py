"""The browser console for end-to-end tests: its built files, its real server
(`python -m att_jm.console`) and Debian's Chromium driven by Playwright for Python.

Chromium is Debian's (`/usr/bin/chromium`, `apt-get install chromium`): Playwright's own
browser download cannot work here. Without Chromium, Playwright or the console's build the
tests are skipped, except under CI=true where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from helpers.broker import REPO_ROOT, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Locator, Page

CONSOLE_DIR = REPO_ROOT / "console"
DIST = CONSOLE_DIR / "dist"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: As the machine's probe starts it: a closed network refuses Chromium's background traffic.
CHROMIUM_ARGS = (
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
)
#: Where each run's screenshots go (an artifact of the run, ignored by git).
ARTIFACTS = Path(os.environ.get("ATT_JM_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "console"
VIEWPORT = {"width": 1360, "height": 820}


def missing(message: str) -> NoReturn:
    """A missing tool: a failure under CI=true, a skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def require_chromium() -> str:
    binary = find_chromium()
    if binary is None:
        missing("Debian's chromium is not installed "
                "(./test.sh installs it: apt-get install chromium)")
    return binary


def require_console_build() -> Path:
    """console/dist, built from the sources when they are newer and npm's packages are there."""
    sources = [*CONSOLE_DIR.joinpath("src").iterdir(), CONSOLE_DIR / "build.mjs",
               CONSOLE_DIR / "package-lock.json"]
    index = DIST / "index.html"
    newest = max(path.stat().st_mtime for path in sources)
    if index.exists() and index.stat().st_mtime >= newest:
        return DIST
    if not (CONSOLE_DIR / "node_modules" / "mqtt").is_dir() or shutil.which("npm") is None:
        missing("the console is not built and cannot be: ./test.sh runs `npm ci` and "
                "`npm run build` in console/ (Node.js and npm from apt)")
    done = subprocess.run(["npm", "run", "build"], cwd=CONSOLE_DIR, capture_output=True,
                          text=True, check=False, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"npm run build failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return DIST


def require_playwright() -> None:
    """At a test module's top: Playwright for Python is importable, or the module is skipped
    (a collection error under CI=true)."""
    try:
        import playwright.sync_api  # noqa: F401, PLC0415 -- only asked whether it imports
    except ImportError:
        message = "Playwright for Python is not installed (pip install -e '.[test]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (one per caller)."""
    binary = require_chromium()
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 -- a test-only extra
    except ImportError:
        missing("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=binary, headless=True,
                                         args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


class ConsoleServer:
    """The console's real server, `python -m att_jm.console`, as ./run.sh starts it."""

    def __init__(self, ws_url: str, log_path: Path, *, prefix: str = "att") -> None:
        self.port = free_port()
        self.ws_url = ws_url
        self.prefix = prefix
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 15.0) -> ConsoleServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATT_JM_")}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "att_jm.console", "--port", str(self.port),
                 "--broker-ws", self.ws_url, "--topic-prefix", self.prefix,
                 "--root", str(DIST), "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                url = self.url + "config.json"  # http://127.0.0.1:PORT/
                with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the console server did not start: "
                                     f"{self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Console:
    """One page of the console in its own browser context, and what a test does with it.
    Errors the page logs (a script error, a Content-Security-Policy violation) are kept in
    `errors`: a test ends by asserting there are none."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.url = url
        self.context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("console", self._console)
        self.page.goto(url)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium logs each failed WebSocket connection: expected while the broker restarts.
        if message.type == "error" and not message.text.startswith("WebSocket connection to"):
            self.errors.append(f"console {message.type}: {message.text}")

    def submit_login(self, user: str, password: str) -> None:
        self.page.fill("#login-user", user)
        self.page.fill("#login-password", password)
        self.page.click("#login-submit")

    def login(self, user: str, password: str) -> Console:
        """Log in and wait until the pages show (the role probe done)."""
        self.submit_login(user, password)
        self.page.wait_for_selector("#app:not([hidden])", timeout=15_000)
        return self

    def open(self, name: str) -> Locator:
        """Go to page `name` (jobs, queue, executed, failed) by its tab; the page section."""
        self.page.click(f"nav.tabs a[data-page={name}]")
        section = self.page.get_by_test_id(f"page-{name}")
        section.wait_for()
        return section

    def test_id(self, test_id: str) -> Locator:
        return self.page.get_by_test_id(test_id)

    def rows(self, view: str) -> Locator:
        return self.page.locator(f"[data-testid=table-{view}] tbody tr:not(.empty)")

    def row(self, view: str, text: str) -> Locator:
        return self.rows(view).filter(has_text=text)

    def act(self, view: str, text: str, action: str, *, confirm: bool = False) -> None:
        """Click button `action` (its test id) of the row of `view` showing `text`."""
        self.row(view, text).get_by_test_id(action).click()
        if confirm:
            self.test_id("confirm").click()

    def screenshot(self, name: str, *, height: int | None = None) -> Path:
        """A PNG of the whole page under ARTIFACTS (an artifact of the run), without the
        passing notices; `height`: a taller window for it (a long dialog)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.evaluate("document.getElementById('toasts').replaceChildren()")
        if height is not None:
            self.page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        try:
            self.page.screenshot(path=str(path), full_page=True)
        finally:
            if height is not None:
                self.page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]
        return path

    def close(self) -> None:
        self.context.close()
