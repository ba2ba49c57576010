"""The writer's lease in a real PostgreSQL: one holder at a time, take-over once it expired
(by PostgreSQL's clock), renewals, the local deadline and its watchdog, the fence on a table
(only the holder's sessions insert), the former holder's sessions terminated, release at a
clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers.postgres import PostgresServer
from psycopg import sql
from psycopg.conninfo import make_conninfo

from att_jm.log.backend import parse_postgres
from att_jm.service.fence import LeaseLost, fenced
from att_jm.service.lease import InstanceInUse, Lease, LeaseTimes, app_name, connect

FAST = LeaseTimes(takeover_seconds=1.0)  # lease 0.7 s, renewed every 0.14 s


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh store's schema on the session's server, as a libpq connection string (the
    store's search path in it)."""
    store = postgres.new_store()
    location = parse_postgres(store)
    with postgres.connect() as db:
        db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(location.schema)))
    try:
        yield make_conninfo(**location.connect_kwargs())
    finally:
        postgres.drop_store(store)


@pytest.fixture
def leases(url: str) -> Iterator[list[Lease]]:
    made: list[Lease] = []
    yield made
    for lease in made:
        lease.close()


def new(url: str, leases: list[Lease], name: str, times: LeaseTimes = FAST) -> Lease:
    lease = Lease({"conninfo": url}, instance=name, times=times,
                  app=app_name(name, 1000 + len(leases)))
    leases.append(lease)
    return lease


def fenced_table(url: str, lease: Lease) -> None:
    """A table `events` with the fence on it (as the events table gets it)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE events (x int)")
    lease.install_fence("events")


def append(url: str, app: str) -> None:
    """A commit that appends a row, from a session named `app` (as the writer's are)."""
    with psycopg.connect(url, application_name=app) as db, db.transaction():
        db.execute("INSERT INTO events VALUES (1)")


def test_one_holder_and_take_over_after_expiry(url: str, leases: list[Lease]) -> None:
    a, b = new(url, leases, "a"), new(url, leases, "b")
    got = a.try_acquire()
    assert got is not None and got.holder == "a" and got.epoch == 1 and a.valid()
    seen = b.try_acquire()
    assert seen is not None and seen.holder == "a" and not seen.free and b.epoch is None
    assert 0 < seen.seconds_left <= FAST.lease_seconds
    # a never renews (no keep()): its lease expires by PostgreSQL's clock, b takes epoch 2
    time.sleep(FAST.trust_seconds + 0.01)
    assert not a.valid()
    deadline = time.monotonic() + 5
    while b.epoch is None and time.monotonic() < deadline:
        time.sleep(0.02)
        b.try_acquire()
    assert b.epoch == 2 and b.valid()


def test_renewals_keep_it_and_the_watchdog_fires_without_them(
        url: str, leases: list[Lease]) -> None:
    a, b = new(url, leases, "a"), new(url, leases, "b")
    a.try_acquire()
    lost: list[str] = []
    a.keep(lost.append)
    end = time.monotonic() + 3 * FAST.lease_seconds
    while time.monotonic() < end:  # b never gets it while a renews
        seen = b.try_acquire()
        assert seen is not None and seen.holder == "a", seen
        time.sleep(0.05)
    assert a.valid() and lost == []
    # a's renewals stop getting through: the row is locked by someone else (a server that
    # does not answer in time looks the same to the renewing thread)
    with psycopg.connect(url) as blocker:
        blocker.execute("SELECT * FROM att_jm_lease FOR UPDATE")
        started = time.monotonic()
        while not lost and time.monotonic() - started < 5:
            time.sleep(0.01)
        gave_up = time.monotonic() - started
        blocker.rollback()
    assert lost == ["the lease was not renewed in time"]
    assert gave_up <= FAST.trust_seconds + 0.05
    assert not a.valid()
    with pytest.raises(LeaseLost):
        a.check()


def test_a_take_over_is_seen_by_the_renewals(url: str, leases: list[Lease]) -> None:
    a, b = new(url, leases, "a"), new(url, leases, "b")
    a.try_acquire()
    lost: list[str] = []
    a.keep(lost.append)
    with psycopg.connect(url, autocommit=True) as db:  # an operator forces it to b
        db.execute("UPDATE att_jm_lease SET expires_at = now() - interval '1 s'")
    assert b.try_acquire() is not None and b.epoch == 2
    deadline = time.monotonic() + 3
    while not lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lost == ["another instance took the lease"]


def test_the_fence_lets_only_the_holders_sessions_append(
        url: str, leases: list[Lease]) -> None:
    a, b = new(url, leases, "a", LeaseTimes(takeover_seconds=60.0)), new(url, leases, "b")
    fenced_table(url, a)
    append(url, "anyone")  # no lease taken yet: nobody is refused
    a.try_acquire()
    append(url, a.app)
    with pytest.raises(psycopg.Error) as refused:
        append(url, b.app)  # a standby, or any other process
    assert fenced(refused.value)
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE att_jm_lease SET expires_at = now() - interval '1 s'")
    assert b.try_acquire() is not None and b.epoch == 2
    assert a.valid()  # by its own clock a would still trust it: the fence says no
    with pytest.raises(psycopg.Error) as late:
        append(url, a.app)
    assert fenced(late.value)
    append(url, b.app)
    b.release()
    append(url, "anyone")  # released: the next holder is not known yet
    with psycopg.connect(url) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (4,)


def test_a_take_over_waits_for_a_commit_in_flight(url: str, leases: list[Lease]) -> None:
    """The fence's row lock: the holder moves only once the holder's transaction ended."""
    a = new(url, leases, "a", LeaseTimes(takeover_seconds=60.0))
    fenced_table(url, a)
    a.try_acquire()
    with psycopg.connect(url, application_name=a.app) as writer:
        writer.execute("INSERT INTO events VALUES (1)")  # the row is locked FOR SHARE
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("UPDATE att_jm_lease SET epoch = epoch + 1")
        writer.commit()


def test_the_former_holders_hung_transaction_is_terminated(
        url: str, leases: list[Lease]) -> None:
    """A former holder whose transaction hangs (a cut network) holds the fence's row lock:
    the take-over terminates its sessions first, and then takes the lease."""
    a, b = new(url, leases, "a"), new(url, leases, "b")
    fenced_table(url, a)
    a.try_acquire()
    hung = psycopg.connect(url, application_name=a.app)
    try:
        hung.execute("INSERT INTO events VALUES (1)")  # a transaction left open, its lock held
        time.sleep(FAST.lease_seconds + 0.05)
        taken = b.try_acquire()
        assert taken is not None and b.epoch == 2
        with pytest.raises(psycopg.OperationalError):
            hung.execute("SELECT 1")  # its session was terminated
    finally:
        hung.close()


def test_release_lets_a_standby_take_it_at_once(url: str, leases: list[Lease]) -> None:
    a, b = new(url, leases, "a", LeaseTimes(takeover_seconds=60.0)), new(url, leases, "b")
    a.try_acquire()
    a.keep(lambda reason: None)
    a.release()
    assert not a.valid()
    got = b.try_acquire()
    assert got is not None and got.holder == "b" and b.epoch == 2


def test_only_one_of_many_standbys_takes_it(url: str, leases: list[Lease]) -> None:
    standbys = [new(url, leases, f"s{n}") for n in range(6)]
    barrier = threading.Barrier(len(standbys))
    errors: list[BaseException] = []

    def take(lease: Lease) -> None:
        barrier.wait()
        try:
            lease.try_acquire()
        except psycopg.Error as error:  # a lock wait over its bound: tried again later
            errors.append(error)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in standbys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders = [lease for lease in standbys if lease.epoch is not None]
    assert len(holders) == 1, (holders, errors)


def test_an_instance_name_runs_once(url: str, leases: list[Lease]) -> None:
    first = new(url, leases, "same")
    first.try_acquire()
    second = new(url, leases, "same")
    with pytest.raises(InstanceInUse):
        second.try_acquire()


def test_the_lease_connection_is_bounded(url: str) -> None:
    """Statements and lock waits of the lease's own connection give up instead of hanging."""
    times = LeaseTimes(takeover_seconds=1.0)
    db: Any = connect({"conninfo": url}, "att-jm test", times.statement_seconds)
    with db:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            db.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 2
