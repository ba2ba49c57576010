"""A new user's first minutes: a job added with the CLI runs for a mosquitto_pub notification."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from helpers.service import Service
from helpers.store import stored_states

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
    entry = str(uuid.uuid4())
    result = att_jm(operator.service, "queue", "remove", entry)
    assert result.returncode == 1
    assert result.stderr == f"error: not_found: no entry {entry!r}\n"


def test_an_error_reply_with_json_is_json_on_stdout(operator: Operator) -> None:
    entry = str(uuid.uuid4())
    result = att_jm(operator.service, "failed", "execute", entry, "--json")
    assert (result.returncode, result.stderr) == (1, "")
    assert orjson.loads(result.stdout) == {
        "ok": False, "error": {"code": "not_found", "message": f"no entry {entry!r}"}}


def test_a_malformed_id_or_unknown_flag_is_a_usage_error_with_json_too(
    operator: Operator,
) -> None:
    service = operator.service
    bad_id = att_jm(service, "queue", "remove", "no-such-entry", "--json")
    assert (bad_id.returncode, bad_id.stderr) == (2, "")
    error = orjson.loads(bad_id.stdout)["error"]
    assert error["code"] == "usage"
    assert "not an entry id" in error["message"]
    unknown = att_jm(service, "queue", "--frobnicate")
    assert unknown.returncode == 2
    assert unknown.stderr.endswith("att-jm queue: error: unrecognized argument --frobnicate\n")
    assert orjson.loads(att_jm(service, "jobs", "--json").stdout)["total"] == 0  # nothing sent


def test_with_the_service_stopped_a_verb_says_so_within_a_second(
    operator: Operator,
) -> None:
    service = operator.service
    service.stop()
    status = operator.client.retained(service.status_topic)
    assert status["state"] == "offline"
    for argv in (["queue"], ["job", "add", "x", "--script", "ipx-update", "--trigger", "t"]):
        started = time.monotonic()
        result = att_jm(service, *argv)
        took = time.monotonic() - started
        assert result.returncode == 3, result.stderr
        assert took < 1, f"{argv} took {took:.2f} s"
        at = status["at"][:19] + "Z"  # the time of the stop, to the second
        assert result.stderr == f"error: the job manager is offline since {at}; nothing was sent\n"
    result = att_jm(service, "jobs", "--json")
    assert (result.returncode, result.stderr) == (3, "")
    error = orjson.loads(result.stdout)["error"]
    assert error["code"] == "offline"
    assert at in error["message"]


def test_after_a_crash_a_verb_names_the_last_will_and_its_reason(operator: Operator) -> None:
    service = operator.service
    watch = operator.client.subscribe(service.status_topic)
    service.kill()
    watch.wait_for(lambda m: m.json()["state"] == "offline", timeout=20)  # the Will's delay
    started = time.monotonic()
    result = att_jm(service, "executed")
    assert time.monotonic() - started < 1
    assert result.returncode == 3
    assert result.stderr.startswith("error: the job manager is offline (reason: lost: ")


def test_an_execution_not_in_the_log_is_not_found_with_json(operator: Operator) -> None:
    entry = str(uuid.uuid4())
    result = subprocess.run(
        [sys.executable, "-m", "att_jm", "audit", "trace", entry, "--json",
         "--store", str(operator.service.store)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 1
    assert orjson.loads(result.stdout) == {
        "ok": False, "error": {"code": "not_found", "message": f"no execution {entry} in the log"}}


def test_the_actor_of_the_command_topic_is_recorded_on_the_change(operator: Operator) -> None:
    att_jm(operator.service, "job", "add", "x", "--script", "ipx-update", "--trigger", "t")
    (added,) = stored_states(operator.service.store, "att_jm:Job.Added")
    assert added["actor"] == "alice"
