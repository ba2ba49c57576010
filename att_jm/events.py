"""The public form of stored events: their type names and the `events/{type}` message."""

from __future__ import annotations

import re
from typing import Any

from att_jm.domain.times import iso

_HIDDEN = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def event_type(event: Any) -> str:
    """`att_jm:Execution.RemovedFromQueue` -> `execution.removed_from_queue`."""
    topic = str(getattr(type(event), "TOPIC", type(event).__qualname__))
    aggregate, _, name = topic.rpartition(":")[2].partition(".")
    return f"{_CAMEL.sub('_', aggregate).lower()}.{_CAMEL.sub('_', name).lower()}"


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
