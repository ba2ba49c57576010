"""Auto Cleanup in chunks, through the writer's own timers (`Writer.tick`): a big cleanup is
one chunk per turn, the loop does not sleep between them, and a message that arrives
meanwhile is handled between two chunks; on an SQLite and on a PostgreSQL store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from helpers.application import Harness
from helpers.clock import Clock
from helpers.postgres import BOTH_BACKENDS
from helpers.service import populate_scripts_dir

from att_jm.application import UnitOfWork
from att_jm.application.scheduling import CLEANUP_CHUNK
from att_jm.config import Settings
from att_jm.domain.executions import Execution
from att_jm.domain.runs import Outcome
from att_jm.domain.scheduler import Scheduler
from att_jm.mqtt.adapter import Inbound
from att_jm.service import Writer, bootstrap
from att_jm.store import read_log
from att_jm.vocabulary import Result

pytestmark = BOTH_BACKENDS

ROWS = 2500
KEEP = 100


def populate(store: str, directory: Path) -> list[str]:
    """ROWS executions in Executed (oldest first), Auto Cleanup keeping the newest KEEP; the
    store left as a stop leaves it."""
    clock = Clock(datetime(2026, 4, 1, 9, 0, tzinfo=UTC))
    jm = Harness(directory, clock, 256 * 1024, store)
    try:
        jm.ok("settings.set", {"interval_seconds": 0,
                               "executed_cleanup": {"max_rows": KEEP, "max_age_days": None}})
        jm.add_job("backup")
        for start in range(0, ROWS, 500):
            jm.batch(*[jm.notification_work("alarm", {"id": f"n-{i}"})
                       for i in range(start, min(ROWS, start + 500))])
        ids = []
        for _ in range(ROWS):
            clock.advance(1)

            def run(uow: UnitOfWork) -> str:
                started = jm.manager.dispatch(uow)
                assert started is not None
                outcome = Outcome(result=Result.SUCCEEDED, feedback="done", exit_code=0,
                                  duration_seconds=1.0)
                assert jm.manager.finish(uow, started.execution_id, outcome, clock())
                return started.execution_id

            ids.append(jm.unit(run))
        return ids
    finally:
        jm.close()


@pytest.fixture
def done(tmp_path: Path, store_location: str) -> list[str]:
    return populate(store_location, tmp_path / "populate")


@pytest.fixture
def writer(tmp_path: Path, store_location: str, done: list[str]) -> Iterator[Writer]:
    scripts = populate_scripts_dir(tmp_path / "scripts")
    w = bootstrap(Settings(store=store_location, scripts=str(scripts)))
    yield w
    w.close()


def job_add(name: str) -> Inbound:
    body = {"name": name, "script": "ok", "trigger": "never"}
    return Inbound(mid=1, qos=1, generation=0,
                   topic=b"att/job-manager/commands/tester/job.add",
                   payload=orjson.dumps(body), response_topic=None, correlation=None)


def cleaned(writer: Writer) -> list[tuple[int, str]]:
    return [(p, str(e.originator_id)) for p, e in read_log(writer.manager.app, 0)
            if isinstance(e, Execution.CleanedUp)]


def test_a_big_cleanup_is_one_chunk_per_turn_with_messages_handled_between(
    writer: Writer, done: list[str],
) -> None:
    sizes: list[int] = []
    between: list[int] = []
    while "executed" in writer.manager.cleanup_due(writer.clock()) and len(sizes) < 10:
        before = len(cleaned(writer))
        writer.tick()
        sizes.append(len(cleaned(writer)) - before)
        if "executed" in writer.manager.cleanup_due(writer.clock()):
            # More to go: the loop does not sleep before the next chunk, and a message
            # that arrived meanwhile is handled first.
            now = writer.clock()
            assert writer.manager.next_cleanup(now) <= now
            writer.handle([job_add(f"job-{len(sizes)}")])
            assert f"job-{len(sizes)}" in writer.manager.jobs
            between.append(writer.parts.position())
    assert sizes == [CLEANUP_CHUNK, CLEANUP_CHUNK, ROWS - KEEP - 2 * CLEANUP_CHUNK]
    positions = [p for p, _ in cleaned(writer)]
    assert [sum(p < b for p in positions) for b in between] == [1000, 2000]
    assert [entry for _, entry in cleaned(writer)] == done[:ROWS - KEEP]
    (ran,) = [e for _, e in read_log(writer.manager.app, 0)
              if isinstance(e, Scheduler.CleanupRan) and e.table == "executed"]
    assert (ran.removed, ran.actor) == (ROWS - KEEP, "scheduler")
    writer.parts.after.flush_views()
    rows = writer.parts.views.rows("executed", 10**6)
    assert [row["id"] for row in rows] == list(reversed(done[ROWS - KEEP:]))
