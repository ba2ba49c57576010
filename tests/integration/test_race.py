"""Optimistic concurrency as the last line (issue 15.3): two writers on one PostgreSQL store
that both believe they may dispatch the same queued entry. The lease's fence is left out on
purpose (no lease row: both may append): only the unique (originator_id, originator_version)
of the events table stands between them. Exactly one dispatch is recorded (one
Execution.Started, one Scheduler.Dispatched), the loser's commit fails with StoreConflict,
and its script never runs."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from helpers.postgres import POSTGRESQL
from helpers.service import populate_scripts_dir, reachable
from helpers.store import count_events

from att_jm.application import JobManager, UnitOfWork
from att_jm.config import Settings
from att_jm.service.bootstrap import bootstrap
from att_jm.service.writer import Writer
from att_jm.store import StoreConflict, open_store

ACTOR = "tester"


#: PostgreSQL only: the race is between writers of one shared store.
pytestmark = pytest.mark.parametrize("store_backend", [POSTGRESQL], indirect=True)


@pytest.fixture
def store(store_location: str) -> str:
    return store_location


def dispatches(store: str) -> dict[str, int]:
    """How many Execution.Started and Scheduler.Dispatched events the log holds."""
    return {name: count_events(store, f"att_jm:{name}")
            for name in ("Execution.Started", "Scheduler.Dispatched")}


def manager(store: str) -> JobManager:
    return JobManager(open_store(store), check_script=lambda name: name,
                      clock=lambda: datetime.now(UTC))


def command(jm: JobManager, uow: UnitOfWork, name: str, args: dict[str, Any]) -> None:
    reply = jm.handle_command(uow, ACTOR, name, f"att/job-manager/commands/{ACTOR}/{name}",
                              orjson.dumps(args), None)
    assert isinstance(reply, dict) and reply["ok"] is True, reply
    uow.collect()


def queue_one(jm: JobManager, script: str, command_text: str = "0") -> None:
    """One job, no interval, and one notification that queues one entry of it."""
    uow = UnitOfWork()
    command(jm, uow, "settings.set", {"interval_seconds": 0})
    command(jm, uow, "job.add", {"name": "race", "script": script, "trigger": "go",
                                 "command": command_text})
    jm.commit(uow)
    uow = UnitOfWork()
    payload = orjson.dumps({"id": f"n-{uuid.uuid4().hex}"})
    assert jm.receive_notification(uow, "go", "att/channel-manager/notifications/go",
                                   payload) == "enqueued 1"
    uow.collect()
    jm.commit(uow)


def test_two_writers_dispatching_at_once_record_one_dispatch(store: str) -> None:
    first = manager(store)
    queue_one(first, "ok")
    second = manager(store)  # loads the same state: the entry queued, the scheduler idle
    units = [UnitOfWork(), UnitOfWork()]
    runs = [jm.dispatch(uow) for jm, uow in zip((first, second), units, strict=True)]
    assert all(run is not None for run in runs)  # each believes the entry is its to start
    for uow in units:
        uow.collect()
    assert runs[0] == runs[1]
    barrier = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def commit(index: int, jm: JobManager) -> None:
        barrier.wait()
        try:
            outcomes[index] = jm.commit(units[index])
        except Exception as error:  # noqa: BLE001 -- what each commit ended with is asserted
            outcomes[index] = error

    threads = [threading.Thread(target=commit, args=(i, jm))
               for i, jm in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lost = [o for o in outcomes if isinstance(o, Exception)]
    won = [o for o in outcomes if isinstance(o, list)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], StoreConflict)
    assert dispatches(store) == {"Execution.Started": 1, "Scheduler.Dispatched": 1}
    loser = second if isinstance(outcomes[1], Exception) else first
    loser.reload()  # what the writer does after a conflict
    assert loser.dispatch(UnitOfWork()) is None  # the scheduler is busy with the winner's run
    for jm in (first, second):
        jm.close()


def settings_for(store: str, scripts: Path) -> Settings:
    return Settings(store=store, scripts=str(scripts), log_format="json")


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stamps_file(directory: Path) -> Path:
    """A file every user may append to (scripts run as the unprivileged script user when the
    tests run as root, and may not write into their own directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    reachable(directory)
    path = directory / "stamps.log"
    path.touch()
    path.chmod(0o666)
    return path


def test_the_losing_writer_runs_no_script(store: str, tmp_path: Path) -> None:
    """The writers of two `att-jm serve` processes with the lease left out. The second
    decides to dispatch (the entry queued, the scheduler idle) and, before its commit, the
    first decides the same, commits and starts the script; the second's commit conflicts,
    it loads the aggregates again, does its unit of work again, finds the entry running and
    starts nothing."""
    scripts = populate_scripts_dir(tmp_path / "scripts")
    runs_log = stamps_file(tmp_path / "runs")
    settings = settings_for(store, scripts)
    seed = manager(store)
    queue_one(seed, "stamp-start", str(runs_log))
    seed.close()
    writers: list[Writer] = [bootstrap(settings), bootstrap(settings)]
    first, second = writers
    commit = second.manager.commit
    won: list[Any] = []

    def first_commits_in_between(uow: UnitOfWork) -> list[tuple[int, Any]]:
        if not won:  # the second has decided; the first decides the same and commits first
            won.append(first.units.timer("dispatch", first.parts.dispatcher.start_next))
        return commit(uow)

    second.manager.commit = first_commits_in_between  # type: ignore[method-assign]
    try:
        with structlog.testing.capture_logs() as logs:
            lost = second.units.timer("dispatch", second.parts.dispatcher.start_next)
        assert won[0] is not None and lost is None
        assert [entry["retry"] for entry in logs if entry["event"] == "store.conflict"] == [1]
        assert not [entry for entry in logs if entry["event"].endswith(".failed")]
        assert dispatches(store) == {"Execution.Started": 1, "Scheduler.Dispatched": 1}
        assert first.slot.busy or wait_for(lambda: runs_log.stat().st_size > 0)
        assert not second.slot.busy
        assert wait_for(lambda: runs_log.stat().st_size > 0)
        time.sleep(1.0)  # no other start since
        lines = runs_log.read_text().splitlines()
        assert [line.split()[1] for line in lines] == [won[0].execution_id]
    finally:
        for writer in writers:
            writer.slot.stop()
            writer.manager.close()
            for close in writer.parts.closers:
                close()
