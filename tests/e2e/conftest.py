"""Helpers for end-to-end tests: a Job Manager process plus an operator's MQTT client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers.browser import ConsoleServer, require_console_build
from helpers.mqtt import TestClient
from helpers.service import Service, ServiceFactory, populate_scripts_dir
from helpers.site import SecureSite


@dataclass
class Operator:
    """Talks to one running service the way an operator and the Channel Manager do."""

    service: Service
    client: TestClient
    actor: str = "tester"

    def command(
        self, name: str, args: dict[str, Any] | None = None, *, correlation: bytes | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        return self.client.request(
            self.service.command_topic(name, self.actor), args or {},
            correlation_data=correlation, timeout=timeout,
        )

    def ok(self, name: str, args: dict[str, Any] | None = None) -> Any:
        reply = self.command(name, args)
        assert reply["ok"] is True, reply
        return reply["result"]

    def error(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.command(name, args)
        assert reply["ok"] is False, reply
        return dict(reply["error"])

    def notify(self, trigger: str, payload: dict[str, Any] | bytes) -> None:
        self.client.publish(self.service.notification_topic(trigger), payload)

    def view(self, name: str) -> dict[str, Any]:
        return dict(self.ok("views.get", {"view": name}))

    def wait_view(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = self.view(name)
            if predicate(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"view {name} never satisfied the condition: {view}")
            time.sleep(0.05)

    def add_job(self, name: str, script: str, trigger: str, **fields: Any) -> dict[str, Any]:
        return dict(self.ok("job.add", {"name": name, "script": script, "trigger": trigger,
                                        **fields}))


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def operator(service_factory: ServiceFactory, mqtt: TestClient) -> Iterator[Operator]:
    service = service_factory()
    yield Operator(service, mqtt)


# --- The browser console (tests/e2e/test_console.py) ----------------------------------------
# One site, service, console server and browser for the whole module: each test starts from
# what the previous ones left and uses names of its own.

#: The service's row cap in the console's tests: small, so the pages go past it with a few rows.
CONSOLE_VIEW_ROWS = 3


@pytest.fixture(scope="module")
def console_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureSite]:
    """A site made by `att-jm setup` with the WebSocket listener, its broker running."""
    directory = tmp_path_factory.mktemp("console")
    site = SecureSite(directory / "site", populate_scripts_dir(directory / "site" / "scripts"),
                      websocket=True)
    site.broker.start()
    yield site
    site.broker.kill()


@pytest.fixture(scope="module")
def console_service(console_site: SecureSite) -> Iterator[Service]:
    """The real service on the console's site, as `./run.sh` runs it (its settings file), with
    a row cap of CONSOLE_VIEW_ROWS."""
    directory = console_site.directory / "service"
    directory.mkdir()
    service = Service(
        console_site.broker, store=console_site.directory / "store" / "att-jm.db",
        scripts_dir=console_site.directory / "scripts", log_path=directory / "att-jm.log",
        cwd=directory, mqtt_url=console_site.url(), watch_url=console_site.url("auditor"),
        extra_args=["--config", str(console_site.config)],
        env={"ATT_JM_VIEW_ROWS": str(CONSOLE_VIEW_ROWS)},
    )
    yield service.start()
    if service.running:
        service.stop()


@pytest.fixture(scope="module")
def console_server(console_site: SecureSite) -> Iterator[ConsoleServer]:
    """The console's own server (`python -m att_jm.console`) pointed at the site's broker."""
    require_console_build()
    server = ConsoleServer(console_site.ws_url, console_site.directory / "console.log").start()
    yield server
    server.stop()
