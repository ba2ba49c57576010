"""Helpers for end-to-end tests: a Job Manager process plus an operator's MQTT client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers.mqtt import TestClient
from helpers.service import Service, ServiceFactory


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
