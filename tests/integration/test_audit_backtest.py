"""`backtest`: a draft job against stored notifications finds what a real job enqueued."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers.audit_run import ScriptedRun
from helpers.postgres import BOTH_BACKENDS
from helpers.store import store_state

from att_jm.audit.backtest import Backtest, Outcome, draft_job
from att_jm.domain.times import parse_iso
from att_jm.log.records import decode
from att_jm.log.rows import AuditError, StoreReader

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL


def backtest(store: str, args: dict[str, object], **options: object) -> tuple[
        list[Outcome], Backtest]:
    test = Backtest(draft_job(args), **options)  # type: ignore[arg-type]  # typed by Backtest
    reader = StoreReader(store)
    try:
        return list(test.run(reader)), test
    finally:
        reader.close()


def enqueued_for(store: str, job: str) -> list[tuple[str, str]]:
    """(notification id, Command) of every entry the real job `job` was enqueued with."""
    reader = StoreReader(store)
    try:
        return [
            (r.state["notification_id"], r.state["command"])
            for r in (decode(row) for row in reader.rows(topics=("att_jm:Execution.Enqueued",)))
            if r.state["job"] == job
        ]
    finally:
        reader.close()


@pytest.fixture
def run(tmp_path: Path, store_location: str) -> ScriptedRun:
    scripted = ScriptedRun(tmp_path / "store", store=store_location)
    scripted.ok("job.add", {"name": "real", "script": "ipx-update", "trigger": "alarm",
                            "match": {"site": "paris", "level.major": True},
                            "command": "raise {channel} {level.code}"})
    payloads = [
        {"channel": "A", "site": "paris", "level": {"major": True, "code": 7}},
        {"channel": "B", "site": "paris", "level": {"major": False, "code": 7}},
        {"channel": "C", "site": "lyon", "level": {"major": True, "code": 1}},
        {"channel": "D", "site": "paris", "level": {"major": 1, "code": 2}},  # 1 is not true
        {"site": "paris", "level": {"major": True, "code": 3}},  # no channel: skipped
        {"channel": "F", "site": "paris", "level": {"major": True, "code": [1, 2]}},
    ]
    for n, payload in enumerate(payloads):
        scripted.notify("alarm", {"id": f"a-{n}", **payload})
        scripted.notify("other", {"id": f"o-{n}", **payload})
    scripted.close()
    return scripted


def test_a_backtest_finds_exactly_the_notifications_a_real_job_enqueued(
    run: ScriptedRun,
) -> None:
    outcomes, test = backtest(run.store, {
        "trigger": "alarm", "match": {"site": "paris", "level.major": True},
        "command": "raise {channel} {level.code}"})
    would = [(o.notification_id, o.command) for o in outcomes if o.enqueued]
    assert would == enqueued_for(run.store, "real")
    assert would == [("a-0", "raise A 7"), ("a-5", "raise F [1,2]")]
    assert [(o.notification_id, o.reason) for o in outcomes if not o.enqueued] == [
        ("a-4", "the notification has no field 'channel' for the command template")]
    assert all(o.actual == ["real"] for o in outcomes if o.enqueued)
    counts = test.counts
    assert (counts.notifications, counts.trigger, counts.matched, counts.enqueued,
            counts.skipped) == (12, 6, 3, 2, 1)


def test_a_draft_without_match_or_template_matches_every_notification_of_its_trigger(
    run: ScriptedRun,
) -> None:
    outcomes, test = backtest(run.store, {"trigger": "other"})
    assert [o.notification_id for o in outcomes] == [f"o-{n}" for n in range(6)]
    assert outcomes[0].command is not None
    assert outcomes[0].command.startswith('{"id":"o-0"')  # the payload as compact JSON
    assert all(o.actual == [] for o in outcomes)
    assert test.counts.enqueued == 6


def test_a_backtest_covers_only_the_time_and_position_range_given(run: ScriptedRun) -> None:
    everything, _ = backtest(run.store, {"trigger": "alarm"})
    times = {o.notification_id: o for o in everything}
    since = decode_time(times["a-2"].at)
    until = decode_time(times["a-4"].at)
    ranged, _ = backtest(run.store, {"trigger": "alarm"}, since=since, until=until)
    assert [o.notification_id for o in ranged] == ["a-2", "a-3"]
    by_position, _ = backtest(run.store, {"trigger": "alarm"}, after=times["a-3"].position)
    assert [o.notification_id for o in by_position] == ["a-4", "a-5"]
    nothing, test = backtest(run.store, {"trigger": "alarm"},
                             since=decode_time(times["a-5"].at) + timedelta(seconds=2))
    assert nothing == []
    assert test.counts.notifications == 0


def decode_time(text: str) -> datetime:
    return parse_iso(text)


def test_a_backtest_has_no_side_effects_on_the_store(run: ScriptedRun) -> None:
    before = store_state(run.store)
    backtest(run.store, {"trigger": "alarm", "command": "x {channel}"})
    assert store_state(run.store) == before


def test_an_invalid_draft_is_refused_like_job_add_would(run: ScriptedRun) -> None:
    with pytest.raises(AuditError, match="trigger"):
        draft_job({"trigger": "a/b"})
    with pytest.raises(AuditError, match="stray"):
        draft_job({"trigger": "alarm", "command": "x {channel"})
    with pytest.raises(AuditError, match="unknown argument"):
        draft_job({"trigger": "alarm", "colour": "red"})
