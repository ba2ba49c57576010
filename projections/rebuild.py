"""Catch-up and rebuild of the views, skipping what leaves no trace in them.

Building the views from nothing (`att-jm rebuild`, a first start, the audit's replays) by
applying every event decodes every execution's whole life, yet most executions of a long
log are gone (removed, deleted, cleaned up): their rows never reach the final views, only
the views' `position`s do (the last event that changed each view). So from empty views:

- the store finds the live executions (created, and their last event is not one after which
  the domain allows nothing more: `projections.rules.FINAL`); only their events, the job
  and settings events are read, decoded and applied, with the service's own rules (the
  queries are the log reader's: `StoreReader.survey`, for SQLite and PostgreSQL);
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

from typing import Any, Final

from att_jm.log.anchor import Anchor, archived_message
from att_jm.log.codec import loads_state
from att_jm.log.rows import AuditError, StoreReader
from att_jm.store import JobManagerApp, open_log
from projections.anchor import anchor_of, start_from_anchor
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

    From empty views (position 0) through `fill`; otherwise page by page, every event. On
    an archived store, views behind its anchor start from the anchor's views.
    """
    reader = open_log(app)  # one reader for all of it (a connection, on PostgreSQL)
    try:
        start_from_anchor(views, anchor_of(reader))
        if views.position == 0:
            return fill_from(reader, views)
        applied = 0
        # Big pages: rows created and removed within one page never reach the views file.
        for rows in reader.keyed_pages(views.position, None, TOPICS, PAGE):
            views.apply_rows(rows)
            applied += len(rows)
        views.advance(reader.max_position())
        return applied
    finally:
        reader.close()


def fill(app: JobManagerApp, views: Views, upto: int | None = None) -> int:
    """`fill_from` the log of `app`'s store."""
    reader = open_log(app)
    try:
        return fill_from(reader, views, upto)
    finally:
        reader.close()


def fill_from(reader: StoreReader, views: Views, upto: int | None = None) -> int:
    """Empty `views` made those of the log up to `upto` (default: its end); view events covered.

    The views must be at position 0 (new, or `reset()`), as the skipped executions' rows
    are never deleted; the tracked position becomes `upto` (at most the log's end). On an
    archived store they start from its anchor's views (AuditError for an `upto` before it).
    """
    if views.position != 0:
        raise ValueError(f"the views are at position {views.position}, not empty")
    anchor = anchor_of(reader)
    if anchor is not None:
        return _from_anchor(reader, views, anchor, upto)
    with reader.consistent():  # one snapshot of the log for every query below
        end = reader.max_position()
        upto = end if upto is None else max(0, min(upto, end))
        survey = reader.survey(upto, TOPICS, CREATED, FINAL, _OTHER_TOPICS)
        positions = _execution_positions(reader, upto)
        views.apply_covering(reader.survey_rows(survey, EXECUTION_TOPICS, upto, PAGE),
                             upto, positions)
        return survey.covered


def _from_anchor(reader: StoreReader, views: Views, anchor: Anchor, upto: int | None) -> int:
    """`fill` on an archived store: the anchor's views, then every view event after it."""
    if upto is not None and upto < anchor.position:
        raise AuditError(archived_message(anchor, f"position {upto}"))
    start_from_anchor(views, anchor)
    end = reader.max_position() if upto is None else min(upto, reader.max_position())
    covered = 0
    for rows in reader.keyed_pages(anchor.position, end, TOPICS, PAGE):
        views.apply_rows(rows)
        covered += len(rows)
    views.advance(end)
    return covered


def _execution_positions(reader: StoreReader, upto: int) -> dict[str, int]:
    """The position of the last event up to `upto` that changed each execution view."""
    positions = {
        view: reader.last_position(
            upto, [t for t, seen in EXECUTION_VIEWS.items() if view in seen])
        for view in ("queue", "executed", "failed")
    }
    # A CleanedUp changed the view its state names: only those after the positions found
    # so far matter, read backwards until each view has its last one.
    waiting = {"executed", "failed"}
    for position, state in reader.backwards(
        upto, min(positions[view] for view in waiting), CLEANED_UP,
    ):
        waiting = {view for view in waiting if positions[view] < position}
        if not waiting:
            break
        try:
            data: dict[str, Any] = loads_state(state)
            view = cleaned_table(data)
        except (ValueError, TypeError, LookupError):  # not a row the service wrote: skipped
            continue
        if view in waiting:
            positions[view] = position
            waiting.discard(view)
    return {view: position for view, position in positions.items() if position}
