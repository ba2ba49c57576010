"""The Job aggregate: a registered automation script and the trigger that runs it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from att_jm.domain.commands import JobSpec
from att_jm.domain.ids import job_id
from att_jm.domain.matching import json_equal
from att_jm.errors import Conflict, NotFound


class Job(Aggregate):
    """A job; removed jobs keep their aggregate so the name can be added again."""

    TOPIC = "att_jm:Job"

    class Created(Aggregate.Created):
        """The base of the creation event (the library wants one per aggregate)."""

        TOPIC = "att_jm:Job.Created"

    class Added(Created):
        TOPIC = "att_jm:Job.Added"
        name: str
        script: str
        trigger: str
        match: dict[str, Any] | None
        command: str | None
        timeout_seconds: float
        enabled: bool
        actor: str
        retry: dict[str, Any] | None = None  # absent from logs written before retries

    class Updated(Aggregate.Event):
        """`changes` holds only the fields that changed, with their new values."""

        TOPIC = "att_jm:Job.Updated"
        changes: dict[str, Any]
        actor: str

        def apply(self, aggregate: Any) -> None:
            for key, value in self.changes.items():
                setattr(aggregate, key, value)
            aggregate.updated_at = self.timestamp

    class Removed(Aggregate.Event):
        TOPIC = "att_jm:Job.Removed"
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.removed = True
            aggregate.updated_at = self.timestamp

    class Readded(Aggregate.Event):
        """A removed job's name added again, with a whole new definition."""

        TOPIC = "att_jm:Job.Readded"
        definition: dict[str, Any]
        actor: str

        def apply(self, aggregate: Any) -> None:
            for key, value in self.definition.items():
                setattr(aggregate, key, value)
            aggregate.removed = False
            aggregate.created_at = self.timestamp
            aggregate.updated_at = self.timestamp

    def __init__(
        self,
        name: str,
        script: str,
        trigger: str,
        match: dict[str, Any] | None,
        command: str | None,
        timeout_seconds: float,
        enabled: bool,
        actor: str,
        retry: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.script = script
        self.trigger = trigger
        self.match = match
        self.command = command
        self.timeout_seconds = timeout_seconds
        self.enabled = enabled
        self.retry = retry
        self.removed = False
        self.created_at: datetime = self.created_on
        self.updated_at: datetime = self.created_on

    @classmethod
    def add(cls, spec: JobSpec, actor: str, at: datetime) -> Job:
        return cls._create(
            cls.Added, id=job_id(spec.name), name=spec.name, actor=actor, timestamp=at,
            **spec.fields(),
        )

    def readd(self, spec: JobSpec, actor: str, at: datetime) -> None:
        if not self.removed:
            raise Conflict(f"a job named {self.name!r} already exists")
        self.trigger_event(self.Readded, definition=spec.fields(), actor=actor, timestamp=at)

    def update(self, changes: dict[str, Any], actor: str, at: datetime) -> dict[str, Any]:
        """Apply the fields that differ; returns them (empty: nothing changed, no event)."""
        self._check_exists()
        # JSON equality: Python's `1 == True` would hide a match change from 1 to true.
        changed = {
            key: value for key, value in changes.items()
            if not json_equal(getattr(self, key), value)
        }
        if changed:
            self.trigger_event(self.Updated, changes=changed, actor=actor, timestamp=at)
        return changed

    def remove(self, actor: str, at: datetime) -> None:
        self._check_exists()
        self.trigger_event(self.Removed, actor=actor, timestamp=at)

    def _check_exists(self) -> None:
        if self.removed:
            raise NotFound(f"no job named {self.name!r}")

    @property
    def spec(self) -> JobSpec:
        return JobSpec(
            name=self.name,
            script=self.script,
            trigger=self.trigger,
            match=self.match,
            command=self.command,
            timeout_seconds=self.timeout_seconds,
            enabled=self.enabled,
            retry=getattr(self, "retry", None),
        )
