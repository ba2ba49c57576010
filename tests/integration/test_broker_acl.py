"""The shipped mosquitto.acl: operators act only in their own name and read only their replies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.broker import SHIPPED_ACL, Broker, BrokerFactory, make_password_file
from helpers.mqtt import MqttTestError, TestClient

PASSWORDS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "channel-manager": "cm-secret",
    "att-job-manager": "jm-secret",
}
NOT_AUTHORIZED = 135  # MQTT v5 reason code 0x87


@pytest.fixture
def acl_broker(broker_factory: BrokerFactory, tmp_path: Path) -> Broker:
    return broker_factory(
        allow_anonymous=False,
        password_file=make_password_file(tmp_path / "passwd", PASSWORDS),
        acl_file=SHIPPED_ACL,
    )


def client(broker: Broker, user: str) -> TestClient:
    return TestClient(broker.url, username=user, password=PASSWORDS[user])


def test_anonymous_clients_are_refused(acl_broker: Broker) -> None:
    with pytest.raises(MqttTestError, match="refused"):
        TestClient(acl_broker.url).connect()


def test_wrong_password_is_refused(acl_broker: Broker) -> None:
    with pytest.raises(MqttTestError, match="refused"):
        wrong = "guess"  # a throwaway broker's test user
        TestClient(acl_broker.url, username="alice", password=wrong).connect()


def test_alice_cannot_publish_a_command_in_bobs_name(acl_broker: Broker) -> None:
    with client(acl_broker, "att-job-manager") as service:
        commands = service.subscribe("att/job-manager/commands/#")
        with client(acl_broker, "alice") as alice:
            forged = alice.publish(
                "att/job-manager/commands/bob/job.remove", {"name": "nightly"}, check=False
            )
            own = alice.publish("att/job-manager/commands/alice/job.remove", {"name": "nightly"})

        assert forged is not None
        assert forged.value == NOT_AUTHORIZED
        assert forged.getName() == "Not authorized"
        assert own is not None
        assert not own.is_failure
        # The service sees alice's own command, and nothing in bob's name before it.
        first = commands.wait_for()
        assert first.topic == "att/job-manager/commands/alice/job.remove"
        assert [m.topic for m in commands.messages()] == [first.topic]


def test_alice_cannot_read_bobs_replies(acl_broker: Broker) -> None:
    with (
        client(acl_broker, "alice") as alice,
        client(acl_broker, "bob") as bob,
        client(acl_broker, "att-job-manager") as service,
    ):
        # The broker grants the subscription and applies the ACL at delivery.
        alice_sees = alice.subscribe("att/job-manager/replies/#")
        bob_sees = bob.subscribe("att/job-manager/replies/bob/#")

        service.publish("att/job-manager/replies/bob/r1", {"ok": True, "result": "for bob"})
        service.publish("att/job-manager/replies/alice/r2", {"ok": True, "result": "for alice"})

        assert bob_sees.wait_for().json()["result"] == "for bob"
        # Same publisher, same subscriber: had bob's reply been delivered to alice, it would
        # have arrived before her own.
        assert alice_sees.wait_for().topic == "att/job-manager/replies/alice/r2"
        assert [m.topic for m in alice_sees.messages()] == ["att/job-manager/replies/alice/r2"]


def test_a_denied_publish_also_costs_the_connection(acl_broker: Broker) -> None:
    """mosquitto 2.0.11 closes the connection after answering "Not authorized".

    So the service must never publish where the ACL forbids it (e.g. a reply to a
    ResponseTopic outside `att/job-manager/replies/`): it would be disconnected each time.
    """
    with client(acl_broker, "alice") as alice:
        drops = 0
        for _ in range(3):
            alice.wait_connected()
            alice.publish("att/job-manager/views/jobs", {"forged": True}, check=False)
            deadline = time.monotonic() + 2
            while alice.connected and time.monotonic() < deadline:
                time.sleep(0.005)
            drops += not alice.connected
        assert drops == 3
    assert acl_broker.log_text().count("Bad socket read/write on client") >= 3


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("alice", "att/channel-manager/notifications/channel.down"),
        ("alice", "att/job-manager/views/jobs"),
        ("alice", "att/job-manager/status"),
        ("alice", "att/job-manager/replies/bob/r1"),
        ("channel-manager", "att/job-manager/commands/alice/job.add"),
    ],
)
def test_users_cannot_forge_what_only_others_publish(
    acl_broker: Broker, user: str, topic: str
) -> None:
    with client(acl_broker, user) as someone:
        reason = someone.publish(topic, {"id": "forged"}, check=False)
    assert reason is not None
    assert reason.value == NOT_AUTHORIZED


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("channel-manager", "att/channel-manager/notifications/channel.down"),
        ("att-job-manager", "att/job-manager/replies/alice/r1"),
        ("att-job-manager", "att/job-manager/views/jobs"),
        ("att-job-manager", "att/job-manager/events/job.added"),
        ("att-job-manager", "att/job-manager/status"),
        ("att-job-manager", "att/job-manager/seals"),
    ],
)
def test_each_party_may_publish_its_own_topics(acl_broker: Broker, user: str, topic: str) -> None:
    with client(acl_broker, user) as someone:
        reason = someone.publish(topic, {"id": "n-1"})
    assert reason is not None
    assert not reason.is_failure


def test_operators_read_views_events_status_and_seals(acl_broker: Broker) -> None:
    with client(acl_broker, "att-job-manager") as service, client(acl_broker, "alice") as alice:
        for topic in ("views/jobs", "status", "seals"):
            service.publish(f"att/job-manager/{topic}", {"topic": topic}, retain=True)
        events = alice.subscribe("att/job-manager/events/#")
        service.publish("att/job-manager/events/job.added", {"position": 1})

        assert events.wait_for().json() == {"position": 1}
        for topic in ("views/jobs", "status", "seals"):
            assert alice.retained(f"att/job-manager/{topic}") == {"topic": topic}


def test_the_service_reads_commands_of_every_actor_and_notifications(acl_broker: Broker) -> None:
    with client(acl_broker, "att-job-manager") as service:
        commands = service.subscribe("att/job-manager/commands/+/+")
        notifications = service.subscribe("att/channel-manager/notifications/+")
        with client(acl_broker, "bob") as bob, client(acl_broker, "channel-manager") as cm:
            bob.publish("att/job-manager/commands/bob/views.get", {"view": "jobs"})
            cm.publish("att/channel-manager/notifications/channel.down", {"id": "n-1"})

        assert commands.wait_for().topic == "att/job-manager/commands/bob/views.get"
        assert notifications.wait_for().json() == {"id": "n-1"}
