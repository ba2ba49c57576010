"""What the log's readers share: a stored row, its forms, and the reader's errors.

`att_jm.log.rows.StoreReader` is the reader; the SQL of each engine is in
`att_jm.log.sqlite_rows` and `att_jm.log.pg_rows`, which build on these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import quote

from att_jm.errors import AttJmError

TABLE: Final = "stored_events"  # SQLite's table of events (PostgreSQL: backend.PG_EVENTS)
SNAPSHOTS: Final = "stored_snapshots"
PAGE: Final = 5000
#: A stored originator id (32 hex digits in SQLite) in the usual UUID text form, made by SQLite.
DASHED_ID_SQL: Final = (
    "CASE WHEN length(originator_id) = 32 THEN substr(originator_id, 1, 8) || '-' || "
    "substr(originator_id, 9, 4) || '-' || substr(originator_id, 13, 4) || '-' || "
    "substr(originator_id, 17, 4) || '-' || substr(originator_id, 21) ELSE originator_id END"
)

#: A row as the reader's queries give it: (position, originator id, version, topic, state).
RawRow = tuple[int, str, int, str, bytes]
#: A row as the view rules and the write index take it: (position, aggregate id in UUID
#: text form, topic, state); see `StoreReader.keyed_pages`.
KeyedRow = tuple[int, str, str, bytes]


class AuditError(AttJmError):
    """The audit cannot go on: no store, not a store, a bad argument, a broken file."""


class Row(NamedTuple):
    """One stored event as it is in the store: what a seal hashes and `export` writes."""

    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


def readonly_uri(path: str) -> str:
    """The SQLite URI that opens `path` read-only (never creates it)."""
    return f"file:{quote(str(Path(path).resolve()))}?mode=ro"


class UndecodableText:
    """What a reader puts in place of a row's state when a text column of the row is not
    UTF-8 (`column`: its name; see `StoreReader.next_rows`): no message is made of such a
    row (`att_jm.log.messages.undecodable_message`)."""

    __slots__ = ("column",)

    def __init__(self, column: str) -> None:
        self.column = column


def as_row(raw: tuple[Any, ...]) -> Row:
    """A `Row` of a raw row, whatever a hand-edited store holds in its cells."""
    position, originator_id, version, topic, state = raw
    if isinstance(state, str):  # a hand-edited row may hold TEXT instead of the BLOB
        state = state.encode()
    elif state is None:
        state = b""
    if not isinstance(version, int):  # idem: a version that is no integer reads as 0
        try:
            version = int(version)
        except (TypeError, ValueError, OverflowError):
            version = 0
        if not -(2**63) <= version < 2**63:
            version = 0
    return Row(int(position), str(originator_id), version, str(topic), bytes(state))


class Survey(NamedTuple):
    """What a rebuild from empty views reads (see `projections.rebuild`), in the reader's
    own form: the view events up to a position, the live executions, the other views'
    events."""

    covered: int
    live: Any
    others: Any




def range_clause(after: int | None, upto: int | None, column: str,
                 mark: str) -> tuple[str, tuple[int, ...]]:
    """`WHERE` positions (`column`) in (after, upto] (None: unbounded; "" when both are),
    with the engine's placeholder `mark`, and its parameters."""
    clauses: list[str] = []
    params: list[int] = []
    if after is not None:
        clauses.append(f"{column} > {mark}")
        params.append(after)
    if upto is not None:
        clauses.append(f"{column} <= {mark}")
        params.append(upto)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def paged(read: Callable[[int | None], list[Any]], after: int | None,
          page: int) -> Iterator[list[Any]]:
    """The pages `read(after)` gives (rows whose first column is the position, at most
    `page` of them, after `after`), each read after the last row of the one before, until a
    page comes back short."""
    while True:
        raws = read(after)
        if not raws:
            return
        yield raws
        if len(raws) < page:
            return
        after = raws[-1][0]
