"""`trace`: the whole lineage of one execution, from the log alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.audit_run import ScriptedRun
from helpers.postgres import BOTH_BACKENDS

from att_jm.audit.render import render_trace
from att_jm.domain.ids import execution_id
from att_jm.log.lineage import Trace, trace
from att_jm.log.rows import AuditError, StoreReader

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL


def traced(run: ScriptedRun, entry: str) -> Trace:
    reader = StoreReader(run.store)
    try:
        return trace(reader, entry)
    finally:
        reader.close()


@pytest.fixture
def run(tmp_path: Path, store_location: str) -> ScriptedRun:
    scripted = ScriptedRun(tmp_path / "store", store=store_location)
    scripted.ok("settings.set", {"interval_seconds": 0})
    scripted.ok("job.add", {"name": "ipx", "script": "ipx-update", "trigger": "channel-up",
                            "match": {"site": "paris"}, "command": "channel={channel}"})
    return scripted


def test_a_twice_failed_then_succeeded_execution_shows_three_attempts_and_who_retried(
    run: ScriptedRun,
) -> None:
    run.notify("channel-up", {"id": "n-1", "channel": "BBC One", "site": "paris"})
    entry = str(execution_id("n-1", "ipx"))
    assert run.run_next(2, "exit code 1: busy", exit_code=1) == entry
    run.ok("failed.execute", {"id": entry}, actor="carol")
    assert run.run_next(2, "timed out after 300 s", exit_code=None) == entry
    run.ok("failed.execute", {"id": entry}, actor="dave")
    assert run.run_next(3, "IPX updated") == entry
    run.ok("settings.set", {"executed_cleanup": {"max_rows": 1, "max_age_days": None}})
    run.notify("channel-up", {"id": "n-2", "channel": "ITV", "site": "paris"})
    run.run_next()
    run.cleanup("executed")
    run.close()

    result = traced(run, entry)

    assert result.status == "cleaned up"
    assert [a["attempt"] for a in result.attempts] == [1, 2, 3]
    assert [a["ended"]["result"] for a in result.attempts] == [2, 2, 3]
    assert [a["ended"]["feedback"] for a in result.attempts] == [
        "exit code 1: busy", "timed out after 300 s", "IPX updated"]
    assert all(a["started"]["position"] < a["ended"]["position"] for a in result.attempts)
    assert [(a["action"], a["actor"], a["attempt"]) for a in result.actions] == [
        ("failed.execute", "carol", 2), ("failed.execute", "dave", 3)]
    assert all(a["correlation"] for a in result.actions)  # the command records were found
    assert result.notification is not None
    assert result.notification["payload"] == {"id": "n-1", "channel": "BBC One",
                                              "site": "paris"}
    assert result.notification["trigger"] == "channel-up"
    assert result.job is not None
    assert result.job["definition"]["match"] == {"site": "paris"}
    assert result.job["definition"]["command"] == "channel={channel}"
    assert result.job["changed"]["actor"] == "alice"
    assert result.enqueued["command"] == "channel=BBC One"
    assert result.cleanup is not None
    assert result.cleanup["table"] == "executed"
    assert result.cleanup["actor"] == "scheduler"
    types = [e["type"] for e in result.events]
    assert types[:2] == ["notification.received", "execution.enqueued"]
    assert types.count("execution.started") == 3
    assert types.count("scheduler.dispatched") == 3
    assert types.count("command_record.handled") == 2
    assert types[-1] == "execution.cleaned_up"
    positions = [e["position"] for e in result.events]
    assert positions == sorted(positions)


def test_an_attempt_the_retry_policy_queued_again_shows_its_end_and_the_retry(
    run: ScriptedRun,
) -> None:
    run.ok("job.add", {"name": "flaky", "script": "ipx-update", "trigger": "flaky",
                       "retry": {"max_attempts": 2}})
    run.notify("flaky", {"id": "f-1"})
    entry = str(execution_id("f-1", "flaky"))
    assert run.run_next(2, "exit code 1: busy", exit_code=1) == entry  # retried by the policy
    assert run.run_next(3, "done") == entry
    run.close()

    result = traced(run, entry)

    assert [a["attempt"] for a in result.attempts] == [1, 2]
    assert [a["ended"]["result"] for a in result.attempts] == [2, 3]
    assert result.attempts[0]["ended"]["feedback"] == "exit code 1: busy"
    assert result.attempts[0]["ended"]["retry"]["attempt"] == 2
    assert isinstance(result.attempts[0]["ended"]["retry"]["not_before"], str)
    assert "retry" not in result.attempts[1]["ended"]
    assert all(a["started"]["position"] < a["ended"]["position"] for a in result.attempts)
    assert result.actions == []  # no operator took part: the policy retried it
    assert "retried by the job's policy: attempt 2 not before " in render_trace(result)


def test_a_trace_shows_the_job_as_it_was_when_the_entry_was_enqueued(run: ScriptedRun) -> None:
    run.notify("channel-up", {"id": "n-1", "channel": "BBC One", "site": "paris"})
    run.ok("job.update", {"name": "ipx", "command": "changed={channel}"}, actor="bob")
    run.close()
    result = traced(run, str(execution_id("n-1", "ipx")))
    assert result.status == "queued"
    assert result.job is not None
    assert result.job["definition"]["command"] == "channel={channel}"
    assert result.attempts == []


def test_operator_removal_of_a_queued_entry_is_an_action_with_its_actor(
    run: ScriptedRun,
) -> None:
    run.notify("channel-up", {"id": "n-1", "channel": "BBC One", "site": "paris"})
    entry = str(execution_id("n-1", "ipx"))
    run.ok("queue.execute-now", {"id": entry}, actor="erin")
    run.ok("queue.remove", {"id": entry}, actor="bob")
    run.close()
    result = traced(run, entry.replace("-", ""))  # the undashed form works too
    assert result.status == "removed from the queue"
    assert [(a["action"], a["actor"]) for a in result.actions] == [
        ("queue.execute-now", "erin"), ("queue.remove", "bob")]


def test_tracing_an_unknown_or_malformed_id_is_an_audit_error(run: ScriptedRun) -> None:
    run.close()
    with pytest.raises(AuditError, match="no execution"):
        traced(run, str(execution_id("nope", "ipx")))
    with pytest.raises(AuditError, match="not an execution id"):
        traced(run, "n-1")
