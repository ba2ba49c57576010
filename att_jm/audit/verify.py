"""`verify`: recompute the seal chain over the stored rows and name what changed, and where.

Three checks run over one pass of the log:
- each seal's hash is recomputed from the rows it covers (`att_jm.log.chain`) and the
  chain of `previous` hashes is followed: this proves the sealed rows are intact;
- the rows are aligned with the seals' per-row digests (with a look-ahead, so a deleted,
  inserted, swapped or renumbered row does not hide the ones after it): this names the
  position of each change;
- every row, sealed or not, is checked on its own and against the rows before it, and every
  stored snapshot against a replay (`att_jm.audit.checks`): what the seals cannot prove
  (the rows after the last seal, rows appended after a clean stop, the snapshots).
A witness's copy of the published seals catches a rewrite of the whole log (`witness`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, NamedTuple

from att_jm.audit.checks import TIME_TOLERANCE, RowChecks, SnapshotChecks
from att_jm.audit.findings import Finding, Findings
from att_jm.log.chain import (
    LEDGER_TOPICS,
    SEALED_TOPIC,
    Seal,
    SealHasher,
    expected_positions,
    read_seal,
    row_digest,
    seal_digests,
)
from att_jm.log.history import History
from att_jm.log.rows import StoreReader

__all__ = ["TIME_TOLERANCE", "Finding", "Progress", "Verification", "read_seals", "verify"]

LOOKAHEAD: Final = 1000  # rows searched ahead to tell a deletion, insertion or swap apart
Progress = Callable[[int], None]  # called with the position reached


@dataclass
class Verification:
    """What `verify` found; `ok` when nothing."""

    events: int = 0
    seals: list[Seal] = field(default_factory=list)
    unsealed: int = 0
    findings: list[Finding] = field(default_factory=list)
    witness: dict[str, Any] | None = None
    aggregates: int = 0  # aggregates whose versions were followed
    snapshots: int = 0  # stored snapshots compared with a replay
    starts: int = 0  # `Ledger.Opened` marks: the service's starts recorded in the log
    closed: int | None = None  # the log ends with a clean stop's mark, at this position
    #: An archived store: its anchor, the archives checked, what was not checked.
    archived: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def sealed_through(self) -> int:
        return self.seals[-1].position if self.seals else 0

    def to_json(self) -> dict[str, Any]:
        last = self.seals[-1] if self.seals else None
        return {
            "ok": self.ok, "events": self.events, "seals": len(self.seals),
            "sealed_through": self.sealed_through,
            "last_seal": None if last is None else {
                **last.message(), "number": last.number, "event_position": last.event_position},
            "unsealed": self.unsealed,
            "aggregates": self.aggregates, "snapshots": self.snapshots, "starts": self.starts,
            "closed": self.closed,
            "findings": [f.to_json() for f in self.findings],
            "witness": self.witness, "archived": self.archived,
        }


class _Item(NamedTuple):
    position: int
    digest: str  # the short content digest (hex)
    topic: str


class _Ahead:
    """An iterator with look-ahead."""

    def __init__(self, items: Iterator[_Item]) -> None:
        self._items = items
        self.buffer: deque[_Item] = deque()

    def peek(self, k: int = 0) -> _Item | None:
        while len(self.buffer) <= k:
            item = next(self._items, None)
            if item is None:
                return None
            self.buffer.append(item)
        return self.buffer[k]

    def pop(self) -> _Item:
        self.peek()
        return self.buffer.popleft()


class Start(NamedTuple):
    """Where the chain starts: the log's first row, or an anchor (the last archived seal)."""

    position: int = 0
    hash: str = ""
    seals: int = 0


def read_seals(reader: StoreReader, findings: list[Finding], start: Start | None = None
               ) -> list[Seal]:
    """The seals of the log that form a chain, in order; problems go to `findings`. From an
    anchor (`start`), the seals of the rows after it, the first continuing its hash."""
    start = start or Start()
    seals: list[Seal] = []
    number = start.seals
    for row in reader.rows(topics=(SEALED_TOPIC,)):
        number += 1
        try:
            seal = read_seal(row, number)
        except ValueError as error:
            findings.append(Finding("seal", row.position, str(error)))
            continue
        if seal.position <= start.position:  # archived: its rows are not in the store
            number -= 1
            continue
        previous = seals[-1] if seals else None
        expected = start.hash if previous is None else previous.hash
        if previous is not None and seal.position <= previous.position:
            findings.append(Finding("chain", row.position, (
                f"seal #{number} at position {row.position} covers up to {seal.position}, "
                f"not after seal #{previous.number} ({previous.position})")))
            continue
        if seal.previous != expected:
            findings.append(Finding("chain", row.position, (
                f"seal #{number} at position {row.position} does not follow "
                + (("the start of the log" if not start.position else
                    f"the anchor at position {start.position}") if previous is None
                   else f"seal #{previous.number}")
                + f": it names previous hash {seal.previous[:16] or '(none)'}, "
                f"expected {expected[:16] or '(none)'} (a seal is missing or altered)")))
        if seal.event_position <= seal.position:
            findings.append(Finding("chain", row.position, (
                f"seal #{number} is stored at position {row.position}, "
                f"inside the range it covers (up to {seal.position})")))
        seals.append(seal)
    return seals


class _Verifier:
    def __init__(self, reader: StoreReader, progress: Progress | None,
                 tolerance: timedelta) -> None:
        self.reader = reader
        self.progress = progress
        self.result = Verification()
        self.raw: list[Finding] = []
        self.found = Findings()
        history = reader if isinstance(reader, History) else None
        anchor = None if history is None else history.anchor
        self.start = Start()
        if anchor is not None and history is not None and history.past is None:
            self.start = Start(anchor.position, anchor.seal_hash, anchor.seals)
        self.snapshots = SnapshotChecks(reader, self.found, anchored=bool(self.start.position))
        self.rows = RowChecks(self.found, tolerance, start=(self.start.position,
                                                            self.start.hash),
                              bases=self.snapshots.bases() if self.start.position else None)
        self.history = history

    def run(self) -> Verification:
        result = self.result
        checks: list[Finding] = []
        if self.history is not None:
            checks.extend(Finding(kind, position, text)
                          for kind, position, text in self.history.problems)
        result.seals = read_seals(self.reader, checks, self.start)
        seals = result.seals
        self._seal = 0
        self._hasher = SealHasher(seals[0].previous) if seals else None
        self._broken: list[Seal] = []
        expected = _Ahead(self._expected())
        actual = _Ahead(self._actual())
        self._align(expected, actual)
        self._drain(actual)
        self._close_seals(len(seals))
        self.rows.finish()
        self.snapshots.finish(self.rows.versions)
        result.aggregates = len(self.rows.versions)
        result.snapshots = self.snapshots.checked
        result.starts = self.rows.starts
        result.closed = self.rows.closed
        result.findings = [*_merge(self.raw), *_broken_seals(self._broken, seals, self.start),
                           *checks, *self.found.all()]
        history = self.history
        if history is not None and history.anchor is not None:
            result.archived = {
                "anchor": history.anchor.to_json(),
                "archives": [os.path.basename(c.path) for c in history.checks],
                "leftover": history.leftover(), "snapshots_from_anchor": self.snapshots.based,
            }
        return result

    # The seals' view of the log, and the log itself -------------------------------------

    def _expected(self) -> Iterator[_Item]:
        for seal in self.result.seals:
            row = self.reader.row(seal.event_position)
            if row is None:
                continue
            for position, digest in zip(expected_positions(seal.ranges), seal_digests(row),
                                        strict=False):
                yield _Item(position, digest, "")

    def _actual(self) -> Iterator[_Item]:
        for rows in self.reader.pages():
            for row in rows:
                self.result.events += 1
                digest = row_digest(row)
                self._hash(row.position, digest)
                state = self.rows.row(row)
                self.snapshots.row(row, state is not None)
                yield _Item(row.position, digest[:4].hex(), row.topic)
            if self.progress is not None:
                self.progress(rows[-1].position)

    def _hash(self, position: int, digest: bytes) -> None:
        seals = self.result.seals
        while self._seal < len(seals) and position > seals[self._seal].position:
            self._close_seals(self._seal + 1)
        if self._hasher is not None and self._seal < len(seals):
            self._hasher.add(position, digest)

    def _close_seals(self, upto: int) -> None:
        """Compare the hashes of the seals before index `upto` that are still open."""
        seals = self.result.seals
        while self._seal < upto and self._hasher is not None:
            seal = seals[self._seal]
            if self._hasher.hash != seal.hash or self._hasher.count != seal.count:
                self._broken.append(seal)
            self._seal += 1
            self._hasher = SealHasher(seals[self._seal].previous) if self._seal < len(
                seals) else None

    # Alignment --------------------------------------------------------------------------

    def _align(self, x: _Ahead, y: _Ahead) -> None:
        while (want := x.peek()) is not None:
            have = y.peek()
            if have is None:
                self._note("deleted", x.pop().position)
            elif want.digest == have.digest:
                x.pop()
                y.pop()
                if want.position != have.position:
                    self._note("renumbered", want.position, have.position - want.position)
            elif not self._swap(x, y, want, have):
                self._skip(x, y, want, have)

    def _swap(self, x: _Ahead, y: _Ahead, want: _Item, have: _Item) -> bool:
        for k in range(1, LOOKAHEAD):
            wk, hk = x.peek(k), y.peek(k)
            if wk is None or hk is None:
                return False
            if wk.digest == have.digest and hk.digest == want.digest:
                self._note("reordered", want.position, wk.position)
                y.buffer[0], y.buffer[k] = (have._replace(digest=want.digest),
                                            hk._replace(digest=have.digest))
                return True
        return False

    def _skip(self, x: _Ahead, y: _Ahead, want: _Item, have: _Item) -> None:
        deleted = _distance(x, have.digest)
        inserted = _distance(y, want.digest)
        if deleted and (not inserted or deleted <= inserted):
            for _ in range(deleted):
                self._note("deleted", x.pop().position)
        elif inserted:
            for _ in range(inserted):
                self._note("inserted", y.pop().position)
        else:
            x.pop()
            y.pop()
            self._note("modified", want.position, have.position - want.position)

    def _drain(self, y: _Ahead) -> None:
        sealed = self.result.sealed_through
        while y.peek() is not None:
            item = y.pop()
            if item.position <= sealed:
                self._note("inserted", item.position)
            elif item.topic not in LEDGER_TOPICS:
                self.result.unsealed += 1

    def _note(self, kind: str, position: int, other: int = 0) -> None:
        self.raw.append(Finding(kind, position, "", last=other))


def _distance(stream: _Ahead, digest: str) -> int:
    for k in range(1, LOOKAHEAD):
        item = stream.peek(k)
        if item is None:
            return 0
        if item.digest == digest:
            return k
    return 0


def _merge(raw: list[Finding]) -> list[Finding]:
    """Runs of the same kind at consecutive positions as one finding each, with a sentence."""
    merged: list[Finding] = []
    start: Finding | None = None
    end = 0
    for finding in [*raw, Finding("", None, "")]:
        if (start is not None and finding.kind == start.kind and finding.kind != "reordered"
                and finding.last == start.last and finding.position == end + 1):
            end += 1
            continue
        if start is not None and start.position is not None:
            merged.append(_sentence(start.kind, start.position, end, start.last or 0))
        start, end = finding, finding.position or 0
    return merged


def _sentence(kind: str, first: int, last: int, other: int) -> Finding:
    where = f"position {first}" if first == last else f"positions {first}-{last}"
    many = last > first
    text = {
        "modified": f"{where}: the stored event{'s were' if many else ' was'} modified",
        "deleted": f"{where}: {'events were' if many else 'the event was'} deleted",
        "inserted": f"{where}: {'events were' if many else 'an event was'} inserted",
        "renumbered": f"{where}: moved by {other:+d} (renumbered)",
        "reordered": f"positions {first} and {other}: the events were swapped (reordered)",
    }[kind]
    if kind == "modified" and other:
        text += f" (replaced by the event now at {first + other})"
    return Finding(kind, first, text, last=other if kind == "reordered" else last)


def _broken_seals(broken: list[Seal], seals: list[Seal], start: Start) -> list[Finding]:
    """Seals whose rows no longer hash to them, consecutive ones as one finding."""
    starts = {s.number: (seals[i - 1].position + 1 if i else start.position + 1)
              for i, s in enumerate(seals)}
    runs: list[list[Seal]] = []
    for seal in broken:
        if runs and runs[-1][-1].number == seal.number - 1:
            runs[-1].append(seal)
        else:
            runs.append([seal])
    findings = []
    for run in runs:
        first, last = run[0], run[-1]
        names = f"seal #{first.number}" if first is last else (
            f"seals #{first.number}-#{last.number}")
        findings.append(Finding("seal", starts[first.number], (
            f"{names} (positions {starts[first.number]}-{last.position}): the rows there no "
            f"longer hash to the sealed hash{'' if first is last else 'es'}"),
            last=last.position))
    return findings


def verify(reader: StoreReader, progress: Progress | None = None, *,
           tolerance: timedelta = TIME_TOLERANCE) -> Verification:
    """Check every sealed row of the log against its seal, every row on its own and against
    the rows before it, and every snapshot against a replay; count the rows no seal covers
    yet. `tolerance`: how far back an event's time may be from the previous one's."""
    return _Verifier(reader, progress, tolerance).run()
