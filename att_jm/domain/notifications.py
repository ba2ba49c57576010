"""Notifications received (payload kept for audit and dry runs) and inputs rejected."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from att_jm.domain.ids import notification_id

CHANNEL_MANAGER = "channel-manager"


class Notification(Aggregate):
    """One notification id, received once; it names the executions it enqueued."""

    TOPIC = "att_jm:Notification"

    class Created(Aggregate.Created):
        """The base of the creation event (the library wants one per aggregate)."""

        TOPIC = "att_jm:Notification.Created"

    class Received(Created):
        TOPIC = "att_jm:Notification.Received"
        notification_id: str
        trigger: str
        payload: dict[str, Any]
        enqueued: list[dict[str, str]]
        skipped: list[dict[str, str]]
        actor: str
        #: Published retained (the broker keeps it as its trigger's copy): stored only then,
        #: as `"retained": true`; every other notification reads this default.
        retained = False

    def __init__(
        self,
        notification_id: str,
        trigger: str,
        payload: dict[str, Any],
        enqueued: list[dict[str, str]],
        skipped: list[dict[str, str]],
        actor: str,
    ) -> None:
        self.notification_id = notification_id
        self.trigger = trigger
        self.payload = payload
        self.enqueued = enqueued
        self.skipped = skipped

    @classmethod
    def receive(
        cls,
        nid: str,
        trigger: str,
        payload: dict[str, Any],
        enqueued: list[dict[str, str]],
        skipped: list[dict[str, str]],
        at: datetime,
    ) -> Notification:
        return cls._create(
            cls.Received, id=notification_id(nid), notification_id=nid, trigger=trigger,
            payload=payload, enqueued=enqueued, skipped=skipped, actor=CHANNEL_MANAGER,
            timestamp=at,
        )

    @classmethod
    def received_event(
        cls,
        key: UUID,
        nid: str,
        trigger: str,
        payload: dict[str, Any],
        enqueued: list[dict[str, str]],
        skipped: list[dict[str, str]],
        at: datetime,
        *,
        retained: bool = False,
    ) -> Notification.Received:
        """The event `receive()` records (`key` = `notification_id(nid)`), without building
        the aggregate, which nothing reads again: the notification hot path. `retained`: it
        was published retained (then, only then, its state holds `"retained": true`)."""
        event = cls.Received(  # type: ignore[call-arg]  # the library makes the fields a dataclass __init__ at runtime
            originator_id=key, originator_version=cls.INITIAL_VERSION, timestamp=at,
            originator_topic=cls.TOPIC, notification_id=nid, trigger=trigger, payload=payload,
            enqueued=enqueued, skipped=skipped, actor=CHANNEL_MANAGER,
        )
        if retained:  # a frozen event: set as the library's decoder sets what it stored
            object.__setattr__(event, "retained", True)
        return event


class Rejection(Aggregate):
    """An inbound message that was refused, with why (bad notification or bad command)."""

    TOPIC = "att_jm:Rejection"

    class Created(Aggregate.Created):
        """The base of the creation event (the library wants one per aggregate)."""

        TOPIC = "att_jm:Rejection.Created"

    class Rejected(Created):
        TOPIC = "att_jm:Rejection.Rejected"
        source: str
        topic: str
        code: str
        reason: str
        size: int
        excerpt: str
        actor: str

    def __init__(
        self, source: str, topic: str, code: str, reason: str, size: int, excerpt: str, actor: str
    ) -> None:
        self.source = source
        self.reason = reason

    @classmethod
    def reject(
        cls,
        rejection_id: UUID,
        source: str,
        topic: str,
        code: str,
        reason: str,
        payload: bytes,
        actor: str,
        at: datetime,
    ) -> Rejection:
        return cls._create(
            cls.Rejected, id=rejection_id, source=source, topic=topic, code=code, reason=reason,
            size=len(payload), excerpt=payload[:512].decode("utf-8", "replace"), actor=actor,
            timestamp=at,
        )


class CommandRecord(Aggregate):
    """An operator command that was handled, with its reply (a redelivery gets it again)."""

    TOPIC = "att_jm:CommandRecord"

    class Created(Aggregate.Created):
        """The base of the creation event (the library wants one per aggregate)."""

        TOPIC = "att_jm:CommandRecord.Created"

    class Handled(Created):
        TOPIC = "att_jm:CommandRecord.Handled"
        actor: str
        command: str
        correlation: str
        reply: dict[str, Any]

    def __init__(self, actor: str, command: str, correlation: str, reply: dict[str, Any]) -> None:
        self.actor = actor
        self.command = command
        self.reply = reply

    @classmethod
    def handled(
        cls, record_id: UUID, actor: str, command: str, correlation: bytes,
        reply: dict[str, Any], at: datetime,
    ) -> CommandRecord:
        return cls._create(
            cls.Handled, id=record_id, actor=actor, command=command,
            correlation=correlation.hex(), reply=reply, timestamp=at,
        )
