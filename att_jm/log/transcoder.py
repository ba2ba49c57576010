"""An orjson transcoder for the event store, byte-compatible with eventsourcing's JSON one.

Events hold only JSON values plus the event `timestamp` (a datetime); snapshots
hold datetimes one level down, in their `state`. Only those places are looked
at when decoding, so a notification payload that happens to contain
`{"_type_": ..., "_data_": ...}` is never mistaken for a typed value.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Transcoder

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


_last: tuple[datetime | None, dict[str, str]] = (None, {})


def _default(obj: Any) -> Any:
    global _last  # noqa: PLW0603 -- a one-entry cache, replaced as a whole (thread-safe)
    if isinstance(obj, datetime):
        last = _last  # the events of one batch share one timestamp object
        if last[0] is obj:
            return last[1]
        typed = {"_type_": "datetime_iso", "_data_": obj.isoformat()}
        _last = (obj, typed)
        return typed
    if isinstance(obj, Decimal):
        return {"_type_": "decimal_str", "_data_": str(obj)}
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in an event")


def _decode_value(value: Any) -> Any:
    if type(value) is dict and len(value) == 2 and "_type_" in value and "_data_" in value:
        kind = value["_type_"]
        if kind == "datetime_iso":
            return datetime.fromisoformat(value["_data_"])
        if kind == "uuid_hex":
            return UUID(value["_data_"])
        if kind == "decimal_str":
            return Decimal(value["_data_"])
    return value


class OrjsonTranscoder(Transcoder):
    """Encodes event state with orjson; decodes typed values at the top level and in `state`."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_default, option=_OPTIONS)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        if type(state) is not dict:
            return state
        # Only the timestamp at the top level: any other top-level field holds user JSON (a
        # job's `match` may be {"_type_": "uuid_hex", "_data_": "x"}, which must not decode).
        timestamp = state.get("timestamp")
        if type(timestamp) is dict:
            state["timestamp"] = _decode_value(timestamp)
        inner = state.get("state")
        if type(inner) is dict:
            for key, value in inner.items():
                if type(value) is dict:
                    inner[key] = _decode_value(value)
        return state
