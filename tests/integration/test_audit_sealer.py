"""The sealer the service runs: when it seals, what a seal covers, and how the chain goes on."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from helpers.postgres import BOTH_BACKENDS
from helpers.store import store_for

from att_jm.application.sealer import Sealer
from att_jm.audit.verify import verify
from att_jm.domain.notifications import Rejection
from att_jm.domain.seals import LEDGER_ID
from att_jm.log.chain import SealHasher, row_digest
from att_jm.log.rows import StoreReader
from att_jm.store import JobManagerApp, log_position, open_store

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL

AT = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def append(app: JobManagerApp, count: int) -> None:
    """`count` events, one per aggregate, in one transaction."""
    app.save(*[
        Rejection.reject(uuid4(), "notification", "t", "invalid", "bad", b"x", "cm", AT)
        for _ in range(count)
    ])


@pytest.fixture
def store(store_location: str) -> tuple[JobManagerApp, str, Ticks]:
    return open_store(store_location), store_location, Ticks()


def test_a_seal_is_due_after_n_events_or_t_seconds_after_the_first_waiting_one(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    assert not sealer.due()
    assert sealer.wait_seconds() is None
    append(app, 3)
    assert not sealer.due()  # the clock starts with the first waiting event
    ticks.now += 59
    assert not sealer.due()
    assert sealer.wait_seconds() == pytest.approx(1.0)
    ticks.now += 1
    assert sealer.due()
    append(app, 7)
    assert sealer.pending() == 10
    recordings, seals = sealer.seal(AT)
    assert [s.position for s in seals] == [10]
    assert [type(event).TOPIC for _, event in recordings] == [
        "att_jm:Ledger.Created", "att_jm:Ledger.Sealed"]
    assert sealer.pending() == 0  # its own events wait for the next seal, but never trigger one
    ticks.now += 1000
    assert not sealer.due()
    append(app, 10)
    assert sealer.due()
    sealer.close()


def test_sealing_many_waiting_events_makes_seals_of_at_most_n_rows(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    append(app, 25)
    _, seals = sealer.seal(AT)
    assert [(s.number, s.position, s.count) for s in seals] == [(1, 10, 10), (2, 20, 10),
                                                                (3, 25, 5)]
    assert seals[1].previous == seals[0].hash
    assert seals[0].previous == ""
    append(app, 2)
    _, more = sealer.seal(AT)
    # The Ledger's creation and the 3 seals (26-29), then the 2 new events.
    assert [(s.number, s.ranges) for s in more] == [(4, ((26, 31),))]
    sealer.close()


def test_the_seal_hash_is_the_documented_chain_over_the_stored_rows(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=100, every_seconds=60.0, monotonic=ticks)
    append(app, 5)
    _, seals = sealer.seal(AT)
    reader = StoreReader(path)
    hasher = SealHasher("")
    for row in reader.rows(upto=5):
        hasher.add(row.position, row_digest(row))
    reader.close()
    assert seals[0].hash == hasher.hash
    assert seals[0].message() == {"position": 5, "hash": hasher.hash, "previous": "",
                                  "count": 5, "at": "2026-03-02T08:00:00.000Z"}
    sealer.close()


def test_rows_digested_ahead_by_prepare_give_the_same_seals_as_one_read_at_seal_time(
    tmp_path: Path, store_backend: str, request: pytest.FixtureRequest,
) -> None:
    def run(directory: Path, prepared: bool) -> list[tuple[int, int, str, str]]:
        directory.mkdir()
        path = store_for(request, store_backend, directory)
        app = open_store(path)
        sealer = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=Ticks())
        made = []
        ids = (UUID(int=n) for n in itertools.count(1))  # the same rows in both stores
        ahead = 0
        for burst in (7, 8, 1, 30, 0, 4):
            app.save(*[Rejection.reject(next(ids), "notification", "t", "invalid", "bad", b"x",
                                        "cm", AT) for _ in range(burst)])
            if prepared:
                while digested := sealer.prepare(limit=3):  # a few rows at a time, as the
                    ahead += digested                       # writer does when idle
            app.save(Rejection.reject(next(ids), "notification", "t", "invalid", "bad", b"x",
                                      "cm", AT))  # after the digested ones: read at seal time
            _, seals = sealer.seal(AT)
            made += [(s.number, s.position, s.hash, s.previous) for s in seals]
        sealer.close()
        reader = StoreReader(path)
        result = verify(reader)
        reader.close()
        assert result.ok
        assert ahead > 40 if prepared else ahead == 0
        return made

    with_prepare = run(tmp_path / "prepared", prepared=True)
    assert len(with_prepare) > 6
    assert with_prepare == run(tmp_path / "plain", prepared=False)


def test_a_new_sealer_on_the_same_store_continues_the_chain(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    first = Sealer(app, path, every_events=5, every_seconds=60.0, monotonic=ticks)
    append(app, 12)
    first.seal(AT)
    first.close()
    append(app, 3)
    again = Sealer(app, path, every_events=5, every_seconds=60.0, monotonic=ticks)
    assert again.pending() == 3
    _, seals = again.seal(AT)  # the first sealer's 4 events and the 3 new ones
    assert [(s.number, s.count) for s in seals] == [(4, 5), (5, 2)]
    again.close()
    reader = StoreReader(path)
    result = verify(reader)
    reader.close()
    assert result.ok
    assert len(result.seals) == 5


def test_the_ledger_is_snapshotted_every_hundred_seals(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=1, every_seconds=60.0, monotonic=ticks)
    append(app, 120)
    sealer.seal(AT)
    assert app.snapshots is not None
    snapshots = app.snapshots.recorder.select_events(LEDGER_ID, desc=True, limit=1)
    assert snapshots
    assert snapshots[0].originator_version == 121  # created + 120 seals
    sealer.close()


def test_a_seal_the_store_refused_is_retried_after_a_pause_and_continues_the_chain(
    store: tuple[JobManagerApp, str, Ticks], monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=5, every_seconds=60.0, monotonic=ticks)
    append(app, 5)
    sealer.seal(AT)
    append(app, 6)
    refuse = pytest.raises(OSError, match="disk full")
    with monkeypatch.context() as patched:
        patched.setattr(app, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        assert sealer.due()
        with refuse:
            sealer.seal(AT)
    assert not sealer.due()  # it pauses before trying again
    assert sealer.wait_seconds() == pytest.approx(5.0)
    ticks.now += 5
    assert sealer.due()
    _, seals = sealer.seal(AT)
    assert [s.number for s in seals] == [2, 3]
    reader = StoreReader(path)
    result = verify(reader)
    reader.close()
    assert result.ok
    assert len(result.seals) == 3
    sealer.close()


def test_open_log_then_close_log_bracket_a_run_and_keep_every_row_sealed_once(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    tail = sealer.open_log(AT)  # a first start: the Ledger is created with the mark
    assert not tail.ledger and tail.unsealed == 0
    assert sealer.pending() == 0  # the marks never make a seal due
    append(app, 3)
    assert sealer.pending() == 3
    stored, seals = sealer.close_log(AT)
    topics = [type(event).TOPIC for _, event in stored]
    assert topics == ["att_jm:Ledger.Sealed", "att_jm:Ledger.Closed"]  # one transaction
    assert [(s.position, s.count) for s in seals] == [(5, 5)]  # Created, Opened, 3 rows
    closed = stored[-1][1]
    assert (closed.position, closed.hash) == (5, seals[0].hash)
    assert sealer.pending() == 0
    sealer.close()

    again = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    assert again.pending() == 0
    tail = again.open_log(AT)
    assert tail.clean and tail.closed == 7 and tail.sealed_through == 5
    append(app, 2)
    assert again.pending() == 2
    stored, seals = again.close_log(AT)  # the seal, the close mark, the start, 2 rows
    assert [(s.ranges, s.count) for s in seals] == [(((6, 10),), 5)]
    again.close()
    reader = StoreReader(path)
    result = verify(reader)
    reader.close()
    assert result.ok, result.findings
    covered = [p for s in result.seals for a, b in s.ranges for p in range(a, b + 1)]
    assert covered == list(range(1, result.sealed_through + 1))
    assert result.closed == 12 and result.starts == 2


def test_close_log_with_nothing_waiting_still_seals_the_sealers_own_rows(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    append(app, 4)
    sealer.seal(AT)  # Created and the seal wait; no row of the service does
    assert sealer.pending() == 0
    stored, seals = sealer.close_log(AT)
    assert [(s.ranges, s.count) for s in seals] == [(((5, 6),), 2)]
    assert stored[-1][1].position == 6
    sealer.close()


def test_a_close_the_store_refuses_records_nothing_and_the_next_start_says_so(
    store: tuple[JobManagerApp, str, Ticks], monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    sealer.open_log(AT)
    append(app, 3)
    with monkeypatch.context() as patched:
        patched.setattr(app, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            sealer.close_log(AT)
    assert sealer.ledger is not None and not sealer.ledger.pending_events
    sealer.close()
    again = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    tail = again.open_log(AT)
    assert not tail.clean and tail.closed is None and tail.unsealed == 3
    again.close()


def test_open_log_reports_rows_appended_after_a_clean_stop(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    sealer.open_log(AT)
    append(app, 2)
    sealer.close_log(AT)
    sealer.close()
    append(app, 3)  # written while "the service" is stopped
    again = Sealer(app, path, every_events=10, every_seconds=60.0, monotonic=ticks)
    tail = again.open_log(AT)
    assert (tail.closed, tail.appended, tail.first, tail.last) == (6, 3, 7, 9)
    assert again.pending() == 3  # they are sealed like any row
    again.close()


def test_prepare_asked_for_chunks_reads_nothing_until_that_many_rows_wait(
    store: tuple[JobManagerApp, str, Ticks],
) -> None:
    app, path, ticks = store
    sealer = Sealer(app, path, every_events=1000, every_seconds=60.0, monotonic=ticks)

    def stored(count: int) -> None:  # as the writer tells its sealer after each commit
        append(app, count)
        sealer.note(log_position(app))

    stored(10)
    assert sealer.prepare(least=64) == 0  # the writer, while a script runs
    assert sealer.prepare() == 10  # the writer, idle
    stored(60)
    assert sealer.prepare(least=64) == 0
    stored(4)
    assert sealer.prepare(least=64) == 64
    assert sealer.prepare(least=64) == 0
    sealer.close()
