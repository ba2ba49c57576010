"""A job whose `match` looks like one of the library's typed values (`{"_type_": ...,
"_data_": ...}`, which `job.add` accepts) snapshotted as archival snapshots every job: the
next start loads it as it was given and matches with it; and what a start or a reload does
with a job that really cannot be loaded. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from eventsourcing.persistence import OperationalError
from helpers.application import Harness
from helpers.archive import audit
from helpers.audit_run import ScriptedRun
from helpers.postgres import BOTH_BACKENDS
from helpers.service import populate_scripts_dir
from helpers.store import store_for

from att_jm.application.model import WriteModel
from att_jm.audit.archiving import archive
from att_jm.config import Settings
from att_jm.domain.ids import SCHEDULER_ID, job_id
from att_jm.domain.notifications import Notification
from att_jm.mqtt.adapter import Inbound
from att_jm.service import Writer, bootstrap
from att_jm.service.replies import Replies
from att_jm.service.unit import WriterUnit
from att_jm.store import JobManagerApp

pytestmark = BOTH_BACKENDS

LOOKALIKES = {
    "uuid_hex-bad": {"_type_": "uuid_hex", "_data_": "x"},
    "uuid_hex-good": {"_type_": "uuid_hex", "_data_": "0b7c4c1e7d1e5a368f0e2f1f9c0f0a11"},
    "datetime_iso": {"_type_": "datetime_iso", "_data_": "2020-01-01"},
    "decimal_str": {"_type_": "decimal_str", "_data_": "1.5"},
    "unknown": {"_type_": "no_such_type", "_data_": "x"},
}
#: The jobs: "odd" with the lookalike, one sorting before it and one after it (a reload
#: that stopped at "odd" would miss "zeta").
NAMES = ("alpha", "odd", "zeta")


def snapshot_as_archival_does(app: JobManagerApp, name: str) -> None:
    """Step b of `att_jm.audit.archiving`: the job loaded, snapshotted and stored."""
    aggregate: Any = app.repository.get(job_id(name))
    assert app.snapshots is not None
    app.snapshots.put([type(aggregate).Snapshot.take(aggregate)])


def stored_snapshot_state(app: JobManagerApp, name: str) -> dict[str, Any]:
    """The state of the job's newest stored snapshot, as its JSON says (not decoded)."""
    assert app.snapshots is not None
    (row,) = app.snapshots.recorder.select_events(job_id(name), desc=True, limit=1)
    state = row.state if app.mapper.compressor is None else app.mapper.compressor.decompress(
        row.state)
    found: dict[str, Any] = orjson.loads(state)["state"]
    return found


def add_jobs(jm: Harness, match: dict[str, Any]) -> None:
    jm.add_job("alpha", match={"site": "paris"})
    jm.add_job("odd", match=dict(match))
    jm.add_job("zeta")


def enqueued_jobs(jm: Harness) -> list[str]:
    received = jm.events(Notification.Received)[-1]
    return [entry["job"] for entry in received.enqueued]


@pytest.mark.parametrize("lookalike", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_a_job_whose_match_looks_like_a_typed_value_survives_its_snapshot_and_a_restart(
        lookalike: dict[str, Any], open_harness: Callable[..., Harness]) -> None:
    jm = open_harness()
    add_jobs(jm, lookalike)
    for name in NAMES:
        snapshot_as_archival_does(jm.app, name)
    assert stored_snapshot_state(jm.app, "odd")["match"] == lookalike
    jm.close()

    restarted = open_harness()  # the next start: it loads every job from its snapshot
    model = restarted.manager.model
    assert sorted(model.jobs) == list(NAMES)
    assert model.jobs["odd"].match == lookalike
    assert type(model.jobs["odd"].match) is dict
    assert model.jobs["odd"].version == 1  # from the snapshot (version 1: no event after it)
    assert model.unloadable == {}
    # It matches as given: the lookalike's fields, and nothing else.
    assert restarted.notify("alarm", {"id": "n-1", "site": "paris", **lookalike}) == "enqueued 3"
    assert enqueued_jobs(restarted) == ["alpha", "odd", "zeta"]
    assert restarted.notify("alarm", {"id": "n-2", "site": "lyon"}) == "enqueued 1"
    assert enqueued_jobs(restarted) == ["zeta"]
    # And it can still be changed: its next event follows the snapshot's version.
    restarted.ok("job.update", {"name": "odd", "enabled": False})
    again = open_harness()
    assert again.manager.jobs["odd"].match == lookalike
    assert again.manager.jobs["odd"].enabled is False
    assert [row["match"] for row in again.rows("jobs")] == [{"site": "paris"}, lookalike, None]


@pytest.mark.parametrize("lookalike", [LOOKALIKES["uuid_hex-bad"], LOOKALIKES["datetime_iso"]],
                         ids=["uuid_hex-bad", "datetime_iso"])
def test_the_service_starts_again_after_an_archival_snapshotted_such_a_job(
        lookalike: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest,
        store_backend: str) -> None:
    run = ScriptedRun(tmp_path, seal_every=10, store=store_for(request, store_backend, tmp_path),
                      marks=True)
    run.ok("settings.set", {"interval_seconds": 0})
    for name, match in (("alpha", {"site": "paris"}), ("odd", lookalike), ("zeta", None)):
        run.ok("job.add", {"name": name, "script": "s", "trigger": "up", "match": match})
    for n in range(6):
        run.notify("up", {"id": f"n{n}", "site": "lyon"})
        while run.run_next() is not None:
            pass
    run.seal()
    end = run.position
    # Archived while it runs, as automatic archival does; its step b snapshots every job.
    result = archive(run.store, str(tmp_path / "a.arc"), upto=end // 2,
                     views_path=run.views_path)
    assert result.snapshots >= len(NAMES)

    run.restart()  # the next start, from the anchor's snapshots
    model = run.manager.model
    assert sorted(model.jobs) == list(NAMES)
    assert model.jobs["odd"].match == lookalike
    assert stored_snapshot_state(run.app, "odd")["match"] == lookalike
    assert model.unloadable == {}
    assert run.notify("up", {"id": "after", "site": "paris", **lookalike}) == "enqueued 3"
    assert run.notify("up", {"id": "after-2", "site": "paris"}) == "enqueued 2"  # alpha, zeta
    run.seal()
    run.close()
    code, out = audit(run.store, "verify", "--json")  # its snapshots check out, decoded too
    assert code == 0, orjson.loads(out)["findings"]


# The service itself: its next start ------------------------------------------------------


def inbound(topic: str, body: dict[str, Any], correlation: bytes | None = None) -> Inbound:
    return Inbound(mid=1, qos=1, generation=0, topic=topic.encode(), payload=orjson.dumps(body),
                   response_topic=None, correlation=correlation)


class Starts:
    """Starts of the service's writer on the test's store (no broker), each stopped at the
    end unless the test stopped it."""

    def __init__(self, store: str, scripts: Path) -> None:
        self.settings = Settings(store=store, scripts=str(scripts))
        self.running: list[Writer] = []

    def start(self) -> Writer:
        writer = bootstrap(self.settings)
        self.running.append(writer)
        return writer

    def stop(self, writer: Writer) -> None:
        self.running.remove(writer)
        writer.close()


@pytest.fixture
def starts(tmp_path: Path, store_location: str) -> Iterator[Starts]:
    service = Starts(store_location, populate_scripts_dir(tmp_path / "scripts"))
    yield service
    for writer in list(service.running):
        service.stop(writer)


def queued_jobs(writer: Writer) -> list[str]:
    writer.parts.after.flush_views()
    return sorted(row["job"] for row in writer.parts.views.rows("queue", 100))


def test_the_service_starts_with_such_a_job_snapshotted_and_runs_every_job(
        starts: Starts) -> None:
    writer = starts.start()
    writer.handle([inbound("att/job-manager/commands/tester/job.add",
                           {"name": name, "script": "ok", "trigger": "up",
                            "match": LOOKALIKES["uuid_hex-bad"] if name == "odd" else None},
                           b"c-%d" % n) for n, name in enumerate(NAMES)])
    assert sorted(writer.manager.jobs) == list(NAMES)
    for name in NAMES:
        snapshot_as_archival_does(writer.manager.model.app, name)
    starts.stop(writer)

    writer = starts.start()  # crashed here before: the snapshot of "odd" did not decode
    assert sorted(writer.manager.jobs) == list(NAMES)
    assert writer.manager.jobs["odd"].match == LOOKALIKES["uuid_hex-bad"]
    writer.handle([inbound("att/channel-manager/notifications/up",
                           {"id": "n-1", **LOOKALIKES["uuid_hex-bad"]})])
    assert queued_jobs(writer) == list(NAMES)
    writer.handle([inbound("att/channel-manager/notifications/up", {"id": "n-2"})])
    assert queued_jobs(writer) == sorted([*NAMES, "alpha", "zeta"])  # "odd" wants its fields


def test_the_writer_snapshots_the_scheduler_once_the_replies_are_sent(
        starts: Starts, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SCHEDULER_SNAPSHOT_EVERY versions the scheduler is snapshotted (a commit of its
    own): the batch whose commit made that version has its reply sent first."""
    monkeypatch.setattr("att_jm.application.model.SCHEDULER_SNAPSHOT_EVERY", 5)
    replies: list[int] = []  # one per batch answered
    snapshots: dict[int, int] = {}  # scheduler version -> replies sent before its snapshot
    reply, snapshot = Replies.ack_and_reply, WriteModel._snapshot

    def replying(self: Replies, *args: Any) -> None:
        reply(self, *args)
        replies.append(1)

    def snapshotting(self: WriteModel) -> None:
        snapshots[self.scheduler.version] = len(replies)
        snapshot(self)

    monkeypatch.setattr(Replies, "ack_and_reply", replying)
    monkeypatch.setattr(WriteModel, "_snapshot", snapshotting)
    writer = starts.start()
    made_by: dict[int, int] = {}  # scheduler version -> the batch (1, 2, ...) that made it
    for n in range(1, 13):
        writer.handle([inbound("att/job-manager/commands/tester/settings.set",
                               {"interval_seconds": n % 2}, b"s-%d" % n)])
        made_by[writer.manager.model.scheduler.version] = n
    assert len(snapshots) >= 2 and all(version % 5 == 0 for version in snapshots)
    for version, replied in snapshots.items():
        assert replied == made_by[version]  # its own batch's reply went first
    app = writer.manager.model.app
    assert app.snapshots is not None
    stored = list(app.snapshots.get(SCHEDULER_ID, desc=True, limit=1))
    assert stored and stored[0].originator_version == max(snapshots)


# A job that cannot be loaded; a reload that fails ----------------------------------------


def spoil_snapshot(app: JobManagerApp, name: str) -> None:
    """Store a snapshot of job `name` that does not decode: a typed field of the code's own
    (`created_at`) holding a bad value (a damaged store, a bug; not an operator's input)."""
    aggregate: Any = app.repository.get(job_id(name))
    snapshot = type(aggregate).Snapshot.take(aggregate)
    snapshot.state["created_at"] = {"_type_": "uuid_hex", "_data_": "x"}
    assert app.snapshots is not None
    app.snapshots.put([snapshot])


def test_a_job_that_cannot_be_loaded_is_left_out_and_named_and_the_service_still_starts(
        open_harness: Callable[..., Harness]) -> None:
    jm = open_harness()
    add_jobs(jm, {"site": "lyon"})
    spoil_snapshot(jm.app, "odd")
    jm.close()

    with structlog.testing.capture_logs() as logs:
        restarted = open_harness()
    model = restarted.manager.model
    assert sorted(model.jobs) == ["alpha", "zeta"]  # the jobs after it too
    assert list(model.unloadable) == ["odd"]
    assert "badly formed hexadecimal UUID string" in model.unloadable["odd"]
    (logged,) = [entry for entry in logs if entry["event"] == "job.unloadable"]
    assert logged["log_level"] == "error"
    assert logged["job"] == "odd"
    assert restarted.notify("alarm", {"id": "n-1", "site": "paris"}) == "enqueued 2"
    assert enqueued_jobs(restarted) == ["alpha", "zeta"]
    # A reload keeps it out (and the others in), as long as it does not load.
    restarted.manager.reload()
    assert sorted(model.jobs) == ["alpha", "zeta"]
    assert list(model.unloadable) == ["odd"]


def test_the_services_status_names_the_jobs_it_could_not_load(starts: Starts) -> None:
    odd = [f"odd-{n:02d}" for n in range(25)]
    writer = starts.start()
    writer.handle([inbound("att/job-manager/commands/tester/job.add",
                           {"name": name, "script": "ok", "trigger": "up"}, b"c-%d" % n)
                   for n, name in enumerate(["alpha", *odd])])
    assert "unloadable_jobs" not in writer.status.body("online")
    for name in odd:
        spoil_snapshot(writer.manager.model.app, name)
    starts.stop(writer)

    writer = starts.start()
    assert sorted(writer.manager.jobs) == ["alpha"]
    shown = writer.status.body("online")["unloadable_jobs"]
    assert shown["count"] == 25  # all counted, the first 20 named (the status stays small)
    assert [job["job"] for job in shown["jobs"]] == odd[:20]
    assert all("badly formed hexadecimal UUID string" in job["error"]
               and len(job["error"]) <= 300 for job in shown["jobs"])


def test_a_reload_that_fails_leaves_the_state_as_it_was_and_marks_it_stale(
        jm: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    add_jobs(jm, {"site": "lyon"})
    model = jm.manager.model
    jobs, scheduler = dict(model.jobs), model.scheduler
    loaded = model.get_job

    def refused_after_odd(name: str) -> Any:
        if name > "odd":
            raise OperationalError("the store refused a read")
        return loaded(name)

    monkeypatch.setattr(model, "get_job", refused_after_odd)
    with pytest.raises(OperationalError):
        model.reload()
    assert model.jobs == jobs  # not a part of them
    assert all(model.jobs[name] is jobs[name] for name in NAMES)
    assert model.scheduler is scheduler
    assert model.stale
    monkeypatch.undo()
    model.reload()
    assert not model.stale
    assert sorted(model.jobs) == list(NAMES)
    assert all(model.jobs[name] is not jobs[name] for name in NAMES)  # loaded anew


def test_the_writer_reloads_a_stale_state_before_its_next_unit_of_work(
        starts: Starts, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = starts.start()
    writer.handle([inbound("att/job-manager/commands/tester/job.add",
                           {"name": name, "script": "ok", "trigger": "up"}, b"c-%d" % n)
                   for n, name in enumerate(NAMES)])
    model = writer.manager.model
    # A batch spoiled in memory (a handler failed after changing a job), then the reload after
    # its commit refused by the store: it is logged, the writer goes on.
    del model.jobs["zeta"]
    spoiled = WriterUnit()
    spoiled.spoiled = True
    repository: Any = model.app.repository
    monkeypatch.setattr(repository, "get", _refuse)
    with structlog.testing.capture_logs() as logs:
        writer.parts.after.committed(spoiled, [])
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "store.reload_failed"]
    assert model.stale
    monkeypatch.undo()
    # The next unit of work loads the state again first: "zeta" is back and runs.
    writer.handle([inbound("att/channel-manager/notifications/up", {"id": "n-1"})])
    assert not model.stale
    assert sorted(model.jobs) == list(NAMES)
    assert queued_jobs(writer) == list(NAMES)
    # A state that is not stale is not reloaded.
    reloads: list[None] = []
    monkeypatch.setattr(writer.manager, "reload", lambda: reloads.append(None))
    writer.handle([inbound("att/channel-manager/notifications/up", {"id": "n-2"})])
    assert reloads == []
    assert queued_jobs(writer) == sorted([*NAMES, *NAMES])


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError("the store refused a read")
