"""`att-jm serve` and `att-jm rebuild`: the composition root and the writer loop.

One writer thread (the main thread) owns the store, the views and the MQTT
connection (it drives paho's network loop itself: see `att_jm.mqtt.driven`). It
waits on the broker's socket and on its inbox (script results, signals), handles
everything that arrived, commits one transaction for the batch, starts the script it
dispatched, acknowledges, replies, wakes the relay, catches up the views; then it
starts the next execution when the interval allows and runs Auto Cleanup when due.
The relay (`att_jm.relay`, a second process on the other core) publishes the events
from the log and the changed views (coalesced).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Any

import orjson
import structlog

from att_jm import __version__
from att_jm.application import Dispatch, JobManager, Outcome, UnitOfWork, error_reply
from att_jm.checkpoints import Checkpointer
from att_jm.config import Settings
from att_jm.domain import limits as lim
from att_jm.domain.commands import ViewsGet
from att_jm.domain.errors import InvalidInput, JobManagerError, NotFound
from att_jm.domain.matching import check_topic_level
from att_jm.domain.ratelimit import TokenBuckets
from att_jm.domain.times import iso
from att_jm.log.chain import Seal
from att_jm.log.tail import Tail
from att_jm.logs import configure
from att_jm.mqtt.adapter import Inbound, ServiceConnection
from att_jm.mqtt.common import inbound_packet_limit
from att_jm.relay.handle import EventsRelay
from att_jm.runner import (
    Running,
    RunOutcome,
    RunRequest,
    ScriptRunner,
    become_subreaper,
    check_script_isolation,
    kill_leftovers,
    resolve_script,
)
from att_jm.seals import Sealer
from att_jm.site.users import RoleBook
from att_jm.store import is_transient, log_position, open_store
from projections.rebuild import catch_up
from projections.views import Views

log = structlog.get_logger("att_jm")

RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: While the store refuses commits, messages keep arriving; past this many waiting in the inbox
#: the service stops receiving (disconnects) until a commit succeeds again.
INBOX_PAUSE = 1000
#: A script dispatched onto an idle queue starts once the broker has taken the events of
#: its batch (the relay's answer: their PUBACKs arrived), or after this many seconds at most.
HOLD_START_SECONDS = 0.003
#: After a batch's replies: how long the relay's wake-up and the views wait for their PUBACKs.
REPLY_WAIT_SECONDS = 0.002
#: After a timer's unit of work failed deterministically (a bug, data the store refuses):
#: how long before that timer tries again (never a tight loop).
TIMER_RETRY_SECONDS = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunFinished:
    """The runner's report: how execution `execution_id` ended, and when."""

    execution_id: str
    outcome: Outcome
    at: datetime


@dataclass(frozen=True)
class Stop:
    """Asks the writer to finish what it holds and stop."""

    reason: str = "requested"


class StoppedDuringFault(Exception):
    """A stop was asked for while the store refused commits: leave without acknowledging."""


class PoisonBatch(Exception):
    """A unit of work failed in a way a retry would repeat (not a fault of the store): its
    messages are handled again one by one, and the one that fails alone gets a terminal
    outcome (a recorded rejection, an `internal` reply), is acknowledged, and the rest go on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def internal_error(error: BaseException) -> JobManagerError:
    """The error to record and answer for `error`: itself when it is one of the domain's (it
    has its code, e.g. `too_large`), else an `internal` one naming it."""
    if isinstance(error, JobManagerError):
        return error
    return JobManagerError(
        lim.cut(f"internal error: {type(error).__name__}: {error}", lim.MAX_REASON_CHARS)
    )


Item = Inbound | RunFinished | Stop


class Inbox:
    """What the writer handles next: the messages it read itself, and what other threads
    (the runner) and signal handlers put, which also wakes the writer's `poll()`."""

    def __init__(self) -> None:
        self._local: collections.deque[Item] = collections.deque()
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        """Readable when another thread put something."""
        return self._read_fd

    def put_local(self, item: Item) -> None:
        """From the writer thread itself (e.g. paho's callbacks inside `poll()`)."""
        self._local.append(item)

    def put(self, item: Item) -> None:
        """From any thread, or a signal handler (SimpleQueue.put and os.write are reentrant)."""
        self._queue.put(item)
        with contextlib.suppress(OSError):  # a full pipe: the writer is awake already
            os.write(self._write_fd, b"\0")

    def qsize(self) -> int:
        return len(self._local) + self._queue.qsize()

    def empty(self) -> bool:
        return not self._local and self._queue.empty()

    def drain(self, limit: int) -> list[Item]:
        """Up to `limit` items, the other threads' first, each source in arrival order."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        items: list[Item] = []
        while len(items) < limit:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        local = self._local
        while local and len(items) < limit:
            items.append(local.popleft())
        return items

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class ViewsLock:
    """An exclusive lock on the views file: one writer (serve or rebuild) at a time."""

    def __init__(self, views_path: str) -> None:
        self.path = Path(views_path + ".lock")
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Runner:
    """Runs one script at a time inside the writer's own loop, without a thread.

    `submit` starts the script on the writer's thread right after its Started event is
    stored (no thread switch before the fork); the writer then waits on the script's
    pipes and pidfd in the same `select()` as on the broker (`fds`, `wait_seconds`) and
    calls `step`, which reports the outcome as a RunFinished as soon as it is over. With a
    thread, the report crossed threads under the GIL, and the writer's wake-up came late
    whenever it was busy: a fifth of each execution's time.
    """

    def __init__(
        self, scripts: str, report: Callable[[Item], None], *, run_as: str | None = None,
        spare: Callable[[], Iterable[int]] | None = None,
    ) -> None:
        self.scripts = ScriptRunner(scripts, run_as=run_as, spare=spare)
        self._report = report
        self._running: tuple[Dispatch, Running] | None = None

    def submit(self, dispatch: Dispatch) -> None:
        """Start the script now; its outcome comes back as a RunFinished."""
        try:
            begun = self.scripts.begin(
                RunRequest(
                    execution_id=dispatch.execution_id, job=dispatch.job,
                    trigger=dispatch.trigger, attempt=dispatch.attempt, script=dispatch.script,
                    command=dispatch.command, timeout_seconds=dispatch.timeout_seconds,
                )
            )
            if isinstance(begun, RunOutcome):
                self._finished(dispatch, begun)
            else:
                self._running = (dispatch, self.scripts.watch(begun))
        except Exception as error:  # noqa: BLE001 -- a runner bug must not leave it running; _failed logs it
            self._failed(dispatch, error)

    def fds(self) -> list[int]:
        return [] if self._running is None else self._running[1].fds()

    def wait_seconds(self) -> float | None:
        return None if self._running is None else self._running[1].wait_seconds()

    def step(self, ready: Collection[int]) -> None:
        """Follow the running script (what of `fds()` is readable); report it once over."""
        if self._running is None:
            return
        dispatch, running = self._running
        try:
            outcome = running.step(ready)
        except Exception as error:  # noqa: BLE001 -- idem
            self._failed(dispatch, error, running)
            return
        if outcome is not None:
            self._finished(dispatch, outcome)

    def _finished(self, dispatch: Dispatch, outcome: RunOutcome) -> None:
        self._running = None
        self._report(RunFinished(dispatch.execution_id, Outcome(
            result=outcome.result, feedback=outcome.feedback, exit_code=outcome.exit_code,
            duration_seconds=outcome.duration_seconds, timed_out=outcome.timed_out,
        ), utcnow()))

    def _failed(self, dispatch: Dispatch, error: Exception, running: Running | None = None) -> None:
        log.exception("runner.failed", execution=dispatch.execution_id)
        if running is not None:
            with contextlib.suppress(Exception):
                running.finish()  # its group killed and reaped
        self._running = None
        self._report(RunFinished(dispatch.execution_id, Outcome(
            result=2, feedback=f"runner error: {error!r}", exit_code=None, duration_seconds=0.0,
        ), utcnow()))

    def stop(self) -> None:
        """Kill a running script's group and reap it (its execution stays running in the
        log: the next start records it interrupted)."""
        self.scripts.kill_running()
        if self._running is not None:
            with contextlib.suppress(Exception):
                self._running[1].finish()
            self._running = None


class Writer:
    """The single writer: owns the store, the views and the Job Manager."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.clock = clock
        self.inbox = Inbox()
        self.app = open_store(settings.store)
        #: Where the relay begins when it has no position file of its own (a first start):
        #: before this start's own writes, so every event is published (position 1 too).
        self.first_unpublished = log_position(self.app)
        # The first write of a start: what the end of the log says of the last stop (rows
        # appended while the service was stopped are reported, loudly, and in the status).
        self.sealer = Sealer(self.app, settings.store, every_events=settings.seal_every_events,
                             every_seconds=settings.seal_every_seconds)
        self.tail: Tail | None = None
        try:
            self.tail = self.sealer.open_log(clock())
        except Exception as error:  # noqa: BLE001 -- a store fault at start: reported, not fatal
            log.error("log.open_check_failed", error=repr(error))
        if self.tail is not None and self.tail.appended:
            log.error("log.appended_outside", message=self.tail.message(), **self.tail.to_json())
        elif self.tail is not None and self.tail.ledger and not self.tail.clean:
            log.warning("log.unclean_stop", message=self.tail.message(), **self.tail.to_json())
        self.views = Views(settings.views_path())
        self.checkpointer: Checkpointer | None = None
        if settings.views_path() != ":memory:":
            self.checkpointer = Checkpointer(settings.views_path())
        self.views_behind = False
        try:
            caught = catch_up(self.app, self.views)
        except Exception as error:  # noqa: BLE001 -- e.g. a full disk: run on, catch up later
            caught, self.views_behind = 0, True
            log.error("views.apply_failed", error=repr(error))
        roles = None if settings.users_file is None else RoleBook(settings.users_file)
        if roles is not None and roles.error is not None:
            log.error("users.unreadable", users_file=settings.users_file, error=roles.error)
        self.manager = JobManager(
            self.app, self.views, check_script=lambda name: resolve_script(settings.scripts, name),
            clock=clock, max_payload_bytes=settings.max_payload_bytes,
            may_send=None if roles is None else roles.may_send,
            rate=TokenBuckets(settings.command_rate, settings.command_burst),
        )
        # WAL checkpoints on threads of their own, before a commit passes 1,000 pages
        # (see att_jm.checkpoints; measured: settings.set -> reply p99 -0.2 ms).
        self.store_checkpointer: Checkpointer | None = None
        if not self.manager.log.db_name.startswith("file:"):  # not an in-memory store
            self.store_checkpointer = Checkpointer(self.manager.log.db_name)
        self.connection = ServiceConnection(
            settings.mqtt, client_id=settings.client_id, prefix=self.prefix,
            session_expiry_seconds=settings.session_expiry_seconds,
            max_packet=inbound_packet_limit(settings.max_payload_bytes),
            deliver=self.inbox.put_local,
        )
        # Scripts run as settings.script_user when the service is root; when one ends, all it
        # left behind is killed (the service is their subreaper), the relay spared.
        self.runner = Runner(settings.scripts, self.inbox.put_local, run_as=settings.script_user,
                             spare=lambda: () if self.relay.pid is None else (self.relay.pid,))
        self.relay = EventsRelay(settings)
        self.started_at = clock()
        self.stopping = False
        self.stop_requested = threading.Event()
        self.fault: dict[str, Any] | None = None
        #: A start waiting for the relay's answer: (start, position, deadline on time.monotonic).
        self.held: tuple[Callable[[], object], int, float] | None = None
        #: The batch's `command.handled` log lines, written once its replies are sent.
        self._handled: list[tuple[bool, dict[str, Any]]] = []
        #: Timer name -> time.monotonic() before which it is not tried again (see `_timer`).
        self._timer_retry: dict[str, float] = {}
        log.info("store.opened", store=settings.store, position=log_position(self.app),
                 views_caught_up=caught)

    # Life cycle --------------------------------------------------------------------------

    def status(self, state: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "state": state, "pid": os.getpid(), "client_id": self.settings.client_id,
            "version": __version__, "started_at": iso(self.started_at), "at": iso(self.clock()),
        }
        if self.fault is not None:
            body["fault"] = self.fault
        flag = None if self.tail is None else self.tail.flag()
        if flag is not None:
            body["log_appended"] = flag
        warnings = self.connection.broker_warnings()
        if warnings:
            body["broker_warnings"] = warnings
        return body

    def run(self) -> int:
        # Without a position file of its own (a first start) the relay begins here.
        self.relay.start(after=self.first_unpublished)
        interrupted = self._timer("executions.interrupt", self.manager.interrupt_running)
        if interrupted:
            log.warning("executions.interrupted", ids=interrupted,
                        leftover_pids_killed=kill_leftovers(interrupted))
        self.connection.start(lambda: self.status("online"), {
            "state": "offline", "reason": "lost", "pid": os.getpid(),
            "client_id": self.settings.client_id, "started_at": iso(self.started_at),
        })
        try:
            while not self.stopping:
                # Once something waits, only take what else has arrived (a bigger batch).
                wait = self._wait_seconds() if self.inbox.empty() else 0.0
                ready = self.connection.poll(wait, self.inbox.fileno(), *self.runner.fds(),
                                             *self._held_fds())
                self._release_held()
                self.runner.step(ready)
                items = self.inbox.drain(self.settings.max_batch)
                if items:
                    self._handle_batch(items)
                self._tick()
        except StoppedDuringFault:
            log.error("service.stopped_during_store_fault", unacknowledged="left to the broker")
        self._shutdown()
        return 0

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the writer to stop; safe in a signal handler (SimpleQueue.put is reentrant)."""
        self.stop_requested.set()
        self.inbox.put(Stop(reason))

    def _shutdown(self) -> None:
        if self.held is not None:  # never started: the next start records it interrupted
            log.warning("execution.start_dropped_at_stop", position=self.held[1])
            self.held = None
        self.runner.stop()
        self._close_log()  # a clean stop's last write: the whole log sealed, and closed
        self.sealer.close()
        self.manager.close()
        self.relay.stop()  # it publishes what is left of the events and the views, then exits
        self.connection.stop(self.status("offline"))
        for checkpointer in (self.checkpointer, self.store_checkpointer):
            if checkpointer is not None:
                checkpointer.close()
        self.views.close()
        self.inbox.close()
        log.info("service.stopped", position=log_position(self.app))

    def _wait_seconds(self) -> float:
        now = self.clock()
        wakes = [self.manager.next_cleanup(now)]
        start = self.manager.next_start(now)
        if start is not None:
            wakes.append(start)
        wait = min((wake - now).total_seconds() for wake in wakes)
        wait = min(wait, 1.0)  # look at the relay, retry a views catch-up, now and then
        for other in (self.sealer.wait_seconds(), self.runner.wait_seconds(), self._held_wait()):
            if other is not None:
                wait = min(wait, other)
        return max(0.0, min(wait, 60.0))

    # Units of work -----------------------------------------------------------------------

    def _unit(self, work: Callable[[UnitOfWork], Any]) -> Any:
        """Run `work` in its own unit of work and commit it, retrying with back-off while the
        store has a fault; PoisonBatch when it fails in a way a retry would repeat."""
        for attempt in range(1_000_000):
            if attempt and self.stop_requested.is_set():
                raise StoppedDuringFault
            uow = UnitOfWork()
            try:
                result = work(uow)
                uow.collect()
            except Exception as error:  # noqa: BLE001 -- sorted right below
                if not is_transient(error):
                    self._poisoned(error)
                self._store_fault(error, attempt)  # e.g. a read the store refused
                continue
            if self._commit(uow, attempt):
                return result
        raise RuntimeError("unreachable")  # pragma: no cover

    def _poisoned(self, error: BaseException) -> None:
        """Forget what the failed unit did in memory, then raise PoisonBatch."""
        log.error("unit.failed", error=repr(error), exc_info=error)
        try:
            self.manager.reload()
        except Exception as reload_error:  # noqa: BLE001 -- the store may refuse reads too
            log.error("store.reload_failed", error=repr(reload_error))
        raise PoisonBatch(error) from error

    def _timer(self, name: str, work: Callable[[UnitOfWork], Any]) -> Any:
        """A unit of work of the writer's own (cleanup, a dispatch): one that fails
        deterministically is logged and tried again TIMER_RETRY_SECONDS later, not at once."""
        if time.monotonic() < self._timer_retry.get(name, 0.0):
            return None
        try:
            return self._unit(work)
        except PoisonBatch as poison:
            self._timer_retry[name] = time.monotonic() + TIMER_RETRY_SECONDS
            log.error(f"{name}.failed", error=repr(poison.error), retry_in=TIMER_RETRY_SECONDS)
            return None

    def _commit(self, uow: UnitOfWork, attempt: int) -> bool:
        """Commit `uow`, catch up the views and publish the events; False after a store fault."""
        try:
            stored = self.manager.commit(uow)
        except Exception as error:  # noqa: BLE001 -- a store fault: report, back off, retry
            if not is_transient(error):
                self._poisoned(error)
            self._store_fault(error, attempt)
            return False
        for hook in uow.after_store:  # acks and replies first: requesters wait for them
            hook()
        # Then the script it started and the relay (which reads the events on the other
        # core): after a script's end the next script first (the queue drains at the speed
        # of its scripts: 0.85x of a bare loop instead of 0.75x); on an idle queue the
        # events first: the script starts once the broker has taken them (the relay's
        # answer; the views are updated meanwhile), HOLD_START_SECONDS at most. Subscribers
        # learn that an execution started before its script can act, and the script's
        # start does not take the cores from the events on their way.
        start = uow.start
        if start is not None and uow.handover:
            start()
            start = None
        if stored:
            position = stored[-1][0]
            if start is not None and self.relay.ask(position):
                self.held = (start, position, time.monotonic() + HOLD_START_SECONDS)
                start = None
            else:
                self.relay.notify(position)
        if start is not None:
            start()
        if self.fault is not None and self.fault["kind"] == "store":
            self.connection.resume()
            self._set_fault(None)
            log.info("store.recovered")
        self._after_commit(stored)
        if uow.spoiled:  # after the views took the batch: reload() reads job names from them
            self.manager.reload()
        return True

    def _held_fds(self) -> tuple[int, ...]:
        fd = self.relay.answers_fd() if self.held is not None else None
        return () if fd is None else (fd,)

    def _held_wait(self) -> float | None:
        return None if self.held is None else max(0.0, self.held[2] - time.monotonic())

    def _release_held(self) -> None:
        """Start the held script once the relay answered, its time is up, or something else
        is to be handled (nothing waits behind a held start)."""
        if self.held is None:
            return
        start, position, deadline = self.held
        if (self.relay.confirmed(position) or time.monotonic() >= deadline
                or not self.inbox.empty()):
            self.held = None
            start()

    def _store_fault(self, error: BaseException, attempt: int) -> None:
        delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
        log.error("store.commit_failed", error=repr(error), attempt=attempt + 1, retry_in=delay,
                  inbox=self.inbox.qsize())
        if self.fault is None or self.fault["kind"] != "store":
            self._set_fault("store", error)
        try:
            self.manager.reload()
        except Exception as reload_error:  # noqa: BLE001 -- the store may refuse reads too
            log.error("store.reload_failed", error=repr(reload_error))
        self._serve_network(delay)

    def _serve_network(self, seconds: float) -> None:
        """Keep the connection alive for `seconds` while the store refuses commits (messages
        arriving meanwhile wait in the inbox; past INBOX_PAUSE the connection pauses)."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready = self.connection.poll(left, self.inbox.fileno(), *self.runner.fds(),
                                         *self._held_fds())
            self._release_held()
            self.runner.step(ready)  # a script's end is recorded once the store works
            if self.inbox.qsize() >= INBOX_PAUSE and not self.connection.paused:
                status = self.status("online")
                status["fault"] = {**(self.fault or {}), "paused": True}  # until a commit works
                log.warning("service.paused", inbox=self.inbox.qsize())
                self.connection.pause(status)

    def _set_fault(self, kind: str | None, error: BaseException | None = None) -> None:
        """Report a fault (or its end) in the retained status."""
        self.fault = None if kind is None else {
            "kind": kind, "message": repr(error), "since": iso(self.clock()),
        }
        self.connection.publish(
            self.connection.status_topic, orjson.dumps(self.status("online")), retain=True
        )

    def _apply_views(self, stored: list[tuple[int, Any]]) -> None:
        """Bring the views up to the log (the batch just stored, or everything missed).

        The log is committed already, so a views failure (full disk) must not stop the
        writer: it is reported as a `views` fault and retried from `_tick`; meanwhile
        nothing is dispatched from stale views.
        """
        try:
            first = stored[0][0] if stored else 0
            if self.views_behind or self.views.position < first - 1:
                catch_up(self.app, self.views)
                self.relay.notify_views()
            elif stored and self.views.apply(stored):
                self.relay.notify_views()
        except Exception as error:  # noqa: BLE001 -- any views fault: report, retry later
            if not self.views_behind:
                log.error("views.apply_failed", error=repr(error))
            self.views_behind = True
            if self.fault is None:
                self._set_fault("views", error)
            return
        if self.views_behind:
            self.views_behind = False
            log.info("views.recovered", position=self.views.position)
        if self.fault is not None and self.fault["kind"] == "views":
            self._set_fault(None)

    def _after_commit(self, stored: list[tuple[int, Any]]) -> None:
        """Wake the relay for the events (first: subscribers wait for them), then update the
        views (the relay publishes those that changed)."""
        if not stored:
            return
        self.relay.notify(stored[-1][0])
        self.sealer.note(stored[-1][0])
        self._apply_views(stored)

    def _handle_batch(self, items: list[Item]) -> None:
        """Handle what arrived in one unit of work; if it fails in a way a retry would
        repeat, handle the items one by one, so that only the one that fails alone is
        ended (`_end_poisoned`) and everything else goes on."""
        try:
            self._handle_items(items)
        except PoisonBatch as poison:
            if len(items) == 1:
                self._end_poisoned(items[0], poison.error)
                return
            log.warning("batch.split", items=len(items), error=repr(poison.error))
            for item in items:
                self._handle_batch([item])

    def _end_poisoned(self, item: Item, error: BaseException) -> None:
        """Give `item`, which fails alone, its terminal outcome: a message is recorded as
        rejected (a command also gets its error reply) and acknowledged; a script's outcome
        is recorded as Failed, saying why. If even that cannot be stored, the store is at
        fault: retried with back-off like any store fault, never acknowledged unrecorded."""
        log.error("message.poisoned", error=repr(error))
        if isinstance(item, Inbound):
            def record(uow: UnitOfWork) -> None:
                reply = self._record_failure(uow, item, error)
                replies = [] if reply is None else [(item, reply)]
                uow.after_store.append(partial(self._ack_and_reply, [item], replies))
        elif isinstance(item, RunFinished):
            outcome = Outcome(
                result=2, feedback=internal_error(error).message, exit_code=None,
                duration_seconds=item.outcome.duration_seconds,
            )

            def record(uow: UnitOfWork) -> None:
                try:
                    self.manager.finish(uow, item.execution_id, outcome, item.at)
                except JobManagerError as refused:  # no such execution (any more): nothing to end
                    log.error("execution.outcome_dropped", execution=item.execution_id,
                              error=refused.message)
        else:
            return
        while True:
            try:
                self._unit(record)
                return
            except PoisonBatch as again:  # nothing can be stored: a fault of the store
                self._store_fault(again.error, 0)

    def _record_failure(
        self, uow: UnitOfWork, item: Inbound, error: BaseException
    ) -> dict[str, Any] | None:
        """Record message `item` as rejected because handling it failed with `error`; the
        error reply for a command (None for a notification or another topic)."""
        failure = internal_error(error)
        topic = item.topic.decode("utf-8", "replace")
        rest = topic.split("/")[len(self.prefix.split("/")):]
        if len(rest) == 4 and rest[:2] == ["job-manager", "commands"]:
            return self.manager.reject_command(uow, topic, failure, item.payload, rest[2])
        if len(rest) == 3 and rest[:2] == ["channel-manager", "notifications"]:
            self.manager.reject_notification(uow, topic, failure, item.payload)
        return None

    def _handle_items(self, items: list[Item]) -> None:
        views_gets: list[tuple[Inbound, ViewsGet]] = []
        notifications = f"{self.prefix}/channel-manager/notifications/".encode()
        limit = self.settings.max_payload_bytes
        inbound = [item for item in items if isinstance(item, Inbound)]
        # A script just ended, or notifications may have queued an entry, and no command can
        # have changed the queue's order: start the next entry in the same transaction (one
        # commit per execution, and one for a notification that meets an idle queue).
        chain = all(item.topic.startswith(notifications) for item in inbound) and any(
            isinstance(item, RunFinished | Inbound) for item in items
        )

        def work(uow: UnitOfWork) -> None:
            views_gets.clear()
            self._handled.clear()
            replies: list[tuple[Inbound, dict[str, Any]]] = []
            self.manager.prefetch_notifications(uow, [
                item.payload for item in inbound
                if item.topic.startswith(notifications) and len(item.payload) <= limit
            ])
            for item in items:
                reply = self._handle(uow, item)
                if not isinstance(item, Inbound) or reply is None:
                    continue
                if isinstance(reply, ViewsGet):
                    views_gets.append((item, reply))
                else:
                    replies.append((item, reply))
            if chain and not self.stopping:
                uow.handover = any(isinstance(item, RunFinished) for item in items)
                self._start_next(uow, chained=True)
            uow.after_store.append(partial(self._ack_and_reply, inbound, replies))

        self._unit(work)
        for message, outcome in views_gets:  # answered from views that include this batch
            self._send_reply(message, self._view_reply(outcome))
        for ok, fields in self._handled:  # logged after the replies: requesters wait for them
            (log.info if ok else log.warning)("command.handled", **fields)
        self._handled.clear()

    def _ack_and_reply(
        self, inbound: list[Inbound], replies: list[tuple[Inbound, dict[str, Any]]]
    ) -> None:
        mids = []
        with self.connection.corked():  # the replies first: requesters wait for them
            for message, reply in replies:
                mid = self._send_reply(message, reply)
                if mid is not None:
                    mids.append(mid)
            self.connection.ack_all(inbound)
        # A reply has the cores to itself on its way to the requester: the relay and the views
        # (what follows this hook in `_commit`) wait for its PUBACK (the broker passed it on),
        # REPLY_WAIT_SECONDS at most, and not once anything else arrives (settings.set ->
        # reply p50 -0.2 ms). A batch with commands never starts a script in its commit.
        self.connection.await_acks(mids, REPLY_WAIT_SECONDS, self.inbox.fileno())

    def _send_reply(self, message: Inbound, reply: dict[str, Any]) -> int | None:
        """Reply on the request's ResponseTopic, which must lie under `P/job-manager/replies/`.

        The shipped ACL lets the service write only there, and mosquitto disconnects a
        client whose publish it denies: a reply elsewhere is logged, never sent.
        """
        topic = message.response_topic
        if not topic:
            log.info("command.done_without_reply_topic", ok=reply.get("ok"))
        elif not topic.startswith(f"{self.prefix}/job-manager/replies/"):
            log.warning("command.reply_topic_refused", response_topic=topic, ok=reply.get("ok"))
        else:
            return self.connection.reply(topic, message.correlation, reply)
        return None

    def _handle(self, uow: UnitOfWork, item: Item) -> dict[str, Any] | ViewsGet | None:
        """Handle one item inside the batch's unit of work; a command's reply.

        A message whose events cannot be stored (encoded) is answered `internal` and dropped
        here: left in the batch, it would fail every commit of it and stop the consumer.
        """
        mark = uow.mark()
        try:
            if isinstance(item, Stop):
                log.info("service.stopping", reason=item.reason)
                self.stopping = True
                return None
            if isinstance(item, RunFinished):
                self.manager.finish(uow, item.execution_id, item.outcome, item.at)
                uow.collect()
                return None
            reply = self._route(uow, item)
            uow.collect()
            self.manager.encode(uow)  # raises what the commit would raise
            return reply
        except Exception as error:
            if is_transient(error):  # a fault of the store: the whole batch is retried
                raise
            uow.discard()
            uow.truncate(mark)
            uow.spoiled = True
            if isinstance(error, JobManagerError):  # e.g. an event over the size cap
                log.warning("message.refused", code=error.code, reason=error.message)
            else:
                log.exception("message.internal_error")
            if isinstance(item, Inbound):
                return self._record_failure(uow, item, error)
            if isinstance(item, RunFinished):  # recorded Failed, saying why
                self._end_run_failed(uow, item, error)
            return None

    def _end_run_failed(self, uow: UnitOfWork, item: RunFinished, error: BaseException) -> None:
        """Record the end of a run whose outcome could not be recorded as it was."""
        mark = uow.mark()
        try:
            self.manager.finish(uow, item.execution_id, Outcome(
                result=2, feedback=internal_error(error).message, exit_code=None,
                duration_seconds=item.outcome.duration_seconds,
            ), item.at)
            uow.collect()
            self.manager.encode(uow)
        except Exception as again:
            if is_transient(again):
                raise
            uow.discard()
            uow.truncate(mark)
            log.exception("execution.outcome_unrecordable", execution=item.execution_id)

    def _route(self, uow: UnitOfWork, message: Inbound) -> dict[str, Any] | ViewsGet | None:
        try:
            topic = message.topic.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("message.bad_topic", topic=message.topic[:200].hex())
            return None
        parts = topic.split("/")
        base = self.prefix.split("/")
        rest = parts[len(base):]
        if parts[: len(base)] != base:
            return None
        if len(rest) == 3 and rest[:2] == ["channel-manager", "notifications"]:
            outcome = self.manager.receive_notification(uow, rest[2], topic, message.payload)
            log.debug("notification.handled", topic=topic, outcome=outcome)
            return None
        if len(rest) == 4 and rest[:2] == ["job-manager", "commands"]:
            return self._command(uow, message, topic, actor=rest[2], name=rest[3])
        log.warning("message.unexpected_topic", topic=topic)
        return None

    def _command(
        self, uow: UnitOfWork, message: Inbound, topic: str, *, actor: str, name: str
    ) -> dict[str, Any] | ViewsGet:
        try:
            check_topic_level(actor, "actor", lim.MAX_ACTOR_CHARS)
        except InvalidInput as error:  # answered like any other bad command, and recorded
            return self.manager.reject_command(uow, topic, error, message.payload, actor)
        reply = self.manager.handle_command(
            uow, actor, name, topic, message.payload, message.correlation
        )
        if isinstance(reply, dict):
            self._handled.append((bool(reply.get("ok")), {
                "actor": actor, "command": name, "ok": reply.get("ok"),
                "error": reply.get("error"),
            }))
        return reply

    # Timers ------------------------------------------------------------------------------

    def _tick(self) -> None:
        self.relay.check()
        if self.stopping:
            return
        if self.views_behind:
            self._apply_views([])
            if self.views_behind:
                return
        now = self.clock()
        for table in self.manager.cleanup_due(now):
            removed = self._timer(f"cleanup.{table}",
                                  partial(self.manager.cleanup, table=table, actor="scheduler"))
            if removed:
                log.info("cleanup.ran", table=table, removed=removed)
        self._timer("dispatch", self._start_next)
        if self.manager.scheduler.running is not None and self.inbox.empty():
            self.manager.preload_next()
        if self.held is None:  # a seal (milliseconds) never delays a start
            self._seal()
            if self.inbox.empty():  # idle: digest rows for the next seal, a few at a time
                with contextlib.suppress(Exception):  # a read fault: the seal reads them
                    self.sealer.prepare()

    def _start_next(self, uow: UnitOfWork, *, chained: bool = False) -> Dispatch | None:
        """Dispatch the next entry when due; the runner gets it as soon as Started is stored.

        `chained`: inside a batch whose events the views do not hold yet; the entry the
        views name next is taken only if this batch left it queued.
        """
        if chained and (self.views_behind or self.fault is not None):
            return None  # nothing is started from stale views
        dispatch = self.manager.dispatch(uow, chained=chained)
        if dispatch is not None:
            uow.start = partial(self._run, dispatch)
        return dispatch

    def _run(self, dispatch: Dispatch) -> None:
        self.runner.submit(dispatch)
        log.info("execution.started", execution=dispatch.execution_id, job=dispatch.job,
                 attempt=dispatch.attempt)

    def _seal(self) -> None:
        """Append a seal when due, then publish it retained."""
        try:
            if not self.sealer.due():
                return
            stored, seals = self.sealer.seal(self.clock())
        except Exception as error:  # noqa: BLE001 -- a store fault: the sealer retries later
            log.error("log.seal_failed", error=repr(error))
            return
        self._published_seals(stored, seals)

    def _close_log(self) -> None:
        """At a clean stop: seal everything and record `Ledger.Closed` (a row found after it
        at the next start was written outside the service). Not during a store fault: the
        next start then reports an unclean stop."""
        if self.fault is not None:
            return
        try:
            stored, seals = self.sealer.close_log(self.clock())
        except Exception as error:  # noqa: BLE001 -- the next start reports an unclean stop
            log.error("log.close_failed", error=repr(error))
            return
        self._published_seals(stored, seals)

    def _published_seals(self, stored: list[tuple[int, Any]], seals: list[Seal]) -> None:
        self._after_commit(stored)
        for seal in seals:
            self.connection.publish(f"{self.prefix}/job-manager/seals",
                                    orjson.dumps(seal.message()), retain=True)
        if seals:
            log.info("log.sealed", position=seals[-1].position, seals=len(seals),
                     hash=seals[-1].hash)

    def _view_reply(self, get: ViewsGet) -> dict[str, Any]:
        """The reply to `views.get`: the view message as published (from the views' cache of
        encoded rows), a page of it, or one row in full."""
        rows, max_bytes = self.settings.view_rows, self.settings.view_max_bytes
        if get.id is not None:
            row = self.views.row_json(get.view, get.id)
            if row is None:
                what = "job named" if get.view == "jobs" else f"{get.view} entry"
                return error_reply(NotFound(f"no {what} {lim.shown(get.id)}"))
            return {"ok": True, "result": orjson.Fragment(row)}
        if get.offset is None and get.limit is None:
            payload = self.views.payload_json(get.view, rows, max_bytes=max_bytes)
        else:
            limit = rows if get.limit is None else min(get.limit, rows)
            payload = self.views.payload_json(get.view, limit, offset=get.offset or 0,
                                              max_bytes=max_bytes)
        return {"ok": True, "result": orjson.Fragment(payload)}



def serve(settings: Settings) -> int:
    """Run the Job Manager until SIGTERM or SIGINT; the exit code."""
    configure(settings.log_format)
    lock = ViewsLock(settings.views_path())
    if not lock.acquire():
        log.error("service.already_running", views=settings.views_path())
        return 1
    problems = check_script_isolation(settings.script_user, settings.scripts)
    if problems:
        log.error("service.scripts_unsafe", script_user=settings.script_user, problems=problems)
        lock.release()
        return 1
    become_subreaper()
    writer = Writer(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No logging here: the handler runs on the main thread, possibly in the middle of a
        # log write holding the logger's lock, and would deadlock. The writer logs the stop.
        writer.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return writer.run()
    finally:
        lock.release()


def rebuild(settings: Settings) -> int:
    """Rebuild every view from the first event of the log; refuses while the service runs."""
    configure(settings.log_format)
    lock = ViewsLock(settings.views_path())
    if not lock.acquire():
        log.error("rebuild.refused", reason="the service is running; stop it first")
        return 1
    try:
        started = time.monotonic()
        app = open_store(settings.store)
        views = Views(settings.views_path())
        views.reset()
        applied = catch_up(app, views)
        seconds = time.monotonic() - started
        log.info("rebuild.done", events_applied=applied, position=views.position,
                 seconds=round(seconds, 3))
        views.close()
        return 0
    finally:
        lock.release()

