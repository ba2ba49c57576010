"""What `verify` reports: findings, each a kind, the position(s) it is at and a sentence.

Kinds (README "Audit"): against the seals `modified`, `deleted`, `inserted`, `reordered`,
`renumbered`, `seal`, `chain`, `witness`; on every row, sealed or not, `undecodable`,
`unknown_topic`, `version_gap`, `time_backwards`; about the marks a clean stop and a start
leave, `appended` and `closed`; about stored snapshots, `snapshot`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

MAX_LISTED: Final = 1000  # findings of one kind listed; the rest are counted in one more


@dataclass(frozen=True)
class Finding:
    """One problem: its kind, the position(s) it is at, and a sentence about it."""

    kind: str
    position: int | None
    message: str
    last: int | None = None  # the last position of a run of the same kind

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "last": self.last,
                "message": self.message}


class Findings:
    """The findings of the checks on every row, in log order: at most MAX_LISTED of each
    kind, so that a log damaged everywhere is reported in bounded memory."""

    def __init__(self) -> None:
        self.listed: list[Finding] = []
        self._counts: Counter[str] = Counter()

    def add(self, kind: str, position: int | None, message: str,
            last: int | None = None) -> None:
        self._counts[kind] += 1
        if self._counts[kind] <= MAX_LISTED:
            self.listed.append(Finding(kind, position, message, last))

    def all(self) -> list[Finding]:
        """The listed findings, then one per kind that had more than MAX_LISTED."""
        more = [
            Finding(kind, None, f"{count - MAX_LISTED:,} more {kind} findings (not listed)")
            for kind, count in self._counts.items() if count > MAX_LISTED
        ]
        return [*self.listed, *more]
