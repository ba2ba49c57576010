"""Dispatching: the next queued entry's Started event, and its script once that is stored."""

from __future__ import annotations

from functools import partial

from att_jm.application import JobManager
from att_jm.domain.runs import Run
from att_jm.service.scripts import ScriptSlot
from att_jm.service.unit import WriterUnit


class Dispatcher:
    """Starts the next entry when the scheduler says it is due."""

    def __init__(self, manager: JobManager, slot: ScriptSlot) -> None:
        self.manager = manager
        self.slot = slot

    def start_next(self, uow: WriterUnit, *, chained: bool = False) -> Run | None:
        """Dispatch the next entry when due; the slot starts it as soon as Started is stored.

        `chained`: inside a batch whose events are not committed yet (see
        `JobManager.dispatch`).
        """
        run = self.manager.dispatch(uow, chained=chained)
        if run is not None:
            uow.start = partial(self.slot.start, run)
        return run
