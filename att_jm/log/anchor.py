"""The anchor: where the store's log begins once older rows were archived.

`att-jm audit archive` moves the rows of positions (previous anchor, P] to an archive file
(`att_jm.log.archive`) and records, in the store's own table `jm_anchor` (one row per
archival; the current anchor is the one with the largest position), what the store no
longer holds:

- `position` P: the rows up to it are archived (and deleted from the store);
- `first`: the archive's first position (the previous anchor's position plus one);
- the last archived seal: `seal_first`-`position` its range, `seal_hash` its hash (the next
  seal in the store names it as `previous`), `seals` how many seals the archives hold;
- the archive file: its name, size and SHA-256, and when it was made (`created_at`);
- `state`: zstd-compressed JSON of what a start needs from before P: the views at P
  (`views`: every table of the views, `projections.anchor`) and the write index at P
  (`index`: `jm_queue`, `jm_finished`, `jm_jobs`, `att_jm.application.index`).

Readers find it with `read_anchor` (None: the store was never archived); the archive verb
writes it (`AnchorWriter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson
import zstandard

from att_jm.log.backend import Dialect

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jm_anchor (position INTEGER PRIMARY KEY, first INTEGER NOT NULL,
    seal_first INTEGER NOT NULL, seal_hash TEXT NOT NULL, seals INTEGER NOT NULL,
    archive TEXT NOT NULL, archive_size INTEGER NOT NULL, archive_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL, state BLOB NOT NULL)
"""
COLUMNS: Final = ("position", "first", "seal_first", "seal_hash", "seals", "archive",
                  "archive_size", "archive_sha256", "created_at", "state")
_READ: Final = (f"SELECT {', '.join(COLUMNS)} FROM jm_anchor "  # noqa: S608 -- fixed names
                "ORDER BY position DESC LIMIT 1")


@dataclass(frozen=True)
class Anchor:
    """The current anchor of a store (see the module)."""

    position: int
    first: int
    seal_first: int
    seal_hash: str
    seals: int
    archive: str
    archive_size: int
    archive_sha256: str
    created_at: str
    packed: bytes  # the compressed state

    def state(self) -> dict[str, Any]:
        """{"views": ..., "index": ...}: the views and the write index at `position`."""
        data: dict[str, Any] = orjson.loads(zstandard.ZstdDecompressor().decompress(self.packed))
        return data

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "first": self.first,
                "seal": {"first": self.seal_first, "last": self.position,
                         "hash": self.seal_hash, "number": self.seals},
                "archive": {"name": self.archive, "size": self.archive_size,
                            "sha256": self.archive_sha256},
                "created_at": self.created_at}

    def row(self) -> tuple[Any, ...]:
        return (self.position, self.first, self.seal_first, self.seal_hash, self.seals,
                self.archive, self.archive_size, self.archive_sha256, self.created_at,
                self.packed)


def archived_message(anchor: Anchor, what: str) -> str:
    """Why `what` (a position, a time, an execution) cannot be answered from the store
    alone: the rows it needs are in the archives."""
    return (f"{what} is archived: the store holds the log after position {anchor.position} "
            f"only (its anchor, archive {anchor.archive}); pass the archives with --archive "
            "FILE (repeatable, oldest first)")


def pack_state(state: dict[str, Any]) -> bytes:
    """The anchor's state as stored: compressed JSON."""
    return zstandard.ZstdCompressor(level=9).compress(orjson.dumps(state))


def read_anchor(db: Any, dialect: Dialect) -> Anchor | None:
    """The current anchor of the store `db` is connected to (None: never archived, or a
    store from before archival without the table)."""
    errors = dialect.errors()
    try:
        if dialect.name == "sqlite":
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                               "AND name = 'jm_anchor'").fetchone()
        else:
            found = db.execute("SELECT to_regclass('jm_anchor')").fetchone()
            found = None if found is None or found[0] is None else found
        if found is None:
            return None
        row = db.execute(_READ).fetchone()
    except errors:
        return None
    if row is None:
        return None
    values = list(row)
    state = values[-1]
    values[-1] = state.encode() if isinstance(state, str) else bytes(state)
    return Anchor(*values)


def create_table(db: Any, dialect: Dialect) -> None:
    """`jm_anchor`, when missing (in autocommit)."""
    for statement in dialect.ddl(SCHEMA):
        db.execute(statement)


def insert_anchor(cursor: Any, dialect: Dialect, anchor: Anchor) -> None:
    """Record `anchor` (inside the caller's transaction)."""
    cursor.execute(dialect.q(f"INSERT INTO jm_anchor ({', '.join(COLUMNS)}) VALUES "  # noqa: S608 -- fixed names
                             f"({', '.join('?' * len(COLUMNS))})"), anchor.row())
