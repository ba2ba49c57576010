"""The writer's one script slot: a script runs inside the writer's own loop, no thread."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable

import structlog

from att_jm.domain.runs import Outcome, Run
from att_jm.runner import RunningScript, ScriptRunner
from att_jm.service.inbox import Item, RunFinished, utcnow

log = structlog.get_logger("att_jm")


class ScriptSlot:
    """Runs one script at a time inside the writer's own loop, without a thread.

    `start` forks the script on the writer's thread right after its Started event is
    stored (no thread switch before the fork); the writer then waits on the script's
    pipes and pidfd in the same `select()` as on the broker (`fds`, `wait_seconds`) and
    calls `step`, which reports the outcome as a RunFinished as soon as it is over. (With a
    thread, the report crossed threads under the GIL and the writer's wake-up came late
    whenever it was busy.)
    """

    def __init__(
        self, scripts: str, report: Callable[[Item], None], *, run_as: str | None = None,
        spare: Callable[[], Iterable[int]] | None = None,
        may_start: Callable[[], bool] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        self.scripts = ScriptRunner(scripts, run_as=run_as, spare=spare, meanwhile=meanwhile)
        self._report = report
        self._running: tuple[Run, RunningScript] | None = None
        #: Asked right before each start (the lease, on PostgreSQL: att_jm/service/lease.py).
        self._may_start = may_start

    def start(self, run: Run) -> None:
        """Start the script now; its outcome comes back as a RunFinished.

        Not when `may_start()` says no (this instance no longer trusts its lease): its
        execution stays running in the log, and the instance that takes over records it
        Failed (interrupted), like any execution of a writer that died."""
        if self._may_start is not None and not self._may_start():
            log.error("execution.start_fenced", execution=run.execution_id, job=run.job,
                      reason="this instance no longer holds the lease")
            return
        try:
            begun = self.scripts.begin(run)
            if isinstance(begun, Outcome):
                self._finished(run, begun)
            else:
                self._running = (run, self.scripts.watch(begun))
        except Exception as error:  # noqa: BLE001 -- a runner bug must not leave it running; _failed logs it
            self._failed(run, error)
        log.info("execution.started", execution=run.execution_id, job=run.job,
                 attempt=run.attempt)

    def prepare(self) -> None:
        """Ready to start scripts at once (the script spawner started)."""
        self.scripts.prepare()

    @property
    def busy(self) -> bool:
        return self._running is not None

    def settle(self) -> None:
        """When nothing runs: what ended is reaped (see `ScriptRunner.settle`)."""
        if self._running is None:
            self.scripts.settle()

    def fds(self) -> list[int]:
        return [] if self._running is None else self._running[1].fds()

    def wait_seconds(self) -> float | None:
        return None if self._running is None else self._running[1].wait_seconds()

    def step(self, ready: Collection[int]) -> None:
        """Follow the running script (what of `fds()` is readable); report it once over."""
        if self._running is None:
            return
        run, running = self._running
        try:
            outcome = running.step(ready)
        except Exception as error:  # noqa: BLE001 -- idem
            self._failed(run, error, running)
            return
        if outcome is not None:
            self._finished(run, outcome)

    def _finished(self, run: Run, outcome: Outcome) -> None:
        self._running = None
        self._report(RunFinished(run.execution_id, outcome, utcnow()))

    def _failed(self, run: Run, error: Exception, running: RunningScript | None = None) -> None:
        log.exception("runner.failed", execution=run.execution_id)
        if running is not None:
            with contextlib.suppress(Exception):
                running.finish()  # its group killed and reaped
        self._running = None
        self._report(RunFinished(run.execution_id, Outcome.failed(f"runner error: {error!r}"),
                                 utcnow()))

    def stop(self) -> None:
        """Kill a running script's group and reap it (its execution stays running in the
        log: the next start records it interrupted)."""
        self.scripts.kill_running()
        if self._running is not None:
            with contextlib.suppress(Exception):
                self._running[1].finish()
            self._running = None
        self.scripts.close()
