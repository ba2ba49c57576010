"""Point-in-time views: the log replayed into in-memory `projections.views.Views`.

The replay uses the very rules the live service uses (`projections.rules`), fed with the
stored rows as a catch-up feeds them (`stored_fields`), so a view at position N is exactly
what the service published when its log ended at N. Only the rows the
views read are selected (`projections.rules.TOPICS`, filtered in SQL); up to a position,
only those that leave a trace in the views (`projections.rebuild.fill`: gone executions are
skipped, their effect on the views' positions taken from the topics). Nothing is written
anywhere but memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from att_jm.domain.times import iso
from att_jm.log.anchor import archived_message
from att_jm.log.history import History
from att_jm.log.rows import AuditError
from att_jm.vocabulary import VIEWS
from projections.anchor import start_from_anchor
from projections.reader import VIEW_MAX_BYTES
from projections.rebuild import fill_from
from projections.rules import TOPICS, stored_fields
from projections.views import Views

PAGE: Final = 50000
Progress = Callable[[int], None]


@dataclass
class PointInTime:
    """The views at `position`: every event up to it applied, none after."""

    position: int
    views: Views

    def payload(self, view: str, limit: int, max_bytes: int = VIEW_MAX_BYTES) -> dict[str, Any]:
        """The view message as the service publishes it (`position` = last change of it),
        with the service's caps (`view_rows`, `view_max_bytes`)."""
        return self.views.payload(view, limit, max_bytes=max_bytes)

    def payloads(
        self, names: tuple[str, ...] = VIEWS, limit: int = 1000, max_bytes: int = VIEW_MAX_BYTES,
    ) -> dict[str, Any]:
        return {name: self.payload(name, limit, max_bytes) for name in names}

    def close(self) -> None:
        self.views.close()


def _apply_until(
    views: Views, rows: list[tuple[int, str, str, bytes]], cut_at: str, end: int
) -> tuple[int | None, int]:
    """Apply the rows recorded at or before `cut_at`; (index of the first after it, new end)."""
    items = [(pos, topic, aggregate, stored_fields(aggregate, state))
             for pos, aggregate, topic, state in rows]
    cut = next((i for i, item in enumerate(items) if item[3]["at"] > cut_at), None)
    if cut is not None:
        end = items[cut][0] - 1
        items = items[:cut]
    views.apply_data(items)
    return cut, end


def replay_views(
    store: str | History, *, position: int | None = None, at: datetime | None = None,
    progress: Progress | None = None,
) -> PointInTime:
    """The views at log `position` (default: the end), or as they were at time `at`.

    With `at`, the replay stops before the first view event recorded after `at`; the result's
    position is the one just before that event, and views are the same at every position
    between the last event applied and it. `store`: a store, or its `History` (with its
    archives): on an archived store, a moment after the anchor starts from the anchor's
    views; one before it needs the archives.
    """
    reader = History(store) if isinstance(store, str) else store
    try:
        end = reader.max_position()
        if position is not None:
            if position < 0:
                raise AuditError(f"position must be >= 0, not {position}")
            end = min(position, end)
        views = Views(":memory:")
        if at is None:  # every event up to `end`: only those that leave a trace are read
            _fill(reader, views, end)
            if progress is not None:
                progress(end)
            return PointInTime(end, views)
        cut_at = iso(at)
        start = _start(reader, views, cut_at)
        for page in reader.keyed_pages(start, None, TOPICS, page=PAGE):
            rows = page if page[-1][0] <= end else [row for row in page if row[0] <= end]
            cut, end = _apply_until(views, rows, cut_at, end)
            if progress is not None and rows:
                progress(rows[-1][0])
            if cut is not None or len(rows) < len(page) or rows[-1][0] >= end:
                break
        views.advance(end)
        return PointInTime(end, views)
    finally:
        if isinstance(store, str):
            reader.close()


def _fill(reader: History, views: Views, end: int) -> None:
    """The views at `end`: from the archives' log when `end` is before the anchor."""
    anchor = reader.anchor
    if anchor is not None and end < anchor.position:
        if reader.past is None:
            raise AuditError(archived_message(anchor, f"position {end}"))
        fill_from(reader.past, views, end)
        return
    fill_from(reader, views, end)


def _start(reader: History, views: Views, cut_at: str) -> int:
    """Where a replay to the time `cut_at` reads from: the anchor (its views loaded) when
    the first row after it is not later than `cut_at`, else the first row (archives
    needed)."""
    anchor = reader.anchor
    if anchor is None:
        return 0
    first = next(reader.rows(after=anchor.position, page=1), None)
    if first is not None and stored_fields("", first.state)["at"] <= cut_at:
        start_from_anchor(views, anchor)
        return anchor.position
    if reader.past is None:
        raise AuditError(archived_message(anchor, f"the log at {cut_at}"))
    return 0
