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
from att_jm.log.rows import AuditError, StoreReader
from att_jm.store import open_store, read_rows
from att_jm.vocabulary import VIEWS
from projections.reader import VIEW_MAX_BYTES
from projections.rebuild import fill
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
    store: str, *, position: int | None = None, at: datetime | None = None,
    progress: Progress | None = None,
) -> PointInTime:
    """The views at log `position` (default: the end), or as they were at time `at`.

    With `at`, the replay stops before the first view event recorded after `at`; the result's
    position is the one just before that event, and views are the same at every position
    between the last event applied and it.
    """
    reader = StoreReader(store)
    app = open_store(store, readonly=True)
    try:
        end = reader.max_position()
        if position is not None:
            if position < 0:
                raise AuditError(f"position must be >= 0, not {position}")
            end = min(position, end)
        views = Views(":memory:")
        if at is None:  # every event up to `end`: only those that leave a trace are read
            fill(app, views, upto=end)
            if progress is not None:
                progress(end)
            return PointInTime(end, views)
        cut_at = iso(at)
        for page in read_rows(app, 0, TOPICS, page=PAGE):
            rows = page if page[-1][0] <= end else [row for row in page if row[0] <= end]
            cut, end = _apply_until(views, rows, cut_at, end)
            if progress is not None and rows:
                progress(rows[-1][0])
            if cut is not None or len(rows) < len(page) or rows[-1][0] >= end:
                break
        views.advance(end)
        return PointInTime(end, views)
    finally:
        app.close()
        reader.close()
