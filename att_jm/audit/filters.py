"""Which events `audit log` shows: time range, types, job, execution, notification, actor.

Filters combine with AND. Type and position filters run in SQL; the others look at each
decoded event. The job, execution and notification filters follow the lineage forward
through the log, so the memory they keep is the ids of the executions they follow:

- `--job NAME`: the job's own events, the notifications that enqueued it or skipped it, the
  executions it enqueued (all their events), and the scheduler's events about those.
- `--execution ID`: its events, the notification that enqueued it, the scheduler's events
  about it, and the operators' command records whose reply names it.
- `--notification ID`: the notification, the executions it enqueued (all their events), and
  the scheduler's events about those.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from att_jm.domain.ids import job_id
from att_jm.log.records import EVENT_TOPICS, Record
from att_jm.log.rows import AuditError

_NOTIFICATION = "att_jm:Notification.Received"
_ENQUEUED = "att_jm:Execution.Enqueued"
_SCHEDULER_TOPICS = frozenset({"att_jm:Scheduler.Dispatched", "att_jm:Scheduler.Released"})
_COMMAND = "att_jm:CommandRecord.Handled"
_JOB_PREFIX = "att_jm:Job."


def topics_for(patterns: Iterable[str]) -> tuple[str, ...]:
    """The stored topics of the event types named (`execution.failed`, `execution.*`, ...)."""
    topics: list[str] = []
    for pattern in patterns:
        found = [t for name, t in EVENT_TOPICS.items() if fnmatch.fnmatchcase(name, pattern)]
        if not found:
            raise AuditError(
                f"no event type matches {pattern!r}; types: {', '.join(EVENT_TOPICS)}"
            )
        topics.extend(t for t in found if t not in topics)
    return tuple(topics)


@dataclass
class LogFilter:
    """The `audit log` options; `since` is inclusive, `until` exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()
    job: str | None = None
    execution: str | None = None
    notification: str | None = None
    actor: str | None = None
    after: int | None = None  # positions (after, upto]
    upto: int | None = None
    _executions: set[str] = field(default_factory=set)  # followed lineage
    _job_aggregate: str = ""

    def __post_init__(self) -> None:
        if self.job is not None:
            self._job_aggregate = str(job_id(self.job))

    @property
    def topics(self) -> tuple[str, ...]:
        return topics_for(self.types) if self.types else ()

    def select(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            if self.since is not None and record.at < self.since:
                continue
            if self.until is not None and record.at >= self.until:
                continue
            if self.actor is not None and record.actor != self.actor:
                continue
            if self._related(record):
                yield record

    def _related(self, record: Record) -> bool:
        """Whether the record belongs to the job / execution / notification asked for."""
        if self.job is not None and not self._of_job(record):
            return False
        if self.execution is not None and not self._of_execution(record):
            return False
        return self.notification is None or self._of_notification(record)

    def _follow(self, record: Record, keep: bool) -> bool:
        if keep and record.topic == _ENQUEUED:
            self._executions.add(record.aggregate_id)
        return keep

    def _of_job(self, r: Record) -> bool:
        s = r.state
        if r.topic.startswith(_JOB_PREFIX):
            return r.aggregate_id == self._job_aggregate
        if r.topic == _ENQUEUED:
            return self._follow(r, s.get("job") == self.job)
        if r.topic == _NOTIFICATION:
            return any(_named(e, "job", self.job) for e in [*s["enqueued"], *s["skipped"]])
        return self._in_lineage(r)

    def _of_notification(self, r: Record) -> bool:
        s = r.state
        if r.topic == _NOTIFICATION:
            return bool(s.get("notification_id") == self.notification)
        if r.topic == _ENQUEUED:
            return self._follow(r, s.get("notification_id") == self.notification)
        return self._in_lineage(r)

    def _of_execution(self, r: Record) -> bool:
        s = r.state
        if r.aggregate_id == self.execution:
            return True
        if r.topic == _NOTIFICATION:
            return any(_named(e, "execution_id", self.execution) for e in s["enqueued"])
        if r.topic in _SCHEDULER_TOPICS:
            return bool(s.get("execution_id") == self.execution)
        if r.topic == _COMMAND:
            return bool(_reply_id(s) == self.execution)
        return False

    def _in_lineage(self, r: Record) -> bool:
        if r.aggregate_id in self._executions:
            return True
        return r.topic in _SCHEDULER_TOPICS and r.state.get("execution_id") in self._executions


def _named(entry: Any, key: str, value: str | None) -> bool:
    return isinstance(entry, dict) and entry.get(key) == value


def _reply_id(state: dict[str, Any]) -> Any:
    reply = state.get("reply")
    result = reply.get("result") if isinstance(reply, dict) else None
    return result.get("id") if isinstance(result, dict) else None
