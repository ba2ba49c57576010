"""Catch-up and rebuild of the views, skipping what leaves no trace in them.

Building the views from nothing (`att-jm rebuild`, a first start, the audit's replays) by
applying every event decodes every execution's whole life, yet most executions of a long
log are gone (removed, deleted, cleaned up): their rows never reach the final views, only
the views' `position`s do (the last event that changed each view). So from empty views:

- SQLite finds the live executions (created, and their last event is not one after which
  the domain allows nothing more: `projections.rules.FINAL`); only their events, the job
  and settings events are read, decoded and applied, with the service's own rules;
- the `position`s of the queue, executed and failed views come from the topics of all the
  events (`EXECUTION_VIEWS`; a CleanedUp names its view in its state), read from the end
  of the log backwards until found;
- all of it from one snapshot of the log, into one transaction of the views file.

The result is the views of applying every event in order: the same rows, view positions
and tracked position (tests/integration/test_rebuild.py). An execution that is not
created has no row whatever its events; one whose last event is final has none either,
since the domain applies a final event only to the table the entry is in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final

import orjson

from att_jm.log.rows import DASHED_ID_SQL, TABLE
from att_jm.store import JobManagerApp, log_position, open_log, read_rows
from projections.rules import (
    CLEANED_UP,
    CREATED,
    EXECUTION_TOPICS,
    EXECUTION_VIEWS,
    FINAL,
    TOPICS,
    cleaned_table,
)
from projections.views import Views

PAGE: Final = 50_000
_OTHER_TOPICS: Final = tuple(topic for topic in TOPICS if topic not in EXECUTION_VIEWS)


def catch_up(app: JobManagerApp, views: Views) -> int:
    """Apply every event the views have not seen; the events covered (view events read).

    From empty views (position 0) through `fill`; otherwise page by page, every event.
    """
    if views.position == 0:
        return fill(app, views)
    applied = 0
    # Big pages: rows created and removed within one page never reach the views file.
    for rows in read_rows(app, views.position, TOPICS, page=PAGE):
        views.apply_rows(rows)
        applied += len(rows)
    views.advance(log_position(app))
    return applied


def fill(app: JobManagerApp, views: Views, upto: int | None = None) -> int:
    """Empty `views` made those of the log up to `upto` (default: its end); view events covered.

    The views must be at position 0 (new, or `reset()`), as the skipped executions' rows
    are never deleted; the tracked position becomes `upto` (at most the log's end).
    """
    if views.position != 0:
        raise ValueError(f"the views are at position {views.position}, not empty")
    reader = open_log(app)
    db, table = reader.connection, TABLE
    try:
        db.execute("BEGIN")  # one snapshot for every query below
        end = int(db.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0])  # noqa: S608 -- the library's table
        upto = end if upto is None else max(0, min(upto, end))
        covered, live, others = _survey(db, table, upto)
        positions = _execution_positions(db, table, upto)
        views.apply_covering(_rows(db, table, upto, live, others), upto, positions)
        return covered
    finally:
        reader.close()


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _survey(db: sqlite3.Connection, table: str, upto: int) -> tuple[int, str, str]:
    """(view events up to `upto`, JSON ids of the live executions, JSON positions of the other
    view events), in one scan of the log."""
    row = db.execute(
        f"SELECT count(*), "  # noqa: S608 -- the library's table, fixed topics
        f"json_group_array(originator_id) FILTER (WHERE topic = ? AND "
        f"  (SELECT last.topic FROM {table} AS last "
        f"   WHERE last.originator_id = event.originator_id AND last.rowid <= ? "
        f"   ORDER BY last.originator_version DESC LIMIT 1) NOT IN ({_marks(len(FINAL))})), "
        f"json_group_array(rowid) FILTER (WHERE topic IN ({_marks(len(_OTHER_TOPICS))})) "
        f"FROM {table} AS event WHERE rowid <= ? AND topic IN ({_marks(len(TOPICS))})",
        (CREATED, upto, *FINAL, *_OTHER_TOPICS, upto, *TOPICS),
    ).fetchone()
    return int(row[0]), str(row[1]), str(row[2])


def _rows(
    db: sqlite3.Connection, table: str, upto: int, live: str, others: str
) -> Iterator[list[tuple[int, str, str, bytes]]]:
    """Pages of the rows to apply, in log order: the live executions' and the other views'."""
    cursor = db.execute(
        f"SELECT rowid, {DASHED_ID_SQL}, topic, state FROM {table} "  # noqa: S608 -- the library's table
        f"WHERE rowid IN (SELECT value FROM json_each(?)) "
        f"OR (originator_id IN (SELECT value FROM json_each(?)) "
        f"    AND topic IN ({_marks(len(EXECUTION_TOPICS))}) AND rowid <= ?) "
        f"ORDER BY rowid",
        (others, live, *EXECUTION_TOPICS, upto),
    )
    while rows := cursor.fetchmany(PAGE):
        yield rows


def _last(db: sqlite3.Connection, table: str, upto: int, topics: Sequence[str]) -> int:
    """The position of the last event up to `upto` with one of `topics` (0: none)."""
    row = db.execute(
        f"SELECT rowid FROM {table} WHERE rowid <= ? "  # noqa: S608 -- the library's table
        f"AND topic IN ({_marks(len(topics))}) ORDER BY rowid DESC LIMIT 1",
        (upto, *topics),
    ).fetchone()
    return 0 if row is None else int(row[0])


def _execution_positions(db: sqlite3.Connection, table: str, upto: int) -> dict[str, int]:
    """The position of the last event up to `upto` that changed each execution view."""
    positions = {
        view: _last(db, table, upto, [t for t, seen in EXECUTION_VIEWS.items() if view in seen])
        for view in ("queue", "executed", "failed")
    }
    # A CleanedUp changed the view its state names: only those after the positions found
    # so far matter, read backwards until each view has its last one.
    waiting = {"executed", "failed"}
    cursor = db.execute(
        f"SELECT rowid, state FROM {table} WHERE rowid <= ? AND rowid > ? "  # noqa: S608 -- the library's table
        f"AND topic = ? ORDER BY rowid DESC",
        (upto, min(positions[view] for view in waiting), CLEANED_UP),
    )
    for position, state in cursor:
        waiting = {view for view in waiting if positions[view] < position}
        if not waiting:
            break
        try:
            data: dict[str, Any] = orjson.loads(state)
            view = cleaned_table(data)
        except (ValueError, TypeError, LookupError):  # not a row the service wrote: skipped
            continue
        if view in waiting:
            positions[view] = position
            waiting.discard(view)
    cursor.close()
    return {view: position for view, position in positions.items() if position}
