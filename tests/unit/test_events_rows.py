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
from att_jm.log.messages import (
    EVENT_MESSAGE_MAX_BYTES,
    StoredRow,
    cut_message,
    event_message,
    event_type,
    row_message,
    row_type,
    undecodable_message,
)
from att_jm.log.rows import UndecodableText
from att_jm.log.transcoder import OrjsonTranscoder

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
        "retry", "aggregate_id", "version",
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


# Rows no message can be made of, and messages too large to publish whole -------------------


def rejection_row(position: int = 9, **state_changes: Any) -> StoredRow:
    rejection = Rejection.reject(uuid4(), "notification", "t", "invalid", "bad", b"x", "cm", AT)
    (event,) = rejection.collect_events()
    position, originator, version, topic, state = stored_row(position, event)
    changed = {**orjson.loads(state), **state_changes}
    return (position, originator, version, topic, orjson.dumps(changed))


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (b"{not json", "state is not JSON"),
        (b"", "state is not JSON"),
        (None, "state is not JSON"),
        (b"\xff\xfe", "state is not JSON"),
        (b"[1, 2]", "state is not a JSON object"),
        (b'"text"', "state is not a JSON object"),
        (b'{"a": 1}', "state has no timestamp"),
        (b'{"timestamp": {"_type_": "datetime_iso", "_data_": "garbage"}}',
         "timestamp does not parse"),
        (b'{"timestamp": {"_type_": "datetime_iso", "_data_": 5}}', "timestamp does not parse"),
        (b'{"timestamp": {"_type_": "datetime_iso"}}', "timestamp does not parse"),
        (b'{"timestamp": [1]}', "timestamp does not parse"),
    ],
)
def test_a_row_no_message_can_be_made_of_gets_an_error_message_with_its_reason(
    state: Any, reason: str,
) -> None:
    row = (12, "ab" * 16, 3, "att_jm:Rejection.Rejected", state)
    with pytest.raises(Exception) as raised:  # any error
        row_message(row)
    assert undecodable_message(row, raised.value) == {
        "position": 12, "type": "rejection.rejected", "at": None, "data": None, "error": reason}


def test_other_broken_columns_are_named_too() -> None:
    good = rejection_row()
    for row, reason in (
        ((good[0], 42, *good[2:]), "originator id is not text"),
        ((*good[:3], good[3], UndecodableText("topic")), "topic is not UTF-8 text"),
    ):
        with pytest.raises(Exception) as raised:  # any error
            row_message(row)  # type: ignore[arg-type]  # a forged row: the point of the test
        assert undecodable_message(row, raised.value)["error"] == reason


def test_forged_topics_give_one_safe_topic_level_as_type() -> None:
    assert row_type("evil:Th/ing+#.Wh\u00e9n") == "th_ing__.wh_n"
    assert row_type(b"att_jm:Bytes.Topic") == "bytes.topic"  # type: ignore[arg-type]
    assert row_type(None) == "none."  # type: ignore[arg-type]
    assert len(row_type("x:" + "A" * 500 + ".B")) == 100
    assert row_type("") == "."


def test_a_message_over_the_limit_has_its_strings_cut_then_only_its_identity() -> None:
    big = "b" * 5000
    message = {"position": 4, "type": "notification.received", "at": "2026-01-01T00:00:00.000Z",
               "data": {"payload": {"id": "n", "x": [big, 1, {"y": big}]}, "short": "s",
                        "aggregate_id": "a-b", "version": 2}}
    marker = "b" * 1024 + "\u2026[cut: 3976 more characters]"
    cut = cut_message(message, 10_000)
    assert cut is not None
    assert orjson.loads(cut) == {**message, "cut": True, "data": {
        "payload": {"id": "n", "x": [marker, 1, {"y": marker}]}, "short": "s",
        "aggregate_id": "a-b", "version": 2}}
    assert list(orjson.loads(cut)) == ["position", "type", "at", "data", "cut"]
    many = {**message, "data": {"items": list(range(5000)), "aggregate_id": "a-b", "version": 2}}
    short = cut_message(many, 10_000)
    assert short is not None
    assert orjson.loads(short) == {**message, "data": {"aggregate_id": "a-b", "version": 2},
                                   "cut": True}
    assert cut_message(many, 50) is None  # not even that fits
    assert EVENT_MESSAGE_MAX_BYTES == 2_162_688
