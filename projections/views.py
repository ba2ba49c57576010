"""The Jobs, Queue, Executed, Failed and Settings read models, kept in one SQLite file.

`Views` is the writer of the views file: it applies the log to it with the view rules
(`projections.rules`), written once against plain event data (the stored state as decoded
JSON, or a live event's fields) and applied to an in-memory overlay of the rows a batch
touches. Only the net result of a batch is written, with the tracked log position, in one
transaction: each event is applied exactly once, a row created and removed inside one batch
costs no SQL at all, and `reset()` plus a catch-up rebuilds everything from zero with the
same rules. What it reads (rows, positions, the bounded view messages) is
`projections.reader.ViewReader`'s; the file's shape is `projections.schema`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from att_jm.log.backend import POSTGRES
from att_jm.vocabulary import VIEWS
from projections.reader import VIEW_MAX_BYTES, ViewReader, cut_cell, cut_row
from projections.rules import (
    NO_DATA,
    RULES,
    TOPICS,
    Overlay,
    event_fields,
    run_rules,
    statements,
    stored_items,
)
from projections.schema import TABLES, connect

# Also importable from here: what a caller of the views needs most (the views' names are
# `att_jm.vocabulary`'s, the topics a catch-up reads `projections.rules`').
__all__ = ["TOPICS", "VIEWS", "VIEW_MAX_BYTES", "Views", "cut_cell", "cut_row"]


class Views(ViewReader):
    """The read models at `path` (an SQLite file, or a PostgreSQL URL naming the views
    schema; created when missing, unless read-only), read (`ViewReader`) and written (the
    log applied).

    `path=":memory:"` keeps them in memory (replays that must not touch any file).
    """

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        super().__init__(connect(path, readonly=readonly), path)
        # The writer's own tracked position, asked on every turn of its loop, kept until its
        # next write (a reader's file changes under it: no memo).
        self._memo: dict[str, Any] | None = None if readonly else {}
        self._sql = statements(self._dialect)
        self._track = self._q("SELECT position FROM tracking WHERE name = 'views'")

    @property
    def position(self) -> int:
        memo = self._memo
        if memo is not None and "position" in memo:
            return int(memo["position"])
        row = self._db.execute(self._track).fetchone()
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
            else (position, "", "", NO_DATA)  # no rule reads it: only its position counts
            for position, event in items
        )

    def apply_rows(self, rows: Iterable[tuple[int, str, str, bytes]]) -> set[str]:
        """Apply stored rows (position, originator id, topic, state) after the tracked position."""
        return self.apply_data(stored_items(rows))

    def apply_data(self, items: Iterable[tuple[int, str, str, dict[str, Any]]]) -> set[str]:
        """Apply (position, topic, aggregate id, data) in one transaction; the views changed."""
        start = self.position
        overlay = Overlay(self._db, self._dialect)
        position = run_rules(overlay, items, start)
        if position == start:
            return set()
        self._written()
        self._commit(overlay, position)
        return set(overlay.positions)

    def _commit(self, overlay: Overlay, position: int) -> None:
        """The batch's transaction: its rows and the tracked position. On PostgreSQL in one
        pipeline (one round trip, not one per statement), and after a failure the connection
        is dropped (the next use opens another: nothing of an aborted pipeline survives in
        it)."""
        db = self._db
        pipelined = self._dialect is POSTGRES
        try:
            with db.pipeline() if pipelined else contextlib.nullcontext():
                cursor = db.cursor()
                cursor.execute(self._dialect.begin_write)
                overlay.flush(cursor)
                cursor.execute(self._sql.tracking, (position,))
                cursor.execute("COMMIT")
        except BaseException:
            if pipelined:
                db.close()
            else:
                self._rollback()
            raise

    def _rollback(self) -> None:
        """After a failed write: end its transaction (SQLite rolls back by itself on a full
        disk; a lost PostgreSQL connection took it along)."""
        db = self._db
        if not getattr(db, "closed", False) and self._dialect.in_transaction(db):
            db.execute("ROLLBACK")

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
        cursor.execute(self._dialect.begin_write)
        try:
            position = start
            for page in pages:
                overlay = Overlay(self._db, self._dialect)
                position = run_rules(overlay, stored_items(page), position)
                overlay.flush(cursor)
                changed.update(overlay.positions)
            final = {view: at for view, at in positions.items()
                     if view in VIEWS and start < at <= upto and at > changed.get(view, 0)}
            if final:
                cursor.executemany(self._sql.positions, list(final.items()))
            changed.update(final)
            position = max(position, upto)
            if position > start:
                cursor.execute(self._sql.tracking, (position,))
            cursor.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return set(changed)

    def advance(self, position: int) -> None:
        """Record that the log up to `position` holds nothing more for these views."""
        if position > self.position:
            self._written()
            self._db.execute(self._sql.tracking, (position,))

    def reset(self) -> None:
        """Forget every row and the position: the next catch-up rebuilds from zero."""
        c = self._db.cursor()
        self._written()
        c.execute(self._dialect.begin_write)
        for table in TABLES:
            c.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed table names
        c.execute("COMMIT")
