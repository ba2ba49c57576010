"""Which instance is active: a lease in PostgreSQL with an epoch (the fencing token).

Several `att-jm serve` instances share one PostgreSQL store and one broker; the one holding
the lease is the writer (it subscribes, schedules, runs scripts, runs the relay), the others
wait. The lease is one row of `att_jm_lease`:

    name | epoch | holder | holder_app | expires_at | acquired_at | renewed_at

- **Taking it** (a standby): when `expires_at` has passed by PostgreSQL's own clock (`now()`),
  or the holder released it at a clean stop (`holder` NULL), one `UPDATE ... WHERE epoch =
  <seen> AND expired` moves it to this instance with `epoch + 1`; of several standbys, one
  wins. Before that, the sessions of the former holder (found by their `application_name`,
  below) are terminated: a transaction of theirs that hangs on a cut network would otherwise
  hold its row lock (below) for as long as the server takes to notice, and keep the take-over
  waiting.
- **Keeping it** (the active one): a thread renews it every `renew_seconds` on a connection of
  its own (`expires_at = now() + lease_seconds`, only where the epoch and the holder are still
  ours). The instance trusts its lease until `sent + lease_seconds - margin_seconds` by its
  own monotonic clock, where `sent` is when the last successful renewal was *sent*: PostgreSQL
  read `now()` after that, so the lease it recorded ends at least `margin_seconds` later than
  the instance believes. A second thread (the watchdog) acts at that local deadline whether
  or not the renewing thread is stuck in a call: it kills the running script and wakes the
  writer, which stops dispatching and leaves (`on_lost`). So a leader that cannot renew has
  stopped its scripts before any standby can take the lease.
- **Fencing every commit**: `install_fence(table)` puts a trigger on the events table (once
  per statement that inserts): it reads the lease's row `FOR SHARE` and refuses the insert
  (SQLSTATE `AJ001`, the transaction rolls back) unless the session's `application_name` is
  the holder's, while the lease is held or was last held by someone (a released lease, or no
  lease row at all, refuses nobody). `att-jm serve` on PostgreSQL sets `application_name` to
  `att-jm <instance> <pid>` for every connection of its process (`PGAPPNAME`), so the check
  covers every append of the writer, the library's saves (seals, the scheduler) included,
  with nothing to call. A take-over's `UPDATE` waits for that row lock, so a commit either
  finishes before the holder changes or sees the new holder and fails: a process that was
  paused (SIGSTOP, a long pause of the machine) and wakes up after a take-over cannot commit
  anything. The writer turns that refusal into LeaseLost (`fenced`).

Why a lease row and not a session advisory lock: an advisory lock lives as long as the server
believes its session does; on a network cut that is until TCP keepalive gives up (minutes to
hours by default), and the lock has no token a commit can check. The row's expiry is measured
by one clock (PostgreSQL's), the epoch fences commits, and the row says who holds it and
until when (the standbys' status shows it).

`LeaseTimes` derives every period from `takeover_seconds`, the bound on a fail-over (from the
active instance's death to the new one's start): the lease lasts 70% of it, and the rest is
for the standby to notice (it sleeps until the expiry it read, at most `poll_seconds`) and to
start (open the store, record the interrupted execution, connect).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from att_jm.service.fence import FENCED, LeaseLost

log = structlog.get_logger("att_jm")

TABLE: Final = "att_jm_lease"
#: The lease's row (one writer per store).
NAME: Final = "writer"
#: (class, key) of the advisory lock that guards the table's creation, and of the one an
#: instance holds on its lease connection so that no two processes run as one instance name.
_DDL_LOCK: Final = (0x61_74_74_6A, 1)
_INSTANCE_LOCK_CLASS: Final = 0x61_74_74_6A + 1
#: PostgreSQL's limit on application_name (longer ones are cut).
_APP_NAME_MAX: Final = 63

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    name text PRIMARY KEY,
    epoch bigint NOT NULL,
    holder text,
    holder_app text,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL DEFAULT now()
)"""
_READ = (
    f"SELECT epoch, holder, holder_app, expires_at <= now() OR holder IS NULL, "  # noqa: S608 -- a constant
    f"extract(epoch FROM expires_at - now())::float8 FROM {TABLE} WHERE name = %s"
)
_INSERT = (
    f"INSERT INTO {TABLE} (name, epoch, holder, holder_app, expires_at) "  # noqa: S608 -- idem
    "VALUES (%s, 1, %s, %s, now() + make_interval(secs => %s)) "
    "ON CONFLICT (name) DO NOTHING RETURNING epoch"
)
_TAKE = (
    f"UPDATE {TABLE} SET epoch = epoch + 1, holder = %s, holder_app = %s, "  # noqa: S608 -- idem
    "expires_at = now() + make_interval(secs => %s), acquired_at = now(), renewed_at = now() "
    "WHERE name = %s AND epoch = %s AND (expires_at <= now() OR holder IS NULL) "
    "RETURNING epoch"
)
_RENEW = (
    f"UPDATE {TABLE} SET expires_at = now() + make_interval(secs => %s), "  # noqa: S608 -- idem
    "renewed_at = now() WHERE name = %s AND epoch = %s AND holder_app = %s RETURNING epoch"
)
_RELEASE = (
    f"UPDATE {TABLE} SET holder = NULL, holder_app = NULL, expires_at = now() "  # noqa: S608 -- idem
    "WHERE name = %s AND epoch = %s AND holder_app = %s"
)
_FENCE_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.att_jm_fence() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_catalog AS $$
DECLARE
    holding text;
BEGIN
    SELECT holder_app INTO holding FROM att_jm_lease WHERE name = 'writer' FOR SHARE;
    IF holding IS NOT NULL AND holding <> current_setting('application_name') THEN
        RAISE EXCEPTION 'att-jm: this session (%) does not hold the writer''s lease (%)',
            current_setting('application_name'), holding USING ERRCODE = '{code}';
    END IF;
    RETURN NULL;
END $$"""
_FENCE_TRIGGER = (
    "CREATE OR REPLACE TRIGGER att_jm_fence BEFORE INSERT ON {table} "
    "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.att_jm_fence()"
)
_TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name = %s AND pid <> pg_backend_pid()"
)


@dataclass(frozen=True)
class LeaseTimes:
    """Every period of the lease, from `takeover_seconds` (the bound on a fail-over)."""

    takeover_seconds: float = 10.0

    @property
    def lease_seconds(self) -> float:
        """How long the row keeps the lease after a renewal (PostgreSQL's clock)."""
        return 0.7 * self.takeover_seconds

    @property
    def renew_seconds(self) -> float:
        """How often the active instance renews it."""
        return self.lease_seconds / 5

    @property
    def margin_seconds(self) -> float:
        """How long before the recorded expiry the active instance stops trusting its lease
        (by its own clock, counted from when the renewal was sent)."""
        return self.lease_seconds / 5

    @property
    def trust_seconds(self) -> float:
        """How long after a renewal was sent the active instance trusts its lease."""
        return self.lease_seconds - self.margin_seconds

    @property
    def poll_seconds(self) -> float:
        """The longest a standby sleeps between two looks at the lease."""
        return min(0.5, self.takeover_seconds / 20)

    @property
    def step_back_seconds(self) -> float:
        """How long an instance that lost the lease leaves it to the others before it tries
        again: an operator who revoked it (or a fence that refused a commit) means the others
        first; standbys look every `poll_seconds`, ten looks at least within it."""
        return self.takeover_seconds / 2

    @property
    def statement_seconds(self) -> float:
        """The longest a statement of the lease may wait (a lock, a slow server)."""
        return max(0.2, self.renew_seconds / 2)


@dataclass(frozen=True)
class Holder:
    """The lease as a standby read it."""

    epoch: int
    holder: str | None  # the instance holding it (None: released, or never taken)
    app: str | None
    free: bool  # expired or released: it may be taken now
    seconds_left: float  # until it expires (<= 0 when it has)


def default_instance() -> str:
    """The instance name when none is set: the host's name (one instance per host; set
    `instance` to run several on one host)."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return (name or "instance")[:64]


def app_name(instance: str, pid: int | None = None) -> str:
    """The `application_name` of every PostgreSQL session of this process (the take-over
    terminates the former holder's sessions by it)."""
    return f"att-jm {instance} {os.getpid() if pid is None else pid}"[:_APP_NAME_MAX]


def connect(where: Mapping[str, Any], app: str, timeout: float) -> psycopg.Connection[Any]:
    """A connection of the lease's own to `where` (psycopg.connect() keyword arguments, e.g.
    `PgLocation.connect_kwargs()`; `conninfo` for a URL), autocommit, that gives up rather
    than hang: the connect, each statement and each lock wait are bounded, and the kernel
    drops the connection when what it sent goes unacknowledged (a cut network)."""
    millis = max(100, int(timeout * 1000))
    params = dict(where)
    conninfo = str(params.pop("conninfo", ""))
    given = str(params.pop("options", None) or conninfo_to_dict(conninfo).get("options") or "")
    params.update(
        autocommit=True, application_name=app, connect_timeout=max(1, round(timeout)),
        tcp_user_timeout=millis, keepalives=1, keepalives_idle=max(1, round(timeout)),
        keepalives_interval=1, keepalives_count=3,
        options=f"{given} -c statement_timeout={millis} -c lock_timeout={millis}".strip(),
    )
    return psycopg.connect(conninfo, **params)


def _open(where: Mapping[str, Any], app: str, timeout: float, schema: str | None,
          instance: str) -> tuple[psycopg.Connection[Any], bool]:
    """A connection for the lease, its table made (and `schema`, when given, one process at
    a time); and whether it took the instance name's lock."""
    db = connect(where, app, timeout)
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", _DDL_LOCK)
            if schema is not None:
                db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
            db.execute(_CREATE)
        taken = db.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                           (_INSTANCE_LOCK_CLASS, instance)).fetchone()
    except BaseException:
        db.close()
        raise
    return db, bool(taken and taken[0])


class Lease:
    """The lease of one instance: taken by `try_acquire`, kept by `keep`, checked by `valid`
    and `check` (and in PostgreSQL by the fence, `install_fence`), given back by `release`.

    Thread-safe: the writer's thread reads it (`valid`, `check`), two threads of its own
    renew it and watch its deadline once it is held.
    """

    def __init__(
        self, where: Mapping[str, Any], *, instance: str, times: LeaseTimes | None = None,
        app: str | None = None, schema: str | None = None, events_table: str = "events",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`where`: psycopg.connect() keyword arguments of the store's database and schema
        (the lease's table lives beside the log); `schema`: that schema, created when missing
        (a standby may start before any instance opened the store); `events_table`: the
        table `install_fence` guards."""
        self.where = dict(where)
        self.schema = schema
        self.events_table = events_table
        self.instance = instance
        self.times = times or LeaseTimes()
        self.app = app or app_name(instance)
        self._monotonic = monotonic
        self._db: psycopg.Connection[Any] | None = None
        self._lock = threading.Condition()
        #: The epoch this instance holds (None: not held).
        self.epoch: int | None = None
        #: By `monotonic`: until when the lease is trusted.
        self._deadline = 0.0
        self._lost: str | None = None
        #: Called once, from whichever thread finds it, when the lease is lost (the writer's).
        self.on_lost: Callable[[str], object] | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        #: Whether this process holds the instance name's lock (taken with the first
        #: connection; a reconnect tries again but goes on without it: the lock of a broken
        #: session of ours lasts until the server notices, and must not stop the renewals).
        self._named = False

    # The connection ----------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._db is not None and not self._db.closed:
            return self._db
        db, named = _open(self.where, self.app, self.times.statement_seconds, self.schema,
                          self.instance)
        if named:
            self._named = True
        elif not self._named:
            db.close()
            raise InstanceInUse(f"another process runs as instance {self.instance!r} on this "
                                "store: give each instance its own name (setting `instance`)")
        self._db = db
        return db

    def _drop_connection(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(psycopg.Error):
                db.close()

    def close(self) -> None:
        """Stop keeping it (without releasing it) and close the connection."""
        self._stop_threads()
        self._drop_connection()

    # A standby -----------------------------------------------------------------------------

    def read(self) -> Holder | None:
        """The lease as it stands (None: never taken)."""
        row = self._connection().execute(_READ, (NAME,)).fetchone()
        if row is None:
            return None
        return Holder(epoch=int(row[0]), holder=row[1], app=row[2], free=bool(row[3]),
                      seconds_left=float(row[4]))

    def try_acquire(self) -> Holder | None:
        """Take the lease if it is free; the lease as it stands (its `holder` is this instance
        when taken, and `epoch` is then ours). Raises psycopg.Error when PostgreSQL cannot
        be reached (the caller retries)."""
        try:
            return self._try_acquire()
        except psycopg.Error:
            self._drop_connection()
            raise

    def _try_acquire(self) -> Holder | None:
        db = self._connection()
        seen = self.read()
        sent = self._monotonic()
        if seen is None:
            row = db.execute(_INSERT, (NAME, self.instance, self.app,
                                       self.times.lease_seconds)).fetchone()
            if row is None:  # another instance inserted it first
                return self.read()
            return self._taken(int(row[0]), sent)
        if not seen.free:
            return seen
        if seen.app is not None and seen.app != self.app:
            terminated = db.execute(_TERMINATE, (seen.app,)).fetchone()
            if terminated and terminated[0]:
                log.warning("lease.former_holder_sessions_terminated", holder=seen.holder,
                            sessions=int(terminated[0]))
        row = db.execute(_TAKE, (self.instance, self.app, self.times.lease_seconds, NAME,
                                 seen.epoch)).fetchone()
        if row is None:  # another standby took it first, or the holder renewed it
            return self.read()
        return self._taken(int(row[0]), sent)

    def _taken(self, epoch: int, sent: float) -> Holder:
        with self._lock:
            self.epoch = epoch
            self._lost = None
            self._deadline = sent + self.times.trust_seconds
        log.info("lease.acquired", instance=self.instance, epoch=epoch)
        return Holder(epoch=epoch, holder=self.instance, app=self.app, free=False,
                      seconds_left=self.times.lease_seconds)

    # The active instance -------------------------------------------------------------------

    def keep(self, on_lost: Callable[[str], object] | None = None) -> None:
        """Renew the lease from now on (a thread), and call `on_lost(reason)` (or what
        `self.on_lost` is then) once, from whichever thread finds it, when it is lost: taken
        over, or not renewed by the local deadline (the watchdog thread)."""
        if self.epoch is None:
            raise RuntimeError("the lease is not held")
        self._stop.clear()
        if on_lost is not None:
            self.on_lost = on_lost
        self._threads = [
            threading.Thread(target=self._renewing, name="lease-renew", daemon=True),
            threading.Thread(target=self._watching, name="lease-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def valid(self) -> bool:
        """Whether this instance holds the lease and may still trust it (by its own clock)."""
        return self._lost is None and self.epoch is not None \
            and self._monotonic() < self._deadline

    def seconds_left(self) -> float:
        """How long this instance may still trust its lease (0 when it may not)."""
        return max(0.0, self._deadline - self._monotonic()) if self.valid() else 0.0

    @property
    def lost(self) -> str | None:
        """Why the lease was lost (None: held, or never held)."""
        return self._lost

    def check(self) -> None:
        """Raise LeaseLost unless `valid()`."""
        if not self.valid():
            self.lose(self._lost or "the lease was not renewed in time")
            raise LeaseLost(self._lost or "not held")

    def install_fence(self, table: str | None = None) -> None:
        """Put the fence (see the module) on `table` (the events table, `events_table`, in
        the schema of the lease's table): from then on only the holder's sessions may insert
        into it. Idempotent (the writer does it at each start, once the store exists)."""
        table = table or self.events_table
        db = self._connection()
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", _DDL_LOCK)
            row = db.execute("SELECT current_schema()").fetchone()
            schema = sql.Identifier(str(row[0]) if row else "public")
            db.execute(sql.SQL(_FENCE_FUNCTION).format(schema=schema, code=sql.SQL(FENCED)))
            db.execute(sql.SQL(_FENCE_TRIGGER).format(
                table=sql.Identifier(table), schema=schema))

    def release(self) -> None:
        """At a clean stop: give the lease back at once (a standby takes it without waiting
        for the expiry). Best effort: an unreachable PostgreSQL lets it expire instead."""
        epoch = self.epoch
        self._stop_threads()
        if epoch is None or self._lost is not None:
            return
        with self._lock:
            self._lost = "released"
            self.epoch = None
        try:
            self._connection().execute(_RELEASE, (NAME, epoch, self.app))
            log.info("lease.released", instance=self.instance, epoch=epoch)
        except psycopg.Error as error:
            log.warning("lease.release_failed", error=repr(error))
            self._drop_connection()

    def forget(self) -> None:
        """After a loss: stop the threads; the next `try_acquire` starts afresh."""
        self._stop_threads()
        with self._lock:
            self.epoch = None

    def lose(self, reason: str) -> None:
        """Mark the lease lost (once; `on_lost` is called): from its threads, or when the
        store refused a commit (the fence)."""
        with self._lock:
            if self._lost is not None or self.epoch is None:
                return
            self._lost = reason
            self._lock.notify_all()
            callback = self.on_lost
        log.error("lease.lost", instance=self.instance, epoch=self.epoch, reason=reason)
        if callback is not None:
            callback(reason)

    def _renewing(self) -> None:
        times = self.times
        while not self._stop.wait(times.renew_seconds):
            if self._lost is not None:
                return
            sent = self._monotonic()
            try:
                row = self._connection().execute(
                    _RENEW, (times.lease_seconds, NAME, self.epoch, self.app)).fetchone()
            except (psycopg.Error, InstanceInUse) as error:
                log.warning("lease.renew_failed", error=repr(error),
                            trusted_for=round(self.seconds_left(), 3))
                self._drop_connection()
                continue
            if row is None:
                self.lose("another instance took the lease")
                return
            with self._lock:
                if self._lost is None:
                    self._deadline = max(self._deadline, sent + times.trust_seconds)
                    self._lock.notify_all()

    def _watching(self) -> None:
        with self._lock:
            while not self._stop.is_set() and self._lost is None:
                left = self._deadline - self._monotonic()
                if left <= 0:
                    break
                self._lock.wait(min(left, 0.5))
        if not self._stop.is_set():
            self.lose("the lease was not renewed in time")

    def _stop_threads(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._threads = []


class InstanceInUse(RuntimeError):
    """Another process already runs with this instance name on this store."""
