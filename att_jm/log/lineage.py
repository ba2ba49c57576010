"""The lineage of one execution, from the log alone.

notification (with its payload) -> the job as it was defined then, and its trigger ->
enqueued (the Command built) -> every attempt (start, end, Result, Feedback) -> every
operator action (with the actor and the command that did it) -> cleanup.

The execution's own events are read by aggregate id (an index lookup), as are the
notification's and the job's. The scheduler's dispatch/release events and the operators'
command records are stored in the same transaction as the execution event they go with, so
they are looked for in a few positions around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

from att_jm.domain.ids import job_id, notification_id
from att_jm.domain.times import iso
from att_jm.log.messages import record_message
from att_jm.log.records import Record, decode
from att_jm.log.rows import AuditError, StoreReader
from att_jm.vocabulary import EntryState


def execution_key(value: str) -> str:
    """An execution id as the log shows it (dashed UUID); AuditError when it is not one."""
    try:
        return str(UUID(value))
    except ValueError:
        raise AuditError(f"{value!r} is not an execution id (a UUID)") from None

WINDOW: Final = 8  # positions searched on each side of an execution event
_NEAR: Final = (
    "att_jm:Scheduler.Dispatched", "att_jm:Scheduler.Released", "att_jm:CommandRecord.Handled",
)
_ACTIONS: Final = {
    "att_jm:Execution.RemovedFromQueue": "queue.remove",
    "att_jm:Execution.SentToFront": "queue.execute-now",
    "att_jm:Execution.Reexecuted": "failed.execute",
    "att_jm:Execution.RemovedFromExecuted": "executed.remove",
    "att_jm:Execution.DeletedFromFailed": "failed.delete",
}
_STATUS: Final = {
    "att_jm:Execution.Enqueued": EntryState.QUEUED,
    "att_jm:Execution.Started": EntryState.RUNNING,
    "att_jm:Execution.Succeeded": EntryState.EXECUTED,
    "att_jm:Execution.Failed": EntryState.FAILED,
    "att_jm:Execution.Reexecuted": EntryState.QUEUED,
    "att_jm:Execution.RemovedFromQueue": "removed from the queue",
    "att_jm:Execution.RemovedFromExecuted": "removed from executed",
    "att_jm:Execution.DeletedFromFailed": "deleted from failed",
    "att_jm:Execution.CleanedUp": "cleaned up",
}
_JOB_FIELDS: Final = ("script", "trigger", "match", "command", "timeout_seconds", "enabled")


def _moment(record: Record) -> dict[str, Any]:
    return {"position": record.position, "at": iso(record.at)}


@dataclass
class Trace:
    """Everything the log says about one execution (`to_json()` is the `--json` output)."""

    execution_id: str
    status: str
    notification: dict[str, Any] | None
    job: dict[str, Any] | None
    enqueued: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    cleanup: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id, "status": self.status,
            "notification": self.notification, "job": self.job, "enqueued": self.enqueued,
            "attempts": self.attempts, "actions": self.actions, "cleanup": self.cleanup,
            "events": self.events,
        }


def trace(reader: StoreReader, execution: str) -> Trace:
    """The lineage of execution `execution` (its id); AuditError when the log has none."""
    key = execution_key(execution)
    own = [decode(row) for row in reader.aggregate(UUID(key).hex)]
    if not own or own[0].topic != "att_jm:Execution.Enqueued":
        raise AuditError(f"the log has no execution {key}")
    first = own[0]
    notification = _notification(reader, first.state["notification_id"])
    job = _job(reader, str(first.state["job"]), first.position)
    near = _near(reader, key, own)
    result = Trace(
        execution_id=key,
        status=_STATUS.get(own[-1].topic, own[-1].type),
        notification=None if notification is None else _notification_json(notification),
        job=job,
        enqueued={
            **_moment(first), "actor": first.actor,
            **{k: first.state[k] for k in ("job", "trigger", "command", "script",
                                           "timeout_seconds")},
        },
    )
    _walk(result, own, near)
    lineage = [*([] if notification is None else [notification]), *own, *near]
    result.events = [record_message(r) for r in sorted(lineage, key=lambda r: r.position)]
    return result


def _notification(reader: StoreReader, nid: str) -> Record | None:
    rows = reader.aggregate(notification_id(nid).hex)
    return decode(rows[0]) if rows else None


def _notification_json(record: Record) -> dict[str, Any]:
    s = record.state
    return {
        "id": s["notification_id"], "trigger": s["trigger"], **_moment(record),
        "actor": record.actor, "payload": s["payload"], "enqueued": s["enqueued"],
        "skipped": s["skipped"],
    }


def _job(reader: StoreReader, name: str, upto: int) -> dict[str, Any] | None:
    """The job's definition as of position `upto`, and the event that last changed it."""
    definition: dict[str, Any] = {}
    last: Record | None = None
    removed = False
    for row in reader.aggregate(job_id(name).hex, upto=upto):
        record = decode(row)
        s = record.state
        if record.topic == "att_jm:Job.Added":
            definition = {k: s[k] for k in _JOB_FIELDS}
        elif record.topic == "att_jm:Job.Readded":
            definition = {k: s["definition"][k] for k in _JOB_FIELDS}
        elif record.topic == "att_jm:Job.Updated":
            definition.update({k: v for k, v in s["changes"].items() if k in _JOB_FIELDS})
        removed = record.topic == "att_jm:Job.Removed"
        last = record
    if last is None:
        return None
    return {"name": name, "definition": definition, "removed": removed,
            "changed": {**_moment(last), "type": last.type, "actor": last.actor}}


def _near(reader: StoreReader, key: str, own: list[Record]) -> list[Record]:
    """The scheduler events and command records stored with the execution's events."""
    found: dict[int, Record] = {}
    for record in own:
        for row in reader.window(record.position - WINDOW, record.position + WINDOW, _NEAR):
            if row.position in found:
                continue
            near = decode(row)
            if _about(near, key):
                found[row.position] = near
    return sorted(found.values(), key=lambda r: r.position)


def _about(record: Record, key: str) -> bool:
    s = record.state
    if record.topic == "att_jm:CommandRecord.Handled":
        reply = s.get("reply")
        result = reply.get("result") if isinstance(reply, dict) else None
        return isinstance(result, dict) and result.get("id") == key
    return bool(s.get("execution_id") == key)


_ATTEMPT_FAILED: Final = "att_jm:Execution.AttemptFailed"
#: The events that end an attempt.
_ENDS: Final = ("att_jm:Execution.Succeeded", "att_jm:Execution.Failed", _ATTEMPT_FAILED)


def _walk(trace: Trace, own: list[Record], near: list[Record]) -> None:
    """Fill the attempts, actions and cleanup from the execution's events in order."""
    commands = [r for r in near if r.topic == "att_jm:CommandRecord.Handled"]
    dispatches = [r for r in near if r.topic == "att_jm:Scheduler.Dispatched"]
    for record in own[1:]:
        s = record.state
        if record.topic == "att_jm:Execution.Started":
            dispatch = next((d for d in dispatches if abs(d.position - record.position) <= 2),
                            None)
            trace.attempts.append({
                "attempt": s["attempt"], "started": _moment(record), "ended": None,
                "front": None if dispatch is None else dispatch.state.get("front"),
            })
        elif record.topic in _ENDS:  # AttemptFailed: failed, and the job's retry policy
            # queued attempt `attempt` (the next) for `not_before`
            ended = {**_moment(record), "result": s["result"], "feedback": s["feedback"],
                     "exit_code": s["exit_code"], "duration_seconds": s["duration_seconds"],
                     "timed_out": s.get("timed_out", False),
                     "interrupted": s.get("interrupted", False)}
            if record.topic == _ATTEMPT_FAILED:
                ended["retry"] = {"attempt": s.get("attempt"), "not_before": s.get("not_before")}
            if trace.attempts and trace.attempts[-1]["ended"] is None:
                trace.attempts[-1]["ended"] = ended
        elif record.topic in _ACTIONS:
            command = next((c for c in commands if 0 < c.position - record.position <= WINDOW
                            and c.state.get("command") == _ACTIONS[record.topic]), None)
            action = {**_moment(record), "action": _ACTIONS[record.topic],
                      "actor": record.actor,
                      "correlation": None if command is None else command.state["correlation"]}
            if "attempt" in s:
                action["attempt"] = s["attempt"]
            trace.actions.append(action)
        elif record.topic == "att_jm:Execution.CleanedUp":
            trace.cleanup = {**_moment(record), "table": s["table"], "cleanup": s["cleanup"],
                             "actor": record.actor}
