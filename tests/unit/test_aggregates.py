"""The Job and Execution aggregates, the other records, event topics and public event names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.utils import get_topic, resolve_topic

from att_jm.domain.commands import JobSpec
from att_jm.domain.executions import Execution
from att_jm.domain.ids import (
    NAMESPACE,
    SCHEDULER_ID,
    command_id,
    execution_id,
    job_id,
    notification_id,
)
from att_jm.domain.jobs import Job
from att_jm.domain.notifications import CommandRecord, Notification, Rejection
from att_jm.domain.scheduler import SCHEDULER, Scheduler
from att_jm.errors import Conflict, NotFound
from att_jm.log.messages import event_data, event_message, event_type
from att_jm.vocabulary import EntryState, Result

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
AGGREGATES: tuple[type[Aggregate], ...] = (
    Job, Execution, Notification, Rejection, CommandRecord, Scheduler
)
SPEC = JobSpec("backup", "backup.sh", "nightly", match={"site": "paris"}, command="{site}")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pending(aggregate: Aggregate) -> list[Any]:
    """The aggregate's new events (typed loosely: each test checks the class it expects)."""
    return list(aggregate.collect_events())


def replay(events: list[Any]) -> Any:
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


# Ids ----------------------------------------------------------------------------------------


def test_ids_are_deterministic_and_distinct_per_kind() -> None:
    assert job_id("a") == job_id("a") != job_id("b")
    assert notification_id("a") != job_id("a")
    assert execution_id("n1", "job") == execution_id("n1", "job")
    assert execution_id("n1", "job") != execution_id("n1", "job2")
    # The separator keeps ("n1", "2job") and ("n12", "job") apart.
    assert execution_id("n1", "2job") != execution_id("n12", "job")
    assert command_id("alice", b"\x01") != command_id("bob", b"\x01")
    assert command_id("alice", b"\x01") != command_id("alice", b"\x02")
    assert SCHEDULER_ID.version == 5
    assert isinstance(NAMESPACE, UUID)


# Job ----------------------------------------------------------------------------------------


def test_adding_a_job_records_its_whole_definition_and_actor() -> None:
    job = Job.add(SPEC, "alice", at(0))
    (added,) = pending(job)
    assert isinstance(added, Job.Added)
    assert job.id == job_id("backup")
    assert (added.name, added.script, added.trigger) == ("backup", "backup.sh", "nightly")
    assert (added.match, added.command, added.timeout_seconds, added.enabled) == (
        {"site": "paris"}, "{site}", 300.0, True)
    assert added.actor == "alice"
    assert added.timestamp == at(0)
    assert job.spec == SPEC
    assert (job.created_at, job.updated_at, job.removed) == (at(0), at(0), False)


def test_updating_a_job_records_only_the_fields_that_changed() -> None:
    job = Job.add(SPEC, "alice", at(0))
    pending(job)
    changed = job.update(
        {"script": "backup.sh", "trigger": "hourly", "enabled": False, "timeout_seconds": 300.0},
        "bob", at(5),
    )
    assert changed == {"trigger": "hourly", "enabled": False}
    (updated,) = pending(job)
    assert isinstance(updated, Job.Updated)
    assert updated.changes == {"trigger": "hourly", "enabled": False}
    assert updated.actor == "bob"
    assert (job.trigger, job.enabled, job.updated_at, job.created_at) == (
        "hourly", False, at(5), at(0))


def test_an_update_that_changes_nothing_records_no_event() -> None:
    job = Job.add(SPEC, "alice", at(0))
    pending(job)
    assert job.update({"trigger": "nightly", "match": {"site": "paris"}}, "bob", at(5)) == {}
    assert pending(job) == []
    assert job.updated_at == at(0)


def test_an_update_from_one_to_true_in_match_is_a_change() -> None:
    # Python says 1 == True; JSON (and `match`) does not.
    job = Job.add(JobSpec("j", "s", "t", match={"x": 1}), "alice", at(0))
    pending(job)
    assert job.update({"match": {"x": True}}, "bob", at(1)) == {"match": {"x": True}}
    assert job.match == {"x": True}


def test_removing_a_job_keeps_its_aggregate_and_refuses_updates() -> None:
    job = Job.add(SPEC, "alice", at(0))
    job.remove("bob", at(1))
    assert job.removed is True
    with pytest.raises(NotFound, match="no job named 'backup'"):
        job.update({"enabled": False}, "bob", at(2))
    with pytest.raises(NotFound):
        job.remove("bob", at(2))
    events = pending(job)
    assert [type(e) for e in events] == [Job.Added, Job.Removed]
    assert events[1].actor == "bob"


def test_a_removed_job_can_be_added_again_with_a_new_definition() -> None:
    job = Job.add(SPEC, "alice", at(0))
    job.remove("bob", at(1))
    new = JobSpec("backup", "other.sh", "hourly", timeout_seconds=10.0, enabled=False)
    job.readd(new, "carol", at(2))
    assert job.removed is False
    assert job.spec == new
    assert (job.created_at, job.updated_at) == (at(2), at(2))
    readded = pending(job)[-1]
    assert isinstance(readded, Job.Readded)
    assert readded.definition == new.fields()
    assert readded.actor == "carol"
    assert job.version == 3


def test_adding_a_job_that_exists_is_a_conflict() -> None:
    job = Job.add(SPEC, "alice", at(0))
    with pytest.raises(Conflict, match="already exists"):
        job.readd(SPEC, "bob", at(1))


def test_replaying_a_jobs_events_rebuilds_it() -> None:
    job = Job.add(SPEC, "alice", at(0))
    job.update({"command": None}, "bob", at(1))
    job.remove("bob", at(2))
    job.readd(JobSpec("backup", "b2.sh", "t2"), "carol", at(3))
    job.update({"match": {"k": [1, 2]}}, "dave", at(4))
    assert vars(replay(pending(job))) == vars(job)


# Execution ----------------------------------------------------------------------------------

EID = execution_id("n-1", "backup")


def enqueue() -> Execution:
    return Execution.enqueue(EID, "backup", "backup.sh", "run paris", "nightly", "n-1", 30.0,
                             "channel-manager", at(0))


def running() -> Execution:
    execution = enqueue()
    execution.start(at(1))
    return execution


def failed() -> Execution:
    execution = running()
    execution.fail("exit 1: boom", 1, 2.0, at(3))
    return execution


def executed() -> Execution:
    execution = running()
    execution.succeed("all good", 0, 2.0, at(3))
    return execution


def test_an_enqueued_execution_is_queued_at_attempt_one() -> None:
    execution = enqueue()
    (enqueued,) = pending(execution)
    assert isinstance(enqueued, Execution.Enqueued)
    assert execution.id == EID
    assert (enqueued.job, enqueued.script, enqueued.command, enqueued.trigger) == (
        "backup", "backup.sh", "run paris", "nightly")
    assert (enqueued.notification_id, enqueued.timeout_seconds) == ("n-1", 30.0)
    assert enqueued.actor == "channel-manager"
    assert (execution.status, execution.attempt, execution.front) == (EntryState.QUEUED, 1, False)
    assert execution.label == str(EID)


def test_an_execution_runs_then_succeeds_into_executed() -> None:
    execution = executed()
    _, started, succeeded = pending(execution)
    assert isinstance(started, Execution.Started)
    assert (started.attempt, started.actor, started.timestamp) == (1, SCHEDULER, at(1))
    assert isinstance(succeeded, Execution.Succeeded)
    assert (succeeded.result, succeeded.feedback, succeeded.exit_code) == (
        Result.SUCCEEDED, "all good", 0)
    assert (succeeded.duration_seconds, succeeded.actor) == (2.0, SCHEDULER)
    assert (execution.status, execution.result, execution.feedback) == (
        EntryState.EXECUTED, 3, "all good")
    assert (execution.started_at, execution.finished_at) == (at(1), at(3))


def test_an_execution_runs_then_fails_into_failed() -> None:
    execution = running()
    execution.fail("timed out after 30 s", None, 30.0, at(31), timed_out=True)
    failed_event = pending(execution)[-1]
    assert isinstance(failed_event, Execution.Failed)
    assert (failed_event.result, failed_event.timed_out, failed_event.interrupted) == (
        Result.FAILED, True, False)
    assert failed_event.actor == SCHEDULER
    assert (execution.status, execution.result, execution.feedback) == (
        EntryState.FAILED, 2, "timed out after 30 s")


def test_an_interrupted_failure_says_so() -> None:
    execution = running()
    execution.fail("interrupted", None, 0.0, at(9), interrupted=True)
    failed_event = pending(execution)[-1]
    assert isinstance(failed_event, Execution.Failed)
    assert failed_event.interrupted is True


def test_only_a_queued_execution_starts_and_only_a_running_one_finishes() -> None:
    execution = enqueue()
    with pytest.raises(Conflict, match="not running"):
        execution.succeed(None, 0, 1.0, at(1))
    with pytest.raises(Conflict, match="not running"):
        execution.fail(None, 1, 1.0, at(1))
    execution.start(at(1))
    with pytest.raises(Conflict, match="not queued"):
        execution.start(at(2))
    execution.succeed(None, 0, 1.0, at(3))
    with pytest.raises(Conflict, match="not running"):
        execution.fail(None, 1, 1.0, at(4))


def test_removing_a_queued_execution_from_the_queue() -> None:
    execution = enqueue()
    execution.remove_from_queue("alice", at(1))
    removed = pending(execution)[-1]
    assert isinstance(removed, Execution.RemovedFromQueue)
    assert removed.actor == "alice"
    assert execution.status == EntryState.GONE
    with pytest.raises(NotFound):
        execution.remove_from_queue("alice", at(2))


def test_removing_a_running_execution_from_the_queue_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="is running"):
        running().remove_from_queue("alice", at(2))


@pytest.mark.parametrize("make", [executed, failed])
def test_removing_a_finished_execution_from_the_queue_is_not_found(make: Any) -> None:
    with pytest.raises(NotFound, match="no queued entry"):
        make().remove_from_queue("alice", at(5))


def test_sending_a_queued_execution_to_the_front() -> None:
    execution = enqueue()
    execution.send_to_front("alice", at(1))
    sent = pending(execution)[-1]
    assert isinstance(sent, Execution.SentToFront)
    assert sent.actor == "alice"
    assert (execution.front, execution.status) == (True, EntryState.QUEUED)
    execution.start(at(2))
    assert execution.front is False
    with pytest.raises(Conflict):
        execution.send_to_front("alice", at(3))
    execution.succeed(None, 0, 1.0, at(4))
    with pytest.raises(NotFound):
        execution.send_to_front("alice", at(5))


def test_a_failed_execution_is_reexecuted_at_the_front_with_the_next_attempt() -> None:
    execution = failed()
    execution.reexecute("alice", at(10))
    reexecuted = pending(execution)[-1]
    assert isinstance(reexecuted, Execution.Reexecuted)
    assert (reexecuted.attempt, reexecuted.actor) == (2, "alice")
    assert (execution.status, execution.front, execution.attempt) == (EntryState.QUEUED, True, 2)
    assert execution.previous_feedback == "exit 1: boom"
    assert (execution.result, execution.feedback) == (None, None)
    execution.start(at(11))
    started = pending(execution)[-1]
    assert isinstance(started, Execution.Started)
    assert started.attempt == 2
    execution.fail("again", 1, 1.0, at(12))
    execution.reexecute("bob", at(13))
    assert execution.attempt == 3
    assert execution.previous_feedback == "again"


@pytest.mark.parametrize("make", [enqueue, running, executed])
def test_only_a_failed_execution_can_be_reexecuted(make: Any) -> None:
    with pytest.raises(NotFound, match="no failed entry"):
        make().reexecute("alice", at(10))


def test_deleting_a_failed_execution_from_failed() -> None:
    execution = failed()
    execution.delete_from_failed("alice", at(10))
    deleted = pending(execution)[-1]
    assert isinstance(deleted, Execution.DeletedFromFailed)
    assert deleted.actor == "alice"
    assert execution.status == EntryState.GONE
    with pytest.raises(NotFound):
        execution.delete_from_failed("alice", at(11))
    with pytest.raises(NotFound):
        execution.reexecute("alice", at(11))


@pytest.mark.parametrize("make", [enqueue, running, executed])
def test_only_a_failed_execution_can_be_deleted_from_failed(make: Any) -> None:
    with pytest.raises(NotFound, match="no failed entry"):
        make().delete_from_failed("alice", at(10))


def test_removing_an_executed_execution_from_executed() -> None:
    execution = executed()
    execution.remove_from_executed("alice", at(10))
    removed = pending(execution)[-1]
    assert isinstance(removed, Execution.RemovedFromExecuted)
    assert removed.actor == "alice"
    assert execution.status == EntryState.GONE
    with pytest.raises(NotFound):
        execution.remove_from_executed("alice", at(11))


@pytest.mark.parametrize("make", [enqueue, running, failed])
def test_only_an_executed_execution_can_be_removed_from_executed(make: Any) -> None:
    with pytest.raises(NotFound, match="no executed entry"):
        make().remove_from_executed("alice", at(10))


@pytest.mark.parametrize(("make", "table"), [(executed, "executed"), (failed, "failed")])
def test_cleanup_removes_a_row_only_from_the_table_it_names(make: Any, table: str) -> None:
    other = "failed" if table == "executed" else "executed"
    execution = make()
    pending(execution)
    assert execution.clean_up(other, "run-1", "scheduler", at(10)) is False
    assert pending(execution) == []
    assert execution.clean_up(table, "run-1", "scheduler", at(10)) is True
    (cleaned,) = pending(execution)
    assert isinstance(cleaned, Execution.CleanedUp)
    assert (cleaned.table, cleaned.cleanup, cleaned.actor) == (table, "run-1", "scheduler")
    assert execution.status == EntryState.GONE
    assert execution.clean_up(table, "run-2", "scheduler", at(11)) is False


@pytest.mark.parametrize("make", [enqueue, running])
def test_cleanup_never_touches_the_queue(make: Any) -> None:
    execution = make()
    assert execution.clean_up("executed", "r", "scheduler", at(9)) is False
    assert execution.clean_up("failed", "r", "scheduler", at(9)) is False


def test_replaying_an_executions_events_rebuilds_it() -> None:
    execution = failed()
    execution.reexecute("alice", at(10))
    execution.send_to_front("alice", at(11))
    execution.start(at(12))
    execution.succeed("ok", 0, 1.0, at(13))
    execution.clean_up("executed", "r", "scheduler", at(14))
    assert vars(replay(pending(execution))) == vars(execution)


# Notifications, rejections, command records -------------------------------------------------


def test_a_received_notification_keeps_its_payload_and_what_it_enqueued() -> None:
    enqueued = [{"job": "backup", "execution_id": str(EID)}]
    skipped = [{"job": "other", "reason": "no field 'x'"}]
    notification = Notification.receive("n-1", "nightly", {"id": "n-1"}, enqueued, skipped, at(0))
    (received,) = pending(notification)
    assert isinstance(received, Notification.Received)
    assert notification.id == notification_id("n-1")
    assert (received.notification_id, received.trigger, received.payload) == (
        "n-1", "nightly", {"id": "n-1"})
    assert (received.enqueued, received.skipped) == (enqueued, skipped)
    assert received.actor == "channel-manager"


def test_a_rejection_keeps_the_reason_size_and_an_excerpt_of_the_payload() -> None:
    payload = b"\xff" + b"x" * 1000
    rejection = Rejection.reject(execution_id("r", "r"), "notification", "att/t", "invalid",
                                 "not JSON", payload, "channel-manager", at(0))
    (rejected,) = pending(rejection)
    assert isinstance(rejected, Rejection.Rejected)
    assert (rejected.source, rejected.topic, rejected.code, rejected.reason) == (
        "notification", "att/t", "invalid", "not JSON")
    assert rejected.size == 1001
    assert rejected.excerpt == "\ufffd" + "x" * 511
    assert rejected.actor == "channel-manager"


def test_a_command_record_keeps_the_reply_and_the_correlation_as_hex() -> None:
    reply = {"ok": True, "result": {"name": "backup"}}
    record = CommandRecord.handled(command_id("alice", b"\x00\xff"), "alice", "job.add",
                                   b"\x00\xff", reply, at(0))
    (handled,) = pending(record)
    assert isinstance(handled, CommandRecord.Handled)
    assert (handled.actor, handled.command, handled.correlation, handled.reply) == (
        "alice", "job.add", "00ff", reply)
    assert record.reply == reply


# Every event of Job and Execution carries its actor ------------------------------------------


def test_every_job_and_execution_event_carries_its_actor() -> None:
    job = Job.add(SPEC, "a1", at(0))
    job.update({"enabled": False}, "a2", at(1))
    job.remove("a3", at(2))
    job.readd(SPEC, "a4", at(3))
    assert [e.actor for e in pending(job)] == ["a1", "a2", "a3", "a4"]

    one = failed()
    one.reexecute("b1", at(10))
    one.send_to_front("b2", at(11))
    one.start(at(12))
    one.succeed(None, 0, 1.0, at(13))
    one.remove_from_executed("b3", at(14))
    two = enqueue()
    two.remove_from_queue("b4", at(1))
    three = failed()
    three.delete_from_failed("b5", at(4))
    four = executed()
    four.clean_up("executed", "r", "b6", at(5))
    actors = [e.actor for x in (one, two, three, four) for e in pending(x)]
    assert actors == [
        "channel-manager", SCHEDULER, SCHEDULER, "b1", "b2", SCHEDULER, SCHEDULER, "b3",
        "channel-manager", "b4",
        "channel-manager", SCHEDULER, SCHEDULER, "b5",
        "channel-manager", SCHEDULER, SCHEDULER, "b6",
    ]


# Topics -------------------------------------------------------------------------------------


def event_classes(aggregate: type[Aggregate]) -> list[type[DomainEvent]]:
    """The event classes declared on `aggregate` (not the library's generated `Event` base)."""
    return [
        value for name, value in vars(aggregate).items()
        if isinstance(value, type) and issubclass(value, DomainEvent) and name != "Event"
    ]


@pytest.mark.parametrize("aggregate", AGGREGATES, ids=lambda a: a.__name__)
def test_every_aggregate_and_event_class_has_an_explicit_att_jm_topic(
    aggregate: type[Aggregate],
) -> None:
    assert vars(aggregate)["TOPIC"] == f"att_jm:{aggregate.__name__}"
    classes = event_classes(aggregate)
    assert len(classes) >= 2
    for cls in classes:
        # The library subclasses each declared event; the topic must be the class's own name,
        # never one inherited from its base event (Added would otherwise store as Created).
        topic = getattr(cls, "TOPIC", None)
        assert topic == f"att_jm:{cls.__qualname__}", cls
        assert get_topic(cls) == topic
        assert resolve_topic(topic) is cls
    assert resolve_topic(vars(aggregate)["TOPIC"]) is aggregate


def test_the_stored_topics_do_not_depend_on_module_paths() -> None:
    job = Job.add(SPEC, "alice", at(0))
    (added,) = pending(job)
    assert get_topic(type(added)) == "att_jm:Job.Added"
    assert added.originator_topic == "att_jm:Job"


# Public event names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (Job.Added, "job.added"),
        (Job.Updated, "job.updated"),
        (Job.Removed, "job.removed"),
        (Job.Readded, "job.readded"),
        (Execution.Enqueued, "execution.enqueued"),
        (Execution.Started, "execution.started"),
        (Execution.Succeeded, "execution.succeeded"),
        (Execution.Failed, "execution.failed"),
        (Execution.RemovedFromQueue, "execution.removed_from_queue"),
        (Execution.SentToFront, "execution.sent_to_front"),
        (Execution.Reexecuted, "execution.reexecuted"),
        (Execution.RemovedFromExecuted, "execution.removed_from_executed"),
        (Execution.DeletedFromFailed, "execution.deleted_from_failed"),
        (Execution.CleanedUp, "execution.cleaned_up"),
        (Notification.Received, "notification.received"),
        (Rejection.Rejected, "rejection.rejected"),
        (CommandRecord.Handled, "command_record.handled"),
        (Scheduler.Created, "scheduler.created"),
        (Scheduler.SettingsChanged, "scheduler.settings_changed"),
        (Scheduler.Dispatched, "scheduler.dispatched"),
        (Scheduler.Released, "scheduler.released"),
        (Scheduler.CleanupRan, "scheduler.cleanup_ran"),
    ],
)
def test_event_type_names_events_in_snake_case(cls: type[Any], name: str) -> None:
    assert event_type(object.__new__(cls)) == name


def test_every_event_class_has_a_public_name() -> None:
    names = [
        event_type(object.__new__(cls)) for aggregate in AGGREGATES
        for cls in event_classes(aggregate)
    ]
    assert len(names) == len(set(names))
    assert all(name.count(".") == 1 and name == name.lower() for name in names)


def test_the_event_message_has_position_type_utc_time_and_the_events_own_data() -> None:
    execution = enqueue()
    execution.remove_from_queue("alice", at(1.5))
    removed = pending(execution)[-1]
    message = event_message(42, removed)
    assert message == {
        "position": 42,
        "type": "execution.removed_from_queue",
        "at": "2026-02-01T08:00:01.500Z",
        "data": {"actor": "alice", "aggregate_id": str(EID), "version": 2},
    }
    enqueued = pending(enqueue())[0]
    data = event_data(enqueued)
    assert "originator_topic" not in data
    assert "timestamp" not in data
    assert data["job"] == "backup"
    assert data["version"] == 1


def test_the_hot_path_creation_events_equal_those_the_aggregates_record() -> None:
    # The notification path makes these events without building the aggregates; what is
    # stored (every field, in order, and the topics) must not differ.
    entry = execution_id("n-1", "ipx")
    built = Execution.enqueue(entry, "ipx", "ipx-update", "c=1", "up", "n-1", 300.0,
                              "channel-manager", T0).collect_events()[0]
    made = Execution.enqueued_event(entry, "ipx", "ipx-update", "c=1", "up", "n-1", 300.0,
                                    "channel-manager", T0)
    assert type(made) is type(built)
    assert list(vars(made).items()) == list(vars(built).items())
    payload = {"id": "n-1", "channel": "c"}
    enqueued = [{"job": "ipx", "execution_id": str(entry)}]
    received = Notification.receive("n-1", "up", payload, enqueued, [], T0).collect_events()[0]
    made_received = Notification.received_event(notification_id("n-1"), "n-1", "up", payload,
                                                enqueued, [], T0)
    assert type(made_received) is type(received)
    assert list(vars(made_received).items()) == list(vars(received).items())
    rebuilt = made.mutate(None)
    assert isinstance(rebuilt, Execution)
    assert rebuilt.status == EntryState.QUEUED
    assert rebuilt.version == 1
