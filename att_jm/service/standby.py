"""`att-jm serve` on a PostgreSQL store: one of several instances, active or standby.

    start ──> standby ──(lease taken)──> active: bootstrap, writer.run() ──> stop
                 ^                                     │
                 └────────(lease lost: LEASE_LOST)─────┘

- **Standby**: the instance's own connection publishes its status (`standby`, who is
  active: att_jm/service/presence.py); the lease is looked at every `poll_seconds` (sooner
  when it expires sooner) and taken once it expired or was released (att_jm/service/lease.py).
- **Active**: the renewals start at once (before the store is opened: a long start must not
  lose the lease), then the writer is built (`bootstrap(..., lease=lease)`: the write model
  is loaded after the lease was taken, so it holds every commit of the former holder) and
  runs: it records the execution its predecessor left running as Failed (interrupted),
  connects with the service's shared client id (the broker's persistent session brings the
  messages its predecessor did not acknowledge), starts its relay, and carries on.
- **Lost**: the writer leaves without writing (`Writer.abandon`) and the instance waits again,
  stepping back first: for `step_back_seconds` (half the take-over bound) it only looks at
  the lease, so that another standby takes it (a revoked lease goes to another instance, not
  back to the one it was taken from); alone, it takes the lease again after that.
- **Stop** (SIGTERM, SIGINT): the active writer stops cleanly (seals and closes the log),
  then the lease is released so that a standby takes over at once; a standby just leaves.

Every PostgreSQL session of the process is named `att-jm <instance> <pid>` (`PGAPPNAME`):
the fence lets only the holder's sessions append, and a take-over terminates the former
holder's sessions by that name.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from types import FrameType

import psycopg
import structlog

from att_jm.config import Settings
from att_jm.log.backend import PG_EVENTS, parse_postgres
from att_jm.service.bootstrap import bootstrap
from att_jm.service.fence import LeaseLost
from att_jm.service.inbox import utcnow
from att_jm.service.instance_reads import InstanceReads
from att_jm.service.lease import InstanceInUse, Lease, LeaseTimes, app_name, default_instance
from att_jm.service.presence import Presence
from att_jm.service.writer import LEASE_LOST, Writer

log = structlog.get_logger("att_jm")


class Instance:
    """One instance's life: standby, active, standby again ... until a stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.instance or default_instance()
        self.app = app_name(self.name)
        # Every PostgreSQL session of this process carries it (libpq's PGAPPNAME: the
        # library's pool, the store's own connections, the relay's).
        os.environ["PGAPPNAME"] = self.app
        self.times = LeaseTimes(settings.takeover_seconds)
        location = parse_postgres(settings.store)
        self.lease = Lease(location.connect_kwargs(), instance=self.name, times=self.times,
                           app=self.app, schema=location.schema, events_table=PG_EVENTS)
        self.reads = InstanceReads(settings, self.name)
        self.presence = Presence(settings, self.name, utcnow, self.reads)
        self.writer: Writer | None = None
        self._stop = threading.Event()
        self._step_back_until = 0.0  # monotonic: no try to take the lease before it
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def request_stop(self, reason: str) -> None:
        """Stop (safe in a signal handler): the active writer stops cleanly, a standby
        stops waiting."""
        self._stop.set()
        writer = self.writer
        if writer is not None:
            writer.request_stop(reason)
        with contextlib.suppress(OSError):  # a full pipe: awake already
            os.write(self._wake_write, b"\0")

    def run(self) -> int:
        """Serve until a stop; the exit code (1: the instance name is in use)."""
        log.info("instance.starting", instance=self.name, takeover_seconds=self.times
                 .takeover_seconds, lease_seconds=round(self.times.lease_seconds, 3))
        self.presence.start()
        try:
            while not self._stop.is_set():
                if not self._wait_for_lease():
                    break
                if self._active() != LEASE_LOST:
                    break
        except InstanceInUse as error:
            log.error("instance.name_in_use", instance=self.name, error=str(error))
            return 1
        finally:
            self.lease.close()
            self.presence.stop()
            self.reads.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
        log.info("instance.stopped", instance=self.name)
        return 0

    def _wait_for_lease(self) -> bool:
        """Wait as a standby until this instance holds the lease; False when stopped."""
        while not self._stop.is_set():
            stepping_back = time.monotonic() < self._step_back_until
            try:
                seen = self.lease.read() if stepping_back else self.lease.try_acquire()
            except psycopg.Error as error:
                log.warning("lease.unreachable", error=repr(error))
                self.presence.set("standby", active=None, epoch=None)
                self._sleep(self.times.poll_seconds)
                continue
            if self.lease.epoch is not None:
                return True
            self.presence.set("standby", active=None if seen is None else seen.holder,
                              epoch=None if seen is None else seen.epoch)
            left = self.times.poll_seconds if seen is None else seen.seconds_left
            if stepping_back:
                left = max(left, self._step_back_until - time.monotonic())
            self._sleep(min(self.times.poll_seconds, max(0.005, left)))
        return False

    def _active(self) -> int:
        """Run the writer while the lease is held; what `Writer.run` returned."""
        lease = self.lease
        lease.keep()
        try:
            writer = bootstrap(self.settings, lease=lease)
        except LeaseLost as lost:
            log.error("instance.lost_lease_while_starting", reason=str(lost))
            lease.forget()
            self._step_back()
            return LEASE_LOST
        except BaseException:
            lease.release()
            raise
        self.writer = writer
        self.presence.set("active", active=self.name, epoch=lease.epoch)
        if self._stop.is_set():  # a stop asked while the writer was being built
            writer.request_stop("stop before start")
        code = writer.run()
        self.writer = None
        if code == LEASE_LOST:
            lease.forget()
            self._step_back()
            return code
        lease.release()
        return code

    def _step_back(self) -> None:
        """After a lost lease: standby, leaving the lease to the others for a while."""
        self._step_back_until = time.monotonic() + self.times.step_back_seconds
        log.info("lease.stepping_back", instance=self.name,
                 seconds=round(self.times.step_back_seconds, 3))
        self.presence.set("standby", active=None, epoch=None)

    def _sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or until a stop."""
        try:
            select.select([self._wake_read], [], [], seconds)
            while os.read(self._wake_read, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass


class RebuildLease:
    """`att-jm rebuild` on PostgreSQL: the writer's lease, taken as instance
    `rebuild-<pid>` for the rebuild's time (refused while an instance holds it; standbys
    wait meanwhile), renewed, and released at the end."""

    def __init__(self, settings: Settings) -> None:
        location = parse_postgres(settings.store)
        name = f"rebuild-{os.getpid()}"
        self.lease = Lease(location.connect_kwargs(), instance=name,
                           times=LeaseTimes(settings.takeover_seconds), app=app_name(name),
                           schema=location.schema, events_table=PG_EVENTS)

    def acquire(self) -> bool:
        try:
            holder = self.lease.try_acquire()
        except psycopg.Error as error:
            log.error("lease.unreachable", error=repr(error))
            self.lease.close()
            return False
        if self.lease.epoch is None:
            log.error("rebuild.lease_held", holder=None if holder is None else holder.holder)
            self.lease.close()
            return False
        self.lease.keep()
        return True

    def release(self) -> None:
        self.lease.release()
        self.lease.close()


def serve_instance(settings: Settings) -> int:
    """`att-jm serve` on a PostgreSQL store (signals set here); the exit code."""
    instance = Instance(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        instance.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return instance.run()
