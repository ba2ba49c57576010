"""The Ledger singleton: the chain of audit seals over the event log, and its open/close marks.

A seal says "the rows at positions (previous seal's `position`, `position`] hash to `hash`".
The hashing reads stored rows, so it happens outside the domain (`att_jm.log.chain`,
`att_jm.application.sealer`); the Ledger only checks that each seal continues the chain and
records it.

A clean stop ends the log with `Closed` (after its final seals, in their transaction); the
next start first records `Opened`, saying what it found after that mark. A row between a
`Closed` and the next `Opened` was written while the service was stopped: `verify` reports it
(`appended`). Neither mark changes the Ledger's state, so snapshots keep their form.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid5

from eventsourcing.domain import Aggregate

from att_jm.domain.ids import NAMESPACE

LEDGER_ID = uuid5(NAMESPACE, "ledger")
SEALER = "sealer"


class Ledger(Aggregate):
    """The last seal of the chain: what the next seal must continue."""

    TOPIC = "att_jm:Ledger"

    class Created(Aggregate.Created):
        TOPIC = "att_jm:Ledger.Created"

    class Sealed(Aggregate.Event):
        """The rows at positions (previous `position`, `position`] hash to `hash`.

        `ranges` lists the positions that existed as [first, last] runs, `digests` the first
        4 bytes (8 hex digits) of each covered row's content digest, in position order: they
        let `verify` name the position of a change, the `hash` proves there was none.
        """

        TOPIC = "att_jm:Ledger.Sealed"
        position: int
        previous: str
        hash: str
        count: int
        ranges: list[list[int]]
        digests: str
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.position = self.position
            aggregate.hash = self.hash
            aggregate.seals += 1

    class Opened(Aggregate.Event):
        """The writer started; what it found at the end of the log before writing anything.

        `closed`: the position of the `Closed` mark the log ended with (None: the previous
        stop did not close the log: a crash, a stop during a store fault, a first start);
        `appended`, `first`, `last`: the rows found after that mark (written while the
        service was stopped); `unsealed`: the rows no seal covered, the Ledger's own aside
        (after an unclean stop, nothing proves they are the service's).
        """

        TOPIC = "att_jm:Ledger.Opened"
        closed: int | None
        appended: int
        first: int | None
        last: int | None
        unsealed: int
        actor: str

    class Closed(Aggregate.Event):
        """A clean stop: every row up to `position` is sealed (the last seal has `hash`); the
        rows after it are this transaction's seals; the service writes nothing more until
        its next start records `Opened`."""

        TOPIC = "att_jm:Ledger.Closed"
        position: int
        hash: str
        actor: str

    def __init__(self) -> None:
        # Plain JSON values only: snapshots store them.
        self.position = 0
        self.hash = ""
        self.seals = 0

    @classmethod
    def create(cls, at: datetime) -> Ledger:
        return cls._create(cls.Created, id=LEDGER_ID, timestamp=at)

    def seal(
        self, position: int, previous: str, digest: str, count: int, ranges: list[list[int]],
        digests: str, at: datetime,
    ) -> None:
        """Record a seal that continues the chain; ValueError when it does not."""
        if previous != self.hash:
            raise ValueError(f"seal does not continue the chain: previous {previous!r}")
        if position <= self.position:
            raise ValueError(f"seal position {position} is not after {self.position}")
        if len(digests) != 8 * count:
            raise ValueError(f"{count} rows need {8 * count} digest characters")
        self.trigger_event(
            self.Sealed, position=position, previous=previous, hash=digest, count=count,
            ranges=ranges, digests=digests, actor=SEALER, timestamp=at,
        )

    def open(
        self, closed: int | None, appended: int, first: int | None, last: int | None,
        unsealed: int, at: datetime,
    ) -> None:
        """Record a start, with what it found after the last `Closed` mark (or its absence)."""
        self.trigger_event(
            self.Opened, closed=closed, appended=appended, first=first, last=last,
            unsealed=unsealed, actor=SEALER, timestamp=at,
        )

    def close(self, at: datetime) -> None:
        """Record a clean stop: the log is sealed through the last seal's position."""
        self.trigger_event(self.Closed, position=self.position, hash=self.hash, actor=SEALER,
                           timestamp=at)
