"""`verify` beyond the seals: every row on its own (the unsealed tail too), the marks of a
clean stop and a start, and the snapshots; what the writer learns at start (`open_log`).

Real stores, tampered with the way an intruder with write access would: SQL on the store
(sqlite3 on the file; on PostgreSQL the same statements with its tables, notification_id for
rowid and its placeholders), while the service is stopped or between its seals. Every test
runs on an SQLite and on a PostgreSQL store, but those that need SQLite's loose column types
or its statement trace (`sqlite_only`).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BOTH_BACKENDS
from helpers.store import intruders_sql

from att_jm import cli
from att_jm.audit.verify import Verification, verify
from att_jm.domain.ids import SCHEDULER_ID
from att_jm.domain.seals import LEDGER_ID
from att_jm.log.backend import PG_EVENTS, is_postgres, parse_postgres, pg_connect
from att_jm.log.chain import CLOSED_TOPIC, OPENED_TOPIC, SEALED_TOPIC
from att_jm.log.codec import decode_state, loads_state
from att_jm.log.rows import Row, StoreReader
from att_jm.log.tail import Tail, tail_check

pytestmark = BOTH_BACKENDS

EXECUTION_ENQUEUED = "att_jm:Execution.Enqueued"


def check(path: str) -> Verification:
    reader = StoreReader(path)
    try:
        return verify(reader)
    finally:
        reader.close()


def found(result: Verification) -> list[tuple[str, int | None]]:
    return [(f.kind, f.position) for f in result.findings]


def rows(path: str, topic: str | None = None) -> list[Row]:
    reader = StoreReader(path)
    try:
        return [row for row in reader.rows() if topic is None or row.topic == topic]
    finally:
        reader.close()


def execute(path: str, sql: str, *params: object) -> int:
    """Run one statement on the store as an intruder would; the new row's position."""
    if is_postgres(path):
        sql = intruders_sql(path, sql)
        if sql.startswith(f"INSERT INTO {PG_EVENTS}"):
            sql += " RETURNING notification_id"
        with pg_connect(parse_postgres(path)) as pg:
            done = pg.execute(sql, params)
            row = done.fetchone() if done.description else None
        return int(row[0]) if row is not None else 0
    db = sqlite3.connect(path)
    cursor = db.execute(sql, params)
    db.commit()
    db.close()
    return int(cursor.lastrowid or 0)


def now(path: str, of: Row) -> bytes:
    """`of`'s state with the time of the last row of the log: a forger's fresh event."""
    state = loads_state(of.state)
    state["timestamp"] = loads_state(rows(path)[-1].state)["timestamp"]
    return orjson.dumps(state)


def append_copy(path: str, of: Row, *, version: int | None = None, topic: str | None = None,
                state: bytes | None = None, originator_id: str | None = None) -> int:
    """Append a copy of row `of` (with changes; the time: now) at the end of the log; its
    position."""
    return execute(
        path, "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
        "VALUES (?, ?, ?, ?)", originator_id or of.originator_id,
        of.originator_version if version is None else version, topic or of.topic,
        now(path, of) if state is None else state)


def next_of(path: str, of: Row, state: bytes | None = None) -> int:
    """Append the next version of `of`'s aggregate (a well-formed forged event)."""
    last = max(r.originator_version for r in rows(path) if r.originator_id == of.originator_id)
    return append_copy(path, of, version=last + 1, state=state)


@pytest.fixture
def day(tmp_path: Path, store_location: str) -> ScriptedRun:
    """A typical day, sealed every 20 events; the run still open, the tail not sealed."""
    run = ScriptedRun(tmp_path, seal_every=20, marks=True, store=store_location)
    typical_day(run)
    return run


def enqueued(path: str) -> Row:
    return next(r for r in rows(path, EXECUTION_ENQUEUED))


def started(path: str) -> Row:
    return next(r for r in rows(path, "att_jm:Execution.Started"))


# Every row on its own: the tail after the last seal too ------------------------------------


def test_a_clean_log_with_starts_and_clean_stops_verifies(
    tmp_path: Path, store_location: str,
) -> None:
    run = ScriptedRun(tmp_path, seal_every=20, marks=True, store=store_location)
    typical_day(run)
    first = run.restart()
    run.notify("channel-up", {"id": "after-restart", "channel": "r"})
    crashed = run.restart(clean=False)
    run.notify("channel-up", {"id": "after-crash", "channel": "c"})
    run.stop()
    assert run.tails[0].message().startswith("first start")
    assert first.clean and first.appended == 0
    assert first.message() == f"the log was closed cleanly at position {first.closed}"
    assert not crashed.clean and crashed.closed is None
    assert crashed.unsealed == 2  # the notification and its entry, after the last seal
    assert "did not close the log: 2 rows after position" in crashed.message()
    result = check(run.store)
    assert result.ok, result.findings
    assert result.starts == 3
    assert result.closed == rows(run.store, CLOSED_TOPIC)[-1].position
    assert result.closed == rows(run.store)[-1].position
    assert result.unsealed == 0
    opened = [loads_state(r.state) for r in rows(run.store, OPENED_TOPIC)]
    assert [(o["closed"], o["appended"]) for o in opened] == [
        (None, 0), (first.closed, 0), (None, 0)]
    assert opened[2]["unsealed"] == 2


def test_a_clean_stop_seals_everything_and_names_the_last_seal(
    tmp_path: Path, store_location: str,
) -> None:
    run = ScriptedRun(tmp_path, seal_every=1000, marks=True, store=store_location)
    typical_day(run)
    run.stop()
    log = rows(run.store)
    closed = loads_state(log[-1].state)
    seal = loads_state(log[-2].state)
    assert log[-1].topic == CLOSED_TOPIC and log[-2].topic == SEALED_TOPIC
    assert (closed["position"], closed["hash"]) == (seal["position"], seal["hash"])
    assert closed["position"] == log[-3].position  # everything before the seal is sealed
    reader = StoreReader(run.store)
    tail = tail_check(reader)
    reader.close()
    assert tail == Tail(ledger=True, closed=log[-1].position, sealed_through=seal["position"],
                        appended=0, first=None, last=None, unsealed=0)
    assert tail.flag() is None


def test_an_event_appended_after_the_last_seal_with_an_impossible_version_is_found(
    day: ScriptedRun,
) -> None:
    day.seal()
    day.close()
    victim = started(day.store)
    position = append_copy(day.store, victim, version=99)
    result = check(day.store)
    assert found(result) == [("version_gap", position)]
    message = result.findings[0].message
    assert f"position {position}: Execution " in message
    assert "versions" in message and "-98 are missing" in message
    assert result.unsealed == 1


def test_a_well_formed_event_appended_while_the_log_is_open_is_only_counted(
    day: ScriptedRun,
) -> None:
    # While the service runs (or after a crash) nothing tells its rows from an intruder's:
    # the rows after the last seal are counted, not proven (docs/audit.md says so).
    day.seal()
    day.close()
    next_of(day.store, started(day.store))
    result = check(day.store)
    assert result.ok, result.findings
    assert result.unsealed == 1


def test_a_gap_in_an_aggregates_versions_is_found_at_its_position(day: ScriptedRun) -> None:
    day.notify("channel-up", {"id": "tail", "channel": "t"})
    while day.run_next():  # started, succeeded: versions 2 and 3 of the new entries
        pass
    day.close()
    entry = rows(day.store, EXECUTION_ENQUEUED)[-1]
    later = [r for r in rows(day.store) if r.originator_id == entry.originator_id]
    assert [r.originator_version for r in later] == [1, 2, 3]
    execute(day.store, "DELETE FROM stored_events WHERE rowid = ?", later[1].position)
    result = check(day.store)
    assert found(result) == [("version_gap", later[2].position)]
    assert "goes from version 1 to 3 (version 2 is missing)" in result.findings[0].message
    # Version 2 stored again, at the end: out of order (the store's key forbids a repeat).
    moved = append_copy(day.store, later[1], state=later[1].state)
    result = check(day.store)
    assert found(result) == [("version_gap", later[2].position), ("version_gap", moved),
                             ("time_backwards", moved)]
    assert "goes back to version 2 after version 3" in result.findings[1].message
    execute(day.store, "UPDATE stored_events SET originator_version = 4 WHERE rowid = ?",
            later[0].position)  # the first event of the aggregate now claims version 4
    messages = [f.message for f in check(day.store).findings]
    assert any(f"position {later[0].position}: the first event of Execution" in m
               and "is version 4, not 1 (versions 1-3 are missing)" in m
               for m in messages), messages
    assert any("only version 1 creates an aggregate" in m for m in messages), messages
    assert any("goes back to version 3 after version 4" in m for m in messages), messages


def test_an_unknown_topic_is_found(day: ScriptedRun) -> None:
    day.close()
    victim = enqueued(day.store)
    unknown = append_copy(day.store, victim, topic="att_jm:Execution.Hacked", version=50,
                          originator_id="ab" * 16)
    origin = append_copy(day.store, victim, originator_id="cd" * 16, version=1,
                         state=decode_state(victim.state).replace(b'"att_jm:Execution"',
                                                                  b'"os:system"'))
    other = next_of(day.store, rows(day.store, "att_jm:Job.Added")[0])
    execute(day.store, "UPDATE stored_events SET topic = ? WHERE rowid = ?",
            "att_jm:Scheduler.Released", other)
    result = check(day.store)
    kinds = found(result)
    assert ("unknown_topic", unknown) in kinds
    assert ("unknown_topic", origin) in kinds
    assert ("unknown_topic", other) in kinds
    messages = {f.position: f.message for f in result.findings if f.kind == "unknown_topic"}
    assert "'att_jm:Execution.Hacked' is not an event of this service" in messages[unknown]
    assert "names aggregate class 'os:system', not 'att_jm:Execution'" in messages[origin]
    assert "a scheduler.released event on Job" in messages[other]


@pytest.mark.parametrize(("state", "why"), [
    (b"{not json", "its state is not JSON"),
    (b"[1, 2]", "its state is not a JSON object"),
    (b'{"job": "x"}', "its timestamp is missing"),
    (b'{"timestamp": {"_type_": "datetime_iso", "_data_": "yesterday"}}',
     "not a stored ISO-8601 time"),
    (b'{"timestamp": {"_type_": "datetime_iso", "_data_": "2026-03-02T08:00:00"}}',
     "with an offset"),
    (b'{"timestamp": {"_type_": "datetime_iso", "_data_": "2026-03-02T09:00:00+00:00"}, '
     b'"actor": "x"}', "it lacks attempt"),
])
def test_an_undecodable_row_is_found(day: ScriptedRun, state: bytes, why: str) -> None:
    day.close()
    position = next_of(day.store, started(day.store), state=state)
    result = check(day.store)
    assert ("undecodable", position) in found(result)
    message = next(f.message for f in result.findings if f.kind == "undecodable")
    assert message.startswith(f"position {position}: ") and why in message, message


@pytest.mark.sqlite_only  # SQLite's loose column types: an id and a version of any type
def test_a_bad_aggregate_id_or_version_is_undecodable(day: ScriptedRun) -> None:
    day.close()
    victim = enqueued(day.store)
    bad_id = append_copy(day.store, victim, originator_id="not-an-id")
    bad_version = append_copy(day.store, victim, originator_id="ef" * 16, version=0)
    execute(day.store, "INSERT INTO stored_events VALUES (?, 'x', ?, ?)", "12" * 16,
            victim.topic, victim.state)  # a version that is no integer
    text_version = rows(day.store)[-1].position
    result = check(day.store)
    assert ("undecodable", bad_id) in found(result)
    assert ("undecodable", bad_version) in found(result)
    assert ("undecodable", text_version) in found(result)


def test_an_event_whose_time_goes_backwards_is_found(day: ScriptedRun) -> None:
    day.close()
    event = started(day.store)
    state = loads_state(event.state)
    state["timestamp"]["_data_"] = "2026-03-01T08:00:00+00:00"  # the day before
    position = next_of(day.store, event, state=orjson.dumps(state))
    result = check(day.store)
    assert found(result) == [("time_backwards", position)]
    assert "s before that of position" in result.findings[0].message
    assert "the tolerance is 1 s" in result.findings[0].message


def test_times_within_the_tolerance_are_fine(day: ScriptedRun) -> None:
    day.close()
    last = rows(day.store)[-1]
    at = datetime.fromisoformat(loads_state(last.state)["timestamp"]["_data_"])
    event = started(day.store)
    state = loads_state(event.state)
    state["timestamp"]["_data_"] = (at - timedelta(seconds=0.9)).isoformat()
    next_of(day.store, event, state=orjson.dumps(state))
    result = check(day.store)
    assert result.ok, result.findings


# Rows appended after a clean stop -----------------------------------------------------------


def test_rows_appended_after_a_clean_stop_are_found_by_verify_and_by_the_next_start(
    tmp_path: Path, store_location: str,
) -> None:
    run = ScriptedRun(tmp_path, seal_every=20, marks=True, store=store_location)
    typical_day(run)
    appended: list[int] = []
    offline: list[Verification] = []

    def intruder() -> None:  # while the service is stopped
        appended.append(next_of(run.store, started(run.store)))
        appended.append(next_of(run.store, rows(run.store, "att_jm:Job.Updated")[0]))
        offline.append(check(run.store))

    tail = run.restart(between=intruder)
    closed = rows(run.store, CLOSED_TOPIC)[-1].position
    assert closed == appended[0] - 1
    assert found(offline[0]) == [("appended", appended[0])]
    finding = offline[0].findings[0]
    assert finding.last == appended[1]
    assert finding.message == (
        f"positions {appended[0]}-{appended[1]}: 2 rows appended outside the service, after "
        f"its clean stop at position {closed} (no start since)")
    assert offline[0].closed == closed

    assert not tail.clean
    assert (tail.closed, tail.appended, tail.first, tail.last) == (
        closed, 2, appended[0], appended[1])
    assert tail.flag() == {"appended": 2, "first": appended[0], "last": appended[1],
                           "after": closed}
    assert tail.message() == (
        f"2 rows were appended to the log outside the service, after its clean stop at "
        f"position {closed} (positions {appended[0]}-{appended[1]})")
    opened = rows(run.store, OPENED_TOPIC)[-1]
    assert opened.position == appended[1] + 1
    state = loads_state(opened.state)
    assert (state["closed"], state["appended"], state["first"], state["last"]) == (
        closed, 2, appended[0], appended[1])
    run.notify("channel-up", {"id": "later", "channel": "l"})
    run.seal()  # the appended rows are now sealed: verify still names them, for good
    run.stop()
    result = check(run.store)
    assert found(result) == [("appended", appended[0])]
    assert result.findings[0].message.endswith("(the next start reported them)")


def test_a_row_appended_after_a_clean_stop_is_appended_even_if_it_is_a_forged_seal(
    tmp_path: Path, store_location: str,
) -> None:
    run = ScriptedRun(tmp_path, seal_every=20, marks=True, store=store_location)
    typical_day(run)
    run.stop()
    seal = rows(run.store, SEALED_TOPIC)[-1]
    forged = next_of(run.store, seal)
    result = check(run.store)
    assert ("appended", forged) in found(result)
    reader = StoreReader(run.store)
    tail = tail_check(reader)  # the Ledger's last event is no longer the clean-stop mark
    reader.close()
    assert not tail.clean and tail.closed is None


def test_a_close_mark_that_does_not_name_the_last_seal_is_found(
    tmp_path: Path, store_location: str,
) -> None:
    run = ScriptedRun(tmp_path, seal_every=20, marks=True, store=store_location)
    typical_day(run)
    run.stop()
    mark = rows(run.store)[-1]
    state = loads_state(mark.state)
    state["position"] -= 5
    execute(run.store, "UPDATE stored_events SET state = ? WHERE rowid = ?",
            orjson.dumps(state), mark.position)
    result = check(run.store)
    assert found(result) == [("closed", mark.position)]
    assert "says the log is sealed through position" in result.findings[0].message


@pytest.mark.sqlite_only  # SQLite's statement trace
def test_the_start_check_reads_only_the_end_of_the_log(tmp_path: Path, store_location: str) -> None:
    run = ScriptedRun(tmp_path, seal_every=20, marks=True, store=store_location)
    typical_day(run)
    run.stop()
    reader = StoreReader(run.store)
    statements: list[str] = []
    reader.connection.set_trace_callback(statements.append)
    tail_check(reader)
    reader.close()
    assert len(statements) == 2  # the Ledger's last event (by key), the rows after it
    assert all("ORDER BY originator_version DESC LIMIT 1" in s or "rowid >" in s
               for s in statements), statements


# Snapshots ----------------------------------------------------------------------------------


def snapshot_state(path: str, aggregate: str, version: int) -> dict[str, object]:
    reader = StoreReader(path)
    stored = reader.snapshot(aggregate, version)
    reader.close()
    assert stored is not None
    state: dict[str, object] = loads_state(stored[1])
    return state


def snapshotted(tmp_path: Path, store: str) -> ScriptedRun:
    """A day with Ledger snapshots (every 100 Ledger events) and Scheduler snapshots."""
    run = ScriptedRun(tmp_path, seal_every=1, marks=True, store=store)  # one seal per event
    typical_day(run)
    run.app.take_snapshot(SCHEDULER_ID)  # as `import` does at the end
    run.ok("settings.set", {"interval_seconds": 7})
    run.app.take_snapshot(SCHEDULER_ID)
    run.stop()
    return run


def test_a_log_with_snapshots_verifies_and_every_snapshot_is_compared(
    tmp_path: Path, store_location: str,
) -> None:
    run = snapshotted(tmp_path, store_location)
    reader = StoreReader(run.store)
    keys = reader.snapshot_keys()
    reader.close()
    assert {k for k, _ in keys} == {LEDGER_ID.hex, SCHEDULER_ID.hex}
    assert sum(1 for k, _ in keys if k == LEDGER_ID.hex) >= 2
    result = check(run.store)
    assert result.ok, result.findings
    assert result.snapshots == len(keys)


@pytest.mark.parametrize("aggregate", [SCHEDULER_ID.hex, LEDGER_ID.hex])
def test_an_edited_snapshot_is_found(tmp_path: Path, store_location: str, aggregate: str) -> None:
    run = snapshotted(tmp_path, store_location)
    reader = StoreReader(run.store)
    version = min(v for k, v in reader.snapshot_keys() if k == aggregate)
    reader.close()
    state = snapshot_state(run.store, aggregate, version)
    inner = state["state"]
    assert isinstance(inner, dict)
    if aggregate == SCHEDULER_ID.hex:
        inner["interval_seconds"] = 3600.0  # slow the queue down, with no event for it
        field = "interval_seconds"
    else:
        inner["position"] = int(inner["position"]) + 10
        field = "position"
    execute(run.store, "UPDATE stored_snapshots SET state = ? WHERE originator_id = ? "
            "AND originator_version = ?", orjson.dumps(state), aggregate, version)
    result = check(run.store)
    assert found(result) == [("snapshot", None)]
    message = result.findings[0].message
    assert f"at version {version}: it differs from the replay" in message
    assert f"(in {field})" in message and "the snapshot was edited" in message


def test_a_snapshot_without_a_field_the_replay_has_is_found(
    tmp_path: Path, store_location: str,
) -> None:
    run = snapshotted(tmp_path, store_location)
    reader = StoreReader(run.store)
    version = max(v for k, v in reader.snapshot_keys() if k == SCHEDULER_ID.hex)
    reader.close()
    state = snapshot_state(run.store, SCHEDULER_ID.hex, version)
    inner = state["state"]
    assert isinstance(inner, dict)
    del inner["last_cleanup"]  # as a snapshot taken before the Scheduler kept it would be
    execute(run.store, "UPDATE stored_snapshots SET state = ? WHERE originator_id = ? "
            "AND originator_version = ?", orjson.dumps(state), SCHEDULER_ID.hex, version)
    result = check(run.store)
    assert found(result) == [("snapshot", None)]
    assert "it lacks last_cleanup, which the replay" in result.findings[0].message


def test_a_snapshot_beyond_the_log_or_of_no_aggregate_is_found(
    tmp_path: Path, store_location: str,
) -> None:
    run = snapshotted(tmp_path, store_location)
    reader = StoreReader(run.store)
    version = max(v for k, v in reader.snapshot_keys() if k == SCHEDULER_ID.hex)
    topic, state = reader.snapshot(SCHEDULER_ID.hex, version) or ("", b"")
    reader.close()
    for aggregate, at in ((SCHEDULER_ID.hex, 10_000), ("ab" * 16, 3)):
        execute(run.store, "INSERT INTO stored_snapshots VALUES (?, ?, ?, ?)", aggregate, at,
                topic, state)
    result = check(run.store)
    messages = [f.message for f in result.findings if f.kind == "snapshot"]
    assert len(result.findings) == 2 == len(messages)
    assert any("at version 10000: the log has events up to version" in m for m in messages)
    assert any("the log has no event for it" in m for m in messages)


def test_a_snapshot_after_a_gap_is_reported_unchecked(tmp_path: Path, store_location: str) -> None:
    run = snapshotted(tmp_path, store_location)
    seal = rows(run.store, SEALED_TOPIC)[3]
    execute(run.store, "DELETE FROM stored_events WHERE rowid = ?", seal.position)
    result = check(run.store)
    snapshot = [f.message for f in result.findings if f.kind == "snapshot"]
    assert len(snapshot) == 1
    assert "not checked: the event at position" in snapshot[0]
    assert "does not apply" in snapshot[0]


# The command line -------------------------------------------------------------------------


def test_verify_json_shows_the_new_findings_and_exits_1(
    tmp_path: Path, store_location: str, capsys: pytest.CaptureFixture[str],
) -> None:
    run = ScriptedRun(tmp_path, seal_every=20, marks=True, store=store_location)
    typical_day(run)
    run.stop()
    capsys.readouterr()  # what the run logged
    code = cli.main(["audit", "verify", "--store", run.store, "--json"])
    report = orjson.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] is True
    assert report["closed"] == rows(run.store)[-1].position and report["starts"] == 1
    victim = started(run.store)
    gap = append_copy(run.store, victim, version=40)
    unknown = append_copy(run.store, victim, topic="att_jm:Nope.Nope", originator_id="ab" * 16,
                          version=1)
    code = cli.main(["audit", "verify", "--store", run.store, "--json"])
    report = orjson.loads(capsys.readouterr().out)
    assert code == 1
    assert report["ok"] is False
    kinds = [(f["kind"], f["position"]) for f in report["findings"]]
    assert ("appended", gap) in kinds
    assert ("version_gap", gap) in kinds
    assert ("unknown_topic", unknown) in kinds
    appended = next(f for f in report["findings"] if f["kind"] == "appended")
    assert appended["last"] == unknown
    code = cli.main(["audit", "verify", "--store", run.store])
    text = capsys.readouterr().out
    assert code == 1
    assert text.startswith("verify: FAILED (3 problems)")
    assert f"  appended: positions {gap}-{unknown}: 2 rows appended outside" in text
