"""Restarts: SIGKILL mid-burst loses nothing, views survive restarts, rebuild matches; on an
SQLite and on a PostgreSQL store (`BOTH_BACKENDS`)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS
from helpers.processes import pids_with_env
from helpers.store import notification_ids
from helpers.waits import eventually

from .conftest import Operator

pytestmark = BOTH_BACKENDS

VIEWS = ("jobs", "queue", "executed", "failed", "settings")


def _all_views(operator: Operator) -> dict[str, Any]:
    return {name: operator.view(name) for name in VIEWS}


def _retained_views(mqtt: TestClient, operator: Operator) -> dict[str, Any]:
    return {name: mqtt.retained(operator.service.view_topic(name)) for name in VIEWS}


def test_sigkill_mid_burst_loses_nothing_and_the_running_execution_is_interrupted(
    operator: Operator, mqtt: TestClient
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("sleepy", "sleep-then-ok", "burst", command="{seconds}")
    sent = [f"burst-{number}" for number in range(300)]
    operator.notify("burst", {"id": sent[0], "seconds": 30})
    queue = operator.wait_view(
        "queue", lambda v: v["total"] >= 1 and v["rows"][0]["state"] == "running"
    )
    script_env = f"ATT_JM_EXECUTION_ID={queue['rows'][0]['id']}"
    for nid in sent[1:]:
        operator.notify("burst", {"id": nid, "seconds": 0})
    operator.service.kill()
    assert pids_with_env(script_env)  # the script outlived the service
    operator.service.start()
    failed = operator.wait_view("failed", lambda v: v["total"] == 1)
    assert pids_with_env(script_env) == []  # killed by the restart
    assert failed["rows"][0]["notification_id"] == sent[0]
    assert failed["rows"][0]["feedback"].startswith("interrupted")
    executed = operator.wait_view("executed", lambda v: v["total"] == len(sent) - 1, timeout=90)
    assert executed["total"] == len(sent) - 1
    logged = notification_ids(operator.service.store)
    assert sorted(logged) == sorted(sent)  # each exactly once


def test_views_are_identical_after_a_restart_and_after_a_rebuild(
    operator: Operator, mqtt: TestClient
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ok", "ipx-update", "t")
    operator.add_job("ko", "always-fail", "t")
    operator.add_job("gone", "ipx-update", "never")
    operator.ok("job.remove", {"name": "gone"})
    for number in range(5):
        operator.notify("t", {"id": f"n{number}", "channel": "c"})
    operator.wait_view("failed", lambda v: v["total"] == 5)
    operator.wait_view("executed", lambda v: v["total"] == 5)
    first_failed = operator.view("failed")["rows"][-1]["id"]
    operator.ok("failed.delete", {"id": first_failed})
    operator.ok("settings.set", {"interval_seconds": 3600})
    operator.notify("t", {"id": "queued", "channel": "c"})
    operator.wait_view("queue", lambda v: v["total"] == 2)
    before = _all_views(operator)
    # the coalesced view messages go out a moment later
    eventually(lambda: _retained_views(mqtt, operator) == before, "the views published")

    operator.service.stop()
    operator.service.start()
    assert _all_views(operator) == before
    eventually(lambda: _retained_views(mqtt, operator) == before, "the views published again")

    operator.service.stop()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "att_jm", "rebuild", "--store", str(operator.service.store),
         "--log-format", "json"],
        capture_output=True, check=False, timeout=60,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()
    operator.service.start()
    assert _all_views(operator) == before


def test_rebuild_refuses_while_the_service_runs(operator: Operator) -> None:
    rebuilt = subprocess.run(
        [sys.executable, "-m", "att_jm", "rebuild", "--store", str(operator.service.store)],
        capture_output=True, check=False, timeout=60,
    )
    assert rebuilt.returncode != 0
    assert b"stop it first" in rebuilt.stderr
