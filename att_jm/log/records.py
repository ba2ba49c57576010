"""Stored rows decoded without event classes: their public types, ids, times and `Record`s.

Events hold only JSON values besides their timestamp, so a stored state decoded as plain
JSON is already the event's data (`att_jm.log.messages.record_message` makes a `Record`'s
public message).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from att_jm.domain.executions import Execution
from att_jm.domain.jobs import Job
from att_jm.domain.notifications import CommandRecord, Notification, Rejection
from att_jm.domain.scheduler import Scheduler
from att_jm.domain.seals import Ledger
from att_jm.domain.times import iso
from att_jm.log.codec import loads_state
from att_jm.log.rows import Row

_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")
AGGREGATES: Final = (Job, Execution, Notification, Rejection, CommandRecord, Scheduler, Ledger)


@functools.lru_cache(maxsize=256)
def topic_type(topic: str) -> str:
    """`att_jm:Execution.RemovedFromQueue` -> `execution.removed_from_queue` (as `events/`)."""
    aggregate, _, name = topic.rpartition(":")[2].partition(".")
    return f"{_CAMEL.sub('_', aggregate).lower()}.{_CAMEL.sub('_', name).lower()}"


def _event_topics() -> dict[str, str]:
    """Public type -> topic of every event class that gets stored (not the bases of others)."""
    classes = [
        value for aggregate in AGGREGATES for value in vars(aggregate).values()
        if isinstance(value, type) and "." in str(getattr(value, "TOPIC", ""))
    ]
    stored = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
    topics = [str(getattr(c, "TOPIC", "")) for c in stored]
    return dict(sorted((topic_type(topic), topic) for topic in topics))


EVENT_TOPICS: Final = _event_topics()  # public type -> stored topic, for every event class


def dashed(stored_id: str) -> str:
    """A stored originator id (32 hex digits) in the usual UUID text form."""
    h = stored_id
    if len(h) == 32:
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return h


def stored_iso(value: Any) -> str:
    """A stored timestamp (`{"_type_": "datetime_iso", "_data_": ...}`) as `iso()` writes it."""
    text = value["_data_"] if isinstance(value, dict) else str(value)
    # Fast path for what this service stores: `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`.
    if len(text) in (25, 32) and text.endswith("+00:00") and text[10] == "T":
        millis = text[20:23] if len(text) == 32 else "000"
        return f"{text[:19]}.{millis}Z"
    return iso(datetime.fromisoformat(text))


def stored_time(value: Any) -> datetime:
    """The datetime of a stored `{"_type_": "datetime_iso", "_data_": ...}` value."""
    return datetime.fromisoformat(value["_data_"] if isinstance(value, dict) else str(value))


@dataclass(frozen=True)
class Record:
    """A stored row decoded: its position, type, time, aggregate and state."""

    position: int
    topic: str
    aggregate_id: str
    version: int
    at: datetime
    state: dict[str, Any]

    @property
    def type(self) -> str:
        return topic_type(self.topic)

    @property
    def actor(self) -> str | None:
        actor = self.state.get("actor")
        return actor if isinstance(actor, str) else None


def decode(row: Row) -> Record:
    """The Record of a stored row; ValueError when its state is not an event's JSON."""
    try:
        state = loads_state(row.state)
        at = stored_time(state["timestamp"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"position {row.position}: unreadable event state ({error})") from None
    if not isinstance(state, dict):
        raise ValueError(f"position {row.position}: event state is not a JSON object")
    return Record(row.position, row.topic, dashed(row.originator_id), row.originator_version,
                  at, state)
