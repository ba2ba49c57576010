"""The public form of stored events: their type names and the `events/{type}` message.

One builder, `public_message`, makes `{"position", "type", "at", "data"}` (`data`: the event's
own fields plus `aggregate_id` and `version`); three callers feed it what they have:
`row_message` a stored row alone (what the events relay publishes from the log: a fast path
that decodes the state once and drops the two stored-only fields in place),
`record_message` a decoded `Record` (the audit tool), `event_message` a live (or decoded)
domain event. All three give, byte for byte after `orjson.dumps`, the same message.

What the relay publishes instead when that is not possible:
- a row no message can be made of (its state is not JSON, not an object, its timestamp does
  not parse, ...): `undecodable_message`, `{"position", "type", "at": null, "data": null,
  "error": "<short reason>"}`;
- a message whose JSON is over EVENT_MESSAGE_MAX_BYTES (or over what the broker takes):
  `cut_message`, the strings inside `data` cut as the views cut cells
  (`att_jm.domain.limits.cut_text`) plus a top-level `"cut": true`; if still too large, `data`
  is only `{"aggregate_id", "version"}`. The log keeps the whole event.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from att_jm.domain.limits import CELL_MAX_CHARS, cut_text
from att_jm.domain.times import iso
from att_jm.log.codec import UndecodableState, loads_state
from att_jm.log.records import EVENT_TOPICS, Record, dashed, stored_iso, topic_type
from att_jm.log.rows import UndecodableText

#: An event's fields that are not its data: the aggregate's id and version (`data` names them
#: `aggregate_id` and `version`), its time (`at`) and the aggregate's class.
_HIDDEN = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})

#: The largest event message published whole, in bytes of JSON: a stored event's state is
#: at most 2 MiB (the service refuses a larger one), plus 64 KiB for the envelope
#: (position, type, at, aggregate_id, version). A larger one is published cut.
EVENT_MESSAGE_MAX_BYTES: Final = 2 * 1024 * 1024 + 64 * 1024
#: The longest public type; a type is made of `a-z 0-9 _ . -` only (one topic level).
MAX_TYPE_CHARS: Final = 100
_NOT_IN_TYPE: Final = re.compile(r"[^a-z0-9_.\-]")
_TYPES_KEPT: Final = 10_000  # distinct stored topics remembered (a forged log has any number)

#: A row as `SELECT rowid, originator_id, originator_version, topic, state FROM stored_events`
#: gives it (originator id as 32 hex digits, state the transcoder's JSON).
StoredRow = tuple[int, str, int, str, bytes]

#: Stored topic -> public type, for every event class; another topic is added when first seen.
_TYPES: Final[dict[Any, str]] = {topic: name for name, topic in EVENT_TOPICS.items()}


def event_type(event: Any) -> str:
    """`att_jm:Execution.RemovedFromQueue` -> `execution.removed_from_queue`."""
    return row_type(str(getattr(type(event), "TOPIC", type(event).__qualname__)))


def row_type(topic: str) -> str:
    """The public type of a stored topic (a dictionary look-up for the known ones).

    Whatever the stored topic (a forged row may hold any text, or no text), the type is one
    MQTT topic level: at most MAX_TYPE_CHARS of `a-z 0-9 _ . -`, any other character `_`.
    """
    name = _TYPES.get(topic)
    if name is None:
        text = topic.decode("utf-8", "replace") if isinstance(topic, bytes) else str(topic)
        name = _NOT_IN_TYPE.sub("_", topic_type(text))[:MAX_TYPE_CHARS] or "unknown"
        if len(_TYPES) < _TYPES_KEPT:
            _TYPES[topic] = name
    return name


def public_message(
    position: int, public_type: str, at: str, data: dict[str, Any], aggregate_id: str,
    version: int,
) -> dict[str, Any]:
    """`{"position", "type", "at", "data"}` as published on `P/job-manager/events/{type}`:
    `data` (the event's own fields, in field order; taken, not copied) gets the id and
    version of the aggregate the event belongs to."""
    data["aggregate_id"] = aggregate_id
    data["version"] = version
    return {"position": position, "type": public_type, "at": at, "data": data}


def event_message(position: int, event: Any) -> dict[str, Any]:
    """The public message of a live (or decoded) domain event stored at `position`."""
    fields = {key: value for key, value in vars(event).items() if key not in _HIDDEN}
    return public_message(position, event_type(event), iso(event.timestamp), fields,
                          str(event.originator_id), event.originator_version)


def event_data(event: Any) -> dict[str, Any]:
    """The `data` of `event_message`: the event's own fields, its aggregate's id and version."""
    data: dict[str, Any] = event_message(0, event)["data"]
    return data


def record_message(record: Record) -> dict[str, Any]:
    """The public message of a decoded stored row (the audit tool's `log --json`, traces)."""
    fields = {key: value for key, value in record.state.items() if key not in _HIDDEN}
    return public_message(record.position, record.type, iso(record.at), fields,
                          record.aggregate_id, record.version)


def row_message(row: StoredRow) -> dict[str, Any]:
    """The public message of a stored row, without building the event (the relay's path):
    the stored state is the event's `__dict__` minus its id and version, in field order, so
    after dropping the timestamp (-> `at`, from its stored text) and `originator_topic` it
    is the event's own fields."""
    position, originator_id, version, topic, state = row
    data: dict[str, Any] = loads_state(state)
    at = stored_iso(data.pop("timestamp"))
    data.pop("originator_topic", None)
    return public_message(position, row_type(topic), at, data, dashed(originator_id), version)


def undecodable_reason(row: tuple[Any, ...], error: BaseException) -> str:
    """Why `row_message` could not make a message of `row` (`error`: what it raised), short."""
    _, originator_id, version, _, state = row
    if isinstance(state, UndecodableText):
        return f"{state.column} is not UTF-8 text"
    try:
        data = loads_state(state)
    except UndecodableState:
        return "state does not decode"
    except (orjson.JSONDecodeError, TypeError):
        return "state is not JSON"
    problem = _state_problem(data)
    if problem is None and not isinstance(originator_id, str):
        problem = "originator id is not text"
    if problem is None and not isinstance(version, int):
        problem = "version is not an integer"
    return problem or f"{type(error).__name__}: {error}"[:200]


def _state_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "state is not a JSON object"
    if "timestamp" not in data:
        return "state has no timestamp"
    try:
        stored_iso(data["timestamp"])
    except Exception:  # noqa: BLE001 -- whatever a forged value makes the parser raise
        return "timestamp does not parse"
    return None


def undecodable_message(row: tuple[Any, ...], error: BaseException) -> dict[str, Any]:
    """What the relay publishes for a stored row no message can be made of:
    `{"position", "type", "at": null, "data": null, "error": "<short reason>"}`."""
    return {"position": row[0], "type": row_type(row[3]), "at": None, "data": None,
            "error": undecodable_reason(row, error)}


def _cut_strings(value: Any) -> Any:
    """`value` with every string inside it longer than CELL_MAX_CHARS cut (`cut_text`)."""
    if isinstance(value, str):
        return cut_text(value) if len(value) > CELL_MAX_CHARS else value
    if isinstance(value, dict):
        return {key: _cut_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut_strings(item) for item in value]
    return value


def cut_message(message: dict[str, Any], limit: int) -> bytes | None:
    """The JSON of an event message over `limit` bytes, made to fit: the strings inside its
    `data` cut (1,024 characters + marker) and `"cut": true` added; if that is still over,
    `data` reduced to `{"aggregate_id", "version"}`. None when even that does not fit."""
    data = message.get("data")
    if isinstance(data, dict):
        try:
            payload = orjson.dumps({**message, "data": _cut_strings(data), "cut": True})
        except RecursionError:  # nested deeper than Python recurses: go to the short form
            payload = b""
        if payload and len(payload) <= limit:
            return payload
        short = {"aggregate_id": data.get("aggregate_id"), "version": data.get("version")}
        payload = orjson.dumps({**message, "data": short, "cut": True})
    else:
        payload = orjson.dumps(message)
    return payload if len(payload) <= limit else None
