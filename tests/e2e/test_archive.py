"""Archival against the real service: `att-jm audit archive` while `att-jm serve` takes
notifications, then a restart on the archived store and a rebuild. On an SQLite and on a
PostgreSQL store."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS
from helpers.service import ServiceFactory

from .conftest import Operator

pytestmark = BOTH_BACKENDS

FAST_SEALS = ("--seal-every-events", "10", "--seal-every-seconds", "0.3")
TABLES = ("jobs", "queue", "executed", "failed", "settings")


def att_jm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "att_jm", *args], capture_output=True,
                          text=True, check=False, timeout=120)


def rows(operator: Operator) -> dict[str, Any]:
    """Every view's rows (and the settings) as the service answers them."""
    out = {}
    for name in TABLES:
        view = operator.view(name)
        out[name] = view.get("rows", view.get("settings"))
    return out


def test_archived_while_notifications_arrive_then_restarted_and_rebuilt(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    service = service_factory(extra_args=FAST_SEALS)
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"interval_seconds": 0,
                                 "executed_cleanup": {"max_rows": 3, "every_seconds": 1}})
    operator.add_job("ipx", "ipx-update", "channel-up", command="channel={channel}")
    for n in range(30):
        operator.notify("channel-up", {"id": f"old-{n}", "channel": f"C{n}"})
    operator.wait_view("executed", lambda v: v["total"] == 3, timeout=60)
    operator.wait_view("queue", lambda v: v["total"] == 0, timeout=30)
    time.sleep(1.5)  # a seal after the last of them, and the relay past it

    def send() -> None:
        for n in range(20):
            operator.notify("channel-up", {"id": f"new-{n}", "channel": f"N{n}"})
            time.sleep(0.05)

    sending = threading.Thread(target=send)
    sending.start()
    archive = tmp_path / "old.arc"
    done = att_jm("audit", "archive", "--store", str(service.store), "--upto", "1000000",
                  "--output", str(archive), "--json")
    sending.join()
    assert done.returncode == 0, done.stdout + done.stderr
    result = orjson.loads(done.stdout)
    assert result["deleted"] == result["position"] > 50
    operator.wait_view("executed", lambda v: v["rows"][0]["command"] == "channel=N19",
                       timeout=60)
    operator.wait_view("queue", lambda v: v["total"] == 0, timeout=30)
    operator.wait_view("executed", lambda v: v["total"] == 3, timeout=30)  # Auto Cleanup ran
    before = rows(operator)

    service.restart()
    assert rows(operator) == before  # views and relay already past the anchor
    operator.notify("channel-up", {"id": "after-restart", "channel": "R"})
    operator.wait_view("executed", lambda v: v["rows"][0]["command"] == "channel=R"
                       and v["total"] == 3, timeout=30)
    after = rows(operator)
    service.stop()
    store = str(service.store)
    for extra in ((), ("--archive", str(archive))):
        report = att_jm("audit", "verify", "--store", store, "--json", *extra)
        assert report.returncode == 0, report.stdout + report.stderr
        assert orjson.loads(report.stdout)["ok"] is True
    rebuilt = att_jm("rebuild", "--store", store, "--log-format", "json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    service.start()
    assert rows(operator) == after
