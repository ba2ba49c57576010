"""Logs written with the stored-state codec (the setting `compact_states` on), without it
(plain JSON, the default, as before the codec) and mixed: every event decodes, `audit verify`
passes on each and catches a changed row, the views replay the same, export/import
round-trips, and a store switched from one setting to the other reads, verifies and replays
on SQLite and on PostgreSQL (issue 16.2)."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from uuid import UUID

import orjson
import pytest
from eventsourcing.persistence import Mapper, StoredEvent
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BOTH_BACKENDS
from helpers.store import views_for

from att_jm.application import JobManager
from att_jm.audit.replay import replay_views
from att_jm.audit.transfer import export, import_log
from att_jm.audit.verify import verify
from att_jm.domain.ids import SCHEDULER_ID
from att_jm.log.codec import decode_state, is_encoded
from att_jm.log.records import EVENT_TOPICS, dashed
from att_jm.log.rows import StoreReader
from att_jm.store import open_store
from bench.replay import generate
from projections.rebuild import catch_up
from projections.views import VIEWS, Views


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("codec") / "log.db"
    generate(path, 4000, seed=5, compact=True)
    return path


def _copy(source: Path, target: Path) -> Path:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def _rows(path: Path) -> list[tuple[int, str, int, str, bytes]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT rowid, originator_id, originator_version, topic, state "
                          "FROM stored_events ORDER BY rowid").fetchall()


def _to_plain(path: Path, every: int) -> None:
    """Rewrite every `every`-th row's state as plain JSON, as written before the codec."""
    with sqlite3.connect(path) as db:
        for position, _, _, _, state in _rows(path)[::every]:
            db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                       (decode_state(state), position))
        for oid, version, state in db.execute(
                "SELECT originator_id, originator_version, state FROM stored_snapshots"
        ).fetchall():
            db.execute("UPDATE stored_snapshots SET state = ? WHERE originator_id = ? AND "
                       "originator_version = ?", (decode_state(state), oid, version))


def _verified(path: Path) -> bool:
    reader = StoreReader(str(path))
    try:
        return verify(reader).ok
    finally:
        reader.close()


def _views(path: Path) -> dict[str, object]:
    return replay_views(str(path)).payloads()


def test_every_event_is_stored_encoded_and_loads(log: Path) -> None:
    rows = _rows(log)
    topics = {topic for _, _, _, topic, _ in rows}
    assert len(topics & set(EVENT_TOPICS.values())) >= 18  # nearly every event type
    app = open_store(str(log))
    try:
        for _, oid, version, topic, state in rows:
            assert is_encoded(state), topic
            plain = decode_state(state)
            event = app.mapper.to_domain_event(StoredEvent(dashed(oid), version, topic, state))
            assert app.mapper.transcoder.encode(
                {k: v for k, v in vars(event).items()
                 if k not in ("originator_id", "originator_version")}) == plain
        total_plain = sum(len(decode_state(s)) for *_, s in rows)
        assert sum(len(s) for *_, s in rows) < total_plain / 3
    finally:
        app.close()


@pytest.mark.parametrize("every", [1, 2, 7])
def test_plain_and_mixed_logs_verify_and_replay_alike(log: Path, tmp_path: Path,
                                                       every: int) -> None:
    copy = _copy(log, tmp_path / "copy.db")
    _to_plain(copy, every)
    assert _verified(log)
    assert _verified(copy)
    assert _views(copy) == _views(log)


def test_a_changed_encoded_row_is_caught(log: Path, tmp_path: Path) -> None:
    copy = _copy(log, tmp_path / "copy.db")
    position, _, _, _, state = _rows(copy)[100]
    changed = bytearray(state)
    changed[len(changed) // 2] ^= 0x10
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (bytes(changed), position))
    assert not _verified(copy)


def test_export_import_round_trip_of_a_mixed_log(log: Path, tmp_path: Path) -> None:
    mixed = _copy(log, tmp_path / "mixed.db")
    _to_plain(mixed, 3)
    out = io.BytesIO()
    reader = StoreReader(str(mixed))
    try:
        export(reader, out)
    finally:
        reader.close()
    lines = out.getvalue().splitlines()
    assert all(b"state_base64" not in line for line in lines)
    assert orjson.loads(lines[0])["state"]["timestamp"]["_type_"] == "datetime_iso"
    copy = tmp_path / "imported.db"
    import_log(str(copy), lines, compact=True)
    assert all(is_encoded(state) for *_, state in _rows(copy))  # stored encoded again
    assert _verified(copy)
    assert _views(copy) == _views(log)
    plain = tmp_path / "imported-plain.db"
    import_log(str(plain), lines)  # the setting off: written as the export's JSON
    assert not any(is_encoded(state) for *_, state in _rows(plain))
    assert _verified(plain)
    assert _views(plain) == _views(log)


def _plain_as_on_main(store: str) -> tuple[int, int]:
    """Every stored event and snapshot of `store` is its event's JSON exactly as the
    library's mapper without a compressor writes it (the stored form before the codec);
    (events, snapshots) checked."""
    app = open_store(store, readonly=True)
    plain: Mapper[UUID] = Mapper(transcoder=app.mapper.transcoder)
    reader = StoreReader(store)
    try:
        rows = list(reader.rows())
        assert rows
        for row in rows:
            assert row.state[:1] == b"{" and not is_encoded(row.state), row.topic
            event = app.mapper.to_domain_event(
                StoredEvent(dashed(row.originator_id), row.originator_version, row.topic,
                            row.state))
            assert plain.to_stored_event(event).state == row.state, row.topic
        snapshots = [reader.snapshot(oid, version)
                     for oid, version in reader.snapshot_keys()]
        assert all(stored is not None and stored[1][:1] == b"{" for stored in snapshots)
    finally:
        reader.close()
        app.close()
    return len(rows), len(snapshots)


def test_with_the_setting_off_states_are_stored_as_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    generate(path, 1500, seed=3)
    app = open_store(str(path))
    try:
        app.take_snapshot(SCHEDULER_ID)  # as import does
    finally:
        app.close()
    events, snapshots = _plain_as_on_main(str(path))
    assert events > 1000 and snapshots >= 1
    assert _verified(path)


def _encoded_count(store: str) -> int:
    reader = StoreReader(store)
    try:
        return sum(is_encoded(row.state) for row in reader.rows())
    finally:
        reader.close()


@BOTH_BACKENDS
@pytest.mark.parametrize("first", [True, False], ids=["compact-then-plain",
                                                      "plain-then-compact"])
def test_a_store_switched_between_the_settings_reads_verifies_and_replays(
        store_location: str, tmp_path: Path, first: bool) -> None:
    run = ScriptedRun(tmp_path / "run", seal_every=15, marks=True, store=store_location,
                      compact=first)
    typical_day(run)
    written_first = run.position
    if first:
        assert _encoded_count(store_location) == written_first
    else:  # the writer's own path (WriteModel.encode) stores plain JSON as before
        assert _plain_as_on_main(store_location)[0] == written_first
    run.compact = not first
    run.restart()  # a clean stop (its seals), then the other setting
    for n in range(8):
        run.notify("channel-up", {"id": f"after-{n}", "channel": f"D{n}", "site": "paris"})
    while run.run_next() is not None:
        pass
    run.ok("job.update", {"name": "ipx", "command": "c={channel}"}, actor="bob")
    run.stop()
    end = max(run.published)  # the log's end: its last seals and Ledger.Closed
    encoded = _encoded_count(store_location)
    assert 0 < encoded < end  # both forms in the log
    reader = StoreReader(store_location)
    try:
        assert verify(reader).ok
    finally:
        reader.close()
    final = run.published[end]
    assert replay_views(store_location).payloads() == final
    after_switch = sorted(p for p in run.published if written_first < p < end)
    for position in (written_first, after_switch[len(after_switch) // 2]):
        assert replay_views(store_location, position=position).payloads() == \
            run.published[position]
    for compact in (False, True):  # a rebuild (and a start) with either setting
        app = open_store(store_location, compact=compact)
        views = Views(views_for(store_location, tmp_path / f"rebuilt-{compact}"))
        try:
            views.reset()
            catch_up(app, views)
            assert {name: views.payload(name, 1000) for name in VIEWS} == final
            manager = JobManager(app, check_script=lambda name: name, clock=run.clock)
            try:  # the aggregates load (the scheduler from its snapshot, either form)
                assert manager.jobs["ipx"].command == "c={channel}"
                assert "down" not in manager.jobs
            finally:
                manager.close()
        finally:
            views.close()
            app.close()
