"""Receiving a notification: store it once, enqueue the jobs it triggers.

A notification id is taken once: a redelivery (same trigger and payload) is a duplicate,
another payload or trigger under a used id is recorded as a `conflict`, never run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import orjson
import structlog

from att_jm.application.model import WriteModel
from att_jm.application.rejections import Rejections, check_depth
from att_jm.application.unit import UnitOfWork
from att_jm.domain import limits as lim
from att_jm.domain.executions import Execution
from att_jm.domain.ids import NAMESPACE, execution_id, notification_id
from att_jm.domain.limits import cut, shown
from att_jm.domain.matching import fill_template, json_equal, matches
from att_jm.domain.notifications import CHANNEL_MANAGER, Notification
from att_jm.errors import AttJmError, Conflict, InvalidInput, TooLarge

log = structlog.get_logger("att_jm")


class Notifications:
    """The notification use cases."""

    def __init__(self, model: WriteModel, rejections: Rejections, *,
                 clock: Callable[[], datetime], max_payload_bytes: int) -> None:
        self.model = model
        self.rejections = rejections
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes
        self._log_archived = False  # rows at the log's start seen gone (`_archived`)

    def prefetch(self, uow: UnitOfWork, payloads: Iterable[bytes]) -> None:
        """Parse these payloads once, and look up in one query which of their notification
        ids are stored already."""
        ids = []
        for payload in payloads:
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            key = None
            if isinstance(body, dict):
                nid = body.get("id")
                if isinstance(nid, str):
                    key = notification_id(nid)
                    ids.append(key)
            uow.parsed[payload] = (body, key)
        uow.stored = self.model.existing(ids) if ids else set()

    def receive(self, uow: UnitOfWork, trigger: str, topic: str, payload: bytes, *,
                retained: bool = False) -> str:
        """Store a notification and enqueue the jobs it triggers; the outcome as a word.
        `retained`: it came with the RETAIN flag (published retained, or the broker's kept
        copy sent at a subscribe)."""
        try:
            body, key = self._parse(uow, payload)
            if len(trigger) > lim.MAX_TRIGGER_CHARS:
                raise InvalidInput(f"the trigger (the topic's last level) must be at most "
                                   f"{lim.MAX_TRIGGER_CHARS} characters")
        except AttJmError as error:
            self.reject(uow, topic, error, payload)
            return "rejected"
        nid = body["id"]
        first = uow.notifications.get(nid)
        if first is None and self._stored(uow, key):
            first = self.model.log.received(key)
            if first is None:  # stored, but not readable as a notification: never run again
                return "duplicate"
        if first is not None:
            if first[0] == trigger and json_equal(first[1], body):
                return "duplicate"  # a redelivery, a retained copy: nothing to do
            return self._conflict(uow, nid, trigger, topic, body, payload, first[0])
        uow.notifications[nid] = (trigger, body)
        if uow.now is None:
            uow.now = self.clock()
        now = uow.now
        enqueued: list[dict[str, str]] = []
        skipped: list[dict[str, str]] = []
        executions: list[Execution.Enqueued] = []
        for job in self.model.jobs.values():
            if not (job.enabled and job.trigger == trigger and matches(job.match, body)):
                continue
            try:
                command = fill_template(job.command, body)
            except InvalidInput as error:
                skipped.append({"job": job.name, "reason": cut(error.message,
                                                               lim.MAX_REASON_CHARS)})
                continue
            entry = execution_id(nid, job.name)
            enqueued.append({"job": job.name, "execution_id": str(entry)})
            executions.append(
                Execution.enqueued_event(
                    entry, job.name, job.script, command, trigger, nid,
                    lim.clamp_timeout(job.timeout_seconds), CHANNEL_MANAGER, now,
                    getattr(job, "retry", None),
                )
            )
        if executions and self._archived(uow) and self._seen_before_archive(
                nid, trigger, executions, retained=retained):
            return "duplicate"
        # Neither aggregate is read again while the service runs: only their events are made.
        uow.add(Notification.received_event(key, nid, trigger, body, enqueued, skipped, now,
                                            retained=retained),
                *executions)
        return f"enqueued {len(executions)}" if executions else "matched none"

    def reject(self, uow: UnitOfWork, topic: str, error: AttJmError, payload: bytes) -> None:
        """Record a notification refused (invalid, too large, or one whose handling failed)."""
        self.rejections.reject(uow, "notification", topic, error, payload, CHANNEL_MANAGER)

    def _seen_before_archive(self, nid: str, trigger: str, executions: list[Execution.Enqueued],
                             *, retained: bool) -> bool:
        """Whether a notification whose record an archival took away was handled before it
        (the log's first rows are gone, its id is not stored); such a copy is logged.

        - A retained copy (the broker sends its trigger's kept copy again at each subscribe)
          that is the last one stored retained on its trigger: the write index keeps that id
          through archivals (`jm_retained`).
        - Rows of its executions are stored, its own record is not (an execution's first rows
          archived, its later ones kept): taken as new it would run its jobs again and
          enqueue under ids whose later versions exist (an execution no one could load).
        """
        if retained and self.model.index.retained(trigger) == nid:
            log.warning("notification.seen_before_archive", notification_id=cut(nid, 200),
                        trigger=cut(trigger, 200), retained=True)
            return True
        if any(self.model.log.has_rows(event.originator_id) for event in executions):
            log.warning("notification.seen_before_archive", notification_id=cut(nid, 200),
                        trigger=cut(trigger, 200))
            return True
        return False

    def _archived(self, uow: UnitOfWork) -> bool:
        """Whether rows at the log's start are gone (read once a batch until they are, then
        known for good: an archival only ever removes rows). Only then can a notification
        whose record is gone have executions whose later rows are stored."""
        if self._log_archived:
            return True
        if uow.archived is None:
            uow.archived = self._log_archived = self.model.log.missing_start()
        return uow.archived

    def _stored(self, uow: UnitOfWork, key: UUID) -> bool:
        if uow.stored is not None:
            return key in uow.stored
        return self.model.exists(key)

    def _conflict(
        self, uow: UnitOfWork, nid: str, trigger: str, topic: str, body: Any, payload: bytes,
        first_trigger: str,
    ) -> str:
        """Record that id `nid` came again with another payload or trigger (once per distinct
        copy: a redelivery of the same conflicting copy is silent); the outcome as a word."""
        digest = hashlib.sha256(
            trigger.encode("utf-8", "surrogatepass") + b"\x00"
            + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        record = uuid5(NAMESPACE, f"conflict:{nid}\x00{digest}")
        if record in uow.conflicts or self.model.exists(record):
            return "duplicate conflict"
        uow.conflicts[record] = None
        where = "the same trigger" if first_trigger == trigger else (
            f"trigger {shown(first_trigger)}")
        error = Conflict(
            f"notification id {shown(nid)} was first received on {where} with another "
            f"payload; this copy (trigger {shown(trigger)}) is recorded, not run"
        )
        self.rejections.reject(uow, "notification", topic, error, payload, CHANNEL_MANAGER,
                               rejection_id=record)
        return "conflict"

    def _parse(self, uow: UnitOfWork, payload: bytes) -> tuple[dict[str, Any], UUID]:
        """The notification's body and aggregate id; AttJmError when it is not valid."""
        if len(payload) > self.max_payload_bytes:
            raise TooLarge(f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}")
        prefetched = uow.parsed.get(payload)
        if prefetched is not None:
            body, key = prefetched
        else:
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"not JSON: {error}") from None
            key = None
        if not isinstance(body, dict):
            raise InvalidInput("the payload must be a JSON object")
        check_depth(body, text=payload)
        nid = body.get("id")
        if not isinstance(nid, str) or not 1 <= len(nid) <= lim.MAX_NOTIFICATION_ID_CHARS:
            raise InvalidInput('"id" must be a string of 1-200 characters')
        return body, key if key is not None else notification_id(nid)
