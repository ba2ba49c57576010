"""A rebuild that skips gone executions equals applying every event of the log one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BOTH_BACKENDS
from helpers.store import count_events, views_for

from att_jm.log.rows import StoreReader
from att_jm.store import open_store, read_rows
from projections import rebuild
from projections.rules import (
    CLEANED_UP,
    CREATED,
    EXECUTION_VIEWS,
    FINAL,
    RULES,
    TOPICS,
    Overlay,
)
from projections.views import Views

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL

TABLES = ("tracking", "view_positions", "jobs", "job_ids", "queue", "executed", "failed",
          "settings")


def busy_day(run: ScriptedRun) -> None:
    """`typical_day`, then more of everything, ending with entries queued, sent to the front,
    re-executed and running: executions gone in every way, and others live in every table."""
    typical_day(run)  # ends with a cleanup of executed, after the last change of failed
    # The last change of executed, then, is an entry gone since (skipped), after the cleanup.
    run.ok("executed.remove", {"id": run.run_next()})
    run.ok("settings.set", {"failed_cleanup": {"max_rows": 2}}, actor="bob")
    for n in range(8):
        run.notify("channel-up", {"id": f"more-{n}", "channel": f"M{n}", "site": "paris"})
    failed = [run.run_next(2, "exit code 1", exit_code=1) for _ in range(3)]
    run.ok("failed.execute", {"id": failed[0]}, actor="carol")  # back to the queue, ...
    assert run.run_next(2, "exit code 1 again", exit_code=1) == failed[0]  # ... fails again
    run.ok("failed.delete", {"id": failed[1]})
    run.cleanup("failed")  # keeps failed[0] and failed[2]
    # A failed attempt queued again by the retry policy, waiting for its time.
    run.ok("job.add", {"name": "flaky", "script": "ipx-update", "trigger": "flaky",
                       "retry": {"max_attempts": 3, "delay_seconds": 3600}})
    run.notify("flaky", {"id": "flaky-1"})
    flaky = next(r["id"] for r in run.views.rows("queue", 100) if r["job"] == "flaky")
    run.ok("queue.execute-now", {"id": flaky})
    assert run.run_next(2, "exit code 1: flaky", exit_code=1) == flaky
    run.ok("job.add", {"name": "down", "script": "always-fail", "trigger": "channel-down"})
    run.ok("job.update", {"name": "paris", "enabled": False, "match": {"site": "lyon"}})
    run.run_next()
    run.cleanup("executed")
    queued = run.views.rows("queue", 100)
    run.ok("queue.execute-now", {"id": queued[-1]["id"]}, actor="bob")
    run.ok("queue.remove", {"id": queued[-2]["id"]}, actor="bob")
    run.ok("failed.execute", {"id": failed[2]}, actor="carol")  # left queued, at the front
    run.clock.advance(10)
    assert run.unit(run.manager.dispatch) is not None  # left running
    run.notify("channel-up", {"id": "last", "channel": "L1", "site": "lyon"})


@pytest.fixture
def run(tmp_path: Path, store_location: str) -> Iterator[ScriptedRun]:
    scripted = ScriptedRun(tmp_path / "store", store=store_location)
    busy_day(scripted)
    yield scripted
    scripted.close()


def dump(views: Views) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the views file, in key order."""
    db = views._db  # every table, not just what the API shows
    return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)  # noqa: S608 -- fixed names
            for table in TABLES}


def one_by_one(run: ScriptedRun) -> Iterator[tuple[int, dict[str, list[tuple[Any, ...]]]]]:
    """(position, every table) after applying each event of the log on its own, in order."""
    views = Views(":memory:")
    try:
        for rows in read_rows(run.app, 0, page=1000):
            for row in rows:
                if row[2] in TOPICS:
                    views.apply_rows([row])
                views.advance(row[0])
                yield row[0], dump(views)
    finally:
        views.close()


def test_the_log_has_executions_gone_in_every_way_and_live_ones(run: ScriptedRun) -> None:
    reader = StoreReader(run.store)
    topics = {row.topic for row in reader.rows()}
    reader.close()
    assert set(EXECUTION_VIEWS) <= topics
    assert {"att_jm:Job.Readded", "att_jm:Job.Updated", "att_jm:Job.Removed"} <= topics
    assert all(run.views.count(view) > 0 for view in ("queue", "executed", "failed"))
    assert "running" in {row["state"] for row in run.views.rows("queue", 100)}
    created = count_events(run.store, CREATED)
    reader = StoreReader(run.store)
    with reader.consistent():
        survey = reader.survey(run.position, TOPICS, CREATED, FINAL, rebuild._OTHER_TOPICS)
    reader.close()
    live = survey.live if isinstance(survey.live, list) else orjson.loads(survey.live)
    assert 0 < len(live) < created - 5  # most are skipped


def test_a_rebuild_equals_every_event_applied_one_by_one(run: ScriptedRun) -> None:
    *_, (end, expected) = one_by_one(run)
    assert end == run.position
    live = dump(run.views)
    run.views.reset()
    covered = rebuild.catch_up(run.app, run.views)
    assert dump(run.views) == expected == live
    assert covered == sum(1 for rows in read_rows(run.app, 0, TOPICS) for _ in rows)


def test_the_views_up_to_every_position_equal_the_events_applied_one_by_one(
    run: ScriptedRun,
) -> None:
    for position, expected in one_by_one(run):
        views = Views(":memory:")
        try:
            rebuild.fill(run.app, views, upto=position)
            assert dump(views) == expected, f"views differ at position {position}"
        finally:
            views.close()


def test_a_catch_up_from_a_position_applies_every_later_event(run: ScriptedRun) -> None:
    expected = dump(run.views)
    views = Views(":memory:")
    try:
        rebuild.fill(run.app, views, upto=run.position // 2)
        rebuild.catch_up(run.app, views)
        assert dump(views) == expected
        assert rebuild.catch_up(run.app, views) == 0
    finally:
        views.close()


def test_filling_views_that_are_not_empty_is_refused(run: ScriptedRun) -> None:
    with pytest.raises(ValueError, match="not empty"):
        rebuild.fill(run.app, run.views)


def test_an_empty_log_gives_empty_views(tmp_path: Path, store_location: str) -> None:
    app = open_store(store_location)
    views = Views(views_for(store_location, tmp_path))
    try:
        assert rebuild.catch_up(app, views) == 0
        assert dump(views) == {table: [] for table in TABLES}
    finally:
        views.close()
        app.close()


@pytest.mark.parametrize("topic", sorted(EXECUTION_VIEWS))
@pytest.mark.parametrize("rows", [True, False], ids=["rows", "no rows"])
def test_each_execution_rule_reports_its_views_whatever_the_rows(topic: str, rows: bool) -> None:
    views = Views(":memory:")
    try:
        for table in ("executed", "failed", "not-executed"):
            overlay = Overlay(views._db)
            if rows:
                row = {"id": "x", "job": "j", "command": None, "trigger": "t",
                       "notification_id": "n", "enqueued_at": "a", "state": "queued",
                       "started_at": None, "attempt": 1, "feedback": None, "sort_key": 1,
                       "finished_at": None, "result": None, "seq": 1, "script": "s",
                       "timeout_seconds": 1.0}
                for name in ("queue", "executed", "failed"):
                    overlay.put(name, "x", dict(row))
            data = {"at": "2026-03-02T08:00:00.000Z", "job": "j", "command": None,
                    "trigger": "t", "notification_id": "n", "script": "s",
                    "timeout_seconds": 1.0, "attempt": 2, "result": 3, "feedback": "f",
                    "table": table, "not_before": "2026-03-02T08:00:05.000Z"}
            changed = RULES[topic](overlay, 7, "x", data)
            expected = EXECUTION_VIEWS[topic] or (
                ("executed",) if table == "executed" else ("failed",))
            assert changed == expected, (topic, table)
    finally:
        views.close()


def test_only_the_creation_event_makes_a_row_from_none() -> None:
    """Why an execution that is not created, or whose last event is final, has no row."""
    views = Views(":memory:")
    try:
        for topic in EXECUTION_VIEWS:
            overlay = Overlay(views._db)
            data = {"at": "2026-03-02T08:00:00.000Z", "job": "j", "command": None,
                    "trigger": "t", "notification_id": "n", "script": "s",
                    "timeout_seconds": 1.0, "attempt": 2, "result": 3, "feedback": "f",
                    "table": "executed"}
            RULES[topic](overlay, 7, "x", data)
            made = [name for name in ("queue", "executed", "failed")
                    if overlay.tables[name].get("x") is not None]
            assert made == (["queue"] if topic == CREATED else []), topic
        assert CLEANED_UP in FINAL and CREATED not in FINAL
    finally:
        views.close()
