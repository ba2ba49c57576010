"""A new user's first minutes: a job added with the CLI runs for a mosquitto_pub notification."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time

import orjson
import pytest
from helpers.service import Service

from .conftest import Operator


def att_jm(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "att_jm", *args, "--mqtt-url", service.broker.url,
         "--actor", "alice"],
        capture_output=True, text=True, check=False, timeout=60,
    )


def mosquitto_pub() -> str:
    found = shutil.which("mosquitto_pub")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mosquitto_pub is missing (install mosquitto-clients)")
        pytest.skip("mosquitto_pub is not installed")
    return found


def test_a_job_added_with_the_cli_runs_for_a_notification_sent_with_mosquitto_pub(
    operator: Operator,
) -> None:
    service = operator.service
    added = att_jm(service, "job", "add", "ipx", "--script", "ipx-update",
                   "--trigger", "channel-up", "--command", "channel={channel}")
    assert added.returncode == 0, added.stderr
    assert "ipx" in added.stdout
    assert att_jm(service, "settings", "set", "--interval-seconds", "0").returncode == 0
    subprocess.run(
        [mosquitto_pub(), "-V", "mqttv5", "-h", service.broker.host, "-p", str(service.broker.port),
         "-q", "1", "-t", service.notification_topic("channel-up"),
         "-m", '{"id": "cli-1", "channel": "BBC One"}'],
        check=True, timeout=30,
    )
    deadline = time.monotonic() + 15
    while True:
        shown = att_jm(service, "executed", "--json")
        assert shown.returncode == 0, shown.stderr
        view = orjson.loads(shown.stdout)
        if view["total"] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert view["rows"][0]["feedback"] == "IPX updated for channel BBC One"
    table = att_jm(service, "executed")
    assert "BBC One" in table.stdout
    assert "1 of 1" in table.stdout


def test_the_cli_reports_an_error_reply_and_exits_1(operator: Operator) -> None:
    result = att_jm(operator.service, "queue", "remove", "no-such-entry")
    assert result.returncode == 1
    assert "not_found" in result.stderr


def test_the_actor_of_the_command_topic_is_recorded_on_the_change(operator: Operator) -> None:
    att_jm(operator.service, "job", "add", "x", "--script", "ipx-update", "--trigger", "t")
    with sqlite3.connect(f"file:{operator.service.store}?mode=ro", uri=True) as db:
        (state,) = db.execute(
            "SELECT state FROM stored_events WHERE topic = 'att_jm:Job.Added'"
        ).fetchone()
    assert orjson.loads(state)["actor"] == "alice"
