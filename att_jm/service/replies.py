"""Replies: on the request's ResponseTopic, before the batch's acknowledgements."""

from __future__ import annotations

from typing import Any

import structlog

from att_jm.domain.commands import ReadCommand
from att_jm.log.rows import StoreReader
from att_jm.metrics.shared import WriterStats
from att_jm.mqtt.adapter import Inbound, ServiceConnection
from att_jm.service.inbox import Inbox
from att_jm.service.reads import Reads
from att_jm.topics import CommandTopic, Topics
from projections.views import Views

log = structlog.get_logger("att_jm")

#: After a batch's replies: how long the relay's wake-up and the views wait for their PUBACKs.
REPLY_WAIT_SECONDS = 0.002

Reply = dict[str, Any]


class Replies:
    """Sends replies and acknowledgements; answers the read commands (`Reads`)."""

    def __init__(
        self, *, connection: ServiceConnection, topics: Topics, inbox: Inbox, views: Views,
        view_rows: int, view_max_bytes: int, stats: WriterStats,
        log: StoreReader | None = None,
    ) -> None:
        self.connection = connection
        self.topics = topics
        self.inbox = inbox
        self.reads = Reads(views=views, log=log, view_rows=view_rows,
                           view_max_bytes=view_max_bytes)
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
        """Reply on the request's ResponseTopic, which must lie under the requester's own
        reply tree, `P/job-manager/replies/{actor}/` (`{actor}` of the command's topic).

        The shipped ACL lets the service write only under `replies/`, and mosquitto
        disconnects a client whose publish it denies; and each user reads only its own tree:
        a reply elsewhere is logged, never sent.
        """
        self.stats.replied(reply)
        topic = message.response_topic
        if not topic:
            log.info("command.done_without_reply_topic", ok=reply.get("ok"))
        elif not self.topics.is_reply(topic, self._actor(message)):
            log.warning("command.reply_topic_refused", response_topic=topic, ok=reply.get("ok"))
        else:
            return self.connection.reply(topic, message.correlation, reply)
        return None

    def _actor(self, message: Inbound) -> str:
        """The actor of the command `message` ("" when its topic names none: no reply topic
        is then anyone's)."""
        try:
            parsed = self.topics.parse(message.topic.decode())
        except UnicodeDecodeError:
            return ""
        return parsed.actor if isinstance(parsed, CommandTopic) else ""

    def read(self, read: ReadCommand) -> Reply:
        """The reply to a read command (`views.get`, `trace.get`)."""
        return self.reads.read(read)
