"""The public form of stored rows equals what the service publishes for the live events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from att_jm.domain.commands import JobSpec
from att_jm.domain.executions import Execution
from att_jm.domain.ids import execution_id
from att_jm.domain.jobs import Job
from att_jm.domain.notifications import Notification
from att_jm.domain.scheduler import Scheduler
from att_jm.domain.seals import Ledger
from att_jm.log.messages import event_message, event_type, record_message
from att_jm.log.records import AGGREGATES, EVENT_TOPICS, dashed, decode, topic_type
from att_jm.log.rows import Row
from att_jm.store import JobManagerApp

AT = datetime(2026, 3, 2, 8, 0, 1, 234567, tzinfo=UTC)


def event_classes() -> list[Any]:
    return [value for aggregate in AGGREGATES for value in vars(aggregate).values()
            if isinstance(value, type) and "." in str(getattr(value, "TOPIC", ""))]


@pytest.mark.parametrize("cls", event_classes(), ids=lambda c: c.TOPIC)
def test_the_type_of_a_stored_topic_is_the_type_the_service_publishes(cls: Any) -> None:
    event = object.__new__(cls)
    assert topic_type(cls.TOPIC) == event_type(event)


def test_every_stored_event_type_is_known_including_the_seals() -> None:
    assert "ledger.sealed" in EVENT_TOPICS
    assert "execution.removed_from_queue" in EVENT_TOPICS
    assert "scheduler.created" in EVENT_TOPICS  # stored as it is
    assert "job.created" not in EVENT_TOPICS  # only the base of job.added


def live_events() -> list[Any]:
    job = Job.add(JobSpec("ipx", "ipx-update", "up", {"a.b": True}, "x={c}"), "alice", AT)
    job.update({"enabled": False}, "bob", AT)
    entry = Execution.enqueue(execution_id("n", "ipx"), "ipx", "ipx-update", "x=1", "up", "n",
                              300.0, "channel-manager", AT)
    entry.start(AT)
    entry.fail("exit code 1: no", 1, 0.5, AT, timed_out=False)
    entry.reexecute("carol", AT)
    notification = Notification.receive("n", "up", {"id": "n", "c": 1}, [], [], AT)
    scheduler = Scheduler.create(AT)
    scheduler.change_settings(0.0, None, None, "alice", AT)
    ledger = Ledger.create(AT)
    ledger.seal(9, "", "aa" * 32, 1, [[9, 9]], "00000000", AT)
    return [*job.collect_events(), *entry.collect_events(), *notification.collect_events(),
            *scheduler.collect_events(), *ledger.collect_events()]


def test_a_decoded_row_is_public_exactly_like_the_published_event() -> None:
    app = JobManagerApp(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    for position, event in enumerate(live_events(), start=1):
        stored = app.mapper.to_stored_event(event)
        row = Row(position, event.originator_id.hex, stored.originator_version, stored.topic,
                  stored.state)
        record = decode(row)
        assert record_message(record) == event_message(position, event)
        assert record.aggregate_id == str(event.originator_id)


def test_an_undecodable_state_names_its_position() -> None:
    with pytest.raises(ValueError, match="position 4: unreadable"):
        decode(Row(4, uuid4().hex, 1, "att_jm:Job.Added", b"{not json"))
    with pytest.raises(ValueError, match="position 5"):
        decode(Row(5, uuid4().hex, 1, "att_jm:Job.Added", b"[1, 2]"))


def test_stored_ids_read_as_dashed_uuids() -> None:
    key = uuid4()
    assert dashed(key.hex) == str(key)
    assert dashed("not-a-uuid") == "not-a-uuid"
