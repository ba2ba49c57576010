"""Archival's other cases: tampered archives are named, a crash between steps is finished
by a re-run, the cases that refuse, and the application going on (and starting again) on an
archived store. On SQLite, and on PostgreSQL where the store matters."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import orjson
import pytest
import zstandard
from helpers.archive import Crash, audit, busy_history, crash_after, index_from_anchor, stored_rows
from helpers.audit_run import ScriptedRun
from helpers.postgres import BOTH_BACKENDS
from helpers.store import store_for

from att_jm.audit.archiving import archive
from att_jm.audit.cutoff import NothingToArchive
from att_jm.audit.replay import replay_views
from att_jm.domain.seals import LEDGER_ID
from att_jm.domain.times import iso
from att_jm.log.archive import ArchiveReader
from att_jm.log.chain import read_seal
from att_jm.log.codec import loads_state
from att_jm.log.records import stored_time
from att_jm.log.rows import AuditError, StoreReader
from att_jm.log.stored import SNAPSHOTS
from att_jm.relay.window import position_path, write_position
from projections.views import VIEWS


def new_run(tmp_path: Path, request: pytest.FixtureRequest, backend: str = "sqlite",
            notifications: int = 40) -> ScriptedRun:
    run = ScriptedRun(tmp_path, seal_every=20, store=store_for(request, backend, tmp_path),
                      marks=True)
    busy_history(run, notifications)
    run.seal()
    return run


def findings(store: str, *archives: str) -> tuple[int, list[dict[str, object]]]:
    argv = ["verify", "--json"]
    for path in archives:
        argv += ["--archive", path]
    code, out = audit(store, *argv)
    return code, orjson.loads(out)["findings"]


# Tampered archives ------------------------------------------------------------------------


@pytest.fixture
def two_archives(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str, str]:
    run = new_run(tmp_path, request, notifications=60)
    end = run.position
    published = {name: run.views.payload(name, 1000) for name in VIEWS}
    run.close()
    first, second = str(tmp_path / "1.arc"), str(tmp_path / "2.arc")
    archive(run.store, first, upto=end // 3, views_path=run.views_path)
    archive(run.store, second, upto=end // 2, views_path=run.views_path)
    # the second anchor's views: the first anchor's, then the rows between the two
    assert replay_views(run.store).payloads() == published
    rebuilt, live = index_from_anchor(run.store)  # and its write index likewise
    assert rebuilt == live
    return run.store, first, second


def test_two_archives_and_the_store_verify_as_one_chain(two_archives: tuple[str, str, str]
                                                        ) -> None:
    store, first, second = two_archives
    assert findings(store, first, second) == (0, [])
    assert findings(store)[0] == 0


def test_archives_out_of_order_missing_or_swapped_are_named(
        two_archives: tuple[str, str, str]) -> None:
    store, first, second = two_archives
    code, found = findings(store, second, first)
    assert code == 1
    assert any("2.arc" in str(f["message"]) and "oldest first" in str(f["message"])
               for f in found), found
    code, found = findings(store, first)  # the newer one missing
    assert code == 1
    assert any("anchor is at position" in str(f["message"]) for f in found), found
    code, found = findings(store, second)  # the older one missing
    assert code == 1
    assert any("must start at position 1" in str(f["message"]) for f in found), found


def _rewrite(path: str, change: bytes, to: bytes) -> None:
    """The archive's content changed (`change` -> `to`, once), compressed again."""
    data = zstandard.ZstdDecompressor().stream_reader(open(path, "rb")).read()  # noqa: SIM115
    assert change in data
    Path(path).write_bytes(zstandard.ZstdCompressor().compress(data.replace(change, to, 1)))


def test_a_changed_byte_in_an_archived_row_is_named_by_its_position(
        two_archives: tuple[str, str, str]) -> None:
    store, first, second = two_archives
    _rewrite(first, b'"channel":"C5"', b'"channel":"C6"')
    code, found = findings(store, first, second)
    assert code == 1
    modified = [f for f in found if f["kind"] == "modified"]
    assert modified and "1.arc" in str(modified[0]["message"]), found
    assert f"position {modified[0]['position']}" in str(modified[0]["message"])
    assert any("SHA-256" in str(f["message"]) for f in found), found
    # the other verbs refuse an archive that does not verify
    assert audit(store, "log", "--archive", first, "--archive", second)[0] == 2


def test_a_truncated_or_damaged_archive_file_is_named(two_archives: tuple[str, str, str]
                                                      ) -> None:
    store, first, second = two_archives
    data = Path(second).read_bytes()
    Path(second).write_bytes(data[: len(data) // 2])
    code, found = findings(store, first, second)
    assert code == 1
    assert any("2.arc" in str(f["message"]) for f in found), found
    damaged = bytearray(Path(first).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    Path(first).write_bytes(bytes(damaged))
    code, found = findings(store, first)
    assert code == 1
    assert any("1.arc" in str(f["message"]) for f in found), found


# Crashes and re-runs ----------------------------------------------------------------------


@pytest.mark.parametrize("step", ["a", "b", "c"])
def test_a_crash_between_steps_is_finished_by_a_re_run(step: str, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request)
    end = run.position
    run.close()
    before = replay_views(run.store).payloads()
    rows = stored_rows(run.store)
    output = str(tmp_path / "crashed.arc")
    with pytest.raises(Crash):
        archive(run.store, output, upto=end // 2, views_path=run.views_path,
                crash=crash_after(step))
    assert stored_rows(run.store) == rows  # nothing deleted yet
    code, out = audit(run.store, "verify", "--json")
    assert code == 0, out
    if step == "c":  # anchored, rows left: ignored by verify, reported
        assert orjson.loads(out)["archived"]["leftover"] > 0
    result = archive(run.store, output, upto=end // 2, views_path=run.views_path)
    assert result.position > 0
    if step == "c":
        assert result.finished > 0
    assert stored_rows(run.store) == rows - result.position
    assert findings(run.store) == (0, [])
    assert findings(run.store, output) == (0, [])
    assert replay_views(run.store).payloads() == before


def snapshot_versions(store: str) -> dict[str, list[int]]:
    """Each aggregate's snapshot versions in the SQLite store (ascending)."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        rows = db.execute(f"SELECT originator_id, originator_version FROM {SNAPSHOTS} "  # noqa: S608 -- a constant
                          "ORDER BY originator_id, originator_version").fetchall()
    versions: dict[str, list[int]] = {}
    for oid, version in rows:
        versions.setdefault(str(oid), []).append(int(version))
    return versions


def test_a_crash_after_the_deletion_leaves_old_snapshots_that_a_re_run_sweeps(
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Step d (the rows deleted, the older snapshots not yet): the next run, which has
    nothing more to archive, deletes those snapshots, as the interrupted run would have; a
    clean archival of the same range leaves the same snapshots."""
    # The scheduler snapshotted every 10 versions (500 in service): older snapshots exist.
    monkeypatch.setattr("att_jm.application.model.SCHEDULER_SNAPSHOT_EVERY", 10)
    runs, ends = [], []
    for name in ("crashed", "clean"):
        (tmp_path / name).mkdir()
        run = new_run(tmp_path / name, request)
        ends.append(run.position)
        run.close()
        runs.append(run)
    crashed, clean = runs
    end = ends[0]
    with pytest.raises(Crash):
        archive(crashed.store, str(tmp_path / "crashed.arc"), upto=end // 2,
                views_path=crashed.views_path, crash=crash_after("d"))
    left = snapshot_versions(crashed.store)
    assert any(len(versions) > 1 for versions in left.values())  # older ones left behind
    before = replay_views(crashed.store).payloads()
    again = archive(crashed.store, str(tmp_path / "crashed.arc"), upto=end // 2,
                    views_path=crashed.views_path)
    assert again.finished == 0 and again.swept > 0
    archive(clean.store, str(tmp_path / "clean.arc"), upto=ends[1] // 2,
            views_path=clean.views_path)
    swept, reference = snapshot_versions(crashed.store), snapshot_versions(clean.store)
    assert sorted(map(len, swept.values())) == sorted(map(len, reference.values()))
    assert sum(map(len, swept.values())) < sum(map(len, left.values()))
    assert findings(crashed.store) == (0, [])
    assert findings(crashed.store, str(tmp_path / "crashed.arc")) == (0, [])
    assert replay_views(crashed.store).payloads() == before
    with pytest.raises(NothingToArchive):  # nothing left to sweep: the usual refusal
        archive(crashed.store, str(tmp_path / "crashed.arc"), upto=end // 2,
                views_path=crashed.views_path)


# Refusals ---------------------------------------------------------------------------------


def test_nothing_to_archive_is_refused_with_a_reason_and_changes_nothing(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request, notifications=10)
    run.close()
    rows = stored_rows(run.store)
    output = tmp_path / "none.arc"
    with pytest.raises(NothingToArchive, match="asked for"):
        archive(run.store, str(output), upto=3, views_path=run.views_path)
    assert stored_rows(run.store) == rows
    assert not output.exists()
    code, out = audit(run.store, "archive", "--upto", "3", "--output", str(output), "--json",
                      views_path=run.views_path)
    assert code == 1
    assert orjson.loads(out)["error"]["code"] == "nothing_to_archive"


def test_the_cut_stays_before_a_live_execution_and_the_relay(tmp_path: Path,
                                                             request: pytest.FixtureRequest
                                                             ) -> None:
    run = ScriptedRun(tmp_path, seal_every=20)
    run.ok("job.add", {"name": "ipx", "script": "s", "trigger": "up"})
    for n in range(30):
        run.notify("nothing", {"id": f"early-{n}"})
    run.notify("up", {"id": "waiting"})  # stays queued: the runner is never asked
    live = run.views.rows("queue", 10)[0]
    for n in range(40):
        run.notify("nothing", {"id": f"x{n}"})
    run.seal()
    end = run.position
    run.close()
    result = archive(run.store, str(tmp_path / "a.arc"), upto=end,
                     views_path=run.views_path)
    assert result.position < result.limits["live"]
    assert result.limits["live"] is not None
    assert str(live["id"])  # still queued, still loadable: its events are after the cut
    code, out = audit(run.store, "trace", str(live["id"]), "--json")
    assert code == 0, out
    # the relay's published position limits the next cut
    write_position(position_path(run.store), result.position + 1)
    with pytest.raises(NothingToArchive, match="relay"):
        archive(run.store, str(tmp_path / "b.arc"), upto=end, views_path=run.views_path)


def test_an_existing_file_is_never_overwritten(tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request, notifications=20)
    end = run.position
    run.close()
    output = tmp_path / "taken.arc"
    output.write_bytes(b"precious")
    with pytest.raises(AuditError, match="exists"):
        archive(run.store, str(output), upto=end, views_path=run.views_path)
    assert output.read_bytes() == b"precious"


# The application on an archived store -----------------------------------------------------


@BOTH_BACKENDS
def test_the_application_goes_on_and_starts_again_on_an_archived_store(
        store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request, store_backend, notifications=40)
    end = run.position
    # archived while it runs (its connections open, its aggregates in memory)
    result = archive(run.store, str(tmp_path / "live.arc"), upto=end // 2,
                     views_path=run.views_path)
    assert result.position > 0
    for n in range(8):
        run.notify("channel-up", {"id": f"after-{n}", "channel": f"A{n}", "site": "paris"})
        run.run_next()
    run.restart()  # a clean stop, a start from the anchor's snapshots
    run.notify("channel-up", {"id": "again", "channel": "Z", "site": "lyon"})
    run.ok("job.update", {"name": "paris", "command": "p={channel}"})
    while run.run_next() is not None:
        pass
    run.seal()
    published = {name: run.views.payload(name, 1000) for name in VIEWS}
    model = run.manager.model
    index_before = model.index.state()
    model.index.reset()  # the write index rebuilt: from the anchor's state
    model.catch_up()
    assert model.index.state() == index_before
    last = run.position
    run.close()
    assert replay_views(run.store).payloads() == published
    assert findings(run.store) == (0, [])
    assert findings(run.store, str(tmp_path / "live.arc")) == (0, [])
    assert stored_rows(run.store) == last - result.position


def test_a_later_snapshot_does_not_stand_in_for_the_one_at_the_cut(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request)
    end = run.position
    run.app.take_snapshot(LEDGER_ID)  # newer than the cut (the sealer takes one every 100)
    run.close()
    result = archive(run.store, str(tmp_path / "a.arc"), upto=end // 2,
                     views_path=run.views_path)
    code, out = audit(run.store, "verify", "--json")
    report = orjson.loads(out)
    assert code == 0, report["findings"]
    assert report["snapshots"] >= 1  # the later one, replayed from the one at the cut
    assert report["archived"]["snapshots_from_anchor"] == result.snapshots


def test_before_a_time_archives_only_seals_made_before_it(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request)
    end = run.position
    run.close()
    reader = StoreReader(run.store)
    try:
        middle = reader.row(end // 2)
        assert middle is not None
        cut = stored_time(loads_state(middle.state)["timestamp"])
    finally:
        reader.close()
    result = archive(run.store, str(tmp_path / "a.arc"), before=cut,
                     views_path=run.views_path)
    assert 0 < result.position < end // 2
    with ArchiveReader(str(tmp_path / "a.arc")) as archived:
        times = [stored_time(loads_state(row.state)["timestamp"]) for row in archived.rows()]
        seals = [read_seal(row, 0) for row in archived.seal_rows]
    assert max(times) < cut
    assert seals[-1].position == result.position and seals[-1].at < iso(cut)


def test_the_de_duplication_horizon_is_the_anchor(tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request)
    resent = {"id": "n1", "channel": "C1", "site": "lyon"}  # n1: early, archived below
    assert run.notify("channel-up", resent) == "duplicate"  # known: a silent no-op
    archive(run.store, str(tmp_path / "a.arc"), upto=run.position // 2,
            views_path=run.views_path)
    # its id is no longer in the store: taken as a new notification
    assert run.notify("channel-up", resent) != "duplicate"
    assert run.views.rows("queue", 10)[0]["command"] == "ch=C1"
    run.close()


@BOTH_BACKENDS
def test_a_notification_resent_after_a_cut_through_its_execution_runs_nothing(
        store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Its record is archived, its execution's first rows too, the execution's later rows
    (cleaned up after the cut) are kept: taken as new, it would run its job again under the
    same execution id, version 1 again beside the kept later versions (an entry no one can
    load, at the head of the queue). It is a duplicate."""
    run = ScriptedRun(tmp_path, seal_every=20, store=store_for(request, store_backend, tmp_path),
                      marks=True)
    busy_history(run, 20)
    resent = {"id": "spans", "channel": "C1", "site": "lyon"}
    assert run.notify("channel-up", resent) == "enqueued 1"
    assert run.run_next() is not None
    run.seal()
    cut = run.position
    for n in range(4):  # three newer executed rows, then Auto Cleanup (max_rows 3) takes it
        run.notify("channel-up", {"id": f"later-{n}", "channel": "C2", "site": "lyon"})
        while run.run_next() is not None:
            pass
    assert run.cleanup("executed") >= 1
    assert "spans" not in {row["notification_id"] for row in run.views.rows("executed", 100)}
    run.seal()
    result = archive(run.store, str(tmp_path / "a.arc"), upto=cut, views_path=run.views_path)
    assert result.position <= cut
    assert run.notify("channel-up", resent) == "duplicate"
    assert run.views.rows("queue", 10) == []
    run.notify("channel-up", {"id": "after", "channel": "C3", "site": "lyon"})
    assert run.run_next() is not None  # the queue still runs
    run.close()


@BOTH_BACKENDS
def test_a_triggers_retained_copy_sent_again_past_the_horizon_runs_nothing(
        store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The broker keeps the last notification published retained on a trigger and sends it
    again, with the RETAIN flag, at each of the service's subscribes, however old it is.
    Once an archival took its record (and its execution's rows) away, that copy is still
    known as seen; another id past the horizon is taken as new, as before."""
    run = ScriptedRun(tmp_path, seal_every=20, store=store_for(request, store_backend, tmp_path),
                      marks=True)
    busy_history(run, 20)
    first = {"id": "kept-1", "channel": "K1", "site": "lyon"}
    kept = {"id": "kept-2", "channel": "K2", "site": "lyon"}
    plain = {"id": "plain", "channel": "P", "site": "lyon"}
    assert run.notify("channel-up", first, retained=True) == "enqueued 1"
    assert run.notify("channel-up", kept, retained=True) == "enqueued 1"  # the broker's copy
    assert run.notify("channel-up", plain) == "enqueued 1"
    assert run.notify("channel-down", {"id": "elsewhere"}, retained=True) == "matched none"
    while run.run_next() is not None:
        pass
    reader = StoreReader(run.store)
    try:
        received = [loads_state(state) for page in reader.keyed_pages(
            0, None, ("att_jm:Notification.Received",)) for _, _, _, state in page]
    finally:
        reader.close()
    flags = {data["notification_id"]: data.get("retained") for data in received}
    assert (flags["kept-1"], flags["kept-2"], flags["plain"], flags["n0"]) == (
        True, True, None, None)  # stored only when published retained
    # Later runs: Auto Cleanup (max_rows 3) takes the three's executed rows, then those of
    # the next runs, so that the oldest execution still in a table starts after the three's
    # last rows (a cut never passes a live execution's first row)
    for n in range(8):
        run.notify("channel-up", {"id": f"later-{n}", "channel": "L", "site": "lyon"})
        while run.run_next() is not None:
            pass
        if n % 4 == 3:
            run.cleanup("executed")
    run.seal()
    result = archive(run.store, str(tmp_path / "a.arc"), upto=run.position,
                     views_path=run.views_path)
    assert result.position > 0
    rebuilt, live = index_from_anchor(run.store)
    assert rebuilt == live and ["channel-up", "kept-2"] in live["jm_retained"]
    # the broker's kept copy, at the service's next subscribe: nothing runs
    assert run.notify("channel-up", kept, retained=True) == "duplicate"
    assert run.views.rows("queue", 10) == []
    # past the horizon, as before (plain's rows went with the three's): an older retained
    # id, or one sent without the flag
    assert run.notify("channel-up", plain) == "enqueued 1"
    assert run.notify("channel-up", first, retained=True) == "enqueued 1"
    assert run.notify("channel-up", kept) == "enqueued 1"  # not the broker's kept copy
    assert [row["command"] for row in run.views.rows("queue", 10)] == [
        "ch=P", "ch=K1", "ch=K2"]
    run.close()


def test_a_witness_still_checks_an_archived_store(tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    run = new_run(tmp_path, request)
    end = run.position
    run.close()
    witness = tmp_path / "witness.jsonl"
    witness.write_bytes(b"".join(orjson.dumps(seal) + b"\n" for seal in run.seals))
    output = str(tmp_path / "a.arc")
    archive(run.store, output, upto=end // 2, views_path=run.views_path)
    for extra in ([], ["--archive", output]):
        code, out = audit(run.store, "verify", "--json", "--witness", str(witness), *extra)
        report = orjson.loads(out)
        assert code == 0, report["findings"]
        assert report["witness"]["matched"] + report["witness"]["archived"] == len(run.seals)
    first = run.seals[0]  # archived: the witness disagrees with it
    witness.write_bytes(b"".join(orjson.dumps(dict(seal, hash="00" * 32) if seal is first
                                              else seal) + b"\n" for seal in run.seals))
    code, out = audit(run.store, "verify", "--json", "--witness", str(witness),
                      "--archive", output)
    assert code == 1
    assert [f["position"] for f in orjson.loads(out)["findings"]] == [first["position"]]


# One archival at a time -------------------------------------------------------------------


@BOTH_BACKENDS
def test_a_second_archival_of_the_same_store_is_refused_while_one_runs(
        store_backend: str, tmp_path: Path, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The store-level lock (an advisory lock on PostgreSQL: it holds across hosts; a flock
    beside an SQLite file): a second archival is refused at once and changes nothing; once the
    first ended, the next one runs."""
    from att_jm.audit.archive_lock import ArchivalBusy, archival_lock  # noqa: PLC0415

    run = new_run(tmp_path, request, store_backend, notifications=40)
    end = run.position
    run.close()
    before = stored_rows(run.store)
    with archival_lock(run.store):  # another archival, e.g. on another host, in its run
        with pytest.raises(ArchivalBusy, match="another archival"):
            archive(run.store, str(tmp_path / "second.arc"), upto=end // 2,
                    views_path=run.views_path)
        assert stored_rows(run.store) == before
        assert not (tmp_path / "second.arc").exists()
        code, _ = audit(run.store, "archive", "--upto", str(end // 2), "--output",
                        str(tmp_path / "cli.arc"))
        refused = capsys.readouterr().err
        assert code == 2 and "another archival" in refused, refused
    result = archive(run.store, str(tmp_path / "after.arc"), upto=end // 2,
                     views_path=run.views_path)
    assert result.position > 0 and stored_rows(run.store) < before
