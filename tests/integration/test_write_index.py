"""The write side's index says what the views say, and it never depends on them.

The Job Manager decides from its own index (`att_jm.application.index`), kept in the
store's file in the transaction of the events it follows; the views follow the same log on
their own. Random histories (seeded: every run is the same) check that both agree after
every step on the queue's order, the running entry, the finished tables and the job names;
then the index is rebuilt from the log, caught up after rows it missed, and left alone
by a commit that fails.
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from helpers.application import Harness
from helpers.clock import Clock
from helpers.postgres import BOTH_BACKENDS

from att_jm.application import UnitOfWork
from att_jm.application.model import WriteModel
from att_jm.domain.executions import Execution
from att_jm.domain.ids import execution_id
from att_jm.domain.runs import Outcome, Run
from att_jm.domain.times import iso, parse_iso
from att_jm.store import log_position
from att_jm.vocabulary import Result

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL

RETRY = {"max_attempts": 3, "delay_seconds": 5, "backoff": 2}


def index_state(jm: Harness) -> dict[str, Any]:
    index = jm.manager.model.index
    now = jm.clock()
    return {
        "queue": [(entry, state) for entry, state, _, _ in index.queue()],
        "next": index.next_queued(now),
        "retry_at": None if (at := index.next_retry_at(now)) is None else iso(at),
        "running": index.running(),
        "executed": index.finished("executed"),
        "failed": index.finished("failed"),
        "jobs": index.job_names(),
    }


def views_state(jm: Harness) -> dict[str, Any]:
    """What the views' file says, read with SQL of the test's own (read-only): no code of the
    views decides any of it."""
    now = iso(jm.clock())
    sql = jm.views_sql
    queue = sql.rows("SELECT id, state, sort_key, not_before FROM queue")
    finished = {
        table: [(entry, parse_iso(at)) for entry, at in sql.rows(
            f"SELECT id, finished_at FROM {table} ORDER BY seq DESC")]  # noqa: S608 -- fixed names
        for table in ("executed", "failed")
    }
    jobs = [name for (name,) in sql.rows("SELECT name FROM jobs ORDER BY name")]
    due = sorted((sort_key, entry) for entry, state, sort_key, not_before in queue
                 if state == "queued" and (not_before is None or not_before <= now))
    waits = [not_before for _, state, _, not_before in queue
             if state == "queued" and not_before is not None and not_before > now]
    return {
        "queue": [(row["id"], row["state"]) for row in jm.rows("queue")],
        "next": (due[0][1], due[0][0] < 0) if due else None,
        "retry_at": min(waits, default=None),
        "running": sorted(entry for entry, state, _, _ in queue if state == "running"),
        "executed": finished["executed"],
        "failed": finished["failed"],
        "jobs": jobs,
    }


def random_step(jm: Harness, rng: random.Random, n: int) -> str:  # noqa: PLR0911 -- one return per kind of step
    """One random thing an operator, a Channel Manager or a script does; what it was."""
    queued = [row["id"] for row in jm.rows("queue") if row["state"] == "queued"]
    choice = rng.random()
    if choice < 0.30:
        trigger = rng.choice(["up", "up", "down"])
        jm.notify(trigger, {"id": f"n-{n}", "channel": f"c{n % 5}"})
        return f"notify {trigger}"
    if choice < 0.55:
        dispatch = jm.dispatch()
        if dispatch is None:
            return "nothing due"
        jm.clock.advance(rng.choice([0.5, 1.0, 3.0]))
        jm.finish(dispatch.execution_id, rng.choice([2, 3, 3]))
        return "run"
    if choice < 0.62 and queued:
        jm.ok("queue.execute-now", {"id": rng.choice(queued)})
        return "execute-now"
    if choice < 0.68 and queued:
        jm.ok("queue.remove", {"id": rng.choice(queued)})
        return "queue.remove"
    failed = jm.ids("failed")
    if choice < 0.76 and failed:
        jm.ok(rng.choice(["failed.execute", "failed.delete"]), {"id": rng.choice(failed)})
        return "failed.*"
    executed = jm.ids("executed")
    if choice < 0.80 and executed:
        jm.ok("executed.remove", {"id": rng.choice(executed)})
        return "executed.remove"
    if choice < 0.85:
        jm.ok("settings.set", {"executed_cleanup": {"max_rows": rng.randint(1, 6)},
                               "failed_cleanup": {"max_rows": rng.randint(1, 6)}})
        jm.ok("cleanup.run", {"table": "all"})
        return "cleanup"
    if choice < 0.90:
        name = rng.choice(["a", "b", "c"])
        if name in jm.manager.jobs:
            jm.ok("job.remove", {"name": name})
            return "job.remove"
        jm.add_job(name, trigger=rng.choice(["up", "down"]), retry=RETRY)
        return "job.add"
    jm.clock.advance(rng.choice([1.0, 5.0, 20.0]))
    return "time passes"


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_index_and_the_views_agree_after_every_step_of_a_random_history(
    jm: Harness, seed: int,
) -> None:
    rng = random.Random(seed)  # noqa: S311 -- a seeded history, not a secret
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("a", trigger="up", retry=RETRY)
    jm.add_job("b", trigger="up")
    jm.add_job("c", trigger="down", retry=RETRY)
    seen: set[str] = set()
    for n in range(400):
        step = random_step(jm, rng, n)
        seen.add(step)
        assert index_state(jm) == views_state(jm), f"after step {n}: {step}"
    # the history did everything at least once, or it proved less than it claims
    assert seen >= {"notify up", "notify down", "run", "execute-now", "queue.remove",
                    "failed.*", "executed.remove", "cleanup", "job.remove", "job.add"}


def history(jm: Harness, steps: int = 120) -> None:
    rng = random.Random(9)  # noqa: S311 -- idem
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("a", trigger="up", retry=RETRY)
    jm.add_job("c", trigger="down")
    for n in range(steps):
        random_step(jm, rng, n)


def reopened(jm: Harness) -> WriteModel:
    """A new write model over the same store (as a restart makes one)."""
    return WriteModel(jm.app, jm.clock)


def test_an_index_emptied_or_missing_is_rebuilt_from_the_log_at_start(jm: Harness) -> None:
    history(jm)
    before = index_state(jm)
    db = jm.manager.model.log.connection
    for table in ("jm_index", "jm_queue", "jm_finished", "jm_jobs"):
        db.execute(f"DROP TABLE {table}")
    model = reopened(jm)
    assert model.index.position == log_position(jm.app)
    jm.manager.model.index = model.index
    assert index_state(jm) == before == views_state(jm)
    model.close()


def test_an_index_ahead_of_the_log_is_rebuilt(jm: Harness) -> None:
    history(jm, 60)
    before = index_state(jm)
    db = jm.manager.model.log.connection
    db.execute("UPDATE jm_index SET value = value + 1000 WHERE key = 'position'")
    db.execute("DELETE FROM jm_queue")  # what a restored older store would not match
    model = reopened(jm)
    assert model.index.position == log_position(jm.app)
    jm.manager.model.index = model.index
    assert index_state(jm) == before
    model.close()


def test_rows_the_index_missed_are_caught_up_at_start(jm: Harness, tmp_path: Path) -> None:
    history(jm, 60)
    db = jm.manager.model.log.connection
    db.execute("UPDATE jm_index SET value = 5 WHERE key = 'position'")  # as if it stopped there
    model = reopened(jm)
    assert model.index.position == log_position(jm.app)
    jm.manager.model.index = model.index
    assert index_state(jm) == views_state(jm)
    model.close()


#: A trigger that refuses every new queue row, and its removal: (create, drop) per engine.
REFUSE = {
    "sqlite": ["CREATE TEMP TRIGGER refuse BEFORE INSERT ON jm_queue "
               "BEGIN SELECT RAISE(ABORT, 'refused'); END"],
    "postgresql": ["CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "RAISE EXCEPTION 'refused' USING ERRCODE = 'integrity_constraint_violation'; "
                   "END $$",
                   "CREATE TRIGGER refuse BEFORE INSERT ON jm_queue FOR EACH ROW "
                   "EXECUTE FUNCTION refuse()"],
}
ALLOW = {"sqlite": ["DROP TRIGGER refuse"],
         "postgresql": ["DROP TRIGGER refuse ON jm_queue", "DROP FUNCTION refuse()"]}


def test_a_commit_that_fails_leaves_the_index_as_it_was(jm: Harness, store_backend: str) -> None:
    jm.ok("settings.set", {"interval_seconds": 3600})
    jm.add_job("a", trigger="up")
    jm.notify("up", {"id": "n-1"})
    before = index_state(jm)
    for statement in REFUSE[store_backend]:
        jm.manager.model.log.connection.execute(statement)
    uow = UnitOfWork()
    jm.manager.receive_notification(uow, "up", "att/channel-manager/notifications/up",
                                    b'{"id": "n-2"}')
    uow.collect()
    position = log_position(jm.app)
    with pytest.raises(Exception, match="refused") as refused:
        jm.manager.commit(uow)
    # the engine's own integrity error
    assert "IntegrityError" in {kind.__name__ for kind in type(refused.value).__mro__}
    assert log_position(jm.app) == position  # neither the events nor the index changes
    for statement in ALLOW[store_backend]:
        jm.manager.model.log.connection.execute(statement)
    jm.manager.reload()
    assert index_state(jm) == before


def test_the_write_side_decides_with_the_views_gone(jm: Harness, clock: Clock) -> None:
    """The views file can lag (a full disk): what runs next does not depend on it."""
    jm.ok("settings.set", {"interval_seconds": 0})
    jm.add_job("a", trigger="up")
    for n in range(3):
        jm.batch(jm.notification_work("up", {"id": f"n-{n}"}), apply_views=False)
    jm.ok("queue.execute-now", {"id": str(execution_id("n-2", "a"))})
    jm.views.reset()  # the read side knows nothing any more
    for _ in range(3):
        run = jm.batch(jm.manager.dispatch, apply_views=False)[0]
        assert isinstance(run, Run)
        clock.advance(1)
        outcome = Outcome(Result.SUCCEEDED, "done", 0, 1.0)
        assert jm.batch(partial(jm.manager.finish, entry=run.execution_id, outcome=outcome,
                                at=clock()), apply_views=False)[0]
    assert jm.batch(jm.manager.dispatch, apply_views=False)[0] is None
    enqueued = {event.originator_id: event.notification_id
                for event in jm.events(Execution.Enqueued)}
    started = [enqueued[event.originator_id] for event in jm.events(Execution.Started)]
    assert started == ["n-2", "n-0", "n-1"]  # the front first, then in order of arrival


@pytest.mark.parametrize("start", [1, 40, 97, 150, 211])
def test_rows_applied_again_after_a_crash_change_nothing(jm: Harness, start: int) -> None:
    """The recorded position lags the commits (it is written every RECORD_EVERY positions):
    after a crash the next start applies a suffix of the log the index holds already; the
    rules converge to the same index whatever suffix is applied again."""
    history(jm, 150)
    before = index_state(jm)
    log = jm.manager.model.log
    log.connection.execute(log.dialect.q("UPDATE jm_index SET value = ? WHERE key = 'position'"),
                           (start,))
    model = reopened(jm)  # applies every row after `start` again, on the index as it is
    jm.manager.model.index = model.index
    assert index_state(jm) == before == views_state(jm)
    model.close()


def test_the_position_is_recorded_at_a_clean_stop_and_every_so_often(jm: Harness) -> None:
    history(jm, 30)
    index = jm.manager.model.index
    assert index.position < log_position(jm.app)  # not in every commit
    jm.manager.close()
    model = reopened(jm)
    assert model.index.position == log_position(jm.app)
    model.close()
