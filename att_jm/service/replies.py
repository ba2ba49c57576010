"""Replies: on the request's ResponseTopic, before the batch's acknowledgements."""

from __future__ import annotations

from typing import Any

import orjson
import structlog

from att_jm.application import error_reply
from att_jm.domain import limits as lim
from att_jm.domain.commands import ReadCommand, TraceGet, ViewsGet
from att_jm.errors import AttJmError, NotFound, TooLarge
from att_jm.log.lineage import trace
from att_jm.log.rows import AuditError, StoreReader
from att_jm.metrics.shared import WriterStats
from att_jm.mqtt.adapter import Inbound, ServiceConnection
from att_jm.service.inbox import Inbox
from att_jm.topics import Topics
from projections.views import Views

log = structlog.get_logger("att_jm")

#: After a batch's replies: how long the relay's wake-up and the views wait for their PUBACKs.
REPLY_WAIT_SECONDS = 0.002

Reply = dict[str, Any]


class Replies:
    """Sends replies and acknowledgements; answers `views.get` from the views."""

    def __init__(
        self, *, connection: ServiceConnection, topics: Topics, inbox: Inbox, views: Views,
        view_rows: int, view_max_bytes: int, stats: WriterStats,
        log: StoreReader | None = None,
    ) -> None:
        self.connection = connection
        self.topics = topics
        self.inbox = inbox
        self.views = views
        self.view_rows = view_rows
        self.view_max_bytes = view_max_bytes
        #: The log, read-only, for `trace.get`.
        self.log = log
        self.stats = stats

    def ack_and_reply(self, inbound: list[Inbound], replies: list[tuple[Inbound, Reply]]) -> None:
        """The replies, then the acknowledgements of every message in `inbound`."""
        mids = []
        with self.connection.corked():  # the replies first: requesters wait for them
            for message, reply in replies:
                mid = self.send(message, reply)
                if mid is not None:
                    mids.append(mid)
            self.connection.ack_all(inbound)
        # A reply has the cores to itself on its way to the requester: the relay and the views
        # (what follows this hook after a commit) wait for its PUBACK (the broker passed it
        # on), REPLY_WAIT_SECONDS at most, and not once anything else arrives. A batch with
        # commands never starts a script in its commit.
        self.connection.await_acks(mids, REPLY_WAIT_SECONDS, self.inbox.fileno())

    def send(self, message: Inbound, reply: Reply) -> int | None:
        """Reply on the request's ResponseTopic, which must lie under `P/job-manager/replies/`.

        The shipped ACL lets the service write only there, and mosquitto disconnects a
        client whose publish it denies: a reply elsewhere is logged, never sent.
        """
        self.stats.replied(reply)
        topic = message.response_topic
        if not topic:
            log.info("command.done_without_reply_topic", ok=reply.get("ok"))
        elif not self.topics.is_reply(topic):
            log.warning("command.reply_topic_refused", response_topic=topic, ok=reply.get("ok"))
        else:
            return self.connection.reply(topic, message.correlation, reply)
        return None

    def read(self, read: ReadCommand) -> Reply:
        """The reply to a read command."""
        if isinstance(read, TraceGet):
            return self.trace(read)
        return self.view(read)

    def trace(self, get: TraceGet) -> Reply:
        """The reply to `trace.get`: the execution's lineage from the log (`att-jm audit
        trace`'s JSON), at most `view_max_bytes` long."""
        if self.log is None:
            return error_reply(AttJmError("this store cannot be read for traces"))
        try:
            found = trace(self.log, get.id)
        except AuditError as error:
            return error_reply(NotFound(lim.cut(str(error), lim.MAX_REASON_CHARS)))
        body = orjson.dumps(found.to_json())
        if len(body) > self.view_max_bytes:
            return error_reply(TooLarge(
                f"the trace of {lim.shown(get.id)} is {len(body)} bytes, over the "
                f"{self.view_max_bytes} of a reply: `att-jm audit trace` shows it whole"))
        return {"ok": True, "result": orjson.Fragment(body)}

    def view(self, get: ViewsGet) -> Reply:
        """The reply to `views.get`: the view message as published (from the views' cache of
        encoded rows), a page of it, or one row in full."""
        rows, max_bytes = self.view_rows, self.view_max_bytes
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
