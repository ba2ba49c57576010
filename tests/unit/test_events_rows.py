"""`row_message`: the public message of a stored row equals `event_message` of its event.

Rows are made here as the store makes them (eventsourcing's Mapper with the orjson
transcoder), without a database; tests/integration/test_relay.py checks every event type
of a real log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from eventsourcing.persistence import Mapper

from att_jm.domain.executions import Execution
from att_jm.domain.notifications import Notification, Rejection
from att_jm.domain.scheduler import Scheduler
from att_jm.events import StoredRow, event_message, event_type, row_message, row_type
from att_jm.transcoder import OrjsonTranscoder

AT = datetime(2026, 7, 14, 9, 30, 15, 123456, tzinfo=UTC)
MAPPER: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder())


def stored_row(position: int, event: Any) -> StoredRow:
    """The row the store writes for `event` (originator id as 32 hex digits)."""
    stored = MAPPER.to_stored_event(event)
    return (position, UUID(str(stored.originator_id)).hex, stored.originator_version,
            stored.topic, stored.state)


def same_message(position: int, event: Any) -> dict[str, Any]:
    message = row_message(stored_row(position, event))
    assert orjson.dumps(message) == orjson.dumps(event_message(position, event))
    return message


def test_a_creation_event_loses_its_originator_topic_and_keeps_its_field_order() -> None:
    execution = Execution.enqueue(uuid4(), "backup", "backup.sh", "run né 日本", "alarm", "n-1",
                                  300.0, "channel-manager", AT)
    (event,) = execution.collect_events()
    message = same_message(7, event)
    assert message["type"] == "execution.enqueued"
    assert message["at"] == "2026-07-14T09:30:15.123Z"
    assert list(message["data"]) == [
        "job", "script", "command", "trigger", "notification_id", "timeout_seconds", "actor",
        "aggregate_id", "version",
    ]
    assert message["data"]["aggregate_id"] == str(execution.id)
    assert message["data"]["version"] == 1


def test_later_events_of_an_aggregate_carry_their_version() -> None:
    execution = Execution.enqueue(uuid4(), "backup", "backup.sh", "c", "alarm", "n-1", 30.0,
                                  "channel-manager", AT)
    execution.start(AT + timedelta(seconds=1))
    events = execution.collect_events()
    messages = [same_message(n, event) for n, event in enumerate(events, start=1)]
    assert [m["type"] for m in messages] == ["execution.enqueued", "execution.started"]
    assert [m["data"]["version"] for m in messages] == [1, 2]


def test_json_payloads_and_lookalikes_of_typed_values_pass_through_unchanged() -> None:
    payload = {"id": "n-1", "x": [1, 2.5, None, True], "t": {"_type_": "datetime_iso",
               "_data_": "2020-01-01T00:00:00+00:00"}, "deep": {"a": {"b": ["ü"]}}}
    notification = Notification.receive("n-1", "alarm", payload, [], [], AT)
    (event,) = notification.collect_events()
    assert same_message(1, event)["data"]["payload"] == payload


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (AT, "2026-07-14T09:30:15.123Z"),
        (AT.replace(microsecond=0), "2026-07-14T09:30:15.000Z"),  # stored without a fraction
        (AT.replace(microsecond=999_999), "2026-07-14T09:30:15.999Z"),  # truncated, not rounded
        (AT.replace(microsecond=1000), "2026-07-14T09:30:15.001Z"),
        (AT.astimezone(timezone(timedelta(hours=2))), "2026-07-14T09:30:15.123Z"),  # an offset
        (datetime(2026, 12, 31, 23, 59, 59, 999_000, tzinfo=timezone(timedelta(hours=-5))),
         "2027-01-01T04:59:59.999Z"),
    ],
)
def test_at_is_the_timestamp_as_iso_writes_it_whatever_form_it_was_stored_in(
    at: datetime, text: str
) -> None:
    rejection = Rejection.reject(uuid4(), "notification", "t", "invalid", "bad", b"x", "cm", at)
    (event,) = rejection.collect_events()
    assert same_message(3, event)["at"] == text


def test_every_event_of_a_scheduler_created_in_memory_converts() -> None:
    scheduler = Scheduler.create(AT)
    (event,) = scheduler.collect_events()
    assert same_message(1, event)["type"] == "scheduler.created"


def test_types_come_from_the_stored_topic_and_unknown_topics_follow_the_same_rule() -> None:
    assert row_type("att_jm:Execution.RemovedFromQueue") == "execution.removed_from_queue"
    assert row_type("att_jm:CommandRecord.Handled") == "command_record.handled"
    assert row_type("later:FutureThing.SomethingHappened") == "future_thing.something_happened"
    assert row_type("later:FutureThing.SomethingHappened") == "future_thing.something_happened"
    rejection = Rejection.reject(uuid4(), "notification", "t", "invalid", "bad", b"x", "cm", AT)
    (event,) = rejection.collect_events()
    assert event_type(event) == row_type(stored_row(1, event)[3]) == "rejection.rejected"
