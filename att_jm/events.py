"""The public form of stored events: their type names and the `events/{type}` message.

Two ways to the same message: `event_message` from a live (or decoded) domain event, and
`row_message` from a stored row alone (what the events relay publishes from the log).
Both give, byte for byte after `orjson.dumps`, `{"position", "type", "at", "data"}`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from att_jm.audit.records import EVENT_TOPICS, dashed, topic_type
from att_jm.domain.times import iso
from projections.views import stored_iso

_HIDDEN = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})

#: A row as `SELECT rowid, originator_id, originator_version, topic, state FROM stored_events`
#: gives it (originator id as 32 hex digits, state the transcoder's JSON).
StoredRow = tuple[int, str, int, str, bytes]

#: Stored topic -> public type, for every event class; another topic is added when first seen.
_TYPES: Final[dict[str, str]] = {topic: name for name, topic in EVENT_TOPICS.items()}


def event_type(event: Any) -> str:
    """`att_jm:Execution.RemovedFromQueue` -> `execution.removed_from_queue`."""
    return row_type(str(getattr(type(event), "TOPIC", type(event).__qualname__)))


def row_type(topic: str) -> str:
    """The public type of a stored topic (a dictionary look-up for the known ones)."""
    name = _TYPES.get(topic)
    if name is None:
        name = _TYPES[topic] = topic_type(topic)
    return name


def event_data(event: Any) -> dict[str, Any]:
    """The event's own fields, plus the id and version of the aggregate it belongs to."""
    data = {key: value for key, value in vars(event).items() if key not in _HIDDEN}
    data["aggregate_id"] = str(event.originator_id)
    data["version"] = event.originator_version
    return data


def event_message(position: int, event: Any) -> dict[str, Any]:
    """`{"position", "type", "at", "data"}` as published on `P/job-manager/events/{type}`."""
    return {
        "position": position,
        "type": event_type(event),
        "at": iso(event.timestamp),
        "data": event_data(event),
    }


def row_message(row: StoredRow) -> dict[str, Any]:
    """`event_message` of a stored row, without building the event: the stored state is the
    event's `__dict__` minus its id and version, in field order, so after dropping the
    timestamp (-> `at`, from its stored text) and `originator_topic` it is `data`."""
    position, originator_id, version, topic, state = row
    data: dict[str, Any] = orjson.loads(state)
    at = stored_iso(data.pop("timestamp"))
    data.pop("originator_topic", None)
    data["aggregate_id"] = dashed(originator_id)
    data["version"] = version
    return {"position": position, "type": row_type(topic), "at": at, "data": data}
