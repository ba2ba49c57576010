"""Auto Cleanup in chunks: however many rows are due, one unit of work (one commit) removes at
most CLEANUP_CHUNK of them, the run goes on at the writer's next turns with other messages
handled in between, and it removes the rows the one-shot rule (`select_for_cleanup`) names,
in its order, none lost and none twice across a crash or a failed commit.

Over a real SQLite store and views (helpers.application.Harness), each step driven as the
writer's timer drives it: a unit of work, its commit, the views."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.application import Harness
from helpers.clock import Clock

from att_jm.application import UnitOfWork, scheduling
from att_jm.application.scheduling import CLEANUP_CHUNK
from att_jm.domain.cleanup import select_for_cleanup
from att_jm.domain.executions import Execution
from att_jm.domain.runs import Outcome
from att_jm.domain.scheduler import Scheduler
from att_jm.store import read_log
from att_jm.vocabulary import Result

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def opened(tmp_path: Path, clock: Clock) -> Iterator[list[Harness]]:
    harnesses: list[Harness] = []
    yield harnesses
    for harness in harnesses:
        harness.close()


def open_jm(tmp_path: Path, clock: Clock, opened: list[Harness]) -> Harness:
    """The JobManager over the test's SQLite store (again: as after a crash)."""
    harness = Harness(tmp_path, clock, 256 * 1024)
    opened.append(harness)
    return harness


@pytest.fixture
def jm(tmp_path: Path, clock: Clock, opened: list[Harness]) -> Harness:
    harness = open_jm(tmp_path, clock, opened)
    harness.ok("settings.set", {"interval_seconds": 0})
    harness.add_job("backup")
    return harness


def populate(jm: Harness, clock: Clock, count: int, *, result: int = 3, prefix: str = "n",
             gaps: list[float] | None = None) -> list[str]:
    """`count` executions ending in `result`, oldest first; each ends `gaps[i]` seconds (1 by
    default; negative: the clock set back) after the one before."""
    ids: list[str] = []
    for start in range(0, count, 500):
        jm.batch(*[jm.notification_work("alarm", {"id": f"{prefix}-{i}"})
                   for i in range(start, min(count, start + 500))])
    for i in range(count):
        clock.advance(1 if gaps is None else gaps[i])

        def run(uow: UnitOfWork) -> str:
            started = jm.manager.dispatch(uow)
            assert started is not None
            outcome = Outcome(result=Result(result), feedback="done", exit_code=0,
                              duration_seconds=1.0)
            assert jm.manager.finish(uow, started.execution_id, outcome, clock())
            return started.execution_id

        ids.append(jm.unit(run))
    return ids


def step(jm: Harness, table: str) -> tuple[int, list[tuple[int, Any]]]:
    """One turn of the writer's cleanup timer for `table` (`Writer.tick`): its unit of work
    committed and applied to the views; what it removed, and the CleanedUp events of that
    commit with their positions."""
    uow = UnitOfWork()
    removed = jm.manager.cleanup(uow, table, "scheduler")
    uow.collect()
    stored = jm.manager.commit(uow)
    jm.views.apply(stored)
    cleaned = [(p, event) for p, event in stored if isinstance(event, Execution.CleanedUp)]
    assert removed == len(cleaned) <= scheduling.CLEANUP_CHUNK
    return removed, cleaned


def turns(jm: Harness, clock: Clock, *tables: str,
          tick: float = 0.0) -> list[dict[str, int]]:
    """The writer's turns while the cleanup of one of `tables` is due (each due table one
    step, as `Writer.tick`; the clock moving `tick` seconds after each): what each removed."""
    done: list[dict[str, int]] = []
    while due := [t for t in jm.manager.cleanup_due(clock()) if t in tables]:
        assert len(done) < 1000, "the cleanup never ends"
        done.append({table: step(jm, table)[0] for table in due})
        clock.advance(tick)
    return done


def chunks(jm: Harness, clock: Clock, table: str) -> list[int]:
    return [turn[table] for turn in turns(jm, clock, table)]


def cleaned_ids(jm: Harness) -> list[str]:
    return [str(event.originator_id) for event in jm.events(Execution.CleanedUp)]


def test_a_cleanup_of_2500_rows_commits_at_most_a_chunk_at_a_time(
    jm: Harness, clock: Clock,
) -> None:
    done = populate(jm, clock, 2500)
    # Row Age: the rows older than 500 s go (2,000), the 500 newest stay.
    jm.ok("settings.set", {"executed_cleanup": {"max_rows": None, "max_age_days": 500 / 86400,
                                                "every_seconds": 60}})
    clock.advance(0.5)
    assert "executed" in jm.manager.cleanup_due(clock())
    expected = select_for_cleanup(jm.manager.model.index.finished("executed"),
                                  jm.manager.scheduler.policy("executed"), clock())
    assert expected == done[:2000]

    removed, first = step(jm, "executed")
    assert removed == CLEANUP_CHUNK
    # The run goes on at the next turn: still due, and the writer's loop does not sleep.
    assert "executed" in jm.manager.cleanup_due(clock())
    assert jm.manager.next_cleanup(clock()) == clock()
    assert jm.events(Scheduler.CleanupRan) == []
    assert len(jm.rows("executed")) == 2500 - CLEANUP_CHUNK

    # A message between two chunks is handled, and committed between them.
    assert jm.notify("alarm", {"id": "between"}) == "enqueued 1"
    assert [row["notification_id"] for row in jm.rows("queue")] == ["between"]
    removed, second = step(jm, "executed")
    assert removed == CLEANUP_CHUNK
    (enqueued,) = [p for p, e in read_log(jm.app, first[-1][0])
                   if isinstance(e, Execution.Enqueued)]
    assert first[-1][0] < enqueued < second[0][0]

    assert chunks(jm, clock, "executed") == []  # that chunk was the run's last
    assert cleaned_ids(jm) == expected  # the same rows, oldest first, each once
    assert jm.ids("executed") == list(reversed(done[2000:]))
    (ran,) = jm.events(Scheduler.CleanupRan)
    assert (ran.table, ran.removed, ran.actor) == ("executed", 2000, "scheduler")
    assert {event.cleanup for event in jm.events(Execution.CleanedUp)} == {ran.cleanup}
    assert "executed" not in jm.manager.cleanup_due(clock())
    assert jm.manager.scheduler.cleanup_due("executed", clock()) == clock() + timedelta(
        seconds=60)


def keep_newest(jm: Harness, table: str, rows: int) -> None:
    jm.ok("settings.set", {f"{table}_cleanup": {"max_rows": rows, "max_age_days": None}})


def test_cleanup_run_replies_its_own_chunk_and_the_writer_finishes_the_run(
    jm: Harness, clock: Clock,
) -> None:
    done = populate(jm, clock, 2500)
    keep_newest(jm, "executed", 100)
    assert jm.ok("cleanup.run", {"table": "executed"}, actor="bob") == {"executed": 1000}
    assert len(jm.events(Execution.CleanedUp)) == CLEANUP_CHUNK  # that commit's
    assert jm.events(Scheduler.CleanupRan) == []
    assert chunks(jm, clock, "executed") == [1000, 400]
    assert cleaned_ids(jm) == done[:2400]
    assert jm.ids("executed") == list(reversed(done[2400:]))
    cleaned = jm.events(Execution.CleanedUp)
    (ran,) = jm.events(Scheduler.CleanupRan)
    assert (ran.table, ran.removed, ran.actor) == ("executed", 2400, "bob")
    assert {(e.actor, e.cleanup) for e in cleaned} == {("bob", ran.cleanup)}


def test_cleanup_run_of_all_shares_one_chunk_between_the_tables(
    jm: Harness, clock: Clock,
) -> None:
    executed = populate(jm, clock, 1200)
    failed = populate(jm, clock, 300, result=2, prefix="f")
    keep_newest(jm, "executed", 100)
    keep_newest(jm, "failed", 100)
    assert jm.ok("cleanup.run", {"table": "all"}) == {"executed": 1000, "failed": 0}
    assert len(jm.events(Execution.CleanedUp)) == CLEANUP_CHUNK
    assert turns(jm, clock, "executed", "failed") == [{"executed": 100, "failed": 200}]
    assert jm.ids("executed") == list(reversed(executed[1100:]))
    assert jm.ids("failed") == list(reversed(failed[200:]))
    assert [(r.table, r.removed, r.actor) for r in jm.events(Scheduler.CleanupRan)] == [
        ("executed", 1100, "alice"), ("failed", 200, "alice")]


def test_a_cleanup_run_during_a_run_ends_that_run_and_starts_its_own(
    jm: Harness, clock: Clock,
) -> None:
    done = populate(jm, clock, 2500)
    keep_newest(jm, "executed", 100)
    assert step(jm, "executed")[0] == CLEANUP_CHUNK  # the scheduler's run, first chunk
    assert jm.ok("cleanup.run", {"table": "executed"}, actor="bob") == {"executed": 1000}
    assert chunks(jm, clock, "executed") == [400]
    assert cleaned_ids(jm) == done[:2400]
    first, second = jm.events(Scheduler.CleanupRan)
    assert (first.removed, first.actor, second.removed, second.actor) == (
        1000, "scheduler", 1400, "bob")
    runs = [(e.cleanup, e.actor) for e in jm.events(Execution.CleanedUp)]
    assert runs == [(first.cleanup, "scheduler")] * 1000 + [(second.cleanup, "bob")] * 1400


def test_a_crash_between_two_chunks_loses_no_row_and_removes_none_twice(
    jm: Harness, clock: Clock, tmp_path: Path, opened: list[Harness],
) -> None:
    done = populate(jm, clock, 2500)
    keep_newest(jm, "executed", 100)
    assert step(jm, "executed")[0] == CLEANUP_CHUNK
    jm.close()  # as a crash leaves it (the index's position not recorded)
    opened.remove(jm)
    restarted = open_jm(tmp_path, clock, opened)
    # No CleanupRan was stored: the period's cleanup is still due, and removes the rest.
    assert "executed" in restarted.manager.cleanup_due(clock())
    assert chunks(restarted, clock, "executed") == [1000, 400]
    assert cleaned_ids(restarted) == done[:2400]
    assert restarted.ids("executed") == list(reversed(done[2400:]))
    (ran,) = restarted.events(Scheduler.CleanupRan)
    assert ran.removed == 1400  # the run after the restart (the first one never ended)


def test_a_chunk_whose_commit_failed_is_done_again_and_counted_once(
    jm: Harness, clock: Clock,
) -> None:
    done = populate(jm, clock, 2500)
    keep_newest(jm, "executed", 100)
    assert step(jm, "executed")[0] == CLEANUP_CHUNK
    lost = UnitOfWork()  # the next chunk, never committed (a store fault), then reloaded
    assert jm.manager.cleanup(lost, "executed", "scheduler") == CLEANUP_CHUNK
    jm.manager.reload()
    assert chunks(jm, clock, "executed") == [1000, 400]
    assert cleaned_ids(jm) == done[:2400]
    (ran,) = jm.events(Scheduler.CleanupRan)
    assert ran.removed == 2400


@pytest.mark.parametrize("seed", range(20))
def test_the_chunks_remove_what_the_one_shot_rule_selects_in_its_order(
    jm: Harness, clock: Clock, monkeypatch: pytest.MonkeyPatch, seed: int,
) -> None:
    """Random tables (finish times out of order too: a clock set back), policies and chunk,
    scan and page sizes: the run removes `select_for_cleanup`'s rows at its start, in its
    order, whatever the clock does meanwhile (Row Age counts from the run's start)."""
    rng = random.Random(seed)  # noqa: S311 -- a seeded table, not a secret
    monkeypatch.setattr(scheduling, "CLEANUP_CHUNK", rng.randint(1, 9))
    monkeypatch.setattr(scheduling, "CLEANUP_SCAN", rng.randint(1, 14))
    monkeypatch.setattr(scheduling, "SCAN_PAGE", rng.randint(1, 5))
    table = rng.choice(["executed", "failed"])
    count = rng.randint(0, 60)
    gaps = [rng.choice([rng.uniform(-900, 0), rng.uniform(0, 3600)]) for _ in range(count)]
    populate(jm, clock, count, result=3 if table == "executed" else 2, gaps=gaps)
    clock.advance(rng.uniform(0, 3600))
    before = jm.manager.model.index.finished(table)
    # Row Count, Row Age or both; an age some rows are older than (one of them exactly).
    limits = rng.choice(["rows", "age", "both"])
    rows = rng.randint(1, 60) if limits != "age" else None
    ages = [(clock() - at).total_seconds() / 86400 for _, at in before] or [1.0]
    age = max(rng.choice(ages) + rng.choice([0.0, rng.uniform(-0.01, 0.01)]), 0.00001)
    jm.ok("settings.set", {f"{table}_cleanup": {
        "max_rows": rows, "max_age_days": age if limits != "rows" else None,
        "every_seconds": 2592000}})
    expected = select_for_cleanup(before, jm.manager.scheduler.policy(table), clock())
    turns(jm, clock, table, tick=rng.uniform(0, 600))
    assert cleaned_ids(jm) == expected
    assert jm.ids(table) == [row for row, _ in before if row not in set(expected)]
    (ran,) = jm.events(Scheduler.CleanupRan)
    assert (ran.table, ran.removed) == (table, len(expected))


def test_a_policy_changed_between_two_chunks_decides_the_next_chunk(
    jm: Harness, clock: Clock,
) -> None:
    done = populate(jm, clock, 2500)
    keep_newest(jm, "executed", 100)
    assert step(jm, "executed")[0] == CLEANUP_CHUNK
    keep_newest(jm, "executed", 1200)  # 1,500 rows left: 300 more go, not 1,400
    assert chunks(jm, clock, "executed") == [300]
    assert cleaned_ids(jm) == done[:1300]
    (ran,) = jm.events(Scheduler.CleanupRan)
    assert ran.removed == 1300
