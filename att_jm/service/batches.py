"""A batch: everything that arrived, handled in one unit of work and one commit.

A batch that fails in a way a retry would repeat is handled again one item at a time, so
that only the item that fails alone is ended (recorded as rejected, or its run as Failed)
and everything else goes on. Nothing is acknowledged before its outcome is stored.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import structlog

from att_jm.application import JobManager, UnitOfWork
from att_jm.domain.commands import ReadCommand, TraceGet, ViewsGet
from att_jm.domain.runs import Outcome
from att_jm.errors import AttJmError
from att_jm.mqtt.adapter import Inbound
from att_jm.service.dispatch import Dispatcher
from att_jm.service.inbox import Item, RunFinished, Stop, Stopping
from att_jm.service.replies import Replies
from att_jm.service.routing import Router
from att_jm.service.unit import WriterUnit
from att_jm.service.units import PoisonBatch, Units, internal_error
from att_jm.store import is_transient
from att_jm.topics import Topics

log = structlog.get_logger("att_jm")

Reply = dict[str, Any]


class Batches:
    """Handles batches of items to their commit, acknowledgements and replies."""

    def __init__(
        self, *, manager: JobManager, units: Units, router: Router, replies: Replies,
        dispatcher: Dispatcher, topics: Topics, stopping: Stopping, max_payload_bytes: int,
    ) -> None:
        self.manager = manager
        self.units = units
        self.router = router
        self.replies = replies
        self.dispatcher = dispatcher
        self.topics = topics
        self.stopping = stopping
        self.max_payload_bytes = max_payload_bytes

    def handle(self, items: list[Item]) -> None:
        """Handle what arrived in one unit of work, or, if that fails in a way a retry would
        repeat, one item at a time."""
        try:
            self._handle_items(items)
        except PoisonBatch as poison:
            if len(items) == 1:
                self._end_poisoned(items[0], poison.error)
                return
            log.warning("batch.split", items=len(items), error=repr(poison.error))
            for item in items:
                self.handle([item])

    def _handle_items(self, items: list[Item]) -> None:
        reads: list[tuple[Inbound, ReadCommand]] = []
        inbound = [item for item in items if isinstance(item, Inbound)]
        notifications = [item for item in inbound if self.topics.is_notification(item.topic)]
        # A script just ended, or notifications may have queued an entry, and no command can
        # have changed the queue's order: start the next entry in the same transaction (one
        # commit per execution, and one for a notification that meets an idle queue).
        chain = len(notifications) == len(inbound) and any(
            isinstance(item, RunFinished | Inbound) for item in items
        )
        limit = self.max_payload_bytes

        def work(uow: WriterUnit) -> None:
            reads.clear()
            self.router.handled.clear()
            replies: list[tuple[Inbound, Reply]] = []
            self.manager.prefetch_notifications(
                uow, [item.payload for item in notifications if len(item.payload) <= limit]
            )
            for item in items:
                reply = self._handle(uow, item)
                if not isinstance(item, Inbound) or reply is None:
                    continue
                if isinstance(reply, ViewsGet | TraceGet):
                    reads.append((item, reply))
                else:
                    replies.append((item, reply))
            uow.messages = bool(inbound)
            uow.commands_only = bool(replies) and len(inbound) == len(items) and not notifications
            if chain and not self.stopping.seen:
                uow.handover = any(isinstance(item, RunFinished) for item in items)
                self.dispatcher.start_next(uow, chained=True)
            # The replies go first (their requesters wait); a batch without any (notifications,
            # a script's end) wakes the relay for its events before it acknowledges.
            hooks = uow.after_store if replies else uow.after_wake
            hooks.append(partial(self.replies.ack_and_reply, inbound, replies))

        self.units.run(work)
        if reads:
            self.units.after.flush_views()
        for message, read in reads:  # answered from views (and a log) that include this batch
            self.replies.send(message, self.replies.read(read))
        self.router.log_handled()

    def _handle(self, uow: UnitOfWork, item: Item) -> Reply | ReadCommand | None:
        """Handle one item inside the batch's unit of work; a command's reply.

        A message whose events cannot be stored (encoded) is answered `internal` and dropped
        here: left in the batch, it would fail every commit of it and stop the consumer.
        """
        mark = uow.mark()
        try:
            if isinstance(item, Stop):
                log.info("service.stopping", reason=item.reason)
                self.stopping.seen = True
                return None
            if isinstance(item, RunFinished):
                self.manager.finish(uow, item.execution_id, item.outcome, item.at)
                uow.collect()
                return None
            reply = self.router.route(uow, item)
            uow.collect()
            self.manager.encode(uow)  # raises what the commit would raise
            return reply
        except Exception as error:
            if is_transient(error):  # a fault of the store: the whole batch is retried
                raise
            uow.discard()
            uow.truncate(mark)
            uow.spoiled = True
            if isinstance(error, AttJmError):  # e.g. an event over the size cap
                log.warning("message.refused", code=error.code, reason=error.message)
            else:
                log.exception("message.internal_error")
            if isinstance(item, Inbound):
                return self.router.record_failure(uow, item, error)
            if isinstance(item, RunFinished):  # recorded Failed, saying why
                self._end_run_failed(uow, item, error)
            return None

    def _end_run_failed(self, uow: UnitOfWork, item: RunFinished, error: BaseException) -> None:
        """Record the end of a run whose outcome could not be recorded as it was."""
        mark = uow.mark()
        try:
            self.manager.finish(uow, item.execution_id, failed_outcome(item, error), item.at)
            uow.collect()
            self.manager.encode(uow)
        except Exception as again:
            if is_transient(again):
                raise
            uow.discard()
            uow.truncate(mark)
            log.exception("execution.outcome_unrecordable", execution=item.execution_id)

    def _end_poisoned(self, item: Item, error: BaseException) -> None:
        """Give `item`, which fails alone, its terminal outcome: a message is recorded as
        rejected (a command also gets its error reply) and acknowledged; a script's outcome
        is recorded as Failed, saying why. If even that cannot be stored, the store is at
        fault: retried with back-off like any store fault, never acknowledged unrecorded."""
        log.error("message.poisoned", error=repr(error))
        if isinstance(item, Inbound):
            def record(uow: WriterUnit) -> None:
                reply = self.router.record_failure(uow, item, error)
                replies = [] if reply is None else [(item, reply)]
                uow.after_store.append(partial(self.replies.ack_and_reply, [item], replies))
        elif isinstance(item, RunFinished):
            outcome = failed_outcome(item, error)

            def record(uow: WriterUnit) -> None:
                try:
                    self.manager.finish(uow, item.execution_id, outcome, item.at)
                except AttJmError as refused:  # no such execution (any more): nothing to end
                    log.error("execution.outcome_dropped", execution=item.execution_id,
                              error=refused.message)
        else:
            return
        while True:
            try:
                self.units.run(record)
                return
            except PoisonBatch as again:  # nothing can be stored: a fault of the store
                self.units.store_fault(again.error, 0)


def failed_outcome(item: RunFinished, error: BaseException) -> Outcome:
    """Failed, saying why the run's own outcome could not be recorded."""
    return Outcome.failed(internal_error(error).message, item.outcome.duration_seconds)
