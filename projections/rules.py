"""The view rules: how each stored event changes the rows of the views.

The rules are written once, against plain event data (the stored state as decoded JSON, or a
live event's fields, with `at`), and applied to an `Overlay`: an in-memory copy of the rows a
batch touches, over the SQLite tables (`projections.schema`). `Views` writes only the net
result of a batch (`projections.views`); a rule returns the views it changed.

Also here: what a rebuild from empty views may skip (`CREATED`, `FINAL`, `EXECUTION_VIEWS`,
used by `projections.rebuild`), and how live events and stored rows become rule input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import orjson
import structlog

from att_jm.domain.cleanup import ArchivePolicy, CleanupPolicy
from att_jm.domain.executions import FRONT_BASE
from att_jm.domain.limits import clamp_timeout
from att_jm.domain.retry import RetryPolicy
from att_jm.domain.scheduler import DEFAULT_INTERVAL_SECONDS, clamp_interval
from att_jm.domain.times import iso
from att_jm.log.backend import SQLITE, Dialect
from att_jm.log.codec import loads_state
from att_jm.log.records import stored_iso
from att_jm.vocabulary import VIEWS, EntryState
from projections.schema import COLUMNS, KEYS, Row

log = structlog.get_logger("att_jm.views")

Rule = Callable[["Overlay", int, str, dict[str, Any]], tuple[str, ...]]


def default_settings() -> dict[str, Any]:
    """The settings view before any settings event."""
    return {
        "interval_seconds": DEFAULT_INTERVAL_SECONDS,
        "executed_cleanup": CleanupPolicy().to_json(),
        "failed_cleanup": CleanupPolicy().to_json(),
        "archive": ArchivePolicy().to_json(),
    }


class Statements:
    """The overlay's statements in one dialect, built once: per table its row's read,
    delete and upsert; the settings' and the views' positions' upserts."""

    def __init__(self, d: Dialect) -> None:
        self.get: dict[str, str] = {}
        self.delete: dict[str, str] = {}
        self.put: dict[str, str] = {}
        for table, cols in COLUMNS.items():
            key = KEYS.get(table, "id")
            self.get[table] = d.q(f"SELECT {', '.join(cols)} FROM {table} WHERE {key} = ?")  # noqa: S608 -- fixed names
            self.delete[table] = d.q(f"DELETE FROM {table} WHERE {key} = ?")  # noqa: S608 -- fixed names
            self.put[table] = d.upsert(table, cols, key)
        self.settings = d.upsert("settings", ("key", "value"), "key",
                                 source="VALUES ('settings', ?)")
        self.positions = d.upsert("view_positions", ("view", "position"), "view")
        self.tracking = d.upsert("tracking", ("name", "position"), "name",
                                 source="VALUES ('views', ?)")


_STATEMENTS: Final = {SQLITE.name: Statements(SQLITE)}


def statements(d: Dialect) -> Statements:
    """The overlay's statements in dialect `d`."""
    found = _STATEMENTS.get(d.name)
    if found is None:
        found = _STATEMENTS[d.name] = Statements(d)
    return found


class Overlay:
    """The rows one batch touched, over the tables of the views (None = deleted)."""

    def __init__(self, db: Any, dialect: Dialect = SQLITE) -> None:
        self._db = db
        self._sql = statements(dialect)
        self.tables: dict[str, dict[str, Row | None]] = {name: {} for name in COLUMNS}
        self.settings: dict[str, Any] | None = None
        self.positions: dict[str, int] = {}

    def get(self, table: str, key: str) -> Row | None:
        rows = self.tables[table]
        if key in rows:
            return rows[key]
        found = self._db.execute(self._sql.get[table], (key,)).fetchone()
        row = None if found is None else dict(zip(COLUMNS[table], found, strict=True))
        rows[key] = row
        return row

    def put(self, table: str, key: str, row: Row | None) -> None:
        self.tables[table][key] = row

    def flush(self, cursor: Any) -> None:
        sql = self._sql
        for table, rows in self.tables.items():
            cols = COLUMNS[table]
            gone = [(k,) for k, row in rows.items() if row is None]
            kept = [tuple(row[c] for c in cols) for row in rows.values() if row is not None]
            if gone:
                cursor.executemany(sql.delete[table], gone)
            if kept:
                cursor.executemany(sql.put[table], kept)
        if self.settings is not None:
            cursor.execute(sql.settings, (orjson.dumps(self.settings).decode(),))
        if self.positions:
            cursor.executemany(sql.positions, list(self.positions.items()))


# The rules: (overlay, position, aggregate id, event data with "at") -> the views changed ------


def _job_row(name: str, fields: dict[str, Any], at: str) -> Row:
    return {
        "name": name, "script": fields["script"], "trigger": fields["trigger"],
        "match": _json(fields["match"]), "command": fields["command"],
        "timeout_seconds": clamp_timeout(fields["timeout_seconds"]),
        "enabled": int(fields["enabled"]), "created_at": at, "updated_at": at,
        "retry": _retry_json(fields.get("retry")),
    }


def _job_added(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    o.put("job_ids", aggregate, {"id": aggregate, "name": e["name"]})
    o.put("jobs", e["name"], _job_row(e["name"], e, e["at"]))
    return ("jobs",)


def _job_name(o: Overlay, aggregate: str) -> str:
    row = o.get("job_ids", aggregate)
    if row is None:
        raise LookupError(f"no job with aggregate id {aggregate}")
    return str(row["name"])


def _job_readded(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    name = _job_name(o, aggregate)
    o.put("jobs", name, _job_row(name, e["definition"], e["at"]))
    return ("jobs",)


def _job_updated(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    row = o.get("jobs", _job_name(o, aggregate))
    if row is None:
        return ()
    row = dict(row)
    for key, value in e["changes"].items():
        if key == "match":
            row[key] = _json(value)
        elif key == "retry":
            row[key] = _retry_json(value)
        elif key == "enabled":
            row[key] = int(value)
        elif key == "timeout_seconds":
            row[key] = clamp_timeout(value)
        elif key in row:
            row[key] = value
    row["updated_at"] = e["at"]
    o.put("jobs", row["name"], row)
    return ("jobs",)


def _job_removed(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    o.put("jobs", _job_name(o, aggregate), None)
    return ("jobs",)


def _enqueued(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    o.put("queue", aggregate, {
        "id": aggregate, "job": e["job"], "command": e["command"], "trigger": e["trigger"],
        "notification_id": e["notification_id"], "enqueued_at": e["at"],
        "state": EntryState.QUEUED, "started_at": None, "attempt": 1, "feedback": None,
        "not_before": None, "sort_key": position,
        "script": e["script"], "timeout_seconds": clamp_timeout(e["timeout_seconds"]),
    })
    return ("queue",)


def _started(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    row = o.get("queue", aggregate)
    if row is not None:
        o.put("queue", aggregate, {**row, "state": EntryState.RUNNING, "started_at": e["at"],
                                   "attempt": e["attempt"]})
    return ("queue",)


def _finish(o: Overlay, position: int, aggregate: str, e: dict[str, Any], table: str) -> None:
    row = o.get("queue", aggregate)
    o.put("queue", aggregate, None)
    if row is None:
        return
    o.put(table, aggregate, {
        "id": aggregate, "job": row["job"], "command": row["command"], "trigger": row["trigger"],
        "notification_id": row["notification_id"], "enqueued_at": row["enqueued_at"],
        "started_at": row["started_at"], "finished_at": e["at"], "attempt": row["attempt"],
        "result": e["result"], "feedback": e["feedback"], "seq": position,
        "script": row["script"], "timeout_seconds": row["timeout_seconds"],
    })


def _succeeded(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    _finish(o, position, aggregate, e, "executed")
    return ("queue", "executed")


def _failed(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    _finish(o, position, aggregate, e, "failed")
    return ("queue", "failed")


def _delete_from(table: str) -> Rule:
    def rule(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
        o.put(table, aggregate, None)
        return (table,)

    return rule


def _sent_to_front(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    row = o.get("queue", aggregate)
    if row is not None:
        o.put("queue", aggregate, {**row, "sort_key": FRONT_BASE + position, "not_before": None})
    return ("queue",)


def _attempt_failed(
    o: Overlay, position: int, aggregate: str, e: dict[str, Any]
) -> tuple[str, ...]:
    """A failed attempt with a retry to come: the entry is queued again as the next attempt,
    like an entry that arrived at that moment (not at the front: the interval holds), to
    start no earlier than its time; its feedback is the failed attempt's."""
    row = o.get("queue", aggregate)
    if row is not None:
        o.put("queue", aggregate, {**row, "state": EntryState.QUEUED, "started_at": None,
                                   "attempt": e["attempt"], "feedback": e["feedback"],
                                   "not_before": e["not_before"], "sort_key": position})
    return ("queue",)


def _reexecuted(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    row = o.get("failed", aggregate)
    o.put("failed", aggregate, None)
    if row is not None:
        o.put("queue", aggregate, {
            "id": aggregate, "job": row["job"], "command": row["command"],
            "trigger": row["trigger"], "notification_id": row["notification_id"],
            "enqueued_at": row["enqueued_at"], "state": EntryState.QUEUED, "started_at": None,
            "attempt": e["attempt"], "feedback": row["feedback"], "not_before": None,
            "sort_key": FRONT_BASE + position, "script": row["script"],
            "timeout_seconds": row["timeout_seconds"],
        })
    return ("queue", "failed")


def cleaned_table(e: dict[str, Any]) -> str:
    """The table (and view) a CleanedUp event's data removes its row from."""
    return "executed" if e["table"] == "executed" else "failed"


def _cleaned_up(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    table = cleaned_table(e)
    o.put(table, aggregate, None)
    return (table,)


def _settings_changed(
    o: Overlay, position: int, aggregate: str, e: dict[str, Any]
) -> tuple[str, ...]:
    # The settings in force: clamped into their ranges as the scheduler reads them (a log
    # written before the ranges existed may hold any number).
    o.settings = {
        "interval_seconds": clamp_interval(e["interval_seconds"]),
        "executed_cleanup": CleanupPolicy.from_json(e["executed_cleanup"]).to_json(),
        "failed_cleanup": CleanupPolicy.from_json(e["failed_cleanup"]).to_json(),
        "archive": ArchivePolicy.from_json(e.get("archive")).to_json(),
    }
    return ("settings",)


RULES: Final[dict[str, Rule]] = {
    "att_jm:Job.Added": _job_added,
    "att_jm:Job.Readded": _job_readded,
    "att_jm:Job.Updated": _job_updated,
    "att_jm:Job.Removed": _job_removed,
    "att_jm:Execution.Enqueued": _enqueued,
    "att_jm:Execution.Started": _started,
    "att_jm:Execution.Succeeded": _succeeded,
    "att_jm:Execution.Failed": _failed,
    "att_jm:Execution.AttemptFailed": _attempt_failed,
    "att_jm:Execution.RemovedFromQueue": _delete_from("queue"),
    "att_jm:Execution.SentToFront": _sent_to_front,
    "att_jm:Execution.Reexecuted": _reexecuted,
    "att_jm:Execution.RemovedFromExecuted": _delete_from("executed"),
    "att_jm:Execution.DeletedFromFailed": _delete_from("failed"),
    "att_jm:Execution.CleanedUp": _cleaned_up,
    "att_jm:Scheduler.SettingsChanged": _settings_changed,
}

TOPICS: Final = tuple(sorted(RULES))  # what a catch-up reads from the log

# What a rebuild from empty views may skip (projections/rebuild.py). An execution's rows
# exist only once its creation event is applied; after one of its FINAL events it has no row
# in any view and the domain allows it no further event (att_jm/domain/executions.py: "gone").
# Each Execution rule reports the same views whatever the rows (EXECUTION_VIEWS; CleanedUp:
# the view `cleaned_table` names), so the views' positions follow from topics alone.
CREATED: Final = "att_jm:Execution.Enqueued"
CLEANED_UP: Final = "att_jm:Execution.CleanedUp"
FINAL: Final = (
    "att_jm:Execution.RemovedFromQueue", "att_jm:Execution.RemovedFromExecuted",
    "att_jm:Execution.DeletedFromFailed", CLEANED_UP,
)
EXECUTION_VIEWS: Final[dict[str, tuple[str, ...]]] = {
    CREATED: ("queue",),
    "att_jm:Execution.Started": ("queue",),
    "att_jm:Execution.Succeeded": ("queue", "executed"),
    "att_jm:Execution.Failed": ("queue", "failed"),
    "att_jm:Execution.AttemptFailed": ("queue",),
    "att_jm:Execution.RemovedFromQueue": ("queue",),
    "att_jm:Execution.SentToFront": ("queue",),
    "att_jm:Execution.Reexecuted": ("queue", "failed"),
    "att_jm:Execution.RemovedFromExecuted": ("executed",),
    "att_jm:Execution.DeletedFromFailed": ("failed",),
    CLEANED_UP: (),  # executed or failed: `cleaned_table` of its data
}
EXECUTION_TOPICS: Final = tuple(sorted(EXECUTION_VIEWS))

NO_DATA: Final[dict[str, Any]] = {}
_HIDDEN: Final = frozenset({"originator_id", "originator_version", "timestamp"})


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _retry_json(value: Any) -> str | None:
    """A job's retry policy as the jobs view holds it (clamped on read, like the domain)."""
    policy = RetryPolicy.from_json(value)
    return None if policy is None else orjson.dumps(policy.to_json()).decode()


def event_fields(event: Any) -> tuple[str, str, dict[str, Any]]:
    """(topic, aggregate id, data with `at`) of a live domain event, as the rules take them."""
    data = {key: value for key, value in vars(event).items() if key not in _HIDDEN}
    data["at"] = iso(event.timestamp)
    return str(type(event).TOPIC), str(event.originator_id), data


def stored_fields(aggregate: str, state: bytes) -> dict[str, Any]:
    """The data of a stored event row (its state bytes), as the rules take them."""
    data: dict[str, Any] = loads_state(state)
    data["at"] = stored_iso(data.pop("timestamp"))
    return data


#: What a rule or the decoding of a stored row raises for data it cannot use (a row the
#: service never wrote: forged, or corrupt). Such a row is logged and skipped, its position
#: counted, so the views never stall behind it; store errors (sqlite3) are not among these.
DATA_ERRORS: Final = (LookupError, TypeError, ValueError, AttributeError)


def stored_items(
    rows: Iterable[tuple[int, str, str, bytes]],
) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """Stored rows (position, originator id, topic, state) as the rules take them."""
    for position, aggregate, topic, state in rows:
        if topic not in RULES:
            continue
        try:
            data = stored_fields(aggregate, state)
        except DATA_ERRORS as error:
            log.error("views.row_undecodable", position=position, topic=topic,
                      error=repr(error))
            yield position, "", aggregate, NO_DATA  # its position still counts
            continue
        yield position, topic, aggregate, data


def run_rules(
    overlay: Overlay, items: Iterable[tuple[int, str, str, dict[str, Any]]], start: int
) -> int:
    """Apply the items after position `start` to `overlay`; the last position seen."""
    position = start
    for event_position, topic, aggregate, data in items:
        if event_position <= start:
            continue
        position = max(position, event_position)
        rule = RULES.get(topic)
        if rule is None:
            continue
        try:
            changed = rule(overlay, event_position, aggregate, data)
        except DATA_ERRORS as error:
            log.error("views.row_skipped", position=event_position, topic=topic,
                      error=repr(error))
            continue
        for view in changed:
            if view in VIEWS:
                overlay.positions[view] = event_position
    return position
