"""The JobManager against a real SQLite store file and real views file, driven like the writer.

Each unit of work is handled, collected, committed in one transaction and applied to the
views, as `att_jm.service.Writer` does; time comes from a fake clock the tests advance.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from helpers.application import Harness
from helpers.clock import Clock
from helpers.postgres import BOTH_BACKENDS

from att_jm.application import INTERRUPTED, UnitOfWork
from att_jm.domain.commands import ViewsGet
from att_jm.domain.executions import Execution
from att_jm.domain.ids import SCHEDULER_ID, execution_id, job_id
from att_jm.domain.jobs import Job
from att_jm.domain.notifications import CommandRecord, Notification, Rejection
from att_jm.domain.runs import Outcome, Run
from att_jm.domain.scheduler import Scheduler
from att_jm.errors import NotFound
from att_jm.store import log_position
from att_jm.vocabulary import Result
from projections.rebuild import catch_up
from projections.views import Views

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def eid(notification: str, job: str) -> str:
    return str(execution_id(notification, job))


# Notifications ------------------------------------------------------------------------------


def test_a_notification_whose_trigger_matches_two_jobs_enqueues_both(jm: Harness) -> None:
    jm.add_job("first")
    jm.add_job("second")
    jm.add_job("elsewhere", trigger="other")
    payload = {"id": "n-1", "site": "paris"}
    assert jm.notify("alarm", payload) == "enqueued 2"
    rows = jm.rows("queue")
    assert [row["job"] for row in rows] == ["first", "second"]
    assert rows[0] == {
        "id": eid("n-1", "first"), "job": "first", "command": '{"id":"n-1","site":"paris"}',
        "trigger": "alarm", "notification_id": "n-1", "enqueued_at": iso(T0),
        "state": "queued", "started_at": None, "attempt": 1, "feedback": None, "not_before": None,
    }
    (received,) = jm.events(Notification.Received)
    assert received.payload == payload
    assert received.enqueued == [
        {"job": "first", "execution_id": eid("n-1", "first")},
        {"job": "second", "execution_id": eid("n-1", "second")},
    ]
    assert received.skipped == []
    assert received.actor == "channel-manager"


def test_a_notification_that_matches_no_job_is_recorded_and_enqueues_nothing(jm: Harness) -> None:
    jm.add_job("backup")
    assert jm.notify("nobody-listens", {"id": "n-1", "x": [1, 2]}) == "matched none"
    (received,) = jm.events(Notification.Received)
    assert (received.notification_id, received.trigger) == ("n-1", "nobody-listens")
    assert received.payload == {"id": "n-1", "x": [1, 2]}
    assert received.enqueued == []
    assert jm.rows("queue") == []
    assert jm.events(Execution.Enqueued) == []


def test_match_decides_which_jobs_of_the_trigger_a_notification_enqueues(jm: Harness) -> None:
    jm.add_job("paris", match={"site": "paris"})
    jm.add_job("lyon", match={"site": "lyon"})
    jm.add_job("router", match={"device.kind": "router", "device.port": 7})
    jm.add_job("up-true", match={"up": True})
    jm.add_job("anything")
    jm.add_job("disabled", enabled=False)
    payload = {"id": "n-1", "site": "paris", "device": {"kind": "router", "port": 7.0}, "up": 1}
    assert jm.notify("alarm", payload) == "enqueued 3"
    assert {row["job"] for row in jm.rows("queue")} == {"paris", "router", "anything"}


def test_the_command_template_is_filled_from_the_notification(jm: Harness) -> None:
    jm.add_job("deploy", command="deploy --site={site} --port={device.port} {device} {{x}}")
    jm.notify("alarm", {"id": "n-1", "site": "paris", "device": {"port": 7}})
    assert jm.rows("queue")[0]["command"] == 'deploy --site=paris --port=7 {"port":7} {x}'


def test_a_job_missing_a_template_field_is_skipped_with_the_reason_and_others_still_run(
    jm: Harness,
) -> None:
    jm.add_job("needs-site", command="run {site}")
    jm.add_job("plain")
    assert jm.notify("alarm", {"id": "n-1"}) == "enqueued 1"
    assert [row["job"] for row in jm.rows("queue")] == ["plain"]
    (received,) = jm.events(Notification.Received)
    assert received.enqueued == [{"job": "plain", "execution_id": eid("n-1", "plain")}]
    assert len(received.skipped) == 1
    assert received.skipped[0]["job"] == "needs-site"
    assert "'site'" in received.skipped[0]["reason"]


def test_a_repeated_notification_id_has_one_effect_in_one_batch_and_in_a_later_one(
    jm: Harness,
) -> None:
    jm.add_job("backup")
    jm.add_job("other", trigger="other")
    first = jm.notification_work("alarm", {"id": "n-1", "v": 1})
    again = jm.notification_work("alarm", {"v": 1, "id": "n-1"})  # the same JSON object
    assert jm.batch(first, again) == ["enqueued 1", "duplicate"]
    assert jm.notify("alarm", {"id": "n-1", "v": 1}) == "duplicate"
    assert len(jm.events(Notification.Received)) == 1
    assert len(jm.rows("queue")) == 1
    assert jm.events(Rejection.Rejected) == []  # an identical redelivery is a silent no-op
    assert jm.notify("alarm", {"id": "n-2"}) == "enqueued 1"


def test_a_reused_notification_id_with_another_payload_or_trigger_is_recorded_as_a_conflict(
    jm: Harness,
) -> None:
    jm.add_job("backup")
    jm.add_job("other", trigger="other")
    first = jm.notification_work("alarm", {"id": "n-1", "v": 1})
    changed = jm.notification_work("alarm", {"id": "n-1", "v": 2})
    assert jm.batch(first, changed) == ["enqueued 1", "conflict"]
    assert jm.notify("other", {"id": "n-1", "v": 1}) == "conflict"  # same payload, other topic
    assert jm.notify("alarm", {"id": "n-1", "v": True}) == "conflict"  # true is not 1
    # The same conflicting copy again (a redelivery, a retained copy): recorded once only.
    assert jm.notify("alarm", {"id": "n-1", "v": 2}) == "duplicate conflict"
    assert len(jm.events(Notification.Received)) == 1
    assert len(jm.rows("queue")) == 1  # nothing ran for the conflicting copies
    conflicts = jm.events(Rejection.Rejected)
    assert [(c.code, c.source) for c in conflicts] == [("conflict", "notification")] * 3
    assert "'n-1'" in conflicts[0].reason and "another payload" in conflicts[0].reason
    assert "trigger 'alarm'" in conflicts[1].reason  # where it was first received
    assert conflicts[1].topic == "att/channel-manager/notifications/other"


def test_a_notification_seen_before_a_restart_is_still_a_duplicate(
    jm: Harness, open_harness: Callable[..., Harness]
) -> None:
    jm.add_job("backup")
    jm.notify("alarm", {"id": "n-1"})
    restarted = open_harness()
    assert restarted.notify("alarm", {"id": "n-1"}) == "duplicate"
    assert restarted.notify("alarm", {"id": "n-2"}) == "enqueued 1"  # jobs survive a restart


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"not json", "invalid", "not JSON"),
        (b"", "invalid", "not JSON"),
        (b'{"id": "n-1"', "invalid", "not JSON"),
        (b'{"id": "\xff\xfe"}', "invalid", "not JSON"),  # invalid UTF-8
        (b"[1, 2]", "invalid", "must be a JSON object"),
        (b'"n-1"', "invalid", "must be a JSON object"),
        (b"null", "invalid", "must be a JSON object"),
        (b'{"site": "paris"}', "invalid", '"id" must be a string of 1-200 characters'),
        (b'{"id": 7}', "invalid", '"id" must be a string'),
        (b'{"id": null}', "invalid", '"id" must be a string'),
        (b'{"id": ""}', "invalid", '"id" must be a string of 1-200 characters'),
        (b'{"id": "' + b"i" * 201 + b'"}', "invalid", "1-200 characters"),
        (b'{"id": "n-1", "pad": "' + b"x" * 2000 + b'"}', "too_large", "exceeds 1024"),
    ],
)
def test_an_invalid_notification_is_recorded_as_rejected_with_its_reason(
    open_harness: Callable[..., Harness], payload: bytes, code: str, reason: str
) -> None:
    jm = open_harness(max_payload_bytes=1024)
    jm.add_job("backup")
    assert jm.notify("alarm", payload) == "rejected"
    (rejected,) = jm.events(Rejection.Rejected)
    assert rejected.source == "notification"
    assert rejected.topic == "att/channel-manager/notifications/alarm"
    assert rejected.code == code
    assert reason in rejected.reason
    assert rejected.size == len(payload)
    assert rejected.excerpt == payload[:512].decode("utf-8", "replace")
    assert rejected.actor == "channel-manager"
    assert jm.events(Notification.Received) == []
    assert jm.rows("queue") == []


def test_the_largest_allowed_notification_is_accepted(open_harness: Callable[..., Harness]) -> None:
    jm = open_harness(max_payload_bytes=1024)
    jm.add_job("backup")
    body = b'{"id":"n-1","pad":"' + b"x" * (1024 - 21) + b'"}'
    assert len(body) == 1024
    assert jm.notify("alarm", body) == "enqueued 1"


def test_a_rejected_notification_does_not_spend_its_id(jm: Harness) -> None:
    jm.add_job("backup")
    assert jm.notify("alarm", b'{"id": "n-1", "bad": }') == "rejected"
    assert jm.notify("alarm", {"id": "n-1"}) == "enqueued 1"


# Commands: jobs -----------------------------------------------------------------------------


def test_job_add_registers_a_job_and_replies_with_its_row(jm: Harness) -> None:
    result = jm.add_job("backup", match={"site": "paris"}, command="run {site}",
                        timeout_seconds=30, enabled=False)
    assert result == {
        "name": "backup", "script": "backup.sh", "trigger": "alarm", "match": {"site": "paris"},
        "command": "run {site}", "timeout_seconds": 30.0, "enabled": False,
        "created_at": iso(T0), "updated_at": iso(T0), "retry": None,
    }
    assert jm.rows("jobs") == [result]
    (added,) = jm.events(Job.Added)
    assert added.actor == "alice"


def test_job_update_changes_the_job_and_queued_entries_keep_their_command(
    jm: Harness, clock: Clock
) -> None:
    jm.add_job("backup", command="old {id}")
    jm.notify("alarm", {"id": "n-1"})
    clock.advance(60)
    result = jm.ok("job.update", {"name": "backup", "command": "new {id}", "trigger": "t2"},
                   actor="bob")
    assert (result["command"], result["trigger"]) == ("new {id}", "t2")
    assert (result["created_at"], result["updated_at"]) == (iso(T0), iso(clock()))
    assert jm.rows("jobs") == [result]
    assert jm.rows("queue")[0]["command"] == "old n-1"
    (updated,) = jm.events(Job.Updated)
    assert updated.changes == {"command": "new {id}", "trigger": "t2"}
    assert updated.actor == "bob"
    assert jm.notify("t2", {"id": "n-2"}) == "enqueued 1"
    assert jm.rows("queue")[1]["command"] == "new n-2"


def test_job_update_with_the_current_values_records_nothing(jm: Harness) -> None:
    jm.add_job("backup", match={"x": 1})
    jm.ok("job.update", {"name": "backup", "trigger": "alarm", "match": {"x": 1}})
    assert jm.events(Job.Updated) == []


def test_job_update_of_match_from_one_to_true_takes_effect(jm: Harness) -> None:
    jm.add_job("backup", match={"x": 1})
    jm.ok("job.update", {"name": "backup", "match": {"x": True}})
    assert jm.rows("jobs")[0]["match"] == {"x": True}
    assert jm.notify("alarm", {"id": "n-1", "x": 1}) == "matched none"
    assert jm.notify("alarm", {"id": "n-2", "x": True}) == "enqueued 1"


def test_job_remove_removes_the_job_and_keeps_its_queued_entries(jm: Harness) -> None:
    jm.add_job("backup")
    jm.notify("alarm", {"id": "n-1"})
    assert jm.ok("job.remove", {"name": "backup"}) == {"name": "backup", "removed": True}
    assert jm.rows("jobs") == []
    assert [row["job"] for row in jm.rows("queue")] == ["backup"]
    assert jm.notify("alarm", {"id": "n-2"}) == "matched none"
    assert jm.run_next().job == "backup"  # the entry still runs


def test_a_removed_job_can_be_added_again(jm: Harness, clock: Clock) -> None:
    jm.add_job("backup")
    jm.ok("job.remove", {"name": "backup"})
    clock.advance(10)
    result = jm.ok("job.add", {"name": "backup", "script": "report.sh", "trigger": "t2"})
    assert (result["script"], result["created_at"]) == ("report.sh", iso(clock()))
    assert jm.rows("jobs") == [result]
    assert jm.notify("t2", {"id": "n-1"}) == "enqueued 1"
    assert [type(e) for e in jm.events(Job.Added, Job.Removed, Job.Readded)] == [
        Job.Added, Job.Removed, Job.Readded]


def test_a_job_removed_and_added_again_in_one_batch_is_added(jm: Harness) -> None:
    jm.add_job("backup")
    remove = jm.command_work("job.remove", {"name": "backup"})
    add = jm.command_work("job.add", {"name": "backup", "script": "report.sh", "trigger": "t2"})
    removed, added = jm.batch(remove, add)
    assert removed["ok"] is True
    assert added["ok"] is True, added
    assert jm.rows("jobs")[0]["script"] == "report.sh"
    assert jm.app.repository.get(job_id("backup")).version == 3


def test_a_job_whose_match_looks_like_a_stored_typed_value_survives_a_restart(
    jm: Harness, open_harness: Callable[..., Harness]
) -> None:
    lookalike = {"_type_": "uuid_hex", "_data_": "not-a-uuid"}
    jm.add_job("odd", match={"_type_": "uuid_hex", "_data_": "not-a-uuid"})
    restarted = open_harness()  # the job (and the rebuild) must still load
    assert restarted.manager.jobs["odd"].match == lookalike
    assert restarted.notify("alarm", {"id": "n-1", **lookalike}) == "enqueued 1"
    restarted.views.reset()
    catch_up(restarted.app, restarted.views)
    assert restarted.rows("jobs")[0]["match"] == lookalike


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("job.update", {"name": "ghost", "enabled": False}),
        ("job.remove", {"name": "ghost"}),
    ],
)
def test_a_command_on_an_unknown_job_is_not_found(jm: Harness, name: str, args: Any) -> None:
    code, message = jm.error(name, args)
    assert code == "not_found"
    assert "ghost" in message


def test_a_removed_job_is_not_found(jm: Harness) -> None:
    jm.add_job("backup")
    jm.ok("job.remove", {"name": "backup"})
    assert jm.error("job.remove", {"name": "backup"})[0] == "not_found"
    assert jm.error("job.update", {"name": "backup", "enabled": True})[0] == "not_found"


def test_adding_a_job_that_exists_is_a_conflict(jm: Harness) -> None:
    jm.add_job("backup")
    code, message = jm.error("job.add", {"name": "backup", "script": "report.sh", "trigger": "x"})
    assert code == "conflict"
    assert "already exists" in message
    first = jm.command_work("job.add", {"name": "twice", "script": "backup.sh", "trigger": "t"})
    replies = jm.batch(first, first)
    assert [reply["ok"] for reply in replies] == [True, False]
    assert replies[1]["error"]["code"] == "conflict"
    assert [row["name"] for row in jm.rows("jobs")] == ["backup", "twice"]


def test_a_script_that_fails_the_check_is_invalid(jm: Harness) -> None:
    code, message = jm.error("job.add", {"name": "x", "script": "missing.sh", "trigger": "t"})
    assert code == "invalid"
    assert "missing.sh" in message
    assert jm.rows("jobs") == []
    jm.add_job("backup")
    assert jm.error("job.update", {"name": "backup", "script": "../etc/passwd"})[0] == "invalid"
    assert jm.rows("jobs")[0]["script"] == "backup.sh"
    assert jm.events(Job.Updated) == []


def test_a_failed_command_without_correlation_data_is_recorded_as_rejected(jm: Harness) -> None:
    assert jm.error("job.remove", {"name": "ghost"}, actor="bob")[0] == "not_found"
    (rejected,) = jm.events(Rejection.Rejected)
    assert (rejected.source, rejected.code, rejected.actor) == ("command", "not_found", "bob")
    assert rejected.topic == "att/job-manager/commands/bob/job.remove"


@pytest.mark.parametrize(
    ("name", "raw", "code"),
    [
        ("job.explode", b"{}", "unknown_command"),
        ("job.add", b"{not json", "invalid"),
        ("job.add", b"\xff", "invalid"),
        ("job.add", b"[]", "invalid"),
        ("cleanup.run", b"", "invalid"),  # no arguments at all is {}: `table` is missing
        ("job.add", b'{"name": "' + b"x" * 300_000 + b'"}', "too_large"),
    ],
)
def test_a_malformed_command_gets_an_error_reply(
    jm: Harness, name: str, raw: bytes, code: str
) -> None:
    assert jm.error(name, raw=raw)[0] == code
    assert [e.code for e in jm.events(Rejection.Rejected)] == [code]


def test_the_same_correlation_data_twice_has_one_effect_and_the_same_reply(
    jm: Harness, clock: Clock
) -> None:
    args = {"name": "backup", "script": "backup.sh", "trigger": "alarm"}
    reply = jm.command("job.add", args, correlation=b"c-1")
    assert reply["ok"] is True
    clock.advance(5)
    assert jm.command("job.add", args, correlation=b"c-1") == reply
    again = jm.command_work("job.add", args, correlation=b"c-2")
    replies = jm.batch(again, again)
    assert replies[0] == replies[1]
    assert replies[0]["error"]["code"] == "conflict"
    assert len(jm.events(Job.Added)) == 1
    handled = jm.events(CommandRecord.Handled)
    assert [(h.correlation, h.command, h.actor) for h in handled] == [
        ("632d31", "job.add", "alice"), ("632d32", "job.add", "alice")]
    assert handled[0].reply == reply
    assert jm.events(Rejection.Rejected) == []  # errors with CorrelationData live in the record


def test_an_error_reply_is_replayed_for_the_same_correlation_data(jm: Harness) -> None:
    first = jm.command("job.remove", {"name": "ghost"}, correlation=b"\x00\x01")
    jm.add_job("ghost")
    assert jm.command("job.remove", {"name": "ghost"}, correlation=b"\x00\x01") == first
    assert jm.rows("jobs") != []


def test_the_same_correlation_data_from_another_actor_is_another_command(jm: Harness) -> None:
    jm.ok("job.add", {"name": "a", "script": "backup.sh", "trigger": "t"}, correlation=b"c")
    reply = jm.command("job.add", {"name": "b", "script": "backup.sh", "trigger": "t"},
                       actor="bob", correlation=b"c")
    assert reply["ok"] is True
    assert [row["name"] for row in jm.rows("jobs")] == ["a", "b"]


def test_a_command_record_survives_a_restart(
    jm: Harness, open_harness: Callable[..., Harness]
) -> None:
    reply = jm.command("settings.set", {"interval_seconds": 9}, correlation=b"s-1")
    restarted = open_harness()
    assert restarted.command("settings.set", {"interval_seconds": 9}, correlation=b"s-1") == reply


def test_views_get_is_answered_once_the_views_are_caught_up(jm: Harness) -> None:
    reply = jm.unit(jm.command_work("views.get", {"view": "queue"}, correlation=b"v"))
    assert reply == ViewsGet("queue")
    assert jm.events(CommandRecord.Handled) == []


# Queue commands and dispatch ----------------------------------------------------------------


def queue_three(jm: Harness) -> list[str]:
    jm.add_job("backup")
    for n in ("n-1", "n-2", "n-3"):
        jm.notify("alarm", {"id": n})
        jm.clock.advance(1)
    return [eid(n, "backup") for n in ("n-1", "n-2", "n-3")]


def test_queue_remove_removes_a_queued_entry(jm: Harness) -> None:
    first, second, third = queue_three(jm)
    assert jm.ok("queue.remove", {"id": second}) == {"id": second, "status": "gone",
                                                     "attempt": 1}
    assert jm.ids("queue") == [first, third]
    assert jm.error("queue.remove", {"id": second})[0] == "not_found"
    (removed,) = jm.events(Execution.RemovedFromQueue)
    assert removed.actor == "alice"


@pytest.mark.parametrize(
    "entry",
    ["not-a-uuid", "00000000-0000-0000-0000-000000000000", str(job_id("backup")),
     str(SCHEDULER_ID)],
)
def test_an_entry_command_naming_no_execution_is_not_found(jm: Harness, entry: str) -> None:
    jm.add_job("backup")
    for name in ("queue.remove", "queue.execute-now", "executed.remove", "failed.execute",
                 "failed.delete"):
        assert jm.error(name, {"id": entry})[0] == "not_found", name


def test_queue_remove_of_the_running_entry_is_a_conflict(jm: Harness) -> None:
    first, _, _ = queue_three(jm)
    dispatch = jm.dispatch()
    assert dispatch is not None
    assert dispatch.execution_id == first
    code, message = jm.error("queue.remove", {"id": first})
    assert code == "conflict"
    assert "running" in message
    assert jm.rows("queue")[0]["state"] == "running"


def test_entries_run_one_at_a_time_oldest_first(jm: Harness) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    first, second, third = queue_three(jm)
    dispatch = jm.dispatch()
    assert dispatch == Run(
        execution_id=first, job="backup", trigger="alarm", attempt=1, script="backup.sh",
        command='{"id":"n-1"}', timeout_seconds=300.0,
    )
    assert jm.dispatch() is None  # one at a time
    row = jm.rows("queue")[0]
    assert (row["id"], row["state"], row["started_at"]) == (first, "running", iso(jm.clock()))
    jm.clock.advance(1)
    jm.finish(first)
    assert [jm.run_next().execution_id for _ in range(2)] == [second, third]
    assert jm.dispatch() is None
    assert jm.ids("executed") == [third, second, first]  # newest first


def test_execute_now_sends_an_entry_ahead_and_skips_the_interval(jm: Harness) -> None:
    first, second, third = queue_three(jm)
    jm.run_next()  # first ran; the interval (5 s) now applies
    assert jm.dispatch() is None
    jm.ok("queue.execute-now", {"id": third}, actor="bob")
    assert jm.ids("queue") == [third, second]
    dispatch = jm.dispatch()
    assert dispatch is not None
    assert dispatch.execution_id == third
    dispatched = jm.events(Scheduler.Dispatched)
    assert [(d.execution_id, d.front) for d in dispatched] == [(first, False), (third, True)]
    (sent,) = jm.events(Execution.SentToFront)
    assert sent.actor == "bob"


def test_entries_sent_to_the_front_run_in_the_order_they_were_sent(jm: Harness) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    first, second, third = queue_three(jm)
    jm.ok("queue.execute-now", {"id": third})
    jm.ok("queue.execute-now", {"id": second})
    assert [jm.run_next().execution_id for _ in range(3)] == [third, second, first]


def test_execute_now_of_the_running_entry_is_a_conflict(jm: Harness) -> None:
    first, _, _ = queue_three(jm)
    jm.dispatch()
    assert jm.error("queue.execute-now", {"id": first})[0] == "conflict"


def test_the_interval_is_measured_from_the_end_of_the_previous_execution(
    jm: Harness, clock: Clock
) -> None:
    first, second, _ = queue_three(jm)
    started = clock()
    assert jm.manager.next_start(started) == started  # the first ever starts at once
    dispatch = jm.dispatch()
    assert dispatch is not None
    assert jm.manager.next_start(clock()) is None  # nothing starts while one runs
    clock.advance(30)  # a long run: measured from its start the interval would be over
    ended = clock()
    jm.finish(first)
    clock.advance(3)
    assert jm.dispatch() is None
    assert jm.manager.next_start(clock()) == ended + timedelta(seconds=5)
    clock.advance(1.999)
    assert jm.dispatch() is None
    clock.advance(0.001)
    dispatch = jm.dispatch()
    assert dispatch is not None
    assert dispatch.execution_id == second
    assert jm.rows("queue")[0]["started_at"] == iso(ended + timedelta(seconds=5))


def test_a_changed_interval_applies_to_the_next_start(jm: Harness, clock: Clock) -> None:
    queue_three(jm)
    jm.run_next()
    jm.ok("settings.set", {"interval_seconds": 60})
    clock.advance(30)
    assert jm.dispatch() is None
    jm.ok("settings.set", {"interval_seconds": 10})
    assert jm.dispatch() is not None


def test_finishing_moves_the_entry_to_executed_or_failed_with_result_and_feedback(
    jm: Harness, clock: Clock
) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    first, second, _ = queue_three(jm)
    enqueued = [T0 + timedelta(seconds=i) for i in range(3)]
    start = clock()
    jm.run_next(result=3, feedback="all good", seconds=2)
    jm.run_next(result=2, feedback="exit 1: boom", seconds=4)
    assert jm.rows("executed") == [{
        "id": first, "job": "backup", "command": '{"id":"n-1"}', "trigger": "alarm",
        "notification_id": "n-1", "enqueued_at": iso(enqueued[0]), "started_at": iso(start),
        "finished_at": iso(start + timedelta(seconds=2)), "attempt": 1, "result": 3,
        "feedback": "all good",
    }]
    assert jm.rows("failed") == [{
        "id": second, "job": "backup", "command": '{"id":"n-2"}', "trigger": "alarm",
        "notification_id": "n-2", "enqueued_at": iso(enqueued[1]),
        "started_at": iso(start + timedelta(seconds=2)),
        "finished_at": iso(start + timedelta(seconds=6)), "attempt": 1, "result": 2,
        "feedback": "exit 1: boom",
    }]
    assert len(jm.rows("queue")) == 1
    (succeeded,) = jm.events(Execution.Succeeded)
    assert (succeeded.result, succeeded.exit_code, succeeded.duration_seconds) == (3, 0, 1.0)
    (failed,) = jm.events(Execution.Failed)
    assert (failed.result, failed.timed_out, failed.interrupted) == (2, False, False)
    assert [r.execution_id for r in jm.events(Scheduler.Released)] == [first, second]


def test_a_timed_out_run_is_recorded_as_such(jm: Harness) -> None:
    jm.add_job("backup")
    jm.notify("alarm", {"id": "n-1"})
    dispatch = jm.dispatch()
    assert dispatch is not None
    outcome = Outcome(result=Result.FAILED, feedback="timed out after 300 s", exit_code=None,
                      duration_seconds=300.0, timed_out=True)
    assert jm.unit(lambda uow: jm.manager.finish(uow, dispatch.execution_id, outcome, jm.clock()))
    (failed,) = jm.events(Execution.Failed)
    assert failed.timed_out is True
    assert jm.rows("failed")[0]["feedback"] == "timed out after 300 s"


def test_finishing_an_entry_that_is_not_running_changes_nothing(jm: Harness) -> None:
    first, second, _ = queue_three(jm)
    jm.run_next()
    position = log_position(jm.app)
    assert jm.finish(first) is False  # reported twice
    assert jm.finish(second) is False  # queued, never started
    assert log_position(jm.app) == position


def test_failed_execute_requeues_at_the_front_with_the_next_attempt_and_skips_the_interval(
    jm: Harness, clock: Clock
) -> None:
    first, second, _ = queue_three(jm)
    jm.run_next(result=2, feedback="exit 3: disk full")
    clock.advance(1)
    assert jm.ok("failed.execute", {"id": first}, actor="bob") == {
        "id": first, "status": "queued", "attempt": 2}
    assert jm.rows("failed") == []
    head = jm.rows("queue")[0]
    assert (head["id"], head["state"], head["attempt"], head["feedback"]) == (
        first, "queued", 2, "exit 3: disk full")
    assert head["enqueued_at"] == iso(T0)
    dispatch = jm.dispatch()  # 1 s after the last end: the interval of 5 s is skipped
    assert dispatch is not None
    assert (dispatch.execution_id, dispatch.attempt) == (first, 2)
    assert jm.rows("queue")[0]["attempt"] == 2
    clock.advance(1)
    jm.finish(first, result=3, feedback="fixed")
    row = jm.rows("executed")[0]
    assert (row["id"], row["attempt"], row["result"], row["feedback"]) == (first, 2, 3, "fixed")
    assert jm.rows("queue")[0]["id"] == second
    assert jm.error("failed.execute", {"id": first})[0] == "not_found"


def test_a_reexecuted_entry_can_fail_again_and_be_reexecuted_again(jm: Harness) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    first, _, _ = queue_three(jm)
    jm.run_next(result=2, feedback="first failure")
    jm.ok("failed.execute", {"id": first})
    jm.run_next(result=2, feedback="second failure")
    row = jm.rows("failed")[0]
    assert (row["attempt"], row["feedback"]) == (2, "second failure")
    jm.ok("failed.execute", {"id": first})
    assert (jm.rows("queue")[0]["attempt"], jm.rows("queue")[0]["feedback"]) == (
        3, "second failure")


def test_executed_remove_and_failed_delete_take_rows_from_their_own_table(jm: Harness) -> None:
    jm.ok("settings.set", {"interval_seconds": 0})
    first, second, third = queue_three(jm)
    jm.run_next(result=3)
    jm.run_next(result=2)
    assert jm.error("executed.remove", {"id": second})[0] == "not_found"
    assert jm.error("failed.delete", {"id": first})[0] == "not_found"
    assert jm.error("executed.remove", {"id": third})[0] == "not_found"  # still queued
    assert jm.error("failed.execute", {"id": third})[0] == "not_found"
    assert jm.ok("executed.remove", {"id": first})["status"] == "gone"
    assert jm.ok("failed.delete", {"id": second})["status"] == "gone"
    assert jm.rows("executed") == []
    assert jm.rows("failed") == []
    assert jm.error("failed.execute", {"id": second})[0] == "not_found"


def test_an_execution_interrupted_by_a_crash_fails_at_the_next_start_and_the_queue_stays(
    jm: Harness, open_harness: Callable[..., Harness], clock: Clock
) -> None:
    first, second, third = queue_three(jm)
    # The store records the start, then the process dies before the views are updated.
    dispatch = jm.unit(jm.manager.dispatch, apply_views=False)
    assert dispatch is not None
    assert dispatch.execution_id == first
    clock.advance(120)
    restarted = open_harness()  # a new JobManager on the same files; views caught up
    assert restarted.rows("queue")[0]["state"] == "running"
    assert restarted.unit(restarted.manager.interrupt_running) == [first]
    (failed,) = restarted.events(Execution.Failed)
    assert (failed.interrupted, failed.feedback, failed.actor) == (True, INTERRUPTED, "scheduler")
    row = restarted.rows("failed")[0]
    assert (row["id"], row["result"], row["feedback"]) == (first, 2, INTERRUPTED)
    assert row["finished_at"] == iso(clock())
    assert [(r["id"], r["state"]) for r in restarted.rows("queue")] == [
        (second, "queued"), (third, "queued")]
    assert restarted.manager.scheduler.running is None
    assert restarted.unit(restarted.manager.interrupt_running) == []  # nothing left
    clock.advance(5)
    assert restarted.run_next().execution_id == second


def test_nothing_is_interrupted_after_a_clean_stop(
    jm: Harness, open_harness: Callable[..., Harness]
) -> None:
    queue_three(jm)
    jm.run_next()
    restarted = open_harness()
    assert restarted.unit(restarted.manager.interrupt_running) == []
    assert restarted.events(Execution.Failed) == []


# Auto Cleanup -------------------------------------------------------------------------------


def run_many(jm: Harness, count: int, result: int, prefix: str = "n") -> list[str]:
    """`count` executions of job `backup` ending in `result`, one second apart, oldest first."""
    jm.ok("settings.set", {"interval_seconds": 0})
    ids = []
    for i in range(count):
        jm.notify("alarm", {"id": f"{prefix}-{i}"})
        ids.append(jm.run_next(result=result).execution_id)
    return ids


def test_cleanup_run_removes_rows_past_max_rows_oldest_first(jm: Harness) -> None:
    jm.add_job("backup")
    done = run_many(jm, 5, result=3)
    failed = run_many(jm, 3, result=2, prefix="f")
    jm.ok("settings.set", {"executed_cleanup": {"max_rows": 2}, "failed_cleanup": {"max_rows": 1}})
    assert jm.ok("cleanup.run", {"table": "executed"}, actor="bob") == {"executed": 3}
    assert jm.ids("executed") == [done[4], done[3]]
    assert len(jm.rows("failed")) == 3  # only the table named
    cleaned = jm.events(Execution.CleanedUp)
    assert [c.originator_id for c in cleaned] == [execution_id(f"n-{i}", "backup")
                                                  for i in (0, 1, 2)]
    assert {(c.table, c.actor) for c in cleaned} == {("executed", "bob")}
    assert len({c.cleanup for c in cleaned}) == 1
    (ran,) = jm.events(Scheduler.CleanupRan)
    assert (ran.table, ran.removed, ran.actor, ran.cleanup) == (
        "executed", 3, "bob", cleaned[0].cleanup)
    assert jm.ok("cleanup.run", {"table": "all"}) == {"executed": 0, "failed": 2}
    assert jm.ids("failed") == [failed[2]]


def test_cleanup_removes_rows_older_than_max_age_days(jm: Harness, clock: Clock) -> None:
    jm.add_job("backup")
    jm.ok("settings.set", {"failed_cleanup": {"max_rows": None, "max_age_days": 1}})
    old = run_many(jm, 2, result=2, prefix="old")
    clock.advance(20 * 3600)
    new = run_many(jm, 2, result=2, prefix="new")
    clock.advance(4 * 3600 - 2)  # old-0 is just over one day old, old-1 exactly one day
    assert jm.unit(lambda uow: jm.manager.cleanup(uow, "failed", "scheduler")) == 1
    assert jm.ids("failed") == [new[1], new[0], old[1]]
    clock.advance(0.001)
    assert jm.unit(lambda uow: jm.manager.cleanup(uow, "failed", "scheduler")) == 1
    assert jm.ids("failed") == [new[1], new[0]]
    assert {c.originator_id for c in jm.events(Execution.CleanedUp)} == {
        execution_id(n, "backup") for n in ("old-0", "old-1")}
    assert old[0] not in jm.ids("failed")
    assert jm.unit(lambda uow: jm.manager.cleanup(uow, "failed", "scheduler")) == 0


def test_cleanup_is_due_at_start_and_then_every_every_seconds(jm: Harness, clock: Clock) -> None:
    assert jm.manager.cleanup_due(clock()) == ["executed", "failed"]
    jm.ok("settings.set", {"executed_cleanup": {"every_seconds": 60}})
    for table in jm.manager.cleanup_due(clock()):
        jm.unit(partial(jm.manager.cleanup, table=table, actor="scheduler"))
    assert jm.manager.cleanup_due(clock()) == []
    assert jm.manager.next_cleanup(clock()) == clock() + timedelta(seconds=60)
    clock.advance(60)
    assert jm.manager.cleanup_due(clock()) == ["executed"]


def test_a_cleanup_that_removes_nothing_still_records_its_run(jm: Harness) -> None:
    assert jm.ok("cleanup.run", {"table": "all"}) == {"executed": 0, "failed": 0}
    assert [(r.table, r.removed) for r in jm.events(Scheduler.CleanupRan)] == [
        ("executed", 0), ("failed", 0)]


# Settings -----------------------------------------------------------------------------------


def test_settings_set_persists_across_a_new_job_manager(
    jm: Harness, open_harness: Callable[..., Harness]
) -> None:
    assert jm.views.settings() == jm.manager.scheduler.settings_json()
    result = jm.ok("settings.set", {"interval_seconds": 12.5,
                                    "failed_cleanup": {"max_rows": None, "every_seconds": 30}})
    expected = {
        "interval_seconds": 12.5,
        "executed_cleanup": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 3600.0},
        "failed_cleanup": {"max_rows": None, "max_age_days": 7.0, "every_seconds": 30.0},
        "archive": {"max_age_days": None, "every_seconds": 3600.0},
    }
    assert result == expected
    assert jm.views.settings() == expected
    (changed,) = jm.events(Scheduler.SettingsChanged)
    assert changed.actor == "alice"
    restarted = open_harness()
    assert restarted.manager.scheduler.settings_json() == expected
    assert restarted.views.settings() == expected


def test_settings_that_clear_both_cleanup_limits_are_invalid_and_change_nothing(
    jm: Harness,
) -> None:
    before = jm.views.settings()
    code, message = jm.error("settings.set", {
        "interval_seconds": 1, "executed_cleanup": {"max_rows": None, "max_age_days": None}})
    assert code == "invalid"
    assert "at least one of max_rows / max_age_days" in message
    assert jm.views.settings() == before
    assert jm.manager.scheduler.settings_json() == before
    assert jm.events(Scheduler.SettingsChanged) == []


def test_settings_set_to_the_current_values_records_no_event(jm: Harness) -> None:
    assert jm.ok("settings.set", {"interval_seconds": 5}) == jm.views.settings()
    assert jm.events(Scheduler.SettingsChanged) == []


# Rebuild and snapshots ----------------------------------------------------------------------


def busy_history(jm: Harness, clock: Clock) -> None:
    """A bit of everything: jobs added, changed, removed and re-added; runs and cleanups."""
    jm.ok("settings.set", {"interval_seconds": 0, "executed_cleanup": {"max_rows": 2}})
    jm.add_job("backup", match={"site": "paris"}, command="run {site}")
    jm.add_job("report", trigger="alarm")
    jm.add_job("gone")
    jm.ok("job.update", {"name": "report", "enabled": False, "match": {"x": [1, {"y": None}]}})
    jm.ok("job.remove", {"name": "gone"})
    jm.ok("job.update", {"name": "report", "enabled": True})
    for i in range(6):
        jm.notify("alarm", {"id": f"n-{i}", "site": "paris", "x": [1, {"y": None}]})
        clock.advance(1)
    jm.notify("alarm", b"rubbish")
    jm.run_next(result=2, feedback="boom")
    first_failed = jm.ids("failed")[0]
    for result in (3, 3, 2, 3, 3):
        jm.run_next(result=result)
    jm.ok("failed.execute", {"id": first_failed})
    jm.ok("queue.execute-now", {"id": jm.ids("queue")[-1]})
    jm.run_next(result=3)
    jm.ok("queue.remove", {"id": jm.ids("queue")[-1]})
    jm.ok("cleanup.run", {"table": "all"})
    jm.ok("failed.delete", {"id": jm.ids("failed")[0]})
    jm.ok("executed.remove", {"id": jm.ids("executed")[0]})
    jm.ok("job.add", {"name": "gone", "script": "notify.sh", "trigger": "other"})
    jm.dispatch()


def test_a_rebuild_of_the_views_equals_the_incrementally_maintained_views(
    jm: Harness, clock: Clock, tmp_path: Path
) -> None:
    busy_history(jm, clock)
    incremental = jm.views.snapshot()
    assert incremental["queue"] and incremental["executed"] and incremental["jobs"]
    assert any(row["state"] == "running" for row in incremental["queue"])
    position = log_position(jm.app)
    jm.views.reset()
    assert jm.views.snapshot()["jobs"] == []
    assert jm.views.position == 0
    catch_up(jm.app, jm.views)
    assert jm.views.snapshot() == incremental
    assert jm.views.position == position
    fresh = Views(str(tmp_path / "fresh-views.db"))
    try:
        catch_up(jm.app, fresh)
        assert fresh.snapshot() == incremental
        for view in ("jobs", "queue", "executed", "failed", "settings"):
            assert fresh.payload(view, 1000) == jm.views.payload(view, 1000)
    finally:
        fresh.close()


def test_the_scheduler_is_snapshotted_and_reloads_from_its_snapshot(
    jm: Harness, open_harness: Callable[..., Harness], clock: Clock
) -> None:
    jm.add_job("backup")
    jm.notify("alarm", {"id": "n-1"})
    jm.run_next()  # so last_finished_at, a datetime, is in the snapshot's state
    jm.ok("settings.set", {"interval_seconds": 1, "failed_cleanup": {"max_rows": None}})
    cleanups = [jm.command_work("cleanup.run", {"table": "all"}) for _ in range(125)]
    for _ in range(2):
        clock.advance(1)
        jm.batch(*cleanups)  # 250 scheduler events per batch
    scheduler = jm.manager.scheduler
    assert scheduler.version > 500
    assert jm.app.snapshots is not None
    snapshots: list[Any] = list(jm.app.snapshots.get(SCHEDULER_ID))
    # Taken from memory at the end of the batch that passed version 500.
    assert len(snapshots) == 1
    assert 500 <= snapshots[0].originator_version < 500 + 250
    assert snapshots[0].state["last_finished_at"] == scheduler.last_finished_at

    restarted = open_harness()
    reloaded = restarted.manager.scheduler
    replayed: Any = None
    events: list[Any] = list(jm.app.events.get(SCHEDULER_ID))
    for event in events:
        replayed = event.mutate(replayed)
    assert reloaded.version == replayed.version == scheduler.version
    assert vars(reloaded) == vars(replayed)
    assert reloaded.settings_json() == scheduler.settings_json()
    assert reloaded.last_cleanup == scheduler.last_cleanup
    clock.advance(5)
    restarted.notify("alarm", {"id": "n-2"})
    assert restarted.run_next().execution_id == eid("n-2", "backup")  # and it keeps working


def test_empty_correlation_data_identifies_nothing_so_each_command_runs(jm: Harness) -> None:
    jm.ok("job.add", {"name": "a", "script": "backup.sh", "trigger": "t"}, correlation=b"")
    reply = jm.command("job.add", {"name": "b", "script": "backup.sh", "trigger": "t"},
                       correlation=b"")
    assert reply["ok"] is True
    assert [row["name"] for row in jm.rows("jobs")] == ["a", "b"]
    assert jm.events(CommandRecord.Handled) == []


def test_an_execution_out_of_the_cache_is_replayed_from_its_own_events(
    jm: Harness, open_harness: Callable[..., Harness]
) -> None:
    jm.add_job("backup")
    jm.notify("alarm", {"id": "n-1"})
    jm.run_next(result=2, feedback="broke")
    entry = eid("n-1", "backup")
    jm.ok("failed.execute", {"id": entry})
    jm.notify("alarm", {"id": "n-2"})
    model = open_harness().manager.model  # a new writer: nothing cached
    loaded = model.execution(UnitOfWork(), entry)
    library: Any = jm.app.repository.get(UUID(entry))
    assert loaded.version == library.version > 3
    assert vars(loaded) == vars(library)
    assert loaded.status == library.status
    queued = model.execution(UnitOfWork(), eid("n-2", "backup"))
    assert vars(queued) == vars(jm.app.repository.get(UUID(eid("n-2", "backup"))))
    # Another kind of aggregate is no entry, and its history is not read.
    assert model.log.events_of(SCHEDULER_ID, "att_jm:Execution.") == []
    assert len(model.log.events_of(UUID(entry), "att_jm:Execution.")) == library.version
    for other in (str(SCHEDULER_ID), str(job_id("backup")), str(uuid4())):
        with pytest.raises(NotFound, match="no entry"):
            model.execution(UnitOfWork(), other)


def test_an_execution_whose_first_events_are_archived_comes_from_its_snapshot(
    jm: Harness, open_harness: Callable[..., Harness]
) -> None:
    jm.add_job("backup")
    jm.notify("alarm", {"id": "n-1"})
    entry = UUID(eid("n-1", "backup"))
    jm.app.take_snapshot(entry)
    expected: Any = jm.app.repository.get(entry)
    log = jm.manager.model.log
    table = jm.app.recorder.events_table_name  # type: ignore[attr-defined]
    key: Any = entry.hex if log.dialect.name == "sqlite" else entry
    log.connection.execute(log.dialect.q(
        f"DELETE FROM {table} WHERE originator_id = ? AND originator_version = 1"),  # noqa: S608
        (key,))
    model = open_harness().manager.model
    assert model.log.events_of(entry, "att_jm:Execution.") == []
    assert vars(model.execution(UnitOfWork(), str(entry))) == vars(expected)
