"""The operators' commands: each parsed into its type, then handled by the handler that
type maps to (`HANDLERS`); a command with CorrelationData is handled once (its reply is
recorded and a redelivery gets it again)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from att_jm.application.model import WriteModel
from att_jm.application.rejections import Rejections, check_depth
from att_jm.application.replies import error_reply, job_row, ok_reply
from att_jm.application.scheduling import Scheduling
from att_jm.application.unit import UnitOfWork
from att_jm.domain import commands as cmd
from att_jm.domain import limits as lim
from att_jm.domain.executions import Execution
from att_jm.domain.ids import command_id, job_id
from att_jm.domain.jobs import Job
from att_jm.domain.limits import cut, shown
from att_jm.domain.notifications import CommandRecord
from att_jm.domain.ratelimit import TokenBuckets
from att_jm.domain.scheduler import TABLES
from att_jm.errors import (
    AttJmError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    TooLarge,
)

Reply = dict[str, Any]

#: What each entry command does to its execution (the domain checks that it may).
ENTRY_ACTIONS: dict[str, Callable[[Execution, str, datetime], None]] = {
    "queue.remove": Execution.remove_from_queue,
    "queue.execute-now": Execution.send_to_front,
    "executed.remove": Execution.remove_from_executed,
    "failed.execute": Execution.reexecute,
    "failed.delete": Execution.delete_from_failed,
}


class Commands:
    """The command use cases."""

    def __init__(
        self, model: WriteModel, rejections: Rejections, scheduling: Scheduling, *,
        check_script: Callable[[str], object], clock: Callable[[], datetime],
        max_payload_bytes: int, may_send: Callable[[str, str], bool] | None = None,
        rate: TokenBuckets | None = None,
    ) -> None:
        self.model = model
        self.rejections = rejections
        self.scheduling = scheduling
        self.check_script = check_script
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes
        #: (actor, command) -> whether that actor's role allows it; None: no roles (every
        #: actor may send every command: a broker whose ACL alone decides).
        self.may_send = may_send
        self.rate = rate
        #: actor -> (second of the last recorded refusal, refusals since then not recorded)
        self._limited: dict[str, tuple[int, int]] = {}
        self.handlers: dict[type, Callable[[UnitOfWork, Any, str, datetime], Any]] = {
            cmd.JobAdd: self._job_add,
            cmd.JobUpdate: self._job_update,
            cmd.JobRemove: self._job_remove,
            cmd.EntryCommand: self._entry_command,
            cmd.SettingsSet: self._settings_set,
            cmd.CleanupRun: self._cleanup_run,
        }

    def handle(
        self, uow: UnitOfWork, actor: str, name: str, topic: str, payload: bytes,
        correlation: bytes | None,
    ) -> Reply | cmd.ReadCommand:
        """The reply to a command, or the read command (`views.get`, `trace.get`) to answer
        once the batch is committed."""
        if correlation is not None and len(correlation) > lim.MAX_CORRELATION_BYTES:
            return self.reject(uow, topic, InvalidInput(
                f"CorrelationData must be at most {lim.MAX_CORRELATION_BYTES} bytes, "
                f"not {len(correlation)}"), payload, actor)
        # Empty CorrelationData identifies nothing: such commands are not deduplicated.
        record = command_id(actor, correlation) if correlation else None
        done = self._handled_before(uow, record)
        if done is None:
            done = self._refused(uow, actor, name, topic, payload)
        if done is not None:
            return done
        try:
            command = self._parse(name, payload)
            if isinstance(command, cmd.ViewsGet | cmd.TraceGet):
                return command
            reply = ok_reply(self.handlers[type(command)](uow, command, actor, self.clock()))
        except AttJmError as error:
            uow.discard()
            reply = error_reply(error)
            if record is None:
                self.rejections.reject(uow, "command", topic, error, payload, actor)
        if record is not None and correlation:
            uow.collect()
            uow.touch(CommandRecord.handled(record, actor, name, correlation, reply, self.clock()))
            uow.replies[record] = reply
        return reply

    def reject(
        self, uow: UnitOfWork, topic: str, error: AttJmError, payload: bytes, actor: str
    ) -> Reply:
        """Record a command refused before it reached its handler (e.g. a bad actor level);
        its error reply."""
        self.rejections.reject(uow, "command", topic, error, payload, actor)
        return error_reply(error)

    # Before the handler --------------------------------------------------------------------

    def _handled_before(self, uow: UnitOfWork, record: UUID | None) -> Reply | None:
        """The stored reply of a command handled before (a redelivery), else None."""
        if record is None:
            return None
        if record in uow.replies:
            return uow.replies[record]
        if self.model.exists(record):
            stored: CommandRecord = self.model.app.repository.get(record)
            return stored.reply
        return None

    def _refused(
        self, uow: UnitOfWork, actor: str, name: str, topic: str, payload: bytes
    ) -> Reply | None:
        """The error reply (recorded) when `actor`'s role may not send `name`, or when it is
        over its rate; None when the command may go on."""
        if self.may_send is not None and not self.may_send(actor, name):
            return self.reject(uow, topic, Forbidden(
                f"user {shown(actor)} may not send {shown(name)}: its role does not allow it"),
                payload, actor)
        if self.rate is not None and not self.rate.take(actor, self.clock().timestamp()):
            return self._rate_limited(uow, topic, payload, actor, self.rate)
        return None

    def _rate_limited(
        self, uow: UnitOfWork, topic: str, payload: bytes, actor: str, rate: TokenBuckets
    ) -> Reply:
        """The `rate_limited` reply; recorded, but at most once a second per actor (the
        record says how many more were refused since the last one): a flood over the limit
        must not flood the log instead."""
        error = RateLimited(
            f"more than {lim.plain(rate.rate)} commands a second (bursts of "
            f"{rate.burst}) from {shown(actor)}: try again later"
        )
        second = int(self.clock().timestamp())
        last, unrecorded = self._limited.get(actor, (-1, 0))
        if second == last:
            self._limited[actor] = (last, unrecorded + 1)
            return error_reply(error)
        if len(self._limited) > 10_000:
            self._limited.clear()
        self._limited[actor] = (second, 0)
        recorded = error if not unrecorded else RateLimited(
            f"{error.message} ({unrecorded} more refused since the last record)")
        self.rejections.reject(uow, "command", topic, recorded, payload, actor)
        return error_reply(error)

    def _parse(self, name: str, payload: bytes) -> cmd.Command:
        if len(payload) > self.max_payload_bytes:
            raise TooLarge(f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}")
        try:
            args = orjson.loads(payload) if payload.strip() else {}
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"the arguments are not JSON: {error}") from None
        check_depth(args, text=payload)
        return cmd.parse_command(name, args)

    # The handlers --------------------------------------------------------------------------

    def _job_add(self, uow: UnitOfWork, command: cmd.JobAdd, actor: str, now: datetime) -> Any:
        spec = command.spec
        jobs = self.model.jobs
        if spec.name not in jobs and len(jobs) >= lim.MAX_JOBS:
            raise Conflict(f"at most {lim.MAX_JOBS} jobs can be defined at once: remove one "
                           "first")
        self._check_script(spec.script)
        # A job removed earlier in this batch is only in the unit of work, not yet in the store.
        touched = uow.aggregates.get(job_id(spec.name))
        job = jobs.get(spec.name) or (
            touched if isinstance(touched, Job) else self.model.get_job(spec.name)
        )
        if job is None:
            job = Job.add(spec, actor, now)
        else:
            job.readd(spec, actor, now)
        uow.touch(job)
        jobs[spec.name] = job
        return job_row(job)

    def _job_update(
        self, uow: UnitOfWork, command: cmd.JobUpdate, actor: str, now: datetime
    ) -> Any:
        job = self._existing_job(command.name)
        if "script" in command.changes:
            self._check_script(command.changes["script"])
        job.update(command.changes, actor, now)
        uow.touch(job)
        return job_row(job)

    def _job_remove(
        self, uow: UnitOfWork, command: cmd.JobRemove, actor: str, now: datetime
    ) -> Any:
        job = self._existing_job(command.name)
        job.remove(actor, now)
        uow.touch(job)
        del self.model.jobs[command.name]
        return {"name": command.name, "removed": True}

    def _entry_command(
        self, uow: UnitOfWork, command: cmd.EntryCommand, actor: str, now: datetime
    ) -> Any:
        execution = self.model.execution(uow, command.id)
        ENTRY_ACTIONS[command.command](execution, actor, now)
        uow.touch(execution)
        return {"id": command.id, "status": execution.status, "attempt": execution.attempt}

    def _settings_set(
        self, uow: UnitOfWork, command: cmd.SettingsSet, actor: str, now: datetime
    ) -> Any:
        scheduler = self.model.scheduler
        scheduler.change_settings(command.interval_seconds, command.executed_cleanup,
                                  command.failed_cleanup, actor, now, command.archive)
        uow.touch(scheduler)
        return scheduler.settings_json()

    def _cleanup_run(
        self, uow: UnitOfWork, command: cmd.CleanupRun, actor: str, now: datetime
    ) -> Any:
        tables = TABLES if command.table == "all" else (command.table,)
        return {table: self.scheduling.cleanup(uow, table, actor) for table in tables}

    def _existing_job(self, name: str) -> Job:
        job = self.model.jobs.get(name)
        if job is None:
            raise NotFound(f"no job named {name!r}")
        return job

    def _check_script(self, script: str) -> None:
        try:
            self.check_script(script)
        except Exception as error:  # noqa: BLE001 -- the port raises its own refusal type
            raise InvalidInput(f"script {shown(script)}: {cut(str(error), 300)}") from None
