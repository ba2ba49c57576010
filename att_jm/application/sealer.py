"""The service's sealer: appends seals of the stored rows to the log (see `att_jm.log.chain`).

Every row of the log is covered by exactly one seal: seal k covers the positions
(position of seal k-1, position of seal k], at most `every_events` rows each. A seal
event is itself a row, so the next seal covers it. A seal is due when `every_events` rows
wait, or when the first row still waiting came `every_seconds` ago; sealing then covers every
waiting row (in seals of at most `every_events` rows), in one small transaction of its own.

The writer brackets its run with two marks on the Ledger (`att_jm.domain.seals`): at start,
before writing anything, `open_log()` checks the end of the log (`att_jm.log.tail`) and
records `Ledger.Opened`; at a clean stop, as its last write, `close_log()` seals every
waiting row and records `Ledger.Closed` in the same transaction. Both are rows like any
other: the next seal covers them (the marks, like the seal events, never make one due).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Recording

from att_jm.domain.seals import LEDGER_ID, Ledger
from att_jm.log.chain import LEDGER_TOPICS, Seal, SealHasher, read_seal, row_digest
from att_jm.log.rows import Row, StoreReader
from att_jm.log.tail import Tail, tail_check
from att_jm.store import JobManagerApp

log = structlog.get_logger("att_jm")

SNAPSHOT_EVERY: Final = 100  # Ledger versions between two snapshots
RETRY_SECONDS: Final = 5.0
PREPARE_ROWS: Final = 256  # rows digested by one `prepare()` at most


class Sealer:
    """Seals the log of `app`, whose SQLite file is `store`; one per writer."""

    def __init__(
        self, app: JobManagerApp, store: str, *, every_events: int, every_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.reader = StoreReader(store)
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.monotonic = monotonic
        self.ledger = self._load()
        # Rows after the last sealed position that are the sealer's own (its seal events).
        self._own = self.reader.count_topics(self.sealed_position, LEDGER_TOPICS)
        self._since: float | None = None
        self._retry_at = 0.0
        self._stale = False  # a failed seal may have left unsaved events on the Ledger
        self._full = False  # every_events rows wait (as of the last `due()`)
        self._end: int | None = None  # the log's last position, as the writer last noted it
        # (position, content digest) of the rows after the last seal read so far by
        # `prepare()`, in log order, without a gap: the rows are never changed afterwards.
        self._digested: list[tuple[int, bytes]] = []
        self._digested_after = 0  # the position `_digested` follows

    def _load(self) -> Ledger | None:
        """The stored Ledger; None before the first seal (which creates it)."""
        try:
            ledger: Ledger = self.app.repository.get(LEDGER_ID)
        except AggregateNotFoundError:
            return None
        return ledger

    @property
    def sealed_position(self) -> int:
        """The last position the seals cover (0 before the first seal)."""
        return 0 if self.ledger is None else self.ledger.position

    def close(self) -> None:
        self.reader.close()

    def note(self, position: int) -> None:
        """The log's last position is now `position` (the writer, after each commit: then
        `pending()` needs no query, asked on every turn of its loop)."""
        self._end = position if self._end is None else max(self._end, position)

    def prepare(self, limit: int = PREPARE_ROWS, *, least: int = 1) -> int:
        """Read and digest up to `limit` rows not sealed yet (the writer calls it when idle),
        so that the seal, when due, reads and hashes only what is left: a seal of 1,000 rows
        took ~5 ms in one go. Nothing while fewer than `least` rows are known to wait (one
        read for many rows). The number of rows digested."""
        if not self._digested:
            self._digested_after = self.sealed_position
        start = self._digested[-1][0] if self._digested else self._digested_after
        if self._end is not None and self._end - start < max(1, least):
            return 0
        rows = next(self.reader.pages(after=start, page=limit), [])
        self._digested.extend((row.position, row_digest(row)) for row in rows)
        return len(rows)

    def pending(self) -> int:
        """Rows stored after the last seal that no seal covers yet (the seal events aside)."""
        end = self.reader.max_position() if self._end is None else self._end
        return max(0, end - self.sealed_position - self._own)

    def due(self) -> bool:
        """Whether a seal is due now (`every_events` rows wait, or one for `every_seconds`)."""
        now = self.monotonic()
        pending = self.pending()
        if pending == 0:
            self._since = None
            self._full = False
            return False
        if self._since is None:
            self._since = now
        self._full = pending >= self.every_events
        if now < self._retry_at:
            return False
        return self._full or now - self._since >= self.every_seconds

    def wait_seconds(self) -> float | None:
        """Seconds until the waiting rows are due by time (None: none waits)."""
        if self._since is None:
            return None
        now = self.monotonic()
        by_time = 0.0 if self._full else self._since + self.every_seconds - now
        return max(0.0, by_time, self._retry_at - now)

    def open_log(self, at: datetime) -> Tail:
        """At start, before anything else is written to the store: check the end of the log
        and record `Ledger.Opened` with what was found, in a transaction of its own.

        The result says whether rows were appended after the last clean stop (`appended`,
        `first`, `last`; `flag()` for the status) or whether that stop was not clean
        (`clean`, `unsealed`); `message()` says it in a sentence. Raises what the store
        raises (nothing is recorded then)."""
        tail = tail_check(self.reader)
        try:
            if self._stale:
                self.ledger = self._load()
                self._stale = False
            ledger = Ledger.create(at) if self.ledger is None else self.ledger
            start_version = 0 if self.ledger is None else ledger.version
            ledger.open(tail.closed, tail.appended, tail.first, tail.last, tail.unsealed, at)
            recordings = self.app.save(ledger)
        except Exception:
            self._stale = True
            with contextlib.suppress(Exception):
                self.ledger = self._load()
                self._stale = False
            raise
        self.ledger = ledger
        self._own += len(recordings)
        self._snapshot_if_due(start_version, ledger.version)
        return tail

    def close_log(self, at: datetime) -> tuple[list[tuple[int, Any]], list[Seal]]:
        """At a clean stop, as the writer's last write: seal every waiting row and record
        `Ledger.Closed` in the same transaction; the stored events and the seals, like
        `seal()`. A row stored after this one is reported by `verify` and by the next
        `open_log()` as appended outside the service."""
        return self._guarded(at, close=True)

    def seal(self, at: datetime) -> tuple[list[tuple[int, Any]], list[Seal]]:
        """Seal every waiting row now; the stored events (with their positions), the seals."""
        return self._guarded(at, close=False)

    def _guarded(self, at: datetime, *, close: bool) -> tuple[list[tuple[int, Any]], list[Seal]]:
        """`_seal`, and after a failure: a pause before the next try, the Ledger reloaded."""
        try:
            if self._stale:
                self.ledger = self._load()
                self._stale = False
            return self._seal(at, close)
        except Exception:
            self._digested = []
            self._retry_at = self.monotonic() + RETRY_SECONDS
            self._stale = True
            with contextlib.suppress(Exception):  # the store may refuse reads too: later then
                self.ledger = self._load()
                self._stale = False
            raise

    def _seal(self, at: datetime, close: bool) -> tuple[list[tuple[int, Any]], list[Seal]]:
        first = self.ledger is None
        ledger = Ledger.create(at) if self.ledger is None else self.ledger
        start_version = 0 if first else ledger.version
        start_seals = ledger.seals
        hasher = SealHasher(ledger.hash)
        after = 0 if first else ledger.position
        digested = self._digested if self._digested_after == after else []
        self._digested = []
        rest = self.reader.pages(after=digested[-1][0] if digested else after,
                                 upto=self.reader.max_position())
        for position, digest in itertools.chain(
            digested, ((row.position, row_digest(row)) for rows in rest for row in rows),
        ):
            hasher.add(position, digest)
            if hasher.count >= self.every_events:
                self._close(ledger, hasher, at)
                hasher = SealHasher(ledger.hash)
        if hasher.count:
            self._close(ledger, hasher, at)
        sealed = ledger.seals > start_seals
        if close:
            ledger.close(at)
        elif ledger.seals == 0 or not ledger.pending_events:
            return [], []
        recordings = self.app.save(ledger)
        self.ledger = ledger
        own = sum(1 for r in recordings if r.notification.topic in LEDGER_TOPICS)
        self._own = own if sealed else self._own + own
        self._since = None
        self._full = False
        self._snapshot_if_due(start_version, ledger.version)
        seals = [
            read_seal(_as_row(r), 0) for r in recordings
            if r.notification.topic == Ledger.Sealed.TOPIC
        ]
        stored = [(r.notification.id, r.domain_event) for r in recordings]
        return stored, _numbered(seals, ledger.seals)

    @staticmethod
    def _close(ledger: Ledger, hasher: SealHasher, at: datetime) -> None:
        """One seal of the rows `hasher` took: up to the last of them."""
        ledger.seal(hasher.ranges[-1][1], hasher.previous, hasher.hash, hasher.count,
                    hasher.ranges, hasher.digests, at)

    def _snapshot_if_due(self, before: int, after: int) -> None:
        """Snapshot the Ledger when its version passed a multiple of SNAPSHOT_EVERY."""
        if after // SNAPSHOT_EVERY > before // SNAPSHOT_EVERY:
            self._snapshot(after)

    def _snapshot(self, version: int) -> None:
        try:
            self.app.take_snapshot(LEDGER_ID, version=version)
        except Exception as error:  # noqa: BLE001 -- the seals are stored; a snapshot only saves load time
            log.warning("ledger.snapshot_failed", version=version, error=repr(error))


def _as_row(recording: Recording[UUID]) -> Row:
    n = recording.notification
    oid = n.originator_id.hex if isinstance(n.originator_id, UUID) else str(n.originator_id)
    return Row(n.id, oid, n.originator_version, n.topic, n.state)


def _numbered(seals: list[Seal], last: int) -> list[Seal]:
    """`seals` (the newest ones) numbered so that the last one is seal number `last`."""
    first = last - len(seals) + 1
    return [replace(seal, number=first + i) for i, seal in enumerate(seals)]
