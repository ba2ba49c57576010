"""Checks of every stored row, sealed or not, and of every stored snapshot (for `verify`).

A seal proves that the rows it covers are unchanged since it was made; it says nothing about
the rows after the last seal, nor about the snapshots (a separate table no seal covers). So
`verify` also checks, in the same one pass over the log:

- `undecodable`: each row is an event this service can load: its state is a JSON object
  with a `timestamp` (`{"_type_": "datetime_iso", "_data_": ISO-8601 with an offset}`) and
  every field of its event class that has no default (a field added later has one: older
  events lack it); its aggregate id is 32 lower-case hex digits, its version >= 1;
- `unknown_topic`: its topic is an event class of this service (`records.EVENT_TOPICS`), a
  creation event names its own aggregate class (`originator_topic`: the class the library
  would import), version 1 and only version 1 of an aggregate is a creation event, and all
  the events of one aggregate are of the same aggregate class;
- `version_gap`: each aggregate's versions are 1, 2, 3... in log order (a first version
  other than 1, a missing, repeated or out-of-order version is named with its position);
- `time_backwards`: an event's time is never more than TIME_TOLERANCE before the previous
  row's. The writer takes one clock reading per batch; a script's end is timed by the runner
  when it happens, and recorded in the next batch, a few milliseconds later. 1 s is far
  above that, far below any backdating worth doing; a system clock stepped back by more, or
  a script's end recorded after a store fault that held the writer for longer, shows too;
- the marks of a clean stop and a start (`att_jm.domain.seals`): rows between a
  `Ledger.Closed` mark and the next `Ledger.Opened` were written while the service was
  stopped (`appended`); a `Closed` mark names the last seal before it, with nothing but the
  Ledger's own rows after that seal (`closed`);
- `snapshot`: each stored snapshot equals the state its aggregate had at that version,
  replayed from its events with the service's own code (the aggregates that have snapshots,
  the Scheduler and the Ledger, are replayed in the pass; nothing else is).

Memory: the last version (and aggregate class) of every aggregate seen, one small int per
aggregate, and the replayed state of the snapshotted aggregates. Positions increase by
construction: the rows are read in rowid order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from att_jm.audit.findings import Findings
from att_jm.log.chain import CLOSED_TOPIC, LEDGER_TOPICS, OPENED_TOPIC, SEALED_TOPIC
from att_jm.log.codec import StateCodec, UndecodableState, loads_state
from att_jm.log.records import AGGREGATES, EVENT_TOPICS, dashed, topic_type
from att_jm.log.rows import Row, StoreReader
from att_jm.log.transcoder import OrjsonTranscoder

TIME_TOLERANCE: Final = timedelta(seconds=1)
SNAPSHOT_TOPIC: Final = get_topic(Aggregate.Snapshot)
# The aggregate map packs (last version << _SHIFT) | aggregate class index in one small int;
# _UNKNOWN (all bits set, past the last index) stands for a row whose topic is unknown.
_SHIFT: Final = len(AGGREGATES).bit_length()
_UNKNOWN: Final = (1 << _SHIFT) - 1
_LEDGER: Final = frozenset(LEDGER_TOPICS)


@dataclass(frozen=True)
class EventClass:
    """What a stored row of one topic must hold."""

    cls: type
    aggregate: int  # index in AGGREGATES
    fields: frozenset[str]  # the state's keys the event needs (its fields without a default)
    origin: str | None  # a creation event's `originator_topic`: its aggregate's topic


def _event_classes() -> dict[str, EventClass]:
    topics = set(EVENT_TOPICS.values())
    classes: dict[str, EventClass] = {}
    for index, aggregate in enumerate(AGGREGATES):
        for value in vars(aggregate).values():
            topic = getattr(value, "TOPIC", None)
            if not isinstance(value, type) or topic not in topics:
                continue
            fields = dataclasses.fields(value)
            names = frozenset(  # a field with a default may be missing (older events)
                f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ) - {"originator_id", "originator_version"}
            origin = str(getattr(aggregate, "TOPIC", "")) if "originator_topic" in names else None
            classes[str(topic)] = EventClass(value, index, names, origin)
    return classes


EVENT_CLASSES: Final = _event_classes()
_AGGREGATE_NAMES: Final = tuple(a.__name__ for a in AGGREGATES)


def _aggregate(stored_id: str, kind: int) -> str:
    name = _AGGREGATE_NAMES[kind] if kind < len(_AGGREGATE_NAMES) else "aggregate"
    return f"{name} {dashed(stored_id)}"


def _id_key(stored_id: str) -> bytes | None:
    """The aggregate map's key for a stored id: its 16 bytes (49 bytes of memory, where the
    32-digit text takes 81); None when it is not 32 lower-case hex digits, as stored."""
    try:
        key = bytes.fromhex(stored_id)
    except ValueError:
        return None
    if len(key) != 16 or len(stored_id) != 32 or not (
            stored_id.islower() or stored_id.isdigit()):
        return None
    return key


class RowChecks:
    """The checks on every row, fed in log order (see the module)."""

    def __init__(self, findings: Findings, tolerance: timedelta = TIME_TOLERANCE, *,
                 start: tuple[int, str] = (0, ""), bases: dict[str, int] | None = None,
                 ) -> None:
        """`start`: (position, hash) of the last seal before the rows (an anchor's);
        `bases`: from an anchor, each aggregate's newest snapshot version (an aggregate's
        first row after the anchor may follow it)."""
        self.findings = findings
        self.tolerance = tolerance
        self.bases = bases
        # Aggregate id -> (last version << _SHIFT) | aggregate class index.
        self.versions: dict[bytes | str, int] = {}
        self._previous: tuple[int, datetime] | None = None  # the last row with a time
        self._floor: datetime | None = None  # its time less the tolerance
        self._stamp: tuple[str, datetime | None] = ("", None)  # the last time read (batches
        # share one), parsed
        self._seal: tuple[Any, Any] = start  # (position, hash) of the last seal seen
        self._last_other = 0  # position of the last row that is not the Ledger's
        self.closed: int | None = None  # a `Closed` mark with no `Opened` after it (yet)
        self._appended: list[int] = []  # [first, last, count] after `closed`
        self.starts = 0

    def row(self, row: Row) -> dict[str, Any] | None:
        """Check one row; its state when it is an event of this service (else None)."""
        known = EVENT_CLASSES.get(row.topic)
        key = _id_key(row.originator_id)
        state: dict[str, Any] | None
        at: datetime | None
        why: str | None
        if key is None:
            state, at, why = None, None, (f"its aggregate id {row.originator_id[:40]!r} is not "
                                          "32 lower-case hex digits")
        elif row.originator_version < 1:
            state, at, why = None, None, "its version is not a positive integer"
        else:
            state, at, why = self._decode(row, known)
        position = row.position
        if why is not None:
            self.findings.add("undecodable", position, f"position {position}: {why}")
        if known is None:
            self.findings.add("unknown_topic", position, (
                f"position {position}: topic {row.topic[:80]!r} is not an event of this "
                "service"))
        elif (known.origin is not None and state is not None
              and state.get("originator_topic") != known.origin):
            why = why or "origin"
            self.findings.add("unknown_topic", position, (
                f"position {position}: the {topic_type(row.topic)} event names aggregate "
                f"class {str(state.get('originator_topic'))[:80]!r}, not {known.origin!r}"))
        if known is not None and state is not None and (
                known.origin is not None) != (row.originator_version == 1):
            why = why or "creation"
            self.findings.add("unknown_topic", position, (
                f"position {position}: version {row.originator_version} of "
                f"{_aggregate(row.originator_id, known.aggregate)} is a "
                f"{topic_type(row.topic)} event: "
                + ("only version 1 creates an aggregate" if known.origin is not None
                   else "version 1 must be the event that creates it")))
        if row.originator_version >= 1:
            self._version(row, row.originator_id if key is None else key,
                          _UNKNOWN if known is None else known.aggregate)
        if at is not None and at is not self._stamp_seen:
            self._time(position, at)
        self._stamp_seen = at
        ok = why is None and known is not None
        if self.closed is None and row.topic not in _LEDGER:
            self._last_other = position
        else:
            self._marks(row, state if ok else None)
        return state if ok else None

    _stamp_seen: datetime | None = None  # the time of the row before (when it had one)

    def _decode(self, row: Row, known: EventClass | None,
                ) -> tuple[dict[str, Any] | None, datetime | None, str | None]:
        """(state, time, None) when the row's state decodes; else what could be read, and
        why not."""
        try:
            state = loads_state(row.state)
        except UndecodableState as error:
            return None, None, f"its state does not decode ({error})"
        except orjson.JSONDecodeError as error:
            return None, None, f"its state is not JSON ({error})"
        if type(state) is not dict:
            return None, None, "its state is not a JSON object"
        at = self._read_time(state.get("timestamp"))
        if at is None:
            return state, None, ("its timestamp is missing, or not a stored ISO-8601 time with "
                                 "an offset")
        if known is not None and not known.fields <= state.keys():
            missing = ", ".join(sorted(known.fields - state.keys()))
            return state, at, f"it lacks {missing[:200]}"
        return state, at, None

    def _read_time(self, stamp: Any) -> datetime | None:
        """The time of a stored `{"_type_": "datetime_iso", "_data_": ISO-8601}` (the same
        object for the same text as the row before: one batch, one clock reading)."""
        if type(stamp) is not dict or len(stamp) != 2 or stamp.get("_type_") != "datetime_iso":
            return None
        text = stamp.get("_data_")
        if text == self._stamp[0]:
            return self._stamp[1]
        if type(text) is not str:
            return None
        try:
            at: datetime | None = datetime.fromisoformat(text)
        except ValueError:
            at = None
        if at is not None and at.tzinfo is None:
            at = None
        self._stamp = (text, at)
        return at

    def _version(self, row: Row, key: bytes | str, kind: int) -> None:
        version = row.originator_version
        seen = self.versions.get(key)
        if seen is None:
            self.versions[key] = version << _SHIFT | kind
            if self.bases is not None and self.bases.get(row.originator_id, 0) >= version - 1:
                return  # its earlier versions are archived, the anchor's snapshot stands in
            if version != 1:
                self.findings.add("version_gap", row.position, (
                    f"position {row.position}: the first event of "
                    f"{_aggregate(row.originator_id, kind)} is version {version}, not 1 "
                    f"(versions 1-{version - 1} are missing)"))
            return
        last, was = seen >> _SHIFT, seen & _UNKNOWN
        self.versions[key] = max(last, version) << _SHIFT | (kind if was == _UNKNOWN else was)
        if version == last + 1 and kind in (was, _UNKNOWN):
            return
        name = _aggregate(row.originator_id, was if was != _UNKNOWN else kind)
        where = f"position {row.position}"
        if was not in (_UNKNOWN, kind):
            self.findings.add("unknown_topic", row.position, (
                f"{where}: a {topic_type(row.topic)} event on {name}, an aggregate of "
                "another class"))
        if version == last + 1:
            return
        if version > last + 1:
            missing = f"version {last + 1} is" if version == last + 2 else (
                f"versions {last + 1}-{version - 1} are")
            text = f"goes from version {last} to {version} ({missing} missing)"
        elif version == last:
            text = f"repeats version {version}"
        else:
            text = f"goes back to version {version} after version {last}"
        self.findings.add("version_gap", row.position, f"{where}: {name} {text}")

    def _time(self, position: int, at: datetime) -> None:
        previous = self._previous
        if previous is not None and self._floor is not None and at < self._floor:
            seconds = (previous[1] - at).total_seconds()
            self.findings.add("time_backwards", position, (
                f"position {position}: its time {at.isoformat()} is {seconds:,.3f} s before "
                f"that of position {previous[0]} ({previous[1].isoformat()}); the tolerance "
                f"is {self.tolerance.total_seconds():g} s"))
        self._previous = (position, at)
        self._floor = at - self.tolerance

    def _marks(self, row: Row, state: dict[str, Any] | None) -> None:
        """The clean-stop and start marks: what lies between them was appended."""
        topic, position = row.topic, row.position
        if topic == OPENED_TOPIC and state is not None:
            self.starts += 1
            if self.closed is not None:
                self._report_appended(state)
            self.closed = None
            return
        if self.closed is not None:
            if self._appended:
                self._appended[1] = position
                self._appended[2] += 1
            else:
                self._appended = [position, position, 1]
            return
        if topic == SEALED_TOPIC and state is not None:
            self._seal = (state.get("position"), state.get("hash"))
        elif topic == CLOSED_TOPIC and state is not None:
            self._check_close(position, state)
            self.closed = position
            self._appended = []
        if topic not in _LEDGER:
            self._last_other = position

    def _check_close(self, position: int, state: dict[str, Any]) -> None:
        through, digest = state.get("position"), state.get("hash")
        seal_through, seal_hash = self._seal
        if (through, digest) != (seal_through, seal_hash):
            self.findings.add("closed", position, (
                f"position {position}: the clean-stop mark says the log is sealed through "
                f"position {through} (hash {str(digest)[:16]}), but the last seal before it "
                f"covers through {seal_through} (hash {str(seal_hash)[:16] or '(none)'})"))
        elif isinstance(through, int) and self._last_other > through:
            self.findings.add("closed", position, (
                f"position {position}: the clean-stop mark says the log is sealed through "
                f"position {through}, but the event at {self._last_other} comes after that"))

    def _report_appended(self, opened: dict[str, Any] | None) -> None:
        if not self._appended:
            return
        first, last, count = self._appended
        rows = f"{count} row{'s' if count > 1 else ''}"
        where = f"position {first}" if first == last else f"positions {first}-{last}"
        if opened is None:
            then = "no start since"
        elif opened.get("appended") == count:
            then = "the next start reported them"
        else:
            then = "the next start did not find them: they were put there later"
        self.findings.add("appended", first, (
            f"{where}: {rows} appended outside the service, after its clean stop at "
            f"position {self.closed} ({then})"), last=last)
        self._appended = []

    def finish(self) -> None:
        """After the last row: rows after a clean stop with no start since."""
        if self.closed is not None:
            self._report_appended(None)


class SnapshotChecks:
    """Each stored snapshot against the replay of its aggregate's events up to its version.

    The aggregates that have snapshots are replayed in the same pass, with the service's own
    decoding (`Mapper` + `OrjsonTranscoder`) and its own aggregate code; a snapshot is
    compared, as stored JSON, with the snapshot the library would take of the replayed
    aggregate (its own `timestamp`, the moment it was taken, aside).
    """

    def __init__(self, reader: StoreReader, findings: Findings, *, anchored: bool = False
                 ) -> None:
        """`anchored`: the rows before the store's anchor are archived and not read: an
        aggregate's replay starts from its snapshot at the version before its first row
        (taken at the archival: counted in `based`, not proven without the archives)."""
        self.reader = reader
        self.findings = findings
        self.anchored = anchored
        self.based = 0
        self.mapper: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder(), compressor=StateCodec())
        self.checked = 0
        self.waiting: dict[str, list[int]] = {}  # aggregate id -> its snapshots' versions
        for stored_id, version in reader.snapshot_keys():
            self.waiting.setdefault(stored_id, []).append(version)
        self._replayed: dict[str, Any] = {}  # aggregate id -> the aggregate as replayed
        self._broken: dict[str, str] = {}  # aggregate id -> why its replay stopped
        self._ids: dict[str, UUID] = {}

    def row(self, row: Row, ok: bool) -> None:
        """Replay `row` (`ok`: it passed the row checks) if its aggregate has snapshots."""
        stored_id = row.originator_id
        versions = self.waiting.get(stored_id)
        if not versions or stored_id in self._broken:
            return
        if not ok:
            self._broken[stored_id] = f"the event at position {row.position} does not decode"
            return
        if self.anchored and stored_id not in self._replayed and row.originator_version > 1:
            self._from_base(stored_id, versions, row)
            if stored_id in self._broken:
                return
        try:
            uuid = self._ids.get(stored_id) or self._ids.setdefault(stored_id, UUID(stored_id))
            event = self.mapper.to_domain_event(StoredEvent(
                uuid, row.originator_version, row.topic, row.state))
            aggregate = event.mutate(self._replayed.get(stored_id))  # type: ignore[attr-defined]
        except Exception as error:  # noqa: BLE001 -- any failure: the replay stops there
            self._broken[stored_id] = (f"the event at position {row.position} does not "
                                       f"apply ({type(error).__name__}: {error})"[:300])
            return
        self._replayed[stored_id] = aggregate
        while versions and versions[0] <= row.originator_version:
            version = versions.pop(0)
            if version == row.originator_version:
                self._compare(stored_id, version, aggregate)
        if not versions:  # its last snapshot is checked: no need to replay further
            del self._replayed[stored_id]

    def bases(self) -> dict[str, int]:
        """Each aggregate's newest snapshot version."""
        return {stored_id: versions[-1] for stored_id, versions in self.waiting.items()}

    def _from_base(self, stored_id: str, versions: list[int], row: Row) -> None:
        """Start an aggregate's replay from its snapshot just before `row` (an anchor's)."""
        base = max((v for v in versions if v < row.originator_version), default=None)
        stored = None if base is None else self.reader.snapshot(stored_id, base)
        if base is None or stored is None:
            self._broken[stored_id] = (f"its events before version {row.originator_version} "
                                       "are archived and no snapshot stands in for them")
            return
        try:
            snapshot = self.mapper.to_domain_event(StoredEvent(
                UUID(stored_id), base, stored[0], stored[1]))
            self._replayed[stored_id] = snapshot.mutate(None)  # type: ignore[attr-defined]
        except Exception as error:  # noqa: BLE001 -- any failure: not checked, said so
            self._broken[stored_id] = f"its snapshot at version {base} does not load ({error})"
            return
        while versions and versions[0] <= base:
            versions.pop(0)
            self.based += 1

    def _compare(self, stored_id: str, version: int, aggregate: Any) -> None:
        self.checked += 1
        name = f"snapshot of {type(aggregate).__name__} {dashed(stored_id)} at version {version}"
        stored = self.reader.snapshot(stored_id, version)
        if stored is None:  # removed during the pass
            return
        topic, state = stored
        try:
            found = loads_state(state)
        except ValueError:  # not JSON, or an encoding that does not decode
            found = None
        if topic != SNAPSHOT_TOPIC or not isinstance(found, dict):
            self.findings.add("snapshot", None, f"{name}: not a snapshot this service reads "
                                                f"(topic {topic[:80]!r})")
            return
        take = type(aggregate).Snapshot.take(aggregate)
        expected = loads_state(self.mapper.to_stored_event(take).state)
        if found.get("topic") != expected["topic"]:
            self.findings.add("snapshot", None, (
                f"{name}: it is of aggregate class {str(found.get('topic'))[:80]!r}, "
                f"not {expected['topic']!r}"))
            return
        have, want = found.get("state"), expected["state"]
        if have == want:
            return
        if not isinstance(have, dict):
            have = {}
        changed = sorted(k for k in have if k not in want or have[k] != want[k])
        missing = sorted(k for k in want if k not in have)
        if changed or not missing:
            self.findings.add("snapshot", None, (
                f"{name}: it differs from the replay of the aggregate's events (in "
                f"{', '.join(map(str, changed or missing))[:200]}): the snapshot was edited"))
        else:  # only fields the replay has: an older version's snapshot, or an edit
            self.findings.add("snapshot", None, (
                f"{name}: it lacks {', '.join(missing)[:200]}, which the replay of the "
                "aggregate's events has (a snapshot taken before the service kept them, or "
                "an edit): the service would load the aggregate without them"))

    def finish(self, versions: dict[bytes | str, int]) -> None:
        """After the last row: snapshots whose version the log never reached, and those the
        replay could not check."""
        for stored_id, left in self.waiting.items():
            if not left:
                continue
            where = f"snapshot{'s' if len(left) > 1 else ''} of {dashed(stored_id)} at " + (
                f"version {left[0]}" if len(left) == 1 else f"versions {left[0]}-{left[-1]}")
            if stored_id in self._broken:
                self.findings.add("snapshot", None, (
                    f"{where} not checked: {self._broken[stored_id]} (the service would "
                    "load the snapshot's state unproven)"))
                continue
            seen = versions.get(_id_key(stored_id) or stored_id)
            if seen is None and self.anchored:  # every event archived: the anchor's snapshot
                self.based += len(left)
                continue
            has = "no event" if seen is None else f"events up to version {seen >> _SHIFT}"
            self.findings.add("snapshot", None, (
                f"{where}: the log has {has} for it (a snapshot the log does not support)"))
