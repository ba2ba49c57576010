"""`verify`: seals prove the log intact, and each kind of tampering is named with its position.

The tampering is done the way an intruder with write access would do it: SQL on the store
(sqlite3 on the file; on PostgreSQL the same statements, its table and positions named as
there). Every test runs on an SQLite and on a PostgreSQL store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BACKENDS
from helpers.store import another_store, copy_store, intruders_sql, store_for

from att_jm.application.sealer import Sealer
from att_jm.audit.transfer import export_line, import_log
from att_jm.audit.verify import Verification, verify
from att_jm.audit.witness import check_witness, load_witness
from att_jm.log.backend import is_postgres, parse_postgres, pg_connect
from att_jm.log.chain import SEALED_TOPIC
from att_jm.log.codec import decode_state
from att_jm.log.rows import StoreReader
from att_jm.store import open_store


class Sealed(NamedTuple):
    store: str
    witness: Path  # what a witness received: every seal, as JSON Lines


@pytest.fixture(scope="module", params=BACKENDS)
def sealed(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sealed]:
    """A store with a typical day in it, sealed every 20 events and at the end."""
    directory = tmp_path_factory.mktemp("sealed")
    run = ScriptedRun(directory, seal_every=20,
                      store=store_for(request, request.param, directory))
    typical_day(run)
    run.seal()
    witness = directory / "witness.jsonl"
    witness.write_bytes(b"".join(orjson.dumps(seal) + b"\n" for seal in run.seals))
    run.close()
    yield Sealed(run.store, witness)


@pytest.fixture
def witness(sealed: Sealed) -> Path:
    return sealed.witness


@pytest.fixture
def fresh(sealed: Sealed, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store on the engine of the sealed one."""
    return another_store(request, sealed.store, tmp_path / "fresh")


@pytest.fixture
def store(sealed: Sealed, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A copy of the sealed store to tamper with (the same rows, on the same engine)."""
    return copy_store(sealed.store, another_store(request, sealed.store, tmp_path / "copy"))


def check(path: str, witness: Path | None = None) -> Verification:
    reader = StoreReader(path)
    try:
        result = verify(reader)
    finally:
        reader.close()
    if witness is not None:
        check_witness(result, load_witness(str(witness)), str(witness))
    return result


def kinds(result: Verification) -> list[tuple[str, int | None]]:
    return [(f.kind, f.position) for f in result.findings if f.kind != "seal"]


def tamper(path: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run SQLite statements on the store `path` in one transaction; on PostgreSQL with its
    table, its positions (notification_id for rowid) and its placeholders."""
    db: Any
    if is_postgres(path):
        db = pg_connect(parse_postgres(path), autocommit=False)
        statements = tuple((intruders_sql(path, sql), params) for sql, params in statements)
    else:
        db = sqlite3.connect(path)
    try:
        for sql, params in statements:
            db.execute(sql, params)
        db.commit()
    finally:
        db.close()


def state_of(path: str, position: int) -> bytes:
    reader = StoreReader(path)
    try:
        row = reader.row(position)
    finally:
        reader.close()
    assert row is not None
    return decode_state(row.state)  # the event's JSON (a tamper writes it plain)


def test_an_intact_sealed_log_verifies_with_nothing_unsealed(store: str, witness: Path) -> None:
    result = check(store, witness)
    assert result.ok, result.findings
    assert len(result.seals) >= 5
    assert result.unsealed == 0
    assert result.sealed_through == result.seals[-1].position
    assert result.witness is not None
    assert result.witness["matched"] == result.witness["seals"] == len(result.seals)


def test_each_seal_covers_at_most_the_configured_rows_and_all_rows_once(store: str) -> None:
    result = check(store)
    covered = [p for s in result.seals for a, b in s.ranges for p in range(a, b + 1)]
    assert covered == list(range(1, result.sealed_through + 1))
    assert all(s.count <= 20 for s in result.seals)


def test_events_after_the_last_seal_are_counted_as_not_yet_sealed(
    tmp_path: Path, fresh: str,
) -> None:
    run = ScriptedRun(tmp_path, seal_every=1000, store=fresh)
    typical_day(run)
    run.seal()
    run.notify("channel-up", {"id": "after-1", "channel": "x"})
    run.notify("channel-up", {"id": "after-2", "channel": "y"})
    run.close()
    result = check(run.store)
    assert result.ok
    assert result.unsealed == 4  # two notifications and the entry each made for ipx


def test_changing_one_byte_of_one_stored_event_is_found_at_its_position(store: str) -> None:
    state = bytearray(state_of(store, 17))
    state[state.index(b'"actor":"') + 9] ^= 0x01
    tamper(store, ("UPDATE stored_events SET state = ? WHERE rowid = 17", (bytes(state),)))
    result = check(store)
    assert not result.ok
    assert kinds(result) == [("modified", 17)]
    assert any(f.kind == "seal" and f.position is not None and f.position <= 17 <= (f.last or 0)
               for f in result.findings)


def test_deleting_one_event_row_is_found_at_its_position(store: str) -> None:
    tamper(store, ("DELETE FROM stored_events WHERE rowid = 33", ()))
    result = check(store)
    # ... and, without the seals, by the gap it leaves in its aggregate's versions.
    assert kinds(result) == [("deleted", 33), ("version_gap", 35)]
    assert "goes from version 2 to 4 (version 3 is missing)" in result.findings[-1].message


def test_swapping_two_events_is_found_at_both_positions(store: str) -> None:
    tamper(
        store,
        ("UPDATE stored_events SET rowid = -1 WHERE rowid = 25", ()),
        ("UPDATE stored_events SET rowid = 25 WHERE rowid = 28", ()),
        ("UPDATE stored_events SET rowid = 28 WHERE rowid = -1", ()),
    )
    result = check(store)
    assert kinds(result) == [("reordered", 25)]
    assert result.findings[0].last == 28
    assert "25 and 28" in result.findings[0].message


def test_inserting_a_forged_event_is_found_at_its_position(store: str) -> None:
    forged = state_of(store, 10).replace(b'"alice"', b'"mallory"')
    tamper(
        store,  # make room at 40 by moving every later event one position up, then insert
        ("UPDATE stored_events SET rowid = -rowid - 1 WHERE rowid >= 40", ()),
        ("UPDATE stored_events SET rowid = -rowid WHERE rowid < 0", ()),
        ("INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
         "SELECT 40, originator_id, 99, topic, ? FROM stored_events WHERE rowid = 10",
         (forged,)),
    )
    result = check(store)
    found = kinds(result)
    assert found[0] == ("inserted", 40)
    assert found[1][0] == "renumbered"
    assert "moved by +1" in result.findings[1].message


def test_inserting_a_forged_event_before_the_first_is_found(store: str) -> None:
    tamper(store, (
        "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
        "SELECT 0, originator_id, 99, topic, state FROM stored_events WHERE rowid = 3", ()))
    assert kinds(check(store)) == [
        ("inserted", 0),
        ("unknown_topic", 0),  # a creation event at version 99
        ("version_gap", 0),  # the aggregate starts at version 99
        ("version_gap", 3),  # and goes back to version 1
    ]


def test_altering_a_seal_is_found_by_the_next_seal_and_the_chain(store: str) -> None:
    reader = StoreReader(store)
    seal_rows = list(reader.rows(topics=(SEALED_TOPIC,)))
    reader.close()
    second = seal_rows[1]
    altered = decode_state(second.state).replace(b'"hash":"', b'"hash":"00', 1)
    tamper(store, ("UPDATE stored_events SET state = ? WHERE rowid = ?",
                   (altered, second.position)))
    result = check(store)
    assert ("modified", second.position) in kinds(result)
    assert any(f.kind == "chain" for f in result.findings)


def test_deleting_the_last_seal_is_caught_by_the_witness(store: str, witness: Path) -> None:
    reader = StoreReader(store)
    last = list(reader.rows(topics=(SEALED_TOPIC,)))[-1]
    reader.close()
    tamper(store, ("DELETE FROM stored_events WHERE rowid = ?", (last.position,)))
    alone = check(store)
    assert alone.ok  # without a witness, the log now merely ends with unsealed events
    assert alone.unsealed > 0
    witnessed = check(store, witness)
    assert [f.kind for f in witnessed.findings] == ["witness"]
    assert "does not have" in witnessed.findings[0].message


def test_a_rewrite_of_the_whole_log_passes_alone_but_not_against_the_witness(
    store: str, witness: Path, fresh: str,
) -> None:
    # The intruder alters one event and rebuilds a consistent log: no old seals, new ones.
    reader = StoreReader(store)
    lines = [export_line(row) for row in reader.rows() if not row.topic.startswith(
        "att_jm:Ledger")]
    reader.close()
    victim = next(i for i, line in enumerate(lines) if b'"failed.execute"' in line)
    lines[victim] = lines[victim].replace(b'"carol"', b'"alice"')
    renumbered = []
    for position, line in enumerate(lines, start=1):
        item = orjson.loads(line)
        item["position"] = position
        renumbered.append(orjson.dumps(item))
    rewritten = fresh
    import_log(rewritten, renumbered)
    app = open_store(rewritten)
    sealer = Sealer(app, rewritten, every_events=20, every_seconds=60.0)
    sealer.seal(datetime.now(UTC))
    sealer.close()
    app.close()
    assert check(rewritten).ok
    witnessed = check(rewritten, witness)
    assert not witnessed.ok
    assert {f.kind for f in witnessed.findings} == {"witness"}
    first = witnessed.findings[0]
    assert "rewritten" in first.message
    # The seals before the first change still match: the finding names where the logs part.
    before = [s for s in load_witness(str(witness))
              if s["position"] < (first.position or 0)]
    assert witnessed.witness is not None
    assert witnessed.witness["matched"] == len(before)


def test_a_witness_file_may_hold_duplicates_and_be_a_json_array(
    store: str, witness: Path, tmp_path: Path
) -> None:
    seals = load_witness(str(witness))
    array = tmp_path / "witness.json"
    array.write_bytes(orjson.dumps([*seals, seals[-1]]))
    result = check(store, array)
    assert result.ok
    assert result.witness is not None
    assert result.witness["seals"] == len(seals)
