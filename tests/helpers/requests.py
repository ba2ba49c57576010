"""Commands to a running service from a test client, for tests without the e2e `Operator`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from helpers.mqtt import TestClient
from helpers.service import Service


def ok(mqtt: TestClient, service: Service, command: str, args: dict[str, Any],
       timeout: float = 10.0) -> Any:
    """The result of `command` (as user `tester`), which must succeed."""
    reply = mqtt.request(service.command_topic(command), args, timeout=timeout)
    assert reply["ok"] is True, reply
    return reply["result"]


def wait_view(
    mqtt: TestClient, service: Service, view: str, done: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
) -> dict[str, Any]:
    """View `view` once `done` holds for it (asked again every 50 ms, `timeout` s at most)."""
    deadline = time.monotonic() + timeout
    while True:
        value = dict(ok(mqtt, service, "views.get", {"view": view}))
        if done(value):
            return value
        assert time.monotonic() < deadline, f"view {view} never satisfied the condition: {value}"
        time.sleep(0.05)
