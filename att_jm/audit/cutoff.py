"""Where an archival may cut the log: the cut-off position P (`att-jm audit archive`).

P is the end position of a seal (so the archive holds whole seals) such that:
- P <= the position asked for (`--upto`), or the seal was made before the time asked for
  (`--before`: every row it covers was recorded before it);
- P < the first event of every execution still live in the write index (`jm_queue`:
  queued or running; `jm_finished`: rows of Executed and Failed): no live row needs it;
- P <= the views' tracked position and the relay's published position (when they exist):
  no consumer still has to read those rows;
- P > the current anchor (the rows up to it are archived already).
The largest such P is taken; `NothingToArchive` says which limit left none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from att_jm.domain.times import iso
from att_jm.log.anchor import Anchor
from att_jm.log.backend import dialect_of, is_postgres
from att_jm.log.chain import SEALED_TOPIC, Seal, read_seal
from att_jm.log.rows import AuditError, StoreReader
from att_jm.log.stored import TABLE

_LIVE_SQLITE = (
    f"SELECT min(rowid) FROM {TABLE} WHERE originator_version = 1 AND originator_id IN "  # noqa: S608 -- fixed names
    "(SELECT replace(id, '-', '') FROM jm_queue UNION SELECT replace(id, '-', '') "
    "FROM jm_finished)")
_LIVE_POSTGRES = (
    "SELECT min(notification_id) FROM jobmanager_events WHERE originator_version = 1 AND "
    "originator_id IN (SELECT id::uuid FROM jm_queue UNION SELECT id::uuid FROM jm_finished)")


class NothingToArchive(AuditError):
    """No seal can be the cut-off: the message says which limit stops it."""


@dataclass
class Cutoff:
    """The chosen cut-off and what limited it."""

    seal: Seal  # the last archived seal: P is its position
    seals: list[Seal]  # the seals the archive holds, in order
    limits: dict[str, Any] = field(default_factory=dict)

    @property
    def position(self) -> int:
        return self.seal.position


def live_first(reader: StoreReader) -> int | None:
    """The first position of an execution still live in the write index (None: none);
    AuditError when the store has no write index (the service never ran on it)."""
    sql = _LIVE_POSTGRES if is_postgres(reader.path) else _LIVE_SQLITE
    try:
        row = reader.connection.execute(sql).fetchone()
    except dialect_of(reader.path).errors() as error:
        raise AuditError(f"the store has no write index ({error}): start the service on it "
                         "once before archiving") from None
    return None if row is None or row[0] is None else int(row[0])


def sealed_after(reader: StoreReader, anchor: Anchor | None) -> list[Seal]:
    """The seals of the store that cover positions after the anchor, numbered on from it."""
    after = 0 if anchor is None else anchor.position
    seals: list[Seal] = []
    number = 0 if anchor is None else anchor.seals
    for row in reader.rows(after=after, topics=(SEALED_TOPIC,)):
        try:
            seal = read_seal(row, number + 1)
        except ValueError as error:
            raise AuditError(f"the log's seals do not read ({error}): run `att-jm audit "
                             "verify`") from None
        if seal.position <= after:
            continue
        number += 1
        seals.append(seal)
    return seals


def choose(
    reader: StoreReader, anchor: Anchor | None, *, upto: int | None, before: datetime | None,
    views: int | None, relay: int | None,
) -> Cutoff:
    """The cut-off (see the module); NothingToArchive when there is none."""
    after = 0 if anchor is None else anchor.position
    first_live = live_first(reader)
    limits: dict[str, Any] = {"anchor": after, "live": first_live, "views": views,
                              "relay": relay, "upto": upto,
                              "before": None if before is None else iso(before)}
    seals = sealed_after(reader, anchor)
    stops: dict[str, int] = {}

    def fits(seal: Seal) -> bool:
        checks = {
            "requested": upto is None or seal.position <= upto,
            "requested time": before is None or seal.at < iso(before),
            "a live execution": first_live is None or seal.position < first_live,
            "the views": views is None or seal.position <= views,
            "the relay": relay is None or seal.position <= relay,
        }
        for name, ok in checks.items():
            if not ok:
                stops[name] = stops.get(name, 0) + 1
        return all(checks.values())

    chosen = [seal for seal in seals if fits(seal)]
    if not chosen or not seals:
        raise NothingToArchive(_why(seals, stops, after, limits))
    last = chosen[-1]
    return Cutoff(last, [s for s in seals if s.position <= last.position], limits)


def _why(seals: list[Seal], stops: dict[str, int], after: int, limits: dict[str, Any]) -> str:
    if not seals:
        return (f"nothing to archive: no seal after position {after} (the log is sealed as "
                "the service runs; wait for the next seal)")
    first = seals[0].position
    reasons = []
    if "requested" in stops or "requested time" in stops:
        reasons.append("the first seal after the anchor ends after what was asked for")
    if "a live execution" in stops:
        reasons.append(f"an execution still live (queued, running, or a row of Executed or "
                       f"Failed) begins at position {limits['live']}")
    if "the views" in stops:
        reasons.append(f"the views have read the log up to position {limits['views']} only")
    if "the relay" in stops:
        reasons.append(f"the relay has published up to position {limits['relay']} only")
    return (f"nothing to archive: the first seal after position {after} ends at {first}, "
            f"and " + "; ".join(reasons or ["no seal fits"]))
