"""`att-jm` operator verbs read the service's retained status first: offline (or none) is
said within a second, with exit code 3, and nothing is sent. Against a real mosquitto; the
status is published by the test, and no service runs (see tests/e2e/test_cli.py for that)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from helpers.broker import Broker
from helpers.mqtt import Subscription, TestClient

from att_jm.cli import main
from att_jm.cli.common import EXIT_NO_ANSWER
from att_jm.config import parse_mqtt_url
from att_jm.mqtt.requester import Requester, RequestTimeout, ServiceOffline

STATUS = "att/job-manager/status"
ENTRY = "0b9f1c8e-5a4d-4e7b-9a51-3f3d2f7f9c10"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ATT_JM_") and name != "ATT_JM_CONFIG":
            monkeypatch.delenv(name)


@pytest.fixture
def commands(mqtt: TestClient) -> Iterator[Subscription]:
    """Every command an operator verb publishes (there should be none when offline)."""
    subscription = mqtt.subscribe("att/job-manager/commands/#")
    yield subscription
    subscription.unsubscribe()


def att_jm(broker: Broker, *args: str) -> tuple[int, float]:
    started = time.monotonic()
    code = main([*args, "--mqtt-url", broker.url, "--actor", "alice"])
    return code, time.monotonic() - started


def test_a_clean_stops_status_is_told_at_once_with_its_time_and_nothing_is_sent(
    broker: Broker, mqtt: TestClient, commands: Subscription,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mqtt.publish(STATUS, {"state": "offline", "at": "2026-03-02T08:15:00.5+00:00", "pid": 7},
                 retain=True)
    code, took = att_jm(broker, "queue", "remove", ENTRY)
    assert code == EXIT_NO_ANSWER
    assert took < 1
    assert capsys.readouterr().err == (
        "error: the job manager is offline since 2026-03-02T08:15:00Z; nothing was sent\n")
    assert commands.barrier("att/job-manager/commands/tester/barrier") == []  # nothing sent


def test_the_last_will_is_told_with_its_reason_and_json_has_code_offline(
    broker: Broker, mqtt: TestClient, commands: Subscription,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mqtt.publish(STATUS, {"state": "offline", "reason": "lost"}, retain=True)
    code, took = att_jm(broker, "settings", "set", "--interval-seconds", "1", "--json")
    assert (code, took < 1) == (EXIT_NO_ANSWER, True)
    captured = capsys.readouterr()
    error = orjson.loads(captured.out)
    assert (captured.err, error["ok"], error["error"]["code"]) == ("", False, "offline")
    assert "(reason: lost: it crashed or lost its connection" in error["error"]["message"]
    assert commands.barrier("att/job-manager/commands/tester/barrier") == []  # nothing sent


def test_no_status_at_all_is_told_within_a_second(
    broker: Broker, commands: Subscription, capsys: pytest.CaptureFixture[str],
) -> None:
    code, took = att_jm(broker, "jobs")
    assert code == EXIT_NO_ANSWER
    assert took < 1
    assert "error: the job manager is not running: no status is retained on " \
           "att/job-manager/status" in capsys.readouterr().err
    assert commands.messages() == []


def test_online_but_silent_is_still_a_timeout(
    broker: Broker, mqtt: TestClient, commands: Subscription,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mqtt.publish(STATUS, {"state": "online", "pid": 7}, retain=True)
    code, took = att_jm(broker, "jobs", "--timeout", "0.5", "--json")
    assert code == EXIT_NO_ANSWER
    assert 0.5 <= took < 3
    error = orjson.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "no_answer"
    assert error["message"].startswith("no answer from the job manager: no reply to views.get")
    assert [m.topic for m in commands.messages()] == ["att/job-manager/commands/alice/views.get"]


def test_a_status_that_cannot_be_read_does_not_stop_the_command(
    broker: Broker, mqtt: TestClient, commands: Subscription,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mqtt.publish(STATUS, b"not json", retain=True)
    code, _ = att_jm(broker, "jobs", "--timeout", "0.3")
    assert code == EXIT_NO_ANSWER
    assert "no reply to views.get" in capsys.readouterr().err
    assert len(commands.messages()) == 1


def test_going_offline_while_a_reply_is_awaited_ends_the_wait(
    broker: Broker, mqtt: TestClient, commands: Subscription,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mqtt.publish(STATUS, {"state": "online"}, retain=True)

    def stop_instead_of_answering() -> None:
        commands.wait_for(timeout=10)
        mqtt.publish(STATUS, {"state": "offline", "at": "2026-03-02T09:00:00Z"}, retain=True)

    stopper = threading.Thread(target=stop_instead_of_answering)
    stopper.start()
    try:
        code, took = att_jm(broker, "jobs", "--timeout", "10")
    finally:
        stopper.join(15)
    assert code == EXIT_NO_ANSWER
    assert took < 3
    assert capsys.readouterr().err.startswith(
        "error: the job manager went offline at 2026-03-02T09:00:00Z before it answered")


def test_a_requester_without_a_status_topic_does_not_look_at_it(
    broker: Broker, mqtt: TestClient, commands: Subscription,
) -> None:
    mqtt.publish(STATUS, {"state": "offline"}, retain=True)
    with Requester(parse_mqtt_url(broker.url), actor="alice") as requester, pytest.raises(
        RequestTimeout
    ):
        requester.request("views.get", {"view": "jobs"}, timeout=0.3)
    with Requester(parse_mqtt_url(broker.url), actor="alice", status_topic=STATUS
                   ) as requester, pytest.raises(ServiceOffline) as caught:
        requester.request("views.get", {"view": "jobs"}, timeout=5)
    assert (caught.value.status, caught.value.sent) == ({"state": "offline"}, False)
    assert len(commands.messages()) == 1  # the first requester's
