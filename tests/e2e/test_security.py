"""Secure by default: each attack of the issue, tried against a broker and a service started
exactly as `./run.sh` starts them (`att-jm setup`, then mosquitto from var/broker/)."""

from __future__ import annotations

import socket
import sqlite3
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from helpers.broker import Broker
from helpers.mqtt import MqttTestError, TestClient
from helpers.service import Service, ServiceFactory
from helpers.site import SecureSite
from helpers.store import count_events
from helpers.waits import eventually
from paho.mqtt.enums import CallbackAPIVersion

from att_jm.cli import main as att_jm
from att_jm.site.users import Registry

P = "att"


def _refused(url: str, client_id: str | None = None) -> str:
    """The reason a connect with `url` is refused (fails the test when it is accepted)."""
    client = TestClient(url, client_id=client_id)
    try:
        client.connect(timeout=5)
    except MqttTestError as error:
        return str(error)
    finally:
        client.close()
    raise AssertionError(f"{url} with client id {client_id} was accepted")


def _denied(url: str, topic: str, payload: Any = b"{}", retain: bool = False) -> None:
    """Publishing `payload` on `topic` as the user of `url` is refused by the broker."""
    with TestClient(url) as client, pytest.raises(MqttTestError, match="Not authorized"):
        client.publish(topic, payload, retain=retain)


# Connections ------------------------------------------------------------------------------


def test_anonymous_and_wrong_password_connects_are_refused(secure_site: SecureSite) -> None:
    assert "Not authorized" in _refused(secure_site.url())
    assert "Not authorized" in _refused(secure_site.url("operator", "wrong-password"))
    assert "Not authorized" in _refused(secure_site.url("nobody", "x"))
    with TestClient(secure_site.url("operator")) as client:  # the right one is let in
        assert client.connected


def test_nobody_but_the_service_may_present_its_client_ids(
    secure_site: SecureSite, secure_service: Service,
) -> None:
    for user in ("operator", "channel-manager", "auditor"):
        for client_id in ("att-job-manager", "att-job-manager.events", "att-job-manager-x"):
            assert "Not authorized" in _refused(secure_site.url(user), client_id)
    # A user's own ids: its name, or its name and "." and anything (several at once).
    with TestClient(secure_site.url("operator"), client_id="operator"), \
            TestClient(secure_site.url("operator"), client_id="operator.console-1"):
        pass
    assert "Not authorized" in _refused(secure_site.url("operator"), "operatorX")


def test_a_takeover_attempt_during_a_burst_loses_nothing(
    secure_site: SecureSite, secure_service: Service,
) -> None:
    """Measured before: a stranger connecting with the service's id took 478 of 500
    notifications in 5 s. Now the broker refuses every attempt and the service keeps its
    connection and session."""
    stop = threading.Event()
    attempts = [0]

    def attacker() -> None:
        while not stop.is_set():
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id="att-job-manager",
                                 protocol=paho.MQTTv5)
            client.username_pw_set("operator", secure_site.password("operator"))
            try:
                client.connect("127.0.0.1", secure_site.port, keepalive=5)
                client.loop(0.05)
                client.disconnect()
            except OSError:
                pass
            attempts[0] += 1

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    with TestClient(secure_site.url("channel-manager")) as cm:
        for n in range(500):
            cm.publish(f"{P}/channel-manager/notifications/burst", {"id": f"n-{n}"})
    deadline = time.monotonic() + 30
    while count_events(secure_service.store, "att_jm:Notification.Received") < 500:
        assert time.monotonic() < deadline, "not every notification reached the log"
        time.sleep(0.1)
    stop.set()
    thread.join(5)
    assert attempts[0] > 10
    connects = [line for line in secure_service.log_text().splitlines()
                if '"mqtt.connected"' in line and '"process":"relay"' not in line]
    assert len(connects) == 1  # the writer was never kicked off its session


# Publishing and reading ----------------------------------------------------------------------


def test_an_operator_cannot_forge_another_actor_or_write_anyone_s_replies(
    secure_site: SecureSite, secure_service: Service,
) -> None:
    operator = secure_site.url("operator")
    _denied(operator, f"{P}/job-manager/commands/alice/job.add",
            {"name": "x", "script": "ipx-update", "trigger": "t"})
    _denied(operator, f"{P}/job-manager/replies/auditor/stolen", {"ok": True})
    _denied(operator, f"{P}/job-manager/events/job.added", {"position": 1})
    for topic in ("views/jobs", "status", "seals"):
        _denied(operator, f"{P}/job-manager/{topic}", {"forged": True}, retain=True)
    _denied(secure_site.url("channel-manager"), f"{P}/job-manager/status", {"state": "offline"},
            retain=True)
    with TestClient(operator) as barrier:  # handled after anything the broker passed on
        reply = barrier.request(f"{P}/job-manager/commands/operator/views.get", {"view": "jobs"})
        assert reply["ok"] is True
    assert count_events(secure_service.store, "att_jm:Job.Added") == 0
    with TestClient(secure_site.url("auditor")) as auditor:  # the retained status is intact
        status = auditor.subscribe(f"{P}/job-manager/status")
        message = status.wait_for(lambda m: True, 5)
        assert orjson.loads(message.payload)["state"] == "online"


def test_nobody_reads_another_user_s_replies(
    secure_site: SecureSite, secure_service: Service,
) -> None:
    Registry(secure_site.site.users, secure_site.site.secrets)  # the site as set up
    with TestClient(secure_site.url("operator")) as spy, \
            TestClient(secure_site.url("auditor")) as auditor:
        spied = spy.subscribe(f"{P}/job-manager/replies/#")  # granted, then nothing delivered
        reply = auditor.request(f"{P}/job-manager/commands/auditor/views.get", {"view": "jobs"})
        assert reply["ok"] is True
        # The spy's own reply comes after the auditor's on the service's one connection: once
        # it is here, the auditor's would be too, had the broker passed it on.
        own = spy.request(f"{P}/job-manager/commands/operator/views.get", {"view": "jobs"})
        assert own["ok"] is True
        assert {m.topic.split("/")[3] for m in spied.messages()} == {"operator"}


def test_the_auditor_and_the_channel_manager_cannot_run_commands(
    secure_site: SecureSite, secure_service: Service,
) -> None:
    add = {"name": "x", "script": "ipx-update", "trigger": "t"}
    _denied(secure_site.url("auditor"), f"{P}/job-manager/commands/auditor/job.add", add)
    _denied(secure_site.url("channel-manager"),
            f"{P}/job-manager/commands/channel-manager/job.add", add)
    _denied(secure_site.url("auditor"), f"{P}/channel-manager/notifications/t", {"id": "n"})
    with TestClient(secure_site.url("operator")) as operator:
        reply = operator.request(f"{P}/job-manager/commands/operator/job.add", add)
        assert reply["ok"] is True, reply  # sent once committed, after the refused ones
    assert count_events(secure_service.store, "att_jm:Job.Added") == 1


def test_every_role_reads_what_it_needs(secure_site: SecureSite, secure_service: Service) -> None:
    for user in ("operator", "auditor"):
        with TestClient(secure_site.url(user)) as client:
            for topic in ("views/jobs", "status"):
                subscription = client.subscribe(f"{P}/job-manager/{topic}")
                subscription.wait_for(lambda m: True, 5)  # retained: delivered at once


# The service checks again (defence in depth) ------------------------------------------------


def test_the_service_refuses_a_command_its_actor_s_role_may_not_send(
    broker: Broker, service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    """With a broker whose ACL lets everything through (here: anonymous), the service still
    refuses what the users file's roles forbid, and records it."""
    users = tmp_path / "users.json"
    users.write_bytes(orjson.dumps({"users": {
        "olga": {"role": "operator"}, "audrey": {"role": "auditor"},
        "cm": {"role": "channel-manager"}}}))
    service = service_factory(extra_args=["--users-file", str(users)])
    add = {"name": "x", "script": "ipx-update", "trigger": "t"}

    def command(actor: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return mqtt.request(service.command_topic(name, actor), args)

    assert command("audrey", "job.add", add)["error"]["code"] == "forbidden"
    assert command("cm", "views.get", {"view": "jobs"})["error"]["code"] == "forbidden"
    assert command("stranger", "views.get", {"view": "jobs"})["error"]["code"] == "forbidden"
    assert command("audrey", "views.get", {"view": "jobs"})["ok"] is True
    assert command("olga", "job.add", add)["ok"] is True
    assert count_events(service.store, "att_jm:Rejection.Rejected") == 3


def test_commands_over_an_actor_s_rate_are_refused_then_allowed_again(
    service_factory: ServiceFactory, mqtt: TestClient,
) -> None:
    service = service_factory(extra_args=["--command-rate", "1", "--command-burst", "3"])
    codes = [mqtt.request(service.command_topic("views.get", "fast"), {"view": "jobs"})
             .get("error", {}).get("code", "ok") for _ in range(6)]
    assert codes == ["ok", "ok", "ok", "rate_limited", "rate_limited", "rate_limited"]
    other = mqtt.request(service.command_topic("views.get", "calm"), {"view": "jobs"})
    assert other["ok"] is True  # per actor
    time.sleep(1.1)
    assert mqtt.request(service.command_topic("views.get", "fast"), {"view": "jobs"})["ok"]
    # Recorded, but at most once a second per actor: a flood does not flood the log.
    assert 1 <= count_events(service.store, "att_jm:Rejection.Rejected") <= 2


# TLS -----------------------------------------------------------------------------------------


def _tls_connect(site: SecureSite, cafile: str | None) -> str:
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", site.tls_port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return str(tls.version())
        except ssl.SSLCertVerificationError as error:
            return f"refused: {error.verify_message}"


def test_tls_with_the_site_ca_connects_and_without_it_fails(secure_site: SecureSite) -> None:
    ca = str(secure_site.site.tls.ca)
    assert _tls_connect(secure_site, ca).startswith("TLSv1.")
    assert _tls_connect(secure_site, None).startswith("refused")
    # The service's own client verifies the broker too: an MQTT session over TLS.
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="operator.tls",
                         protocol=paho.MQTTv5)
    client.username_pw_set("operator", secure_site.password("operator"))
    client.tls_set(ca_certs=ca)
    assert client.connect("localhost", secure_site.tls_port) == 0
    client.disconnect()


def test_the_cli_talks_tls_with_the_site_settings(
    secure_site: SecureSite, secure_service: Service, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"mqtts://localhost:{secure_site.tls_port}"
    monkeypatch.setenv("ATT_JM_CONFIG", str(secure_site.config))
    assert att_jm(["jobs", "--mqtt-url", url, "--user", "operator", "--json"]) == 0
    assert '"view": "jobs"' in capsys.readouterr().out


# Users ---------------------------------------------------------------------------------------


def test_users_added_removed_and_given_a_new_password_reach_the_running_broker(
    secure_site: SecureSite, capsys: pytest.CaptureFixture[str],
) -> None:
    var = str(secure_site.site.var)
    assert att_jm(["users", "--var", var, "add", "alice", "--role", "operator"]) == 0
    shown = capsys.readouterr().out
    password = secure_site.password("alice")
    assert password in shown  # shown once, to the person who ran it
    def connects(url: str) -> bool:
        with TestClient(url) as client:
            return client.connected

    # the broker reloads its files on SIGHUP, a moment after the verb returns
    eventually(lambda: connects(secure_site.url("alice")), "alice connects", timeout=10)
    assert att_jm(["users", "--var", var, "passwd", "alice"]) == 0
    eventually(lambda: "Not authorized" in _refused(secure_site.url("alice", password)),
               "alice's old password refused", timeout=10)
    assert connects(secure_site.url("alice"))  # the new one works
    assert att_jm(["users", "--var", var, "remove", "alice"]) == 0
    eventually(lambda: "Not authorized" in _refused(
        f"mqtt://alice:{uuid.uuid4()}@127.0.0.1:{secure_site.port}"),
        "alice refused once removed", timeout=10)
    secrets = secure_site.site.secrets
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets.iterdir())


def test_rows_appended_while_the_service_was_stopped_are_reported_at_start_and_by_verify(
    secure_site: SecureSite, secure_service: Service, capsys: pytest.CaptureFixture[str],
) -> None:
    secure_service.stop()  # a clean stop: everything sealed, the log closed
    with sqlite3.connect(secure_service.store) as db:  # someone with the file appends a row
        db.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?)",
                   (uuid.uuid4().hex, 7, "att_jm:Job.Removed",
                    b'{"timestamp": {"_type_": "datetime_iso", '
                    b'"_data_": "2026-01-01T00:00:00+00:00"}, "actor": "mallory"}'))
    secure_service.start()
    assert '"log.appended_outside"' in secure_service.log_text()
    with TestClient(secure_site.url("auditor")) as auditor:
        status = orjson.loads(auditor.subscribe(f"{P}/job-manager/status")
                              .wait_for(lambda m: True, 5).payload)
    assert status["state"] == "online" and status["log_appended"]["appended"] == 1
    assert att_jm(["audit", "verify", "--store", str(secure_service.store), "--json"]) == 1
    findings = orjson.loads(capsys.readouterr().out)["findings"]
    assert {"appended", "version_gap"} <= {finding["kind"] for finding in findings}
