"""The sealer the service runs: when it seals, what a seal covers, and how the chain goes on."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from att_jm.audit.chain import SealHasher, row_digest
from att_jm.audit.rows import StoreReader
from att_jm.audit.verify import verify
from att_jm.domain.notifications import Rejection
from att_jm.domain.seals import LEDGER_ID
from att_jm.seals import Sealer
from att_jm.store import JobManagerApp, open_store

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
def store(tmp_path: Path) -> tuple[JobManagerApp, str, Ticks]:
    path = str(tmp_path / "att-jm.db")
    return open_store(path), path, Ticks()


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
    tmp_path: Path,
) -> None:
    def run(directory: Path, prepared: bool) -> list[tuple[int, int, str, str]]:
        directory.mkdir()
        path = str(directory / "att-jm.db")
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
