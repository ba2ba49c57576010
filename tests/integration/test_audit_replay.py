"""Point-in-time views: a replay of the stored log equals what the service published then."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BOTH_BACKENDS
from helpers.store import store_state

from att_jm.audit.replay import replay_views
from att_jm.log.records import Record, decode
from att_jm.log.rows import AuditError, StoreReader
from projections.views import TOPICS, VIEWS

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL


@pytest.fixture
def run(tmp_path: Path, store_location: str) -> Iterator[ScriptedRun]:
    scripted = ScriptedRun(tmp_path / "store", store=store_location)
    typical_day(scripted)
    yield scripted
    scripted.close()


def test_views_at_every_position_the_service_published_equal_the_replay(
    run: ScriptedRun,
) -> None:
    assert len(run.published) > 40
    for position, published in run.published.items():
        moment = replay_views(run.store, position=position)
        try:
            assert moment.position == position
            assert moment.payloads() == published, f"views differ at position {position}"
        finally:
            moment.close()


def test_views_at_the_current_position_equal_the_live_views(run: ScriptedRun) -> None:
    moment = replay_views(run.store)
    try:
        assert moment.position == run.position
        assert moment.payloads() == {name: run.views.payload(name, 1000) for name in VIEWS}
        assert moment.views.snapshot() == run.views.snapshot()
    finally:
        moment.close()


def _records(run: ScriptedRun) -> list[Record]:
    reader = StoreReader(run.store)
    try:
        return [decode(row) for row in reader.rows()]
    finally:
        reader.close()


def test_views_at_a_time_are_those_just_before_the_first_view_event_after_it(
    run: ScriptedRun,
) -> None:
    records = _records(run)
    for probe in (records[10], records[len(records) // 2], records[-3]):
        later = [r for r in records if r.topic in TOPICS and r.at > probe.at]
        expected = later[0].position - 1 if later else run.position
        moment = replay_views(run.store, at=probe.at)
        same = replay_views(run.store, position=expected)
        try:
            assert moment.position == expected
            assert moment.payloads() == same.payloads()
        finally:
            moment.close()
            same.close()


def test_views_before_the_first_event_are_empty_with_default_settings(run: ScriptedRun) -> None:
    records = _records(run)
    first_view_event = next(r for r in records if r.topic in TOPICS)
    moment = replay_views(run.store, at=records[0].at - timedelta(seconds=1))
    try:
        assert moment.position == first_view_event.position - 1
        payloads = moment.payloads()
        assert payloads["jobs"] == {"view": "jobs", "position": 0, "total": 0, "omitted": 0,
                                    "cut": 0, "rows": []}
        assert payloads["settings"]["settings"]["interval_seconds"] == 5.0
    finally:
        moment.close()


def test_a_replay_writes_no_file_and_leaves_the_store_untouched(run: ScriptedRun) -> None:
    before = store_state(run.store)
    moment = replay_views(run.store, position=run.position // 2)
    moment.close()
    assert store_state(run.store) == before


def test_a_position_beyond_the_log_gives_the_views_at_its_end(run: ScriptedRun) -> None:
    moment = replay_views(run.store, position=run.position + 1000)
    try:
        assert moment.position == run.position
    finally:
        moment.close()


def test_a_missing_store_is_an_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no store file"):
        replay_views(str(tmp_path / "none.db"))


def test_readers_never_block_the_writer_while_it_appends(
    tmp_path: Path, store_location: str,
) -> None:
    run = ScriptedRun(tmp_path / "store", seal_every=50, store=store_location)
    typical_day(run)
    stop = threading.Event()
    replays = 0

    def replay_again_and_again() -> None:
        nonlocal replays
        while not stop.is_set():
            reader = StoreReader(run.store)
            for _ in reader.rows():  # a slow reader in the middle of the log
                time.sleep(0)
            reader.close()
            replay_views(run.store).close()
            replays += 1

    thread = threading.Thread(target=replay_again_and_again)
    thread.start()
    try:
        slowest = 0.0
        for n in range(60):
            started = time.monotonic()
            run.notify("channel-up", {"id": f"busy-{n}", "channel": "C1", "site": "paris"})
            slowest = max(slowest, time.monotonic() - started)
    finally:
        stop.set()
        thread.join()
        run.close()
    assert replays >= 1
    assert slowest < 1.0, f"a commit waited {slowest:.2f} s for the readers"
