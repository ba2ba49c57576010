"""Running a script to its end the way the writer does: `begin`, `watch`, then `step` on
whatever `select()` says is readable (the production path; there is no other)."""

from __future__ import annotations

import select
from collections.abc import Callable

from att_jm.domain.runs import Outcome, Run
from att_jm.runner import ScriptRunner


def run_script(
    runner: ScriptRunner, run: Run, on_started: Callable[[int], None] | None = None
) -> Outcome:
    """Start `run`, follow it from this loop until it is over; its outcome."""
    begun = runner.begin(run)
    if isinstance(begun, Outcome):
        return begun
    running = runner.watch(begun)
    if on_started is not None:
        on_started(running.pid)
    while True:
        fds = running.fds()
        wait = running.wait_seconds()
        ready = select.select(fds, [], [], wait)[0] if fds else []
        outcome = running.step(set(ready))
        if outcome is not None:
            return outcome
