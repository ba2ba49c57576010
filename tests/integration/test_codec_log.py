"""Logs written with the stored-state codec, before it (plain JSON) and mixed: every event
decodes, `audit verify` passes on each and catches a changed row, the views replay the same,
and export/import round-trips (issue 16.2)."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import orjson
import pytest
from eventsourcing.persistence import StoredEvent

from att_jm.audit.replay import replay_views
from att_jm.audit.transfer import export, import_log
from att_jm.audit.verify import verify
from att_jm.log.codec import decode_state, is_encoded
from att_jm.log.records import EVENT_TOPICS, dashed
from att_jm.log.rows import StoreReader
from att_jm.store import open_store
from bench.replay import generate


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("codec") / "log.db"
    generate(path, 4000, seed=5)
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
    import_log(str(copy), lines)
    assert all(is_encoded(state) for *_, state in _rows(copy))  # stored encoded again
    assert _verified(copy)
    assert _views(copy) == _views(log)
