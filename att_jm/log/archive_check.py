"""An archive file read back and checked (the format: `att_jm.log.archive`).

`check_archive` reads a file in one pass: the trailer's SHA-256 of everything before it,
the rows in order and without a gap, and the seal chain recomputed from the rows
(`att_jm.log.chain`), continuing the header's `previous` and ending at its `last`; a
changed row is named by its position (the seals' short digests), a damaged or truncated
file by its name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from att_jm.log.archive import ArchiveError, ArchiveReader, Header
from att_jm.log.chain import (
    Seal,
    SealHasher,
    expected_positions,
    read_seal,
    row_digest,
    seal_digests,
)
from att_jm.log.stored import Row

#: (kind, position or None, sentence): what `check_archive` found wrong.
Problem = tuple[str, int | None, str]


@dataclass
class ArchiveCheck:
    """What `check_archive` found: the archive's header and seals, its rows, its problems."""

    path: str
    header: Header | None = None
    rows: int = 0
    seals: list[Seal] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    #: Each seal's short row digests, by seal number.
    digests: dict[int, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def last_hash(self) -> str:
        """The hash of the archive's last seal (what the next archive or anchor continues)."""
        return self.seals[-1].hash if self.seals else ""

    def problem(self, kind: str, position: int | None, text: str) -> None:
        name = os.path.basename(self.path)
        self.problems.append((kind, position, f"archive {name}: {text}"))


def check_archive(path: str, sink: Callable[[Row], None] | None = None) -> ArchiveCheck:
    """Read the archive at `path` in one pass and check it (see the module); every row is
    also given to `sink`, when set, as it streams by."""
    check = ArchiveCheck(path)
    try:
        with ArchiveReader(path) as reader:
            check.header = header = reader.header
            check.seals = _seals(check, reader.seal_rows, header)
            _rows(check, reader.rows(), sink)
    except ArchiveError as error:
        check.problems.append(("archive", None, str(error)))
    return check


def _seals(check: ArchiveCheck, rows: list[Row], header: Header) -> list[Seal]:
    seals: list[Seal] = []
    previous = header.previous
    for number, row in enumerate(rows, start=header.seals_before + 1):
        try:
            seal = read_seal(row, number)
        except ValueError as error:
            check.problem("seal", row.position, str(error))
            continue
        if seal.previous != previous:
            check.problem("chain", row.position, (
                f"seal #{number} names previous hash {seal.previous[:16] or '(none)'}, "
                f"expected {previous[:16] or '(none)'} (a seal is missing, altered or the "
                "archives are out of order)"))
        previous = seal.hash
        check.digests[number] = seal_digests(row)
        seals.append(seal)
    if not seals or seals[-1].position != header.last:
        check.problem("chain", header.last, (
            f"its seals do not end at its last position {header.last}"))
    return seals


def _rows(check: ArchiveCheck, rows: Iterator[Row], sink: Callable[[Row], None] | None
          ) -> None:
    """The rows against the seals' positions and digests, each seal's hash recomputed."""
    header = check.header
    assert header is not None  # noqa: S101 -- read before the rows
    wanted = ((seal, position, short) for seal in check.seals for position, short in zip(
        expected_positions(seal.ranges), check.digests[seal.number], strict=False))
    hasher: SealHasher | None = None
    seal: Seal | None = None
    want = next(wanted, None)
    for row in rows:
        check.rows += 1
        if sink is not None:
            sink(row)
        if not header.first <= row.position <= header.last:
            check.problem("inserted", row.position, f"position {row.position} is outside "
                          f"its range {header.first}-{header.last}")
            continue
        while want is not None and want[1] < row.position:
            check.problem("deleted", want[1], f"position {want[1]}: the event is missing")
            want = next(wanted, None)
        if want is None or want[1] != row.position:
            check.problem("inserted", row.position, f"position {row.position}: an event "
                          "no seal covers")
            continue
        if want[0] is not seal:
            _close(check, seal, hasher)
            seal, hasher = want[0], SealHasher(want[0].previous)
        digest = row_digest(row)
        assert hasher is not None  # noqa: S101 -- set with `seal`
        hasher.add(row.position, digest)
        if digest[:4].hex() != want[2]:
            check.problem("modified", row.position,
                          f"position {row.position}: the archived event was modified")
        want = next(wanted, None)
    while want is not None:
        check.problem("deleted", want[1], f"position {want[1]}: the event is missing")
        want = next(wanted, None)
    _close(check, seal, hasher)


def _close(check: ArchiveCheck, seal: Seal | None, hasher: SealHasher | None) -> None:
    if seal is None or hasher is None:
        return
    if hasher.hash != seal.hash or hasher.count != seal.count:
        check.problem("seal", seal.position, (
            f"seal #{seal.number} (up to position {seal.position}): the archived rows no "
            "longer hash to the sealed hash"))
