"""`export` and `import`: the log as JSON Lines, one event per line, and back.

A line (keys in this order, UTF-8, no spaces):

    {"position": 12, "originator_id": "<32 hex digits>", "originator_version": 1,
     "topic": "att_jm:Execution.Enqueued", "type": "execution.enqueued",
     "at": "2026-01-05T06:00:01.123Z", "state": {...}}

- `position`: the event's log position; `originator_id` / `originator_version`: its aggregate
  and version, as stored; `topic`: its stored topic; `type` and `at`: its public type and
  time (as on `P/job-manager/events/{type}`), for readers only;
- `state`: the stored event state, a JSON object: the event's fields, with `timestamp` as
  `{"_type_": "datetime_iso", "_data_": "<ISO-8601>"}` (and `originator_topic` on creation
  events). Written back with compact JSON, it is byte for byte the stored state;
- `state_base64`: only on a line whose stored state would not come back byte for byte from
  `state` (never for states this service writes): the stored bytes, which import then uses.

Import reads such a file into an empty store at the same positions with the same bytes, so
the seals still verify and a replay gives the same views.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Final
from uuid import UUID

import orjson
from eventsourcing.persistence import PersistenceError, StoredEvent

from att_jm.domain.ids import SCHEDULER_ID
from att_jm.domain.seals import LEDGER_ID
from att_jm.domain.times import iso
from att_jm.log.backend import dialect_of, redact
from att_jm.log.codec import content_bytes, encode_state
from att_jm.log.records import dashed, stored_time, topic_type
from att_jm.log.rows import AuditError, Row, StoreReader, insert_rows
from att_jm.store import JobManagerApp, open_store

BATCH: Final = 10_000
Progress = Callable[[int], None]


def export_line(row: Row) -> bytes:
    """The JSON Lines line (with its newline) of one stored row."""
    line: dict[str, Any] = {
        "position": row.position, "originator_id": row.originator_id,
        "originator_version": row.originator_version, "topic": row.topic,
        "type": topic_type(row.topic), "at": None, "state": None,
    }
    plain = content_bytes(row.state)  # the JSON, whatever the row's encoding
    try:
        state = orjson.loads(plain)
    except orjson.JSONDecodeError:
        state = None
    if isinstance(state, dict):
        line["state"] = state
        with contextlib.suppress(KeyError, TypeError, ValueError):
            line["at"] = iso(stored_time(state["timestamp"]))
    if state is None or orjson.dumps(state) != plain:
        line["state_base64"] = base64.b64encode(row.state).decode()
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def export(
    reader: StoreReader, out: IO[bytes], *, upto: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the log (up to position `upto`) to `out` as JSON Lines; lines written."""
    written = 0
    end = reader.max_position() if upto is None else upto
    for rows in reader.pages(upto=end):
        out.write(b"".join(export_line(row) for row in rows))
        written += len(rows)
        if progress is not None:
            progress(rows[-1].position)
    return written


def parse_line(line: bytes, number: int, *, compact: bool = False) -> Row:
    """The stored row a JSON Lines line describes; AuditError naming the line when bad.
    Its state as the line's JSON, or that JSON made compact when `compact` (a line's
    `state_base64` is kept as it is, either way)."""
    try:
        item = orjson.loads(line)
        position = item["position"]
        originator_id = item["originator_id"]
        version = item["originator_version"]
        topic = item["topic"]
        if "state_base64" in item:
            state = base64.b64decode(item["state_base64"], validate=True)
        else:
            state = orjson.dumps(item["state"])
            if compact:
                state = encode_state(state)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise AuditError(f"line {number}: not an exported event ({error!r})") from None
    checks = (
        isinstance(position, int), isinstance(version, int), isinstance(topic, str),
        isinstance(originator_id, str),
    )
    if not all(checks):
        raise AuditError(f"line {number}: position, originator_version (integers), topic and "
                         "originator_id (strings) are required")
    if len(originator_id) == 36:
        with contextlib.suppress(ValueError):
            originator_id = UUID(originator_id).hex
    return Row(position, originator_id, version, topic, state)


def _pages(lines: Iterable[bytes], app: JobManagerApp, progress: Progress | None
           ) -> Iterator[list[Row]]:
    page: list[Row] = []
    last = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = parse_line(line, number, compact=app.compact)
        if last is not None and row.position <= last:
            raise AuditError(f"line {number}: position {row.position} does not follow {last}")
        last = row.position
        try:  # the event must be one this service can read back
            app.mapper.to_domain_event(
                StoredEvent(dashed(row.originator_id), row.originator_version, row.topic,
                            row.state))
        except Exception as error:  # noqa: BLE001 -- any decoding failure: the line is refused
            raise AuditError(f"line {number}: not an event of this service ({error})") from None
        page.append(row)
        if len(page) >= BATCH:
            yield page
            if progress is not None:
                progress(number)
            page = []
    if page:
        yield page


def import_log(path: str, lines: Iterable[bytes], progress: Progress | None = None, *,
               compact: bool = False) -> int:
    """Import exported lines into the empty store at `path` (an SQLite file or a PostgreSQL
    URL, created when missing); events. States are written as their JSON, or compact when
    `compact` (setting `compact_states`)."""
    faults: tuple[type[BaseException], ...] = (PersistenceError, OSError,
                                               *dialect_of(path).errors())
    try:
        app = open_store(path, compact=compact)
    except faults as error:
        raise AuditError(f"cannot open the store {redact(path)}: {error}") from None
    try:
        count = insert_rows(path, _pages(lines, app, progress))
        for aggregate in (SCHEDULER_ID, LEDGER_ID):  # load time only: never part of the log
            if app.recorder.select_events(aggregate, limit=1):
                app.take_snapshot(aggregate)
        return count
    finally:
        app.close()
