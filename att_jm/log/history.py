"""The whole log of an archived store: its archives, then its rows after the anchor.

`History(store, archives)` is a `StoreReader` (the same methods, the same rows) over the
store `store` and the archive files `archives` (oldest first, `att_jm.log.archive`):
the rows up to the store's anchor come from the archives, the rows after it from the
store. Rows at or before the anchor that an interrupted archival left in the store are
never read (`leftover` counts them). The archives are read and checked once, in one pass
each (`check_archive`), into a temporary SQLite file (`past`, a `StoreReader` on a log
that holds positions 1 to the anchor), removed by `close()`; their chain is checked too:
the first starts at position 1, each one continues the one before (positions and seal
hashes), and the last ends at the store's anchor (`problems`).

Without archives, the rows before the anchor are simply not there: `missing(position)`
says whether a position is archived, and the verbs ask for `--archive` when a question
needs such rows (`att_jm.log.anchor.archived_message`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from typing import Final

from att_jm.log.anchor import Anchor, read_anchor
from att_jm.log.archive_check import ArchiveCheck, Problem, check_archive
from att_jm.log.backend import dialect_of
from att_jm.log.rows import PAGE, KeyedRow, RawRow, Row, StoreReader
from att_jm.log.stored import TABLE

_SCHEMA: Final = (f"CREATE TABLE {TABLE} (originator_id TEXT, originator_version INTEGER, "
                  "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))")
_INSERT: Final = (f"INSERT OR IGNORE INTO {TABLE} "  # noqa: S608 -- fixed name
                  "(rowid, originator_id, originator_version, topic, state) "
                  "VALUES (?, ?, ?, ?, ?)")
_BATCH: Final = 5000


class History(StoreReader):
    """The log of the store `store` with its archives `archives` (see the module)."""

    def __init__(self, store: str, archives: Sequence[str] = ()) -> None:
        super().__init__(store)
        self.anchor: Anchor | None = read_anchor(self.connection, dialect_of(store))
        self.floor = 0 if self.anchor is None else self.anchor.position
        self.checks: list[ArchiveCheck] = []
        self.problems: list[Problem] = []
        self.past: StoreReader | None = None
        self._directory: str | None = None
        if archives:
            try:
                self._load(archives)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self.past is not None:
            self.past.close()
            self.past = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        StoreReader.close(self)

    # The archives ------------------------------------------------------------------------

    def _load(self, archives: Sequence[str]) -> None:
        self._directory = tempfile.mkdtemp(prefix="att-jm-archives-")
        path = os.path.join(self._directory, "archives.db")
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute(_SCHEMA)
            db.execute("BEGIN")
            batch: list[Row] = []

            def sink(row: Row) -> None:
                batch.append(row)
                if len(batch) >= _BATCH:
                    db.executemany(_INSERT, batch)
                    batch.clear()

            for archive in archives:
                self.checks.append(check_archive(archive, sink))
            db.executemany(_INSERT, batch)
            db.execute("COMMIT")
        finally:
            db.close()
        self.past = StoreReader(path)
        self._chain()

    def _chain(self) -> None:
        """The archives as one chain from position 1 to the anchor. When they are not one
        (an archive missing, out of order, truncated, not this store's), their rows are
        not used: the store is read from its anchor, the problems reported."""
        last, digest = 0, ""
        broken = False
        for check in self.checks:
            self.problems.extend(check.problems)
            broken = broken or any(kind == "archive" for kind, _, _ in check.problems)
            header = check.header
            if header is None:
                continue
            name = os.path.basename(check.path)
            if header.first != last + 1:
                self.problems.append(("archive", header.first, (
                    f"archive {name} holds positions {header.first}-{header.last}, but the "
                    f"next archive must start at position {last + 1} (an archive is missing, "
                    "or they are not given oldest first)")))
            elif header.previous != digest:
                self.problems.append(("chain", header.first, (
                    f"archive {name} continues seal hash {header.previous[:16] or '(none)'}, "
                    f"not {digest[:16] or '(none)'}, the last seal before it (swapped or "
                    "altered)")))
            last, digest = header.last, check.last_hash or header.previous
        anchor = self.anchor
        if anchor is None:
            self.problems.append(("archive", None, "the store has no anchor: it was never "
                                  "archived, so no archive belongs to it"))
        elif (last, digest) != (anchor.position, anchor.seal_hash):
            self.problems.append(("chain", anchor.position, (
                f"the archives end at position {last} (seal hash {digest[:16] or '(none)'}), "
                f"but the store's anchor is at position {anchor.position} (seal hash "
                f"{anchor.seal_hash[:16]}, archive {anchor.archive})")))
        if (broken or len(self.problems) > sum(len(c.problems) for c in self.checks)
                ) and self.past is not None:
            self.past.close()
            self.past = None

    # What is where -----------------------------------------------------------------------

    def missing(self, position: int) -> bool:
        """Whether the row at `position` is archived and no archive was given."""
        return self.past is None and 0 < position <= self.floor

    def leftover(self) -> int:
        """Rows at or before the anchor still in the store (an interrupted archival)."""
        return 0 if self.floor == 0 else StoreReader.count(self, None, self.floor)

    def _parts(self, after: int | None, upto: int | None,
               ) -> Iterator[tuple[StoreReader | None, int | None, int | None]]:
        """(reader, after, upto) of the archives' part, then the store's, of (after, upto]."""
        floor = self.floor
        if floor and (after is None or after < floor):
            if self.past is not None and (upto is None or upto > (after or 0)):
                yield self.past, after, floor if upto is None else min(upto, floor)
            after = floor
        if upto is None or upto > (after or 0):
            yield None, after, upto

    # StoreReader's methods, over both parts ----------------------------------------------

    def count(self, after: int | None = None, upto: int | None = None) -> int:
        return sum((StoreReader.count(self, a, u) if r is None else r.count(a, u))
                   for r, a, u in self._parts(after, upto))

    def row(self, position: int) -> Row | None:
        if position <= self.floor:
            return None if self.past is None else self.past.row(position)
        return StoreReader.row(self, position)

    def aggregate(self, originator_id: str, upto: int | None = None) -> list[Row]:
        rows = [] if self.past is None else self.past.aggregate(originator_id, upto)
        return rows + [r for r in StoreReader.aggregate(self, originator_id, upto)
                       if r.position > self.floor]

    def last_event(self, originator_id: str, topic: str | None = None) -> Row | None:
        found = StoreReader.last_event(self, originator_id, topic)
        if found is not None and found.position > self.floor:
            return found
        return None if self.past is None else self.past.last_event(originator_id, topic)

    def window(self, first: int, last: int, topics: Sequence[str]) -> list[Row]:
        rows = [] if self.past is None or first > self.floor else self.past.window(
            first, min(last, self.floor), topics)
        return rows + StoreReader.window(self, max(first, self.floor + 1), last, topics)

    def raw_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[RawRow]]:
        for reader, a, u in self._parts(after, upto):
            yield from (StoreReader.raw_pages(self, a, u, topics, page) if reader is None
                        else reader.raw_pages(a, u, topics, page))

    def keyed_pages(
        self, after: int | None, upto: int | None, topics: Sequence[str] = (), page: int = PAGE,
    ) -> Iterator[list[KeyedRow]]:
        for reader, a, u in self._parts(after, upto):
            yield from (StoreReader.keyed_pages(self, a, u, topics, page) if reader is None
                        else reader.keyed_pages(a, u, topics, page))

    def max_position(self) -> int:
        end = StoreReader.max_position(self)
        if end <= self.floor and self.past is not None:
            return self.past.max_position()
        return end


@contextlib.contextmanager
def opened(store: str, archives: Sequence[str] = ()) -> Iterator[History]:
    """`History(store, archives)`, closed at the end."""
    history = History(store, archives)
    try:
        yield history
    finally:
        history.close()
