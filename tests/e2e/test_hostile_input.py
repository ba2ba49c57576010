"""Well-formed hostile input against the real service: it answers, stays up, and restarts.

The messages pass every type check and aim at arithmetic, memory, the store, the broker and
the logs: numbers at their extremes, 60 kB strings, deep nesting, templates that multiply a
field, a topic level of 60 kB. Nothing may stop, stall or flood the service.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.hostile import JSON, commands
from helpers.mqtt import TestClient, new_properties
from helpers.service import ServiceFactory
from helpers.store import rejections
from helpers.waits import eventually
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes

from att_jm.domain import limits as lim
from att_jm.domain.commands import JobSpec
from att_jm.domain.ids import SCHEDULER_ID, notification_id
from att_jm.domain.jobs import Job
from att_jm.domain.scheduler import Scheduler
from att_jm.store import open_store

from .conftest import Operator, new_id

REPLIES = "att/job-manager/replies/tester/hostile"
LONG_LEVEL = "L" * 60_000


def _log_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{")]


def _publish_command(client: TestClient, topic: str, payload: bytes, correlation: bytes) -> None:
    props = new_properties(PacketTypes.PUBLISH)
    props.ResponseTopic = REPLIES
    props.CorrelationData = correlation
    client.publish(topic, payload, properties=props)


def test_the_setting_that_once_stopped_the_service_for_good_is_refused(
    operator: Operator,
) -> None:
    error = operator.error("settings.set", {"executed_cleanup": {"every_seconds": 1e12}})
    assert error["code"] == "invalid"
    assert "from 1 to 2592000" in error["message"]
    assert operator.error("settings.set", {"interval_seconds": 1e308})["code"] == "invalid"
    assert operator.service.running
    operator.service.restart()
    assert operator.view("settings")["settings"]["executed_cleanup"]["every_seconds"] == 3600.0


def test_a_store_written_with_out_of_range_values_still_starts_and_runs_jobs(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    """A log written before the ranges existed (here: forged the same way) loads clamped."""
    store = tmp_path / "old" / "att-jm.db"
    app = open_store(str(store))
    scheduler = Scheduler.create(lim.TIME_MIN.replace(year=2026))
    scheduler.trigger_event(
        Scheduler.SettingsChanged, interval_seconds=0.0,
        executed_cleanup={"max_rows": None, "max_age_days": 1e300, "every_seconds": 1e12},
        failed_cleanup={"max_rows": 5, "max_age_days": None, "every_seconds": 1e12},
        actor="old-version", timestamp=lim.TIME_MIN.replace(year=2026),
    )
    scheduler.record_cleanup("executed", "r1", 0, "scheduler", lim.TIME_MIN.replace(year=2026))
    old_job = Job.add(JobSpec(name="old", script="ipx-update", trigger="t",
                              timeout_seconds=1e12), "old-version", scheduler.created_on)
    app.save(scheduler, old_job)
    assert app.repository.get(SCHEDULER_ID).policy("executed").every_seconds == 2592000
    app.close()
    service = service_factory(store=store)
    operator = Operator(service, mqtt)
    operator.add_job("ipx", "ipx-update", "t")
    operator.notify("t", {"id": "after-upgrade", "channel": "BBC One"})
    operator.wait_view("executed", lambda v: v["total"] == 2)
    service.restart()  # and again: nothing in the log stops a start
    settings = operator.view("settings")["settings"]
    assert settings["interval_seconds"] == 0.0
    assert settings["executed_cleanup"] == {"max_rows": None, "max_age_days": 3650.0,
                                            "every_seconds": 2592000.0}
    jobs = {row["name"]: row for row in operator.view("jobs")["rows"]}
    assert jobs["old"]["timeout_seconds"] == lim.MAX_TIMEOUT_SECONDS
    executed = operator.view("executed")["rows"]
    assert {row["job"] for row in executed} == {"ipx", "old"}  # the old job ran too


def test_a_poison_notification_is_recorded_and_the_batch_goes_on(
    service_factory: ServiceFactory, mqtt: TestClient,
) -> None:
    """A notification whose event would be over the cap (1e5 is stored as 100000.0, so it
    grows) is refused `too_large` and acknowledged; the messages around it are handled."""
    service = service_factory(extra_args=["--max-payload-bytes", str(1024 * 1024)])
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "t")
    grows = b'{"id": "grows", "v": [' + b",".join([b"1e5"] * 250_000) + b"]}"
    operator.notify("t", {"id": "before", "channel": "a"})
    operator.notify("t", grows)
    operator.notify("t", {"id": "after", "channel": "b"})
    executed = operator.wait_view("executed", lambda v: v["total"] == 2)
    assert {row["notification_id"] for row in executed["rows"]} == {"before", "after"}
    (rejection,) = rejections(service.store)
    assert rejection["code"] == "too_large"
    assert "over the cap of 2097152 bytes per event" in rejection["reason"]
    assert service.running
    service.restart()  # the poison was acknowledged: it does not come back
    # A copy the broker still held for the service would come before anything published
    # on its topic after the restart: once this one ran, such a copy was handled.
    operator.notify("t", {"id": "after-restart", "channel": "c"})
    operator.wait_view("executed", lambda v: v["total"] == 3)
    assert len(rejections(service.store)) == 1


def test_a_60_kb_topic_level_is_refused_and_cut_everywhere_it_is_shown(
    operator: Operator,
) -> None:
    operator.notify(LONG_LEVEL, {"id": new_id()})
    reply = operator.command(LONG_LEVEL)
    assert reply["error"]["code"] == "unknown_command"
    assert len(json.dumps(reply)) < 1000
    (rejection,) = rejections(operator.service.store)
    assert rejection["code"] == "invalid" and "at most 200 characters" in rejection["reason"]
    assert len(rejection["topic"]) < 400

    def refusals_logged() -> list[str]:
        """The log's lines once both refusals' lines are in it (the command's is written
        after its reply was sent)."""
        lines = _log_lines(operator.service.log_text())
        rejected = any('"notification.rejected"' in line for line in lines)
        handled = any('"command.handled"' in line and "unknown_command" in line
                      for line in lines)
        return lines if rejected and handled else []

    lines = eventually(refusals_logged, "the log lines of the refused notification and command")
    assert max(len(line) for line in lines) <= 8192


def test_a_reused_notification_id_is_recorded_as_a_conflict_and_runs_once(
    operator: Operator,
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "t")
    operator.notify("t", {"id": "same", "channel": "a"})
    operator.notify("t", {"id": "same", "channel": "a"})  # a redelivery: silent
    operator.notify("t", {"id": "same", "channel": "b"})  # another payload: a conflict
    operator.notify("t", {"id": "same", "channel": "b"})  # ... recorded once
    # handled after the four (one topic, in order): once it ran, so were they
    operator.notify("t", {"id": "later", "channel": "c"})
    executed = operator.wait_view("executed", lambda v: any(
        row["notification_id"] == "later" for row in v["rows"]))
    (conflict,) = rejections(operator.service.store)
    assert conflict["code"] == "conflict" and "'same'" in conflict["reason"]
    assert sorted(row["notification_id"] for row in executed["rows"]) == ["later", "same"]
    assert operator.view("queue")["total"] == 0



def test_a_reply_topic_in_another_users_tree_gets_no_reply(
    operator: Operator, mqtt: TestClient,
) -> None:
    """An operator cannot have the service write into another user's reply tree: the
    command runs, its reply is refused (logged), and the other user's tree stays empty."""
    bobs = mqtt.subscribe(operator.service.topic("job-manager/replies/bob/#"))
    props = new_properties(PacketTypes.PUBLISH)
    props.ResponseTopic = operator.service.topic("job-manager/replies/bob/planted")
    props.CorrelationData = b"c-planted"
    mqtt.publish(operator.service.command_topic("settings.set", "alice"),
                 orjson.dumps({"interval_seconds": 42}), properties=props)
    # alice's next command is handled after the first one: it ran, and any reply of it was
    # sent before this one's
    alices = Operator(operator.service, mqtt, actor="alice")
    assert alices.view("settings")["settings"]["interval_seconds"] == 42
    assert bobs.barrier(operator.service.topic("job-manager/replies/bob/marker")) == []
    refused = [line for line in _log_lines(operator.service.log_text())
               if '"command.reply_topic_refused"' in line]
    assert len(refused) == 1 and "replies/bob/planted" in refused[0]


MESSAGES = st.one_of(
    commands().map(lambda c: ("command", c[0], c[1])),
    st.tuples(st.just("command"), st.sampled_from([LONG_LEVEL, "job.delete", "x"]),
              st.just({})),
    st.tuples(st.just("notification"), st.sampled_from(["t", "other", LONG_LEVEL]),
              st.dictionaries(st.sampled_from(["id", "channel", "f", "deep"]), JSON,
                              max_size=4)),
)


@settings(max_examples=1, deadline=None, phases=[Phase.generate], database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(messages=st.lists(MESSAGES, min_size=300, max_size=300))
def test_hundreds_of_hostile_messages_then_a_restart_leave_a_working_service(
    service_factory: ServiceFactory, messages: list[tuple[str, str, Any]],
) -> None:
    service = service_factory()
    with TestClient(service.mqtt_url) as client:
        operator = Operator(service, client)
        operator.ok("settings.set", {"interval_seconds": 0})
        operator.add_job("ipx", "ipx-update", "t")
        replies = client.subscribe(REPLIES)
        pid = service.pid
        sent: set[bytes] = set()
        for kind, name, args in messages:
            try:
                payload = orjson.dumps(args)
            except (TypeError, orjson.JSONEncodeError):  # deeper than orjson writes
                payload = b'{"id": "deep", "v": ' + b"[" * 300 + b"]" * 300 + b"}"
            if kind == "notification":
                client.publish(service.notification_topic(name), payload)
            else:
                correlation = uuid.uuid4().bytes
                sent.add(correlation)
                _publish_command(client, service.command_topic(name), payload, correlation)
        deadline = time.monotonic() + 60
        while len({m.prop("CorrelationData") for m in replies.messages()}) < len(sent):
            assert time.monotonic() < deadline, "not every command got a reply"
            time.sleep(0.05)
        for message in replies.messages():
            reply = message.json()
            assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
            if not reply["ok"]:
                assert len(message.payload) <= 4096, reply["error"]["code"]
        assert service.running and service.pid == pid
        assert len(messages) == 300 and len(sent) > 50, len(sent)
        service.restart()
        assert operator.ok("views.get", {"view": "jobs"})["view"] == "jobs"
        nid = new_id()
        reset = {"script": "ipx-update", "trigger": "t", "command": None, "match": None}
        if not operator.command("job.update", {"name": "ipx", "enabled": True, **reset})["ok"]:
            operator.ok("job.add", {"name": "ipx", **reset})
        operator.ok("settings.set", {"interval_seconds": 0})
        operator.notify("t", {"id": nid, "channel": "BBC One"})
        operator.wait_view("executed", lambda v: any(
            row["notification_id"] == nid and row["result"] == 3 for row in v["rows"]))
    lines = _log_lines(service.log_text())
    assert max(len(line) for line in lines) <= 8192


@pytest.mark.parametrize("value", [1e308, 1e12, -1.0, 86401])
def test_every_out_of_range_interval_gets_an_invalid_reply_naming_the_range(
    operator: Operator, value: float
) -> None:
    error = operator.error("settings.set", {"interval_seconds": value})
    assert error == {"code": "invalid",
                     "message": "interval_seconds must be a number from 0 to 86400 (seconds)"}


def test_a_message_the_store_refuses_is_isolated_recorded_and_the_rest_of_its_batch_stored(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    """A deterministic refusal by the store (here a trigger that aborts one notification's
    insert: SQLITE_CONSTRAINT) fails the batch's commit on every retry. The batch is handled
    again one message at a time: the poison is recorded `internal` and acknowledged, every
    other message of the batch is stored, and nothing loops."""
    store = tmp_path / "poison" / "att-jm.db"
    open_store(str(store)).close()
    with sqlite3.connect(store) as db:
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON stored_events "
            "WHEN NEW.topic = 'att_jm:Notification.Received' AND NEW.originator_id = "
            f"'{notification_id('POISON').hex}' "  # by its id: the state is stored encoded
            "BEGIN SELECT RAISE(ABORT, 'the store refuses this row'); END"
        )
    service = service_factory(store=store)
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "t")
    sent = [f"ok-{n}" for n in range(40)]
    with TestClient(service.mqtt_url) as burst:  # published back to back: one or few batches
        for n, nid in enumerate(sent):
            burst.publish(service.notification_topic("t"), {"id": nid, "channel": "x"})
            if n == 20:
                burst.publish(service.notification_topic("t"), {"id": "POISON", "channel": "x"})
    executed = operator.wait_view("executed", lambda v: v["total"] == len(sent), timeout=30)
    assert {row["notification_id"] for row in executed["rows"]} == set(sent)
    (rejection,) = rejections(store)
    assert rejection["code"] == "internal"
    assert "IntegrityError" in rejection["reason"] and "refuses this row" in rejection["reason"]
    assert '"POISON"' in rejection["excerpt"]
    assert "message.poisoned" in service.log_text()
    service.restart()  # acknowledged: it does not come back
    # handled after any copy the broker still held for the service (see above)
    operator.notify("t", {"id": "after-restart", "channel": "x"})
    operator.wait_view("executed", lambda v: v["total"] == len(sent) + 1)
    assert len(rejections(store)) == 1


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_message_many_times_over_the_limit_never_reaches_the_service_memory(
    operator: Operator,
) -> None:
    """The service's CONNECT advertises a Maximum Packet Size (4x the payload limit): the
    broker drops larger messages for it instead of sending them, so ten 20 MB notifications
    cost the service nothing; one a little over the limit still arrives, recorded too_large."""
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "t")
    pid = operator.service.pid
    assert pid is not None
    before = _rss_kib(pid)
    for n in range(10):
        operator.notify("t", b'{"id": "huge-%d", "blob": "' % n + b"x" * 20_000_000 + b'"}')
    operator.notify("t", b'{"id": "just-over", "blob": "' + b"x" * 300_000 + b'"}')
    operator.notify("t", {"id": "after", "channel": "x"})
    operator.wait_view("executed", lambda v: v["total"] == 1)
    assert [r["code"] for r in rejections(operator.service.store)] == ["too_large"]
    assert _rss_kib(pid) - before < 50_000  # not 200 MB of payloads
