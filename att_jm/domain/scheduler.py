"""The Scheduler singleton: settings, and each dispatch decision; plus the pure decision rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from att_jm.domain import limits as lim
from att_jm.domain.cleanup import ArchivePolicy, CleanupPolicy
from att_jm.domain.ids import SCHEDULER_ID
from att_jm.domain.times import parse_iso
from att_jm.errors import InvalidInput

DEFAULT_INTERVAL_SECONDS = 5.0
SCHEDULER = "scheduler"
TABLES = ("executed", "failed")


def next_start(
    now: datetime,
    *,
    running: str | None,
    last_finished_at: datetime | None,
    interval_seconds: float,
    candidate_front: bool | None,
) -> datetime | None:
    """When the next queued entry may start: None while one runs or none waits.

    An entry sent to the front starts at once; others wait `interval_seconds`
    after the end of the previous execution.
    """
    if running is not None or candidate_front is None:
        return None
    if candidate_front or last_finished_at is None:
        return now
    # A last end "in the future" (the clock was set back, or a forged log) waits one interval
    # from now at most, never until that moment comes round again.
    last = min(last_finished_at, now)
    return max(now, lim.add_seconds(last, clamp_interval(interval_seconds)))


def clamp_interval(value: Any) -> float:
    """A stored interval forced into its range (older logs may hold any number)."""
    return lim.clamp(value, lim.MIN_INTERVAL_SECONDS, lim.MAX_INTERVAL_SECONDS,
                     DEFAULT_INTERVAL_SECONDS)


class Scheduler(Aggregate):
    """Holds the interval, the cleanup policies, what runs now and when the last run ended."""

    TOPIC = "att_jm:Scheduler"

    class Created(Aggregate.Created):
        TOPIC = "att_jm:Scheduler.Created"

    class SettingsChanged(Aggregate.Event):
        """The whole new settings (not a diff), so replay needs no merging."""

        TOPIC = "att_jm:Scheduler.SettingsChanged"
        interval_seconds: float
        executed_cleanup: dict[str, Any]
        failed_cleanup: dict[str, Any]
        actor: str
        #: Automatic archival (absent from the events written before it existed: off).
        archive: dict[str, Any] | None = None

        def apply(self, aggregate: Any) -> None:
            # Clamped on read: a log written before the ranges existed must still load.
            aggregate.interval_seconds = clamp_interval(self.interval_seconds)
            aggregate.cleanup = {
                "executed": CleanupPolicy.from_json(self.executed_cleanup).to_json(),
                "failed": CleanupPolicy.from_json(self.failed_cleanup).to_json(),
            }
            archive = getattr(self, "archive", None)
            if archive is not None:  # an older event leaves the state as it was (no field):
                # its replay then equals the snapshots an older version took
                aggregate.archive = ArchivePolicy.from_json(archive).to_json()

    class Dispatched(Aggregate.Event):
        TOPIC = "att_jm:Scheduler.Dispatched"
        execution_id: str
        front: bool
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.running = self.execution_id

    class Released(Aggregate.Event):
        """The running execution ended (succeeded, failed or interrupted)."""

        TOPIC = "att_jm:Scheduler.Released"
        execution_id: str
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.running = None
            aggregate.last_finished_at = self.timestamp

    class CleanupRan(Aggregate.Event):
        TOPIC = "att_jm:Scheduler.CleanupRan"
        table: str
        cleanup: str
        removed: int
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.last_cleanup[self.table] = self.timestamp.isoformat()

    def __init__(self) -> None:
        # Plain JSON values only (no dataclasses, no nested datetimes): snapshots store them.
        self.interval_seconds = DEFAULT_INTERVAL_SECONDS
        self.cleanup: dict[str, dict[str, Any]] = {
            "executed": CleanupPolicy().to_json(),
            "failed": CleanupPolicy().to_json(),
        }
        self.running: str | None = None
        self.last_finished_at: datetime | None = None
        self.last_cleanup: dict[str, str] = {}
        # `archive` (automatic archival) is set by the first SettingsChanged that holds it:
        # until then the state, and its snapshots, are those of the versions before it (off).

    def policy(self, table: str) -> CleanupPolicy:
        return CleanupPolicy.from_json(self.cleanup.get(table, {}))

    def archive_policy(self) -> ArchivePolicy:
        """Automatic archival (a snapshot taken before it existed has none: off)."""
        return ArchivePolicy.from_json(getattr(self, "archive", None))

    @classmethod
    def create(cls, at: datetime) -> Scheduler:
        return cls._create(cls.Created, id=SCHEDULER_ID, timestamp=at)

    def settings_json(self) -> dict[str, Any]:
        return {
            "interval_seconds": clamp_interval(self.interval_seconds),
            "executed_cleanup": self.policy("executed").to_json(),
            "failed_cleanup": self.policy("failed").to_json(),
            "archive": self.archive_policy().to_json(),
        }

    def change_settings(
        self,
        interval_seconds: float | None,
        executed_cleanup: dict[str, Any] | None,
        failed_cleanup: dict[str, Any] | None,
        actor: str,
        at: datetime,
        archive: dict[str, Any] | None = None,
    ) -> bool:
        """Merge the given values into the settings; False (no event) when nothing changes."""
        policies = {}
        for table, given in (("executed", executed_cleanup), ("failed", failed_cleanup)):
            policy = replace(self.policy(table), **(given or {}))
            if policy.max_rows is None and policy.max_age_days is None:
                raise InvalidInput(
                    f"{table}_cleanup: at least one of max_rows / max_age_days must stay set"
                )
            policies[table] = policy
        current = clamp_interval(self.interval_seconds)
        interval = current if interval_seconds is None else interval_seconds
        unchanged = all(policies[t].to_json() == self.cleanup.get(t) for t in TABLES)
        archival = replace(self.archive_policy(), **(archive or {})).to_json()
        if interval == current and unchanged and archival == self.archive_policy().to_json():
            return False
        self.trigger_event(
            self.SettingsChanged, interval_seconds=interval,
            executed_cleanup=policies["executed"].to_json(),
            failed_cleanup=policies["failed"].to_json(), actor=actor, timestamp=at,
            archive=archival,
        )
        return True

    def next_start(self, now: datetime, candidate_front: bool | None) -> datetime | None:
        return next_start(
            now, running=self.running, last_finished_at=self.last_finished_at,
            interval_seconds=self.interval_seconds, candidate_front=candidate_front,
        )

    def dispatch(self, execution_id: str, front: bool, at: datetime) -> None:
        if self.running is not None:
            raise RuntimeError(f"cannot dispatch {execution_id}: {self.running} is running")
        self.trigger_event(
            self.Dispatched, execution_id=execution_id, front=front, actor=SCHEDULER, timestamp=at
        )

    def release(self, execution_id: str, at: datetime) -> None:
        if self.running == execution_id:
            self.trigger_event(
                self.Released, execution_id=execution_id, actor=SCHEDULER, timestamp=at
            )

    def cleanup_due(self, table: str, now: datetime) -> datetime:
        """When the periodic cleanup of `table` is next due."""
        last = self.last_cleanup.get(table)
        if last is None:
            return now
        try:
            ran = parse_iso(last)
        except (TypeError, ValueError):  # not a time at all (a corrupt snapshot): due now
            return now
        # A last run "in the future" (the clock was set back) counts as now: one period away.
        return lim.add_seconds(min(ran, now), self.policy(table).every_seconds)

    def record_cleanup(
        self, table: str, cleanup: str, removed: int, actor: str, at: datetime
    ) -> None:
        self.trigger_event(
            self.CleanupRan, table=table, cleanup=cleanup, removed=removed, actor=actor,
            timestamp=at,
        )
