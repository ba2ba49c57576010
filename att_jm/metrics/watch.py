"""What the exporter looks at, read-only: the writer's stats block, the store (the log's end,
the write side's index tables, the rows to count) and the relay's position file.

`Watch.look()` takes one look (the exporter's thread does, twice a second, and each scrape);
`Watch.observation()` is a copy of what the last look found, for `/metrics` and `/healthz`.
Nothing here writes: the store is opened `mode=ro` with `query_only`, in short reads (WAL:
never blocking the writer, never holding back its checkpoints), the stats block and the
position file are read whole.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import structlog

from att_jm.errors import AttJmError
from att_jm.log.rows import TABLE, StoreReader, readonly_uri
from att_jm.metrics.counts import TOPICS, LogCounts
from att_jm.metrics.shared import StatsLayoutError, StatsReader, StatsSnapshot, stats_path
from att_jm.relay.window import position_path, read_position

log = structlog.get_logger("att_jm.metrics")

#: Rows counted in one look at most (the rest in the next): a look stays short.
LOOK_ROWS: Final = 50_000


@dataclass(frozen=True)
class Observation:
    """What one look found (None: not known, the matching `*_error` may say why)."""

    at: float  # time.monotonic() of the look
    store: str
    store_error: str | None = None
    log_end: int | None = None
    queue: dict[str, int] | None = None  # queued, running, retries_waiting
    tables: dict[str, int] | None = None  # executed, failed
    relay_confirmed: int | None = None  # None: no position file (yet)
    relay_stalled: float = 0.0  # seconds since positions wait and the relay's did not move
    stats: StatsSnapshot | None = None
    stats_error: str | None = None
    writer_alive: bool | None = None  # the stats block's pid exists (None: not known)
    counts: LogCounts = field(default_factory=LogCounts)
    started_at: float = 0.0  # the exporter's start, wall clock
    counted_from: int | None = None  # the log position the counters start after

    @property
    def relay_lag(self) -> int | None:
        """Positions stored and not yet confirmed published."""
        if self.log_end is None:
            return None
        return max(0, self.log_end - (self.relay_confirmed or 0))


def pid_alive(pid: int) -> bool | None:
    """Whether process `pid` exists (None: cannot tell, e.g. pid 0)."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    except OSError:
        return None
    return True


def index_counts(db: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
    """(queued, running, retries_waiting) and (executed, failed) counts from the write side's
    index tables (`att_jm.application.index`: `jm_queue`, `jm_finished`)."""
    queue = {"queued": 0, "running": 0, "retries_waiting": 0}
    for state, count, retries in db.execute(
        "SELECT state, count(*), count(not_before) FROM jm_queue GROUP BY state"
    ):
        if state in ("queued", "running"):
            queue[state] = int(count)
        if state == "queued":
            queue["retries_waiting"] = int(retries)
    tables = {"executed": 0, "failed": 0}
    for table, count in db.execute("SELECT tbl, count(*) FROM jm_finished GROUP BY tbl"):
        if table in tables:
            tables[table] = int(count)
    return queue, tables


class Watch:
    """The exporter's sources and the state it keeps between looks."""

    def __init__(self, store: str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._monotonic = monotonic
        path = stats_path(store)
        self._stats = None if path is None else StatsReader(path)
        self._position_path = position_path(store)
        self._db: sqlite3.Connection | None = None
        self._rows: StoreReader | None = None
        self._after: int | None = None  # rows counted up to here
        self._counted_from: int | None = None
        self._counts = LogCounts()
        self._last_confirmed: int | None = None
        self._waiting_since: float | None = None
        self._started_at = time.time()
        self._last = Observation(at=monotonic(), store=store, started_at=self._started_at)

    def observation(self) -> Observation:
        return self._last

    def look(self) -> Observation:
        """Look at every source once; the observation (kept for `observation()`)."""
        now = self._monotonic()
        stats, stats_error = self._read_stats()
        store_error: str | None = None
        end = queue = tables = None
        try:
            end, queue, tables = self._read_store()
            self._count(end)
        except (sqlite3.Error, OSError, ValueError, AttJmError) as error:
            store_error = f"{type(error).__name__}: {error}"
            self._close_store()
        confirmed = read_position(self._position_path)
        stalled = self._stall(now, end, confirmed)
        self._last = Observation(
            at=now, store=self.store, store_error=store_error, log_end=end, queue=queue,
            tables=tables, relay_confirmed=confirmed, relay_stalled=stalled, stats=stats,
            stats_error=stats_error,
            writer_alive=None if stats is None else pid_alive(stats.pid),
            counts=self._counts.copy(), started_at=self._started_at,
            counted_from=self._counted_from,
        )
        return self._last

    def close(self) -> None:
        self._close_store()
        if self._stats is not None:
            self._stats.close()

    # Sources ---------------------------------------------------------------------------

    def _read_stats(self) -> tuple[StatsSnapshot | None, str | None]:
        if self._stats is None:
            return None, "an in-memory store has no stats block"
        try:
            stats = self._stats.read()
        except (StatsLayoutError, OSError) as error:
            return None, f"{self._stats.path}: {error}"
        if stats is None:
            return None, f"no stats block at {self._stats.path} (the writer never started here)"
        return stats, None

    def _read_store(self) -> tuple[int, dict[str, int] | None, dict[str, int] | None]:
        """(log end, queue counts, table counts), in one read transaction."""
        db = self._connect()
        db.execute("BEGIN")
        try:
            row = db.execute(f"SELECT max(rowid) FROM {TABLE}").fetchone()  # noqa: S608 -- fixed name
            counts: tuple[dict[str, int], dict[str, int]] | tuple[None, None]
            try:
                counts = index_counts(db)
            except sqlite3.OperationalError:  # no index tables (yet): a store never served
                counts = (None, None)
        finally:
            if db.in_transaction:
                db.execute("COMMIT")
        return int(row[0] or 0), *counts

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if not os.path.isfile(self.store):
                raise FileNotFoundError(f"no store file at {self.store}")
            db = sqlite3.connect(readonly_uri(self.store), uri=True, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA query_only = 1")
            db.execute("PRAGMA busy_timeout = 2000")
            self._db = db
        return self._db

    def _count(self, end: int) -> None:
        """Count the rows after the last look, up to `end` (LOOK_ROWS at most)."""
        if self._after is None or end < self._after:  # the first look, or another log
            if self._after is not None:
                log.warning("metrics.log_shrank", position=end, counted_to=self._after)
            self._after = self._counted_from = end
            return
        if end == self._after:
            return
        if self._rows is None:
            self._rows = StoreReader(self.store)
        upto = min(end, self._after + LOOK_ROWS)
        for page in self._rows.raw_pages(self._after, upto, TOPICS):
            self._counts.add(page)
        self._after = upto

    def _close_store(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._rows is not None:
            self._rows.close()
            self._rows = None

    def _stall(self, now: float, end: int | None, confirmed: int | None) -> float:
        """How long positions have waited without the relay's confirmed position moving."""
        waiting = end is not None and end > (confirmed or 0)
        if not waiting:
            self._waiting_since = None
        elif self._waiting_since is None or confirmed != self._last_confirmed:
            self._waiting_since = now
        self._last_confirmed = confirmed
        return 0.0 if self._waiting_since is None else now - self._waiting_since
