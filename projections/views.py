"""The Jobs, Queue, Executed, Failed and Settings read models, kept in one SQLite file.

The view rules are written once, against plain event data (the stored state as
decoded JSON, or a live event's fields), and applied to an in-memory overlay of
the rows a batch touches. Only the net result of a batch is written, with the
tracked log position, in one transaction: each event is applied exactly once,
a row created and removed inside one batch costs no SQL at all, and `reset()`
plus a catch-up rebuilds everything from zero with the same rules.

A table view's message (`payload`, `payload_json`) is bounded in bytes: every string cell
longer than CELL_MAX_CHARS characters is cut (`cut_cell`), and rows are taken in the
view's order only while the whole message stays within `max_bytes` (VIEW_MAX_BYTES by
default); `omitted` counts the rows left out, `cut` the cells cut. `row_json` gives one row
in full.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from att_jm.domain.cleanup import CleanupPolicy
from att_jm.domain.executions import FRONT_BASE
from att_jm.domain.limits import CELL_MAX_CHARS, clamp_timeout, cut_text
from att_jm.domain.retry import RetryPolicy
from att_jm.domain.scheduler import DEFAULT_INTERVAL_SECONDS, clamp_interval
from att_jm.domain.times import iso, parse_iso
from att_jm.log.records import stored_iso

log = structlog.get_logger("att_jm.views")

VIEWS: Final = ("jobs", "queue", "executed", "failed", "settings")
TABLE_VIEWS: Final = ("jobs", "queue", "executed", "failed")  # the views with rows
#: A string cell longer than this (in characters) is cut to its first CELL_MAX_CHARS
#: characters plus CUT_MARKER; a non-string cell (the jobs view's `match` object) whose
#: compact JSON text is longer is replaced by that text cut the same way.
#: The default bound, in bytes, of a table view's whole encoded message.
VIEW_MAX_BYTES: Final = 1_048_576
#: The smallest `max_bytes` a view message accepts (its head alone is under 200 bytes).
VIEW_MIN_BYTES: Final = 1024
_FETCH: Final = 100  # rows read in full per query (cells of up to ~200 KB each)

#: The shape of the views file; a file of another version is emptied and rebuilt from the log.
SCHEMA_VERSION: Final = 2  # 2: queue.not_before, jobs.retry (automatic retries)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tracking (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY, script TEXT, trigger TEXT, match TEXT, command TEXT,
    timeout_seconds REAL, enabled INTEGER, created_at TEXT, updated_at TEXT, retry TEXT);
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY, job TEXT, command TEXT, trigger TEXT, notification_id TEXT,
    enqueued_at TEXT, state TEXT, started_at TEXT, attempt INTEGER, feedback TEXT,
    not_before TEXT, sort_key INTEGER NOT NULL, script TEXT, timeout_seconds REAL);
CREATE INDEX IF NOT EXISTS queue_order ON queue (state, sort_key);
CREATE TABLE IF NOT EXISTS executed (
    id TEXT PRIMARY KEY, job TEXT, command TEXT, trigger TEXT, notification_id TEXT,
    enqueued_at TEXT, started_at TEXT, finished_at TEXT, attempt INTEGER, result INTEGER,
    feedback TEXT, seq INTEGER NOT NULL, script TEXT, timeout_seconds REAL);
CREATE INDEX IF NOT EXISTS executed_order ON executed (seq);
CREATE TABLE IF NOT EXISTS failed (
    id TEXT PRIMARY KEY, job TEXT, command TEXT, trigger TEXT, notification_id TEXT,
    enqueued_at TEXT, started_at TEXT, finished_at TEXT, attempt INTEGER, result INTEGER,
    feedback TEXT, seq INTEGER NOT NULL, script TEXT, timeout_seconds REAL);
CREATE INDEX IF NOT EXISTS failed_order ON failed (seq);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS view_positions (view TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_ids (id TEXT PRIMARY KEY, name TEXT NOT NULL);
"""

_QUEUE_COLS: Final = (
    "id", "job", "command", "trigger", "notification_id", "enqueued_at", "state", "started_at",
    "attempt", "feedback", "not_before",
)
_DONE_COLS: Final = (
    "id", "job", "command", "trigger", "notification_id", "enqueued_at", "started_at",
    "finished_at", "attempt", "result", "feedback",
)
_JOB_COLS: Final = (
    "name", "script", "trigger", "match", "command", "timeout_seconds", "enabled", "created_at",
    "updated_at", "retry",
)
# Every column of each table, in table order: what the overlay holds and writes back.
_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "jobs": _JOB_COLS,
    "queue": (*_QUEUE_COLS, "sort_key", "script", "timeout_seconds"),
    "executed": (*_DONE_COLS, "seq", "script", "timeout_seconds"),
    "failed": (*_DONE_COLS, "seq", "script", "timeout_seconds"),
    "job_ids": ("id", "name"),
}
_KEYS: Final = {"jobs": "name", "job_ids": "id"}
# What identifies a row's content in the encoded-row cache: executed and failed rows never
# change (a re-execution that fails again comes back with a new `seq`); a queue row changes
# only in these fields while it is queued or running.
_VERSION_COLS: Final = {
    "executed": ("id", "seq"),
    "failed": ("id", "seq"),
    "queue": ("id", "state", "sort_key", "attempt", "started_at", "not_before"),
}
_ORDER: Final = {
    "queue": "ORDER BY state != 'running', sort_key",
    "executed": "ORDER BY seq DESC",
    "failed": "ORDER BY seq DESC",
    "jobs": "ORDER BY name",
}

Row = dict[str, Any]
Rule = Callable[["Overlay", int, str, dict[str, Any]], tuple[str, ...]]


def default_settings() -> dict[str, Any]:
    return {
        "interval_seconds": DEFAULT_INTERVAL_SECONDS,
        "executed_cleanup": CleanupPolicy().to_json(),
        "failed_cleanup": CleanupPolicy().to_json(),
    }


def cut_cell(value: Any) -> tuple[Any, bool]:
    """(the cell as a view message shows it, whether it was cut).

    A string longer than CELL_MAX_CHARS characters keeps its first CELL_MAX_CHARS characters
    followed by `…[cut: N more characters]`; any other JSON value whose compact JSON text is
    longer than CELL_MAX_CHARS characters becomes that text, cut the same way (a string);
    everything else is returned as it is.
    """
    if isinstance(value, str):
        if len(value) <= CELL_MAX_CHARS:
            return value, False
        return cut_text(value), True
    if value is None or isinstance(value, (bool, int, float)):
        return value, False
    encoded = orjson.dumps(value)
    if len(encoded) <= CELL_MAX_CHARS:  # bytes >= characters: short enough either way
        return value, False
    text = encoded.decode()
    if len(text) <= CELL_MAX_CHARS:
        return value, False
    return cut_text(text), True


def cut_row(row: Row) -> int:
    """Cut the cells of `row` in place (`cut_cell`); how many were cut."""
    cut = 0
    for key, value in row.items():
        shown, was_cut = cut_cell(value)
        if was_cut:
            row[key] = shown
            cut += 1
    return cut


def _message_head(
    view: str, offset: int | None, position: int, total: int, omitted: int, cut: int,
) -> dict[str, Any]:
    """A table view message without its rows, in the contract's field order."""
    head: dict[str, Any] = {"view": view}
    if offset is not None:
        head["offset"] = offset
    head["position"] = position
    head["total"] = total
    head["omitted"] = omitted
    head["cut"] = cut
    return head


def _rows_room(
    view: str, offset: int | None, position: int, total: int, limit: int, max_bytes: int,
) -> int:
    """The bytes a message of `view` has for its rows and the commas between them: its head
    is measured with the widest `omitted` and `cut` it can have."""
    columns = len(_JOB_COLS if view == "jobs" else _QUEUE_COLS if view == "queue" else _DONE_COLS)
    most = total if limit < 0 else min(limit, total)
    head = _message_head(view, offset, position, total, total, most * columns)
    return max_bytes - len(orjson.dumps({**head, "rows": []}))


def _fits(
    view: str, offset: int | None, position: int, total: int, rows: int, cut: int, used: int,
    max_bytes: int,
) -> bool:
    """Whether a message of `rows` rows (`cut` cells cut), `used` bytes of rows and commas,
    stays within `max_bytes` with its exact head (the last row `_rows_room` turned away may
    still fit: its head reserves a few digits more)."""
    head = _message_head(view, offset, position, total, total - rows, cut)
    return len(orjson.dumps(head)) + 10 + used <= max_bytes  # + ',"rows":[' ... ']}'


def _check_bounds(view: str, offset: int | None, max_bytes: int) -> None:
    if view not in TABLE_VIEWS:
        raise ValueError(f"not a table view: {view!r}")
    if offset is not None and offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    if max_bytes < VIEW_MIN_BYTES:
        raise ValueError(f"max_bytes must be >= {VIEW_MIN_BYTES}, not {max_bytes}")


class Overlay:
    """The rows one batch touched, over the SQLite tables (None = deleted)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.tables: dict[str, dict[str, Row | None]] = {name: {} for name in _COLUMNS}
        self.settings: dict[str, Any] | None = None
        self.positions: dict[str, int] = {}

    def get(self, table: str, key: str) -> Row | None:
        rows = self.tables[table]
        if key in rows:
            return rows[key]
        cols = _COLUMNS[table]
        found = self._db.execute(
            f"SELECT {', '.join(cols)} FROM {table} WHERE {_KEYS.get(table, 'id')} = ?",  # noqa: S608 -- fixed names
            (key,),
        ).fetchone()
        row = None if found is None else dict(zip(cols, found, strict=True))
        rows[key] = row
        return row

    def put(self, table: str, key: str, row: Row | None) -> None:
        self.tables[table][key] = row

    def flush(self, cursor: sqlite3.Cursor) -> None:
        for table, rows in self.tables.items():
            cols = _COLUMNS[table]
            key = _KEYS.get(table, "id")
            gone = [(k,) for k, row in rows.items() if row is None]
            kept = [tuple(row[c] for c in cols) for row in rows.values() if row is not None]
            if gone:
                cursor.executemany(f"DELETE FROM {table} WHERE {key} = ?", gone)  # noqa: S608 -- fixed names
            if kept:
                cursor.executemany(
                    f"INSERT OR REPLACE INTO {table} VALUES ({','.join('?' * len(cols))})",  # noqa: S608 -- fixed names
                    kept,
                )
        if self.settings is not None:
            cursor.execute(
                "INSERT OR REPLACE INTO settings VALUES ('settings', ?)",
                (orjson.dumps(self.settings).decode(),),
            )
        cursor.executemany(
            "INSERT OR REPLACE INTO view_positions VALUES (?, ?)", list(self.positions.items())
        )


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
        "notification_id": e["notification_id"], "enqueued_at": e["at"], "state": "queued",
        "started_at": None, "attempt": 1, "feedback": None, "not_before": None,
        "sort_key": position,
        "script": e["script"], "timeout_seconds": clamp_timeout(e["timeout_seconds"]),
    })
    return ("queue",)


def _started(o: Overlay, position: int, aggregate: str, e: dict[str, Any]) -> tuple[str, ...]:
    row = o.get("queue", aggregate)
    if row is not None:
        o.put("queue", aggregate, {**row, "state": "running", "started_at": e["at"],
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
        o.put("queue", aggregate, {**row, "state": "queued", "started_at": None,
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
            "enqueued_at": row["enqueued_at"], "state": "queued", "started_at": None,
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

_NO_DATA: Final[dict[str, Any]] = {}
_HIDDEN: Final = frozenset({"originator_id", "originator_version", "timestamp"})


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _retry_json(value: Any) -> str | None:
    """A job's retry policy as the jobs view holds it (clamped on read, like the domain)."""
    policy = RetryPolicy.from_json(value)
    return None if policy is None else orjson.dumps(policy.to_json()).decode()


def _decode_job(row: dict[str, Any]) -> dict[str, Any]:
    row["match"] = None if row["match"] is None else orjson.loads(row["match"])
    row["enabled"] = bool(row["enabled"])
    row["retry"] = None if row.get("retry") is None else orjson.loads(row["retry"])
    return row


def event_fields(event: Any) -> tuple[str, str, dict[str, Any]]:
    """(topic, aggregate id, data with `at`) of a live domain event, as the rules take them."""
    data = {key: value for key, value in vars(event).items() if key not in _HIDDEN}
    data["at"] = iso(event.timestamp)
    return str(type(event).TOPIC), str(event.originator_id), data


def stored_fields(aggregate: str, state: bytes) -> dict[str, Any]:
    """The data of a stored event row (its state bytes), as the rules take them."""
    data: dict[str, Any] = orjson.loads(state)
    data["at"] = stored_iso(data.pop("timestamp"))
    return data


#: What a rule or the decoding of a stored row raises for data it cannot use (a row the
#: service never wrote: forged, or corrupt). Such a row is logged and skipped, its position
#: counted, so the views never stall behind it; store errors (sqlite3) are not among these.
_DATA_ERRORS: Final = (LookupError, TypeError, ValueError, AttributeError)


def _stored_items(
    rows: Iterable[tuple[int, str, str, bytes]],
) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """Stored rows (position, originator id, topic, state) as the rules take them."""
    for position, aggregate, topic, state in rows:
        if topic not in RULES:
            continue
        try:
            data = stored_fields(aggregate, state)
        except _DATA_ERRORS as error:
            log.error("views.row_undecodable", position=position, topic=topic,
                      error=repr(error))
            yield position, "", aggregate, _NO_DATA  # its position still counts
            continue
        yield position, topic, aggregate, data


def _run_rules(
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
        except _DATA_ERRORS as error:
            log.error("views.row_skipped", position=event_position, topic=topic,
                      error=repr(error))
            continue
        for view in changed:
            if view in VIEWS:
                overlay.positions[view] = event_position
    return position


class Views:
    """The read models in the SQLite file at `path` (created when missing, unless read-only).

    `path=":memory:"` keeps them in memory (replays that must not touch any file).
    """

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        # The writer's own answers to `position` and `next_queued`, asked on every turn of
        # its loop, kept until its next write (a reader's file changes under it: no memo).
        self._memo: dict[str, Any] | None = None if readonly else {}
        # view -> row version -> (the row as JSON, cells cut), pruned to the rows last read
        # (see `payload_json`)
        self._encoded: dict[str, dict[tuple[Any, ...], tuple[bytes, int]]] = {
            v: {} for v in _VERSION_COLS}
        if readonly:
            self._db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # rebuildable from the log
            self._migrate()
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=5000")

    def _migrate(self) -> None:
        """A views file of another shape is emptied (its position with it): the next catch-up
        rebuilds it from the log with today's rules."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        tables = [str(row[0]) for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            self._db.execute(f"DROP TABLE {table}")
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @property
    def position(self) -> int:
        memo = self._memo
        if memo is not None and "position" in memo:
            return int(memo["position"])
        row = self._db.execute("SELECT position FROM tracking WHERE name = 'views'").fetchone()
        position = int(row[0]) if row else 0
        if memo is not None:
            memo["position"] = position
        return position

    def _written(self) -> None:
        if self._memo is not None:
            self._memo.clear()

    def apply(self, items: Iterable[tuple[int, Any]]) -> set[str]:
        """Apply live domain events (position, event) after the tracked position; views changed."""
        return self.apply_data(
            (position, *event_fields(event)) if getattr(type(event), "TOPIC", None) in RULES
            else (position, "", "", _NO_DATA)  # no rule reads it: only its position counts
            for position, event in items
        )

    def apply_rows(self, rows: Iterable[tuple[int, str, str, bytes]]) -> set[str]:
        """Apply stored rows (position, originator id, topic, state) after the tracked position."""
        return self.apply_data(_stored_items(rows))

    def apply_data(self, items: Iterable[tuple[int, str, str, dict[str, Any]]]) -> set[str]:
        """Apply (position, topic, aggregate id, data) in one transaction; the views changed."""
        start = self.position
        overlay = Overlay(self._db)
        position = _run_rules(overlay, items, start)
        if position == start:
            return set()
        cursor = self._db.cursor()
        self._written()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            overlay.flush(cursor)
            cursor.execute("INSERT OR REPLACE INTO tracking VALUES ('views', ?)", (position,))
            cursor.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself on a full disk
                cursor.execute("ROLLBACK")
            raise
        return set(overlay.positions)

    def apply_covering(
        self, pages: Iterable[Iterable[tuple[int, str, str, bytes]]], upto: int,
        positions: Mapping[str, int],
    ) -> set[str]:
        """Apply pages of stored rows for a caller that left out events changing no row.

        `positions` holds, for the views those events report changed, the position of the
        last event up to `upto` that changed each (left-out events included); the tracked
        position becomes `upto`. Everything is one transaction, each page its own overlay
        (bounded memory). The views changed.
        """
        start = self.position
        changed: dict[str, int] = {}
        cursor = self._db.cursor()
        self._written()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            position = start
            for page in pages:
                overlay = Overlay(self._db)
                position = _run_rules(overlay, _stored_items(page), position)
                overlay.flush(cursor)
                changed.update(overlay.positions)
            final = {view: at for view, at in positions.items()
                     if view in VIEWS and start < at <= upto and at > changed.get(view, 0)}
            cursor.executemany("INSERT OR REPLACE INTO view_positions VALUES (?, ?)",
                               list(final.items()))
            changed.update(final)
            position = max(position, upto)
            if position > start:
                cursor.execute("INSERT OR REPLACE INTO tracking VALUES ('views', ?)",
                               (position,))
            cursor.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        return set(changed)

    def advance(self, position: int) -> None:
        """Record that the log up to `position` holds nothing more for these views."""
        if position > self.position:
            self._written()
            self._db.execute("INSERT OR REPLACE INTO tracking VALUES ('views', ?)", (position,))

    def reset(self) -> None:
        """Forget every row and the position: the next catch-up rebuilds from zero."""
        c = self._db.cursor()
        self._written()
        c.execute("BEGIN IMMEDIATE")
        tables = ("tracking", "view_positions", "jobs", "job_ids", "queue", "executed", "failed",
                  "settings")
        for table in tables:
            c.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed table names
        c.execute("COMMIT")

    # Queries -----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        row = self._db.execute("SELECT value FROM settings WHERE key = 'settings'").fetchone()
        return default_settings() if row is None else dict(orjson.loads(row[0]))

    def count(self, view: str) -> int:
        return int(self._db.execute(f"SELECT count(*) FROM {view}").fetchone()[0])  # noqa: S608 -- view names are fixed

    def rows(self, view: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """Up to `limit` rows of a table view, in the contract's order, in full, after the
        first `offset`."""
        return list(self._rows(view, limit, offset))

    def _rows(self, view: str, limit: int, offset: int) -> Iterator[dict[str, Any]]:
        cols = {"jobs": _JOB_COLS, "queue": _QUEUE_COLS}.get(view, _DONE_COLS)
        cursor = self._db.execute(
            f"SELECT {', '.join(cols)} FROM {view} {_ORDER[view]} LIMIT ? OFFSET ?",  # noqa: S608 -- fixed names
            (limit, offset),
        )
        for found in cursor:
            row = dict(zip(cols, found, strict=True))
            yield _decode_job(row) if view == "jobs" else row

    def row_json(self, view: str, row_id: str) -> bytes | None:
        """`{"view", "position", "row"}` with the row of `view` whose key is `row_id` (a job's
        name, an entry's id) in full (no cell cut); None when there is none."""
        if view not in TABLE_VIEWS:
            raise ValueError(f"not a table view: {view!r}")
        cols = {"jobs": _JOB_COLS, "queue": _QUEUE_COLS}.get(view, _DONE_COLS)
        found = self._db.execute(
            f"SELECT {', '.join(cols)} FROM {view} WHERE {cols[0]} = ?", (row_id,)  # noqa: S608 -- fixed names
        ).fetchone()
        if found is None:
            return None
        row = dict(zip(cols, found, strict=True))
        if view == "jobs":
            _decode_job(row)
        return orjson.dumps({"view": view, "position": self.view_position(view), "row": row})

    def payload_json(
        self, view: str, limit: int, *, offset: int | None = None,
        max_bytes: int = VIEW_MAX_BYTES,
    ) -> bytes:
        """`orjson.dumps(payload(view, limit, ...))`, the same bytes, made from a cache of
        encoded (cut) rows: only the rows that changed since the last call are read in full,
        cut and encoded (a queue or Executed view of 1,000 rows costs ~0.5 ms instead of ~3 ms).
        """
        if view not in _VERSION_COLS:
            return orjson.dumps(self.payload(view, limit, offset=offset, max_bytes=max_bytes))
        _check_bounds(view, offset, max_bytes)
        versions = _VERSION_COLS[view]
        cols = _QUEUE_COLS if view == "queue" else _DONE_COLS
        keys = [tuple(row) for row in self._db.execute(
            f"SELECT {', '.join(versions)} FROM {view} {_ORDER[view]} LIMIT ? OFFSET ?",  # noqa: S608 -- fixed names
            (limit, offset or 0),
        )]
        position, total = self.view_position(view), self.count(view)
        room = _rows_room(view, offset, position, total, limit, max_bytes)
        cache = self._encoded[view]
        kept: dict[tuple[Any, ...], tuple[bytes, int]] = {}
        parts: list[bytes] = []
        used = -1  # the first row has no comma before it
        cut = 0
        for start in range(0, len(keys), _FETCH):
            chunk = keys[start : start + _FETCH]
            missing = [key[0] for key in chunk if key not in cache]
            if missing:
                for found in self._db.execute(
                    f"SELECT {', '.join(versions)}, {', '.join(cols)} FROM {view} "  # noqa: S608 -- fixed names
                    f"WHERE id IN ({','.join('?' * len(missing))})", missing,
                ):
                    row = dict(zip(cols, found[len(versions):], strict=True))
                    cells = cut_row(row)
                    cache[tuple(found[: len(versions)])] = (orjson.dumps(row), cells)
            for key in chunk:
                entry = cache.get(key)
                if entry is None:  # the view changed between the two reads: read it at once
                    return orjson.dumps(
                        self.payload(view, limit, offset=offset, max_bytes=max_bytes))
                kept[key] = entry
                used += len(entry[0]) + 1
                if used > room and not _fits(view, offset, position, total, len(parts) + 1,
                                             cut + entry[1], used, max_bytes):
                    break
                parts.append(entry[0])
                cut += entry[1]
            else:
                continue
            break
        self._encoded[view] = kept
        head = orjson.dumps(
            _message_head(view, offset, position, total, total - len(parts), cut))
        return head[:-1] + b',"rows":[' + b",".join(parts) + b"]}"

    def view_position(self, view: str) -> int:
        """The position of the last event that changed `view` (0: never changed)."""
        row = self._db.execute(
            "SELECT position FROM view_positions WHERE view = ?", (view,)
        ).fetchone()
        return int(row[0]) if row else 0

    def payload(
        self, view: str, limit: int, *, offset: int | None = None,
        max_bytes: int = VIEW_MAX_BYTES,
    ) -> dict[str, Any]:
        """The contract's view message for `view`.

        Its `position` is that of the last event that changed the view, so the same
        content always carries the same position (across restarts and rebuilds). A table
        view's message holds up to `limit` rows after the first `offset` (`offset` is in the
        message only when given), each cell cut by `cut_cell`, taken in order while the whole
        encoded message stays within `max_bytes`; `omitted` = `total` - rows sent, `cut` = cells
        cut. The settings view's message is `{"view", "position", "settings"}`.
        """
        position = self.view_position(view)
        if view == "settings":
            return {"view": "settings", "position": position, "settings": self.settings()}
        _check_bounds(view, offset, max_bytes)
        total = self.count(view)
        room = _rows_room(view, offset, position, total, limit, max_bytes)
        rows: list[dict[str, Any]] = []
        used = -1
        cut = 0
        for row in self._rows(view, limit, offset or 0):
            cells = cut_row(row)
            used += len(orjson.dumps(row)) + 1
            if used > room and not _fits(view, offset, position, total, len(rows) + 1,
                                         cut + cells, used, max_bytes):
                break
            rows.append(row)
            cut += cells
        return {**_message_head(view, offset, position, total, total - len(rows), cut),
                "rows": rows}

    def view_positions(self) -> dict[str, int]:
        """`view_position` of every view that ever changed, in one query."""
        rows = self._db.execute("SELECT view, position FROM view_positions")
        return {str(view): int(position) for view, position in rows}

    def payloads(
        self, views: Iterable[str], limit: int, *, max_bytes: int = VIEW_MAX_BYTES,
    ) -> list[tuple[str, int, bytes]]:
        """(view, its position, `payload_json`) of each view, all read in one transaction
        (one state of the views, even while their writer goes on: what a reader in another
        process publishes)."""
        self._db.execute("BEGIN")
        try:
            return [(view, self.view_position(view),
                     self.payload_json(view, limit, max_bytes=max_bytes))
                    for view in views]
        finally:
            self._db.execute("COMMIT")

    def next_queued(self, now: str = "") -> tuple[str, bool] | None:
        """The entry that runs next and whether it was sent to the front, or None; a retry
        whose `not_before` is after `now` (ISO-8601 UTC, as `times.iso` writes) waits."""
        memo = self._memo
        if memo is not None and "next" in memo and not self._retries_wait():
            return memo["next"]  # type: ignore[no-any-return]  # what this method stored
        if self._retries_wait():
            row = self._db.execute(
                "SELECT id, sort_key FROM queue WHERE state = 'queued' AND "
                "(not_before IS NULL OR not_before <= ?) ORDER BY sort_key LIMIT 1", (now,),
            ).fetchone()
            return None if row is None else (str(row[0]), int(row[1]) < 0)
        row = self._db.execute(
            "SELECT id, sort_key FROM queue WHERE state = 'queued' ORDER BY sort_key LIMIT 1"
        ).fetchone()
        found = None if row is None else (str(row[0]), int(row[1]) < 0)
        if memo is not None:
            memo["next"] = found
        return found

    def _retries_wait(self) -> bool:
        """Whether any queued entry is a retry with a `not_before` (memoised until a write)."""
        memo = self._memo
        if memo is not None and "waiting" in memo:
            return bool(memo["waiting"])
        waiting = self._db.execute(
            "SELECT 1 FROM queue WHERE state = 'queued' AND not_before IS NOT NULL LIMIT 1"
        ).fetchone() is not None
        if memo is not None:
            memo["waiting"] = waiting
        return waiting

    def next_retry_at(self, now: str) -> str | None:
        """The earliest `not_before` after `now` of a waiting retry (None: none waits)."""
        if not self._retries_wait():
            return None
        row = self._db.execute(
            "SELECT min(not_before) FROM queue WHERE state = 'queued' AND not_before > ?",
            (now,),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def running(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT id FROM queue WHERE state='running'")]

    def job_names(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT name FROM jobs ORDER BY name")]

    def finished(self, table: str) -> list[tuple[str, datetime]]:
        """(id, finished_at) of the rows of executed or failed, newest first."""
        cursor = self._db.execute(
            f"SELECT id, finished_at FROM {table} ORDER BY seq DESC"  # noqa: S608 -- fixed names
        )
        return [(str(r[0]), parse_iso(r[1])) for r in cursor]

    def snapshot(self) -> dict[str, Any]:
        """Every view in full (for comparisons: restart, rebuild, audit)."""
        out: dict[str, Any] = {"settings": self.settings()}
        for view in ("jobs", "queue", "executed", "failed"):
            out[view] = self.rows(view, 10**9)
        return out
