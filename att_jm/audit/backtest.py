"""Backtest: a draft job evaluated against the stored notifications, with no side effects.

The draft is validated like `job.add` (same parser) and evaluated with the service's own
rules (`matches`, `fill_template`): a notification whose trigger equals the job's and whose
fields satisfy its `match` would have enqueued it with the Command built from the template,
unless the template names a field the notification lacks (then it would have been skipped,
with that reason). Nothing is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from att_jm.domain import commands as cmd
from att_jm.domain.matching import fill_template, matches
from att_jm.domain.times import iso
from att_jm.errors import InvalidInput
from att_jm.log.records import Record, decode
from att_jm.log.rows import AuditError, StoreReader

NOTIFICATION_TOPIC: Final = "att_jm:Notification.Received"
DRAFT: Final = "draft"


def draft_job(args: dict[str, Any]) -> cmd.JobSpec:
    """The draft as `job.add` would take it (name and script default to "draft")."""
    try:
        return cmd.parse_job_add({"name": DRAFT, "script": DRAFT, **args}).spec
    except InvalidInput as error:
        raise AuditError(f"invalid draft job: {error.message}") from None


@dataclass
class Outcome:
    """What the draft would have done with one stored notification."""

    notification_id: str
    trigger: str
    position: int
    at: str
    enqueued: bool
    command: str | None
    reason: str | None
    actual: list[str]  # the jobs the notification really enqueued

    def to_json(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id, "trigger": self.trigger,
            "position": self.position, "at": self.at,
            "outcome": "enqueue" if self.enqueued else "skip",
            "command": self.command, "reason": self.reason, "actually_enqueued": self.actual,
        }


@dataclass
class Counts:
    """Totals of one backtest."""

    notifications: int = 0  # stored notifications in the range
    trigger: int = 0  # ... with the draft's trigger
    matched: int = 0  # ... whose fields satisfy its match
    enqueued: int = 0  # ... that would have enqueued it
    skipped: int = 0  # ... that would have skipped it (template field missing)
    first: int | None = None  # positions scanned
    last: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Backtest:
    """A draft job against the notifications stored in a time and position range."""

    job: cmd.JobSpec
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    upto: int | None = None
    counts: Counts = field(default_factory=Counts)

    def run(self, reader: StoreReader) -> Iterator[Outcome]:
        """The outcome of every matching notification, in log order; counts as it goes."""
        upto = reader.max_position() if self.upto is None else self.upto
        for row in reader.rows(self.after, upto, (NOTIFICATION_TOPIC,)):
            record = decode(row)
            if self.since is not None and record.at < self.since:
                continue
            if self.until is not None and record.at >= self.until:
                continue
            outcome = self.evaluate(record)
            if outcome is not None:
                yield outcome

    def evaluate(self, record: Record) -> Outcome | None:
        s = record.state
        counts = self.counts
        counts.notifications += 1
        counts.first = record.position if counts.first is None else counts.first
        counts.last = record.position
        if s["trigger"] != self.job.trigger:
            return None
        counts.trigger += 1
        payload = s["payload"]
        if not matches(self.job.match, payload):
            return None
        counts.matched += 1
        command, reason = None, None
        try:
            command = fill_template(self.job.command, payload)
            counts.enqueued += 1
        except InvalidInput as error:
            reason = error.message
            counts.skipped += 1
        return Outcome(
            notification_id=s["notification_id"], trigger=s["trigger"],
            position=record.position, at=iso(record.at), enqueued=command is not None,
            command=command, reason=reason,
            actual=[str(e.get("job")) for e in s["enqueued"] if isinstance(e, dict)],
        )
