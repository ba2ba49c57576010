"""Rejections: a refused message is recorded (who, what, why, its payload), never dropped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import structlog

from att_jm.application.unit import UnitOfWork
from att_jm.domain import limits as lim
from att_jm.domain.notifications import Rejection
from att_jm.errors import AttJmError, InvalidInput

log = structlog.get_logger("att_jm")


class Rejections:
    """Records refusals in the unit of work."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock

    def reject(
        self, uow: UnitOfWork, source: str, topic: str, error: AttJmError, payload: bytes,
        actor: str, *, rejection_id: UUID | None = None,
    ) -> None:
        reason = lim.cut(error.message, lim.MAX_REASON_CHARS)
        rejection = Rejection.reject(
            rejection_id or uuid4(), source, lim.cut(topic, lim.MAX_TOPIC_SHOWN_CHARS),
            error.code, reason, payload, lim.cut(actor, lim.MAX_ACTOR_CHARS), self.clock(),
        )
        uow.touch(rejection)
        log.warning(f"{source}.rejected", topic=topic, code=error.code, reason=reason)


def check_depth(value: Any, limit: int = lim.MAX_JSON_DEPTH, *, text: bytes | None = None) -> None:
    """Refuse JSON nested deeper than `limit` objects/arrays: it would be accepted and then
    fail every commit of its batch (orjson writes at most 254 levels, and an event nests a
    payload a few levels deeper).

    `text`: the JSON `value` was parsed from. Each level opens with a `{` or a `[`, so a
    text with no more of them than `limit` (inside strings too) cannot nest deeper: it is
    not walked (counting bytes is C; the walk is a Python loop per value)."""
    if text is not None and text.count(b"{") + text.count(b"[") <= limit:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            raise InvalidInput(f"JSON nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in item)
