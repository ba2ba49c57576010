"""The operator Requester and `att-jm` verbs against a real mosquitto and a fake responder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from paho.mqtt.client import Client, MQTTMessage

from att_jm.cli import main
from att_jm.cli.common import EXIT_ERROR_REPLY, EXIT_NO_ANSWER, EXIT_OK
from att_jm.config import MqttEndpoint, parse_mqtt_url
from att_jm.mqtt.common import connect_properties, json_publish_properties, new_client
from att_jm.mqtt.requester import ConnectFailed, Requester, RequestError, RequestTimeout

MOSQUITTO = "/usr/sbin/mosquitto"
SILENT = "views.silent"  # the fake responder never answers this command


def require_mosquitto() -> str:
    binary = MOSQUITTO if os.access(MOSQUITTO, os.X_OK) else shutil.which("mosquitto")
    if binary is None:
        message = "mosquitto is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    pytest.fail("mosquitto did not open its port")


def start_broker(directory: Path, extra: str = "") -> Iterator[str]:
    binary = require_mosquitto()
    port = free_port()
    config = directory / "mosquitto.conf"
    # As root, mosquitto would switch to user `mosquitto`, who cannot read pytest's 0700 dirs.
    user = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(f"listener {port} 127.0.0.1\n{user}{extra or 'allow_anonymous true'}\n")
    log = directory / "mosquitto.log"
    with log.open("wb") as output:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=output, stderr=output)
    try:
        wait_for_port(port, process, log)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def broker_url(tmp_path: Path) -> Iterator[str]:
    yield from start_broker(tmp_path)


@dataclass
class FakeResponder:
    """Answers `views.get` like the service, `fail` with an error, and ignores SILENT."""

    endpoint: MqttEndpoint
    seen: list[MQTTMessage] = field(default_factory=list)
    client: Client = field(init=False)

    def start(self) -> FakeResponder:
        subscribed = threading.Event()
        self.client = new_client(self.endpoint, "fake-responder")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(
            "att/job-manager/commands/+/+", qos=1
        )
        self.client.connect(
            self.endpoint.host, self.endpoint.port, clean_start=True,
            properties=connect_properties(None),
        )
        self.client.loop_start()
        assert subscribed.wait(10), "the fake responder did not subscribe"
        # The CLI looks at the retained status first: a service that answers is online.
        self.client.publish("att/job-manager/status", b'{"state": "online"}', qos=1,
                            retain=True).wait_for_publish(10)
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        self.seen.append(message)
        command = message.topic.rsplit("/", 1)[1]
        args = orjson.loads(message.payload)
        if command == SILENT:
            return
        if command == "views.get":
            body: dict[str, Any] = {"ok": True, "result": {
                "view": args["view"], "position": 12, "total": 1,
                "rows": [{"name": "backup", "script": "run.sh", "trigger": "alarm"}]}}
        else:
            body = {"ok": False, "error": {"code": "not_found", "message": "no such thing"}}
        props = message.properties
        client.publish(
            props.ResponseTopic, orjson.dumps(body), qos=1,  # type: ignore[union-attr]  # a request always has properties
            properties=json_publish_properties(correlation_data=props.CorrelationData),  # type: ignore[union-attr]  # same
        )


@pytest.fixture
def responder(broker_url: str) -> Iterator[FakeResponder]:
    fake = FakeResponder(parse_mqtt_url(broker_url)).start()
    yield fake
    fake.stop()


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ATT_JM_"):
            monkeypatch.delenv(name)


def test_a_request_returns_the_reply_carrying_its_correlation_data(
    broker_url: str, responder: FakeResponder
) -> None:
    with Requester(parse_mqtt_url(broker_url), actor="alice") as requester:
        reply = requester.request("views.get", {"view": "jobs"}, timeout=5)
        second = requester.request("views.get", {"view": "queue"}, timeout=5)
    assert reply["ok"] is True
    assert reply["result"]["view"] == "jobs"  # type: ignore[index]  # the fake's known shape
    assert second["result"]["view"] == "queue"  # type: ignore[index]  # same


def test_a_command_carries_reply_topic_correlation_json_type_and_expiry(
    broker_url: str, responder: FakeResponder
) -> None:
    with Requester(parse_mqtt_url(broker_url), actor="alice") as requester:
        requester.request("views.get", {"view": "jobs"}, timeout=2.5)
    message = responder.seen[0]
    props = message.properties
    assert message.topic == "att/job-manager/commands/alice/views.get"
    assert message.qos == 1
    assert orjson.loads(message.payload) == {"view": "jobs"}
    assert props.ResponseTopic.startswith("att/job-manager/replies/alice/")  # type: ignore[union-attr]  # set by the requester
    assert len(props.CorrelationData) == 16  # type: ignore[union-attr]  # same
    assert props.ContentType == "application/json"  # type: ignore[union-attr]  # same
    assert props.MessageExpiryInterval in (2, 3)  # type: ignore[union-attr]  # ceil(2.5), minus transit


def test_an_unanswered_request_times_out(broker_url: str, responder: FakeResponder) -> None:
    with Requester(parse_mqtt_url(broker_url), actor="alice") as requester:
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match="reply"):
            requester.request(SILENT, {}, timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 2
        assert requester.request("views.get", {"view": "jobs"}, timeout=5)["ok"] is True


def test_an_unreachable_broker_is_a_connect_failure() -> None:
    endpoint = MqttEndpoint("127.0.0.1", free_port(), None, None, False)
    with pytest.raises(ConnectFailed, match="cannot connect"):
        Requester(endpoint, actor="alice").connect()


def test_get_retained_returns_the_retained_object_or_none(broker_url: str) -> None:
    endpoint = parse_mqtt_url(broker_url)
    publisher = new_client(endpoint, "retainer")
    publisher.connect(endpoint.host, endpoint.port)
    publisher.loop_start()
    publisher.publish("att/job-manager/status", b'{"state": "online"}', qos=1,
                      retain=True).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()
    with Requester(endpoint, actor="alice") as requester:
        assert requester.get_retained("att/job-manager/status", 5) == {"state": "online"}
        started = time.monotonic()
        assert requester.get_retained("att/job-manager/views/none", 5) is None
        assert time.monotonic() - started < 1


def test_att_jm_jobs_json_prints_the_result(
    broker_url: str, responder: FakeResponder, clean_environ: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["jobs", "--json", "--mqtt-url", broker_url, "--actor", "alice"])
    assert code == EXIT_OK
    assert orjson.loads(capsys.readouterr().out) == {
        "view": "jobs", "position": 12, "total": 1,
        "rows": [{"name": "backup", "script": "run.sh", "trigger": "alarm"}],
    }


def test_att_jm_jobs_prints_a_table(
    broker_url: str, responder: FakeResponder, clean_environ: None,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATT_JM_MQTT_URL", broker_url)
    monkeypatch.setenv("ATT_JM_ACTOR", "alice")
    assert main(["jobs"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["NAME", "ENABLED", "TRIGGER", "SCRIPT"]
    assert out[-1] == "1 of 1 row (position 12)"
    assert responder.seen[0].topic == "att/job-manager/commands/alice/views.get"


def test_an_error_reply_exits_1_with_code_and_message(
    broker_url: str, responder: FakeResponder, clean_environ: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["queue", "remove", "0b9f1c8e-5a4d-4e7b-9a51-3f3d2f7f9c10", "--mqtt-url",
                 broker_url, "--actor", "alice"])
    assert code == EXIT_ERROR_REPLY
    assert capsys.readouterr().err.strip() == "error: not_found: no such thing"


def test_no_answer_exits_3(clean_environ: None, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    assert main(["jobs", "--mqtt-url", url, "--actor", "alice", "--timeout", "1"]) == (
        EXIT_NO_ANSWER
    )
    assert "error: no answer from the job manager" in capsys.readouterr().err


@pytest.fixture
def acl_broker_url(tmp_path: Path) -> Iterator[str]:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwd"
    passwords.touch()
    subprocess.run([passwd, "-b", str(passwords), "alice", "pw"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        "pattern write att/job-manager/commands/%u/#\npattern read att/job-manager/replies/%u/#\n"
    )
    yield from start_broker(
        tmp_path, f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}"
    )


def test_a_command_outside_the_users_acl_is_refused_by_the_broker(acl_broker_url: str) -> None:
    endpoint = parse_mqtt_url(acl_broker_url.replace("mqtt://", "mqtt://alice:pw@"))
    with Requester(endpoint, actor="mallory") as requester, pytest.raises(
        RequestError, match="Not authorized"
    ):
        requester.request("views.get", {"view": "jobs"}, timeout=5)


def test_bad_credentials_are_a_connect_failure(acl_broker_url: str) -> None:
    endpoint = parse_mqtt_url(acl_broker_url.replace("mqtt://", "mqtt://alice:wrong@"))
    with pytest.raises(ConnectFailed, match="refused"):
        Requester(endpoint, actor="alice").connect()
