"""The seal hash chain over stored rows (pure: rows in, hashes out).

Only what never changes after insert is hashed: the position (rowid), originator_id,
originator_version, topic and state bytes of each row. For one row:

    content = SHA-256(u32 len(id) | id | i64 version | u32 len(topic) | topic | state)

(ids and topics UTF-8, integers big-endian). A seal covering the rows at positions
(P, Q], with P the previous seal's `position` (the first seal covers every position up to Q),
has

    hash = SHA-256(previous hash bytes | for each row in position order: i64 position | content)

with `previous` = "" (no bytes) for the first seal. Each seal also keeps the first 4 bytes
of every content digest (`digests`) and the positions that existed (`ranges`), so that a
verifier can name the position of a change; the `hash` is what proves there was none.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from att_jm.domain.times import iso
from att_jm.log.codec import content_bytes, loads_state
from att_jm.log.rows import Row

SEALED_TOPIC: Final = "att_jm:Ledger.Sealed"
OPENED_TOPIC: Final = "att_jm:Ledger.Opened"  # a start (see `att_jm.domain.seals`)
CLOSED_TOPIC: Final = "att_jm:Ledger.Closed"  # a clean stop
#: The sealer's own rows: covered by the next seal like any row, but never a reason for one.
LEDGER_TOPICS: Final = ("att_jm:Ledger.Created", SEALED_TOPIC, OPENED_TOPIC, CLOSED_TOPIC)
SHORT: Final = 4  # bytes of each content digest kept in a seal

_I64: Final = struct.Struct(">q")
_U32: Final = struct.Struct(">I")


def content_digest(originator_id: str, version: int, topic: str, state: bytes) -> bytes:
    """SHA-256 of one row's content (everything but its position)."""
    oid = originator_id.encode()
    name = topic.encode()
    digest = hashlib.sha256(_U32.pack(len(oid)))
    digest.update(oid)
    digest.update(_I64.pack(version))
    digest.update(_U32.pack(len(name)))
    digest.update(name)
    digest.update(state)
    return digest.digest()


def row_digest(row: Row) -> bytes:
    """The content digest of a stored row: of its state's JSON whatever its encoding
    (`att_jm.log.codec.content_bytes`)."""
    return content_digest(row.originator_id, row.originator_version, row.topic,
                          content_bytes(row.state))


@dataclass
class SealHasher:
    """Accumulates the rows of one seal, in position order."""

    previous: str
    count: int = 0
    ranges: list[list[int]] = field(default_factory=list)
    _digests: list[str] = field(default_factory=list)
    _hash: Any = None

    def __post_init__(self) -> None:
        self._hash = hashlib.sha256(bytes.fromhex(self.previous))

    def add(self, position: int, digest: bytes) -> None:
        self._hash.update(_I64.pack(position))
        self._hash.update(digest)
        self._digests.append(digest[:SHORT].hex())
        self.count += 1
        if self.ranges and self.ranges[-1][1] == position - 1:
            self.ranges[-1][1] = position
        else:
            self.ranges.append([position, position])

    def add_rows(self, rows: Iterable[Row]) -> None:
        for row in rows:
            self.add(row.position, row_digest(row))

    @property
    def hash(self) -> str:
        return str(self._hash.hexdigest())

    @property
    def digests(self) -> str:
        return "".join(self._digests)


@dataclass(frozen=True)
class Seal:
    """One seal as stored in the log (`att_jm:Ledger.Sealed`) and published on `.../seals`."""

    number: int  # 1 for the first seal of the log
    event_position: int  # where the seal event itself is in the log
    position: int  # the last position it covers
    previous: str
    hash: str
    count: int
    ranges: tuple[tuple[int, int], ...]
    at: str

    def message(self) -> dict[str, Any]:
        """The retained message on `P/job-manager/seals`, and a witness file's line."""
        return {"position": self.position, "hash": self.hash, "previous": self.previous,
                "count": self.count, "at": self.at}


def expected_positions(ranges: Iterable[Iterable[int]]) -> Iterable[int]:
    for first, last in ranges:
        yield from range(first, last + 1)


def split_digests(digests: str) -> list[str]:
    width = 2 * SHORT
    return [digests[i : i + width] for i in range(0, len(digests), width)]


def read_seal(row: Row, number: int) -> Seal:
    """The seal stored in `row` (an `att_jm:Ledger.Sealed` event); ValueError when malformed."""
    try:
        state = loads_state(row.state)
        at = state["timestamp"]["_data_"]
        seal = Seal(
            number=number, event_position=row.position, position=int(state["position"]),
            previous=str(state["previous"]), hash=str(state["hash"]), count=int(state["count"]),
            ranges=tuple((int(a), int(b)) for a, b in state["ranges"]),
            at=iso(datetime.fromisoformat(at)),
        )
        digests = state["digests"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed seal at position {row.position}: {error!r}") from None
    if not isinstance(digests, str) or len(digests) != 2 * SHORT * seal.count:
        raise ValueError(f"malformed seal at position {row.position}: bad digests")
    return seal


def seal_digests(row: Row) -> list[str]:
    """The short content digests a seal row lists, one per covered row."""
    return split_digests(str(loads_state(row.state)["digests"]))
