"""Faults of the store: which ones may pass (retried) and which are the message's own, and
the optimistic-concurrency conflict.

    StoreConflict (AttJmError)   an event's (aggregate id, version) is stored already: another
                                 writer stored that aggregate first (its cause: the driver's
                                 IntegrityError, so `is_transient` says False)

`is_transient(error)` walks the cause chain (eventsourcing wraps the driver's error) and
decides by the driver's own code: SQLite's primary result code, PostgreSQL's SQLSTATE class.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from eventsourcing import persistence

from att_jm.errors import AttJmError
from att_jm.log.backend import psycopg_loaded


class StoreConflict(AttJmError):
    """An event's aggregate already has its version stored (optimistic concurrency): another
    writer saved that aggregate first. Nothing of the transaction was stored; reload the
    aggregates and decide again."""

    code = "conflict"


#: SQLite result codes (primary) of faults that may pass: busy, locked, out of memory,
#: read-only (a remount), interrupted, I/O error, corrupt (the operator must act: never the
#: message's fault), disk full, cannot open, protocol, not a database.
_TRANSIENT_CODES: Final = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})
#: PostgreSQL SQLSTATE classes of faults that may pass: connection (08), invalid transaction
#: state (25: a read-only standby, a fail-over under way), transaction rollback (40:
#: serialization failure, deadlock), insufficient resources (53: disk full, out of memory,
#: too many connections), object not in prerequisite state (55: lock not available),
#: operator intervention (57: admin shutdown, statement cancelled, cannot connect now),
#: system error (58: I/O), internal error (XX: corruption, the operator must act).
_TRANSIENT_CLASSES: Final = frozenset({"08", "25", "40", "53", "55", "57", "58", "XX"})
#: Single SQLSTATEs that may pass although their class does not: insufficient privilege (a
#: grant the operator restores).
_TRANSIENT_STATES: Final = frozenset({"42501"})
#: What the library raises (wrapping the driver's error as its cause) for faults of the store.
_STORE_FAULTS: Final = (
    persistence.OperationalError, persistence.InterfaceError, persistence.InternalError,
)


def is_transient(error: BaseException) -> bool:
    """Whether `error` is a fault of the store (or the machine) that may pass: retried with
    back-off. Anything else (a constraint, data the engine refuses, a bug in a handler) fails
    the same way on every retry: a deterministic failure of the message being handled."""
    psycopg = psycopg_loaded()
    seen: BaseException | None = error
    for _ in range(8):  # the library's error wraps the driver's as its cause
        if seen is None:
            break
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)
            if isinstance(code, int):
                return (code & 0xFF) in _TRANSIENT_CODES
            return isinstance(seen, sqlite3.OperationalError)
        if psycopg is not None and isinstance(seen, psycopg.Error):
            state = seen.sqlstate
            if state is None:  # no server answer: the connection is lost or closed
                return isinstance(seen, (psycopg.OperationalError, psycopg.InterfaceError))
            return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
        seen = seen.__cause__
    return isinstance(error, (OSError, MemoryError, *_STORE_FAULTS))
