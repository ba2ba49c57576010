"""`audit log` filters, on hand-made records (no store needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from att_jm.audit.filters import LogFilter, topics_for
from att_jm.domain.ids import execution_id, job_id, notification_id
from att_jm.log.lineage import execution_key
from att_jm.log.records import Record
from att_jm.log.rows import AuditError

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
E1 = str(execution_id("n-1", "ipx"))
E2 = str(execution_id("n-2", "other"))


def record(position: int, topic: str, aggregate: str, **state: Any) -> Record:
    return Record(position, f"att_jm:{topic}", aggregate, 1, T0 + timedelta(seconds=position),
                  state)


LOG = [
    record(1, "Job.Added", str(job_id("ipx")), name="ipx", actor="alice"),
    record(2, "Job.Added", str(job_id("other")), name="other", actor="bob"),
    record(3, "Notification.Received", str(notification_id("n-1")), notification_id="n-1",
           enqueued=[{"job": "ipx", "execution_id": E1}], skipped=[], actor="channel-manager"),
    record(4, "Execution.Enqueued", E1, job="ipx", notification_id="n-1",
           actor="channel-manager"),
    record(5, "Notification.Received", str(notification_id("n-2")), notification_id="n-2",
           enqueued=[{"job": "other", "execution_id": E2}], skipped=[{"job": "ipx",
                                                                     "reason": "no field"}],
           actor="channel-manager"),
    record(6, "Execution.Enqueued", E2, job="other", notification_id="n-2",
           actor="channel-manager"),
    record(7, "Execution.Started", E1, attempt=1, actor="scheduler"),
    record(8, "Scheduler.Dispatched", "sched", execution_id=E1, actor="scheduler"),
    record(9, "Execution.Started", E2, attempt=1, actor="scheduler"),
    record(10, "Job.Updated", str(job_id("ipx")), changes={"enabled": False}, actor="carol"),
    record(11, "Execution.RemovedFromQueue", E2, actor="carol"),
    record(12, "CommandRecord.Handled", "cmd", command="queue.remove",
           reply={"ok": True, "result": {"id": E2}}, actor="carol"),
]


def positions(chosen: LogFilter) -> list[int]:
    return [r.position for r in chosen.select(LOG)]


def test_no_filter_shows_everything() -> None:
    assert positions(LogFilter()) == list(range(1, 13))


def test_the_job_filter_follows_the_job_and_its_executions() -> None:
    assert positions(LogFilter(job="ipx")) == [1, 3, 4, 5, 7, 8, 10]
    assert positions(LogFilter(job="other")) == [2, 5, 6, 9, 11]


def test_the_execution_filter_takes_its_notification_scheduler_and_commands() -> None:
    assert positions(LogFilter(execution=E1)) == [3, 4, 7, 8]
    assert positions(LogFilter(execution=E2)) == [5, 6, 9, 11, 12]


def test_the_notification_filter_follows_what_it_enqueued() -> None:
    assert positions(LogFilter(notification="n-2")) == [5, 6, 9, 11]


def test_actor_and_time_filters() -> None:
    assert positions(LogFilter(actor="carol")) == [10, 11, 12]
    since, until = T0 + timedelta(seconds=4), T0 + timedelta(seconds=7)
    assert positions(LogFilter(since=since, until=until)) == [4, 5, 6]


@pytest.mark.parametrize(("patterns", "expected"), [
    (("execution.started",), {"att_jm:Execution.Started"}),
    (("job.*",), {"att_jm:Job.Added", "att_jm:Job.Updated", "att_jm:Job.Removed",
                  "att_jm:Job.Readded"}),
    (("ledger.sealed", "ledger.sealed"), {"att_jm:Ledger.Sealed"}),
])
def test_types_become_stored_topics(patterns: tuple[str, ...], expected: set[str]) -> None:
    topics = topics_for(patterns)
    assert set(topics) == expected
    assert len(topics) == len(expected)


def test_an_unknown_type_or_execution_id_is_refused() -> None:
    with pytest.raises(AuditError, match=r"no event type matches 'execution\.exploded'"):
        topics_for(("execution.exploded",))
    with pytest.raises(AuditError, match="not an execution id"):
        execution_key("n-1")
    assert execution_key(E1.replace("-", "").upper()) == E1
