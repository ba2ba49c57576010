"""From a message to the use case: its topic says whether it is a notification or a
command (and whose), `att_jm.topics` parses it."""

from __future__ import annotations

from typing import Any

import structlog

from att_jm.application import JobManager, UnitOfWork
from att_jm.domain import limits as lim
from att_jm.domain.commands import ReadCommand
from att_jm.domain.matching import check_topic_level
from att_jm.errors import InvalidInput
from att_jm.mqtt.adapter import Inbound
from att_jm.service.units import internal_error
from att_jm.topics import CommandTopic, NotificationTopic, Topics

log = structlog.get_logger("att_jm")

Reply = dict[str, Any]


class Router:
    """Hands each message to the Job Manager's use case for it."""

    def __init__(self, topics: Topics, manager: JobManager) -> None:
        self.topics = topics
        self.manager = manager
        #: The batch's `command.handled` log lines, written once its replies are sent.
        self.handled: list[tuple[bool, dict[str, Any]]] = []

    def route(self, uow: UnitOfWork, message: Inbound) -> Reply | ReadCommand | None:
        """Handle `message` in `uow`: a command's reply (None for a notification)."""
        try:
            topic = message.topic.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("message.bad_topic", topic=message.topic[:200].hex())
            return None
        parsed = self.topics.parse(topic)
        if isinstance(parsed, NotificationTopic):
            outcome = self.manager.receive_notification(uow, parsed.trigger, topic,
                                                        message.payload, retained=message.retain)
            log.debug("notification.handled", topic=topic, outcome=outcome)
            return None
        if isinstance(parsed, CommandTopic):
            return self._command(uow, message, topic, parsed)
        log.warning("message.unexpected_topic", topic=topic)
        return None

    def record_failure(self, uow: UnitOfWork, item: Inbound, error: BaseException) -> Reply | None:
        """Record message `item` as rejected because handling it failed with `error`; the
        error reply for a command (None for a notification or another topic)."""
        failure = internal_error(error)
        topic = item.topic.decode("utf-8", "replace")
        parsed = self.topics.parse(topic)
        if isinstance(parsed, CommandTopic):
            return self.manager.reject_command(uow, topic, failure, item.payload, parsed.actor)
        if isinstance(parsed, NotificationTopic):
            self.manager.reject_notification(uow, topic, failure, item.payload)
        return None

    def log_handled(self) -> None:
        """The batch's `command.handled` lines (after the replies: requesters wait for them)."""
        for ok, fields in self.handled:
            (log.info if ok else log.warning)("command.handled", **fields)
        self.handled.clear()

    def _command(
        self, uow: UnitOfWork, message: Inbound, topic: str, command: CommandTopic
    ) -> Reply | ReadCommand:
        actor, name = command.actor, command.name
        try:
            check_topic_level(actor, "actor", lim.MAX_ACTOR_CHARS)
        except InvalidInput as error:  # answered like any other bad command, and recorded
            return self.manager.reject_command(uow, topic, error, message.payload, actor)
        reply = self.manager.handle_command(
            uow, actor, name, topic, message.payload, message.correlation
        )
        if isinstance(reply, dict):
            self.handled.append((bool(reply.get("ok")), {
                "actor": actor, "command": name, "ok": reply.get("ok"),
                "error": reply.get("error"),
            }))
        return reply
