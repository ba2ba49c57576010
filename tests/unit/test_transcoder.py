"""The orjson transcoder: round trips, typed values only where events keep them, and
compatibility with eventsourcing's JSONTranscoder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    UUIDAsHex,
)

from att_jm.log.transcoder import OrjsonTranscoder

AT = datetime(2026, 7, 14, 9, 30, 15, 123456, tzinfo=UTC)
TYPED_LOOKALIKE = {"_type_": "datetime_iso", "_data_": "2020-01-01T00:00:00+00:00"}


def library_transcoder() -> JSONTranscoder:
    """The JSONTranscoder as eventsourcing's Application configures it."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


def typical_event_state() -> dict[str, Any]:
    """The state of an event as the mapper hands it over (originator id/version taken out)."""
    return {
        "timestamp": AT,
        "originator_topic": "att_jm:Execution",
        "job": "backup",
        "script": "backup.sh",
        "command": "run --site=\"paris\" {literal} né 日本 \U0001f600 tab\there\nline\\",
        "trigger": "alarm.raised",
        "notification_id": "n-1",
        "timeout_seconds": 300.0,
        "attempt": 2,
        "feedback": None,
        "enabled": True,
        "timed_out": False,
        "match": {"site": "paris", "level": 3, "up": True, "ratio": 0.25, "nested": {"a": [1]}},
        "enqueued": [{"job": "backup", "execution_id": "0b7c4c1e-7d1e-5a36-8f0e-2f1f9c0f0a11"}],
        "skipped": [],
        "actor": "channel-manager",
    }


def test_event_state_round_trips_with_its_datetime_timestamp() -> None:
    transcoder = OrjsonTranscoder()
    state = typical_event_state()
    decoded = transcoder.decode(transcoder.encode(state))
    assert decoded == state
    assert isinstance(decoded["timestamp"], datetime)
    assert decoded["timestamp"].utcoffset() == timedelta(0)


def test_a_timestamp_with_another_offset_keeps_its_instant() -> None:
    transcoder = OrjsonTranscoder()
    at = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert transcoder.decode(transcoder.encode({"timestamp": at}))["timestamp"] == at


def test_snapshot_state_with_nested_datetimes_round_trips() -> None:
    transcoder = OrjsonTranscoder()
    snapshot = {
        "timestamp": AT,
        "topic": "att_jm:Scheduler",
        "state": {
            "_created_on": AT - timedelta(days=3),
            "_modified_on": AT,
            "interval_seconds": 5.0,
            "cleanup": {
                "executed": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 3600.0},
                "failed": {"max_rows": None, "max_age_days": 1.5, "every_seconds": 60.0},
            },
            "running": None,
            "last_finished_at": AT - timedelta(seconds=1),
            "last_cleanup": {"executed": AT.isoformat()},
        },
    }
    decoded = transcoder.decode(transcoder.encode(snapshot))
    assert decoded == snapshot
    assert isinstance(decoded["state"]["last_finished_at"], datetime)
    assert isinstance(decoded["state"]["last_cleanup"]["executed"], str)


def test_a_typed_lookalike_inside_a_notification_payload_is_left_alone() -> None:
    transcoder = OrjsonTranscoder()
    payload = {
        "id": "n-1",
        "when": dict(TYPED_LOOKALIKE),
        "deeper": {"x": {"_type_": "uuid_hex", "_data_": "not-a-uuid"}},
        "list": [dict(TYPED_LOOKALIKE)],
    }
    state = {"timestamp": AT, "payload": payload, "trigger": "t"}
    decoded = transcoder.decode(transcoder.encode(state))
    assert decoded["payload"] == payload
    assert decoded["payload"]["when"] == TYPED_LOOKALIKE


@pytest.mark.parametrize(
    "lookalike",
    [
        TYPED_LOOKALIKE,
        {"_type_": "uuid_hex", "_data_": "not-a-uuid"},  # would raise while decoding
        {"_type_": "decimal_str", "_data_": "1.5"},
    ],
)
def test_a_typed_lookalike_given_as_a_jobs_match_is_left_alone(lookalike: dict[str, str]) -> None:
    # `match` sits at the top level of Job.Added: an operator may give any JSON object there,
    # and the job must still load (a decoding error here would stop the service from starting).
    transcoder = OrjsonTranscoder()
    state = {"timestamp": AT, "name": "j", "match": dict(lookalike)}
    assert transcoder.decode(transcoder.encode(state)) == state


def test_a_decimal_round_trips() -> None:
    transcoder = OrjsonTranscoder()
    state = {"timestamp": AT, "state": {"amount": Decimal("1.10")}}
    assert transcoder.decode(transcoder.encode(state))["state"]["amount"] == Decimal("1.10")


def test_tuples_and_sets_are_stored_as_lists() -> None:
    transcoder = OrjsonTranscoder()
    assert transcoder.decode(transcoder.encode({"a": (1, 2), "b": frozenset({3})})) == {
        "a": [1, 2], "b": [3]}


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError) as caught:
        OrjsonTranscoder().encode({"x": object()})
    assert "cannot store a object in an event" in str(caught.value.__cause__)


def test_non_dict_documents_decode_as_they_are() -> None:
    transcoder = OrjsonTranscoder()
    assert transcoder.decode(b"[1,2]") == [1, 2]
    assert transcoder.decode(b'"x"') == "x"


# Compatibility with eventsourcing's JSONTranscoder ------------------------------------------


def test_a_typical_event_state_encodes_to_the_same_bytes_as_the_library() -> None:
    state = typical_event_state()
    assert OrjsonTranscoder().encode(state) == library_transcoder().encode(state)


def test_a_snapshot_encodes_to_the_same_bytes_as_the_library() -> None:
    state = {"timestamp": AT, "topic": "att_jm:Scheduler",
             "state": {"_created_on": AT, "running": "e1", "interval_seconds": 0.5}}
    assert OrjsonTranscoder().encode(state) == library_transcoder().encode(state)


def test_each_transcoder_reads_what_the_other_wrote() -> None:
    ours, library = OrjsonTranscoder(), library_transcoder()
    state = typical_event_state()
    assert ours.decode(library.encode(state)) == state
    assert library.decode(ours.encode(state)) == state


def test_the_library_typed_values_at_the_top_level_and_in_state_are_read() -> None:
    library = library_transcoder()
    uid = UUID("0b7c4c1e-7d1e-5a36-8f0e-2f1f9c0f0a11")
    state = {"timestamp": AT, "state": {"_id": uid, "price": Decimal("2.5"), "at": AT}}
    assert OrjsonTranscoder().decode(library.encode(state)) == state


@pytest.mark.parametrize("value", [1e-7, 2.5e-5, 3e-9])
def test_small_floats_are_spelled_differently_but_read_back_the_same(value: float) -> None:
    ours, library = OrjsonTranscoder(), library_transcoder()
    state = {"timestamp": AT, "duration_seconds": value}
    assert ours.encode(state) != library.encode(state)  # 1e-07 (json) versus 1e-7 (orjson)
    assert library.decode(ours.encode(state)) == state
    assert ours.decode(library.encode(state)) == state


@pytest.mark.parametrize(
    "value",
    [0, -1, 2**63, 0.1, 300.0, 1e16, 1.5e300, -0.0, "", "\x7f\u2028\x1f\"\\/", "\U0001f600",
     None, True, [], {}, {"k": [None, False, 1.25]}],
)
def test_json_values_encode_to_the_same_bytes_as_the_library(value: Any) -> None:
    state = {"v": value}
    assert OrjsonTranscoder().encode(state) == library_transcoder().encode(state)
