"""An orjson transcoder for the event store, byte-compatible with eventsourcing's JSON one.

Events hold only JSON values plus the event `timestamp` (a datetime); snapshots hold
datetimes one level down, in their `state`, in the fields the code sets to datetimes
(`TYPED_STATE_FIELDS`). Only those places are looked at when decoding, so a user's JSON that
happens to be `{"_type_": ..., "_data_": ...}` (a notification's payload, a job's `match`,
in an event or in a snapshot) is never mistaken for a typed value: it is given back as it
was stored.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import orjson
from eventsourcing.persistence import Transcoder

from att_jm.domain.executions import Execution
from att_jm.domain.jobs import Job
from att_jm.domain.notifications import CommandRecord, Notification, Rejection
from att_jm.domain.scheduler import Scheduler
from att_jm.domain.seals import Ledger

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS

#: The library's own fields of every aggregate's state (datetimes).
_LIBRARY_FIELDS: Final = frozenset({"_created_on", "_modified_on"})
#: Aggregate topic -> the fields of its state (what a snapshot holds: `vars(aggregate)`) that
#: the code sets to typed values (datetimes). Every other field holds JSON values, some of
#: them a user's (`match`, `payload`, `reply`), and is decoded as the JSON it is. An aggregate
#: field set to a datetime (or a Decimal, a UUID) must be listed here, or its snapshot would
#: load it as a `{"_type_": ..., "_data_": ...}` dict (tests/unit/test_snapshot_lookalikes.py
#: checks the domain's code against this list).
TYPED_STATE_FIELDS: Final[dict[str, frozenset[str]]] = {
    Job.TOPIC: _LIBRARY_FIELDS | {"created_at", "updated_at"},
    Execution.TOPIC: _LIBRARY_FIELDS | {"started_at", "finished_at"},
    Scheduler.TOPIC: _LIBRARY_FIELDS | {"last_finished_at"},
    Ledger.TOPIC: _LIBRARY_FIELDS,
    Notification.TOPIC: _LIBRARY_FIELDS,
    Rejection.TOPIC: _LIBRARY_FIELDS,
    CommandRecord.TOPIC: _LIBRARY_FIELDS,
}
#: A snapshot of an aggregate topic not listed: any field one of ours sets to a typed value.
_ANY_TYPED_FIELD: Final = frozenset().union(*TYPED_STATE_FIELDS.values())


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
    """Encodes event state with orjson; decodes typed values only where the code stores
    them: the top-level `timestamp`, and a snapshot's `TYPED_STATE_FIELDS`."""

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
            topic = state.get("topic")
            if type(topic) is str:  # a snapshot (`topic`: its aggregate's): only its typed
                # fields; `match` is what the operator gave, whatever it looks like
                fields = TYPED_STATE_FIELDS.get(topic, _ANY_TYPED_FIELD)
                for key in fields & inner.keys():
                    value = inner[key]
                    if type(value) is dict:
                        inner[key] = _decode_value(value)
            else:  # not a snapshot (no event of this service has a `state`): as the
                # library's transcoder reads it, one level down
                for key, value in inner.items():
                    if type(value) is dict:
                        inner[key] = _decode_value(value)
        return state
