"""`log`: the stored events in order, in their public form, filtered by what an auditor asks;
on an SQLite and on a PostgreSQL store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BACKENDS
from helpers.store import store_for

from att_jm.audit.filters import LogFilter
from att_jm.log.messages import event_message, record_message
from att_jm.log.records import Record, decode
from att_jm.log.rows import AuditError, StoreReader
from att_jm.store import open_store, read_log


@pytest.fixture(scope="module", params=BACKENDS)
def day(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("day")
    run = ScriptedRun(directory, store=store_for(request, request.param, directory))
    ids = typical_day(run)
    run.seal()
    run.close()
    yield run.store, ids


def shown(store: str, chosen: LogFilter) -> list[Record]:
    reader = StoreReader(store)
    try:
        return list(chosen.select(
            decode(row) for row in reader.rows(chosen.after, chosen.upto, chosen.topics)))
    finally:
        reader.close()


def test_every_event_is_shown_in_order_exactly_as_published_on_the_events_topic(
    day: tuple[str, dict[str, str]],
) -> None:
    store, _ = day
    app = open_store(store, readonly=True)
    published = [event_message(position, event) for position, event in read_log(app, 0)]
    app.close()
    assert [record_message(r) for r in shown(store, LogFilter())] == published


def test_filtering_by_type_accepts_names_and_patterns(day: tuple[str, dict[str, str]]) -> None:
    store, _ = day
    failed = shown(store, LogFilter(types=("execution.failed",)))
    assert failed
    assert {r.type for r in failed} == {"execution.failed"}
    jobs = shown(store, LogFilter(types=("job.*",)))
    assert {r.type for r in jobs} == {"job.added", "job.updated", "job.removed"}
    with pytest.raises(AuditError, match="no event type matches"):
        _ = LogFilter(types=("nothing.*",)).topics


def test_filtering_by_execution_gives_its_lineage(day: tuple[str, dict[str, str]]) -> None:
    store, ids = day
    lineage = shown(store, LogFilter(execution=ids["failed"]))
    types = [r.type for r in lineage]
    assert types[:2] == ["notification.received", "execution.enqueued"]
    assert "execution.reexecuted" in types
    assert "command_record.handled" in types
    assert types.count("scheduler.dispatched") == 2
    assert all(r.aggregate_id == ids["failed"] or r.type in (
        "notification.received", "scheduler.dispatched", "scheduler.released",
        "command_record.handled") for r in lineage)


def test_filtering_by_job_follows_its_executions(day: tuple[str, dict[str, str]]) -> None:
    store, _ = day
    records = shown(store, LogFilter(job="paris"))
    types = {r.type for r in records}
    assert {"job.added", "notification.received", "execution.enqueued",
            "execution.started", "scheduler.dispatched"} <= types
    entries = {r.aggregate_id for r in records if r.type == "execution.enqueued"}
    assert all(r.state["job"] == "paris" for r in records if r.type == "execution.enqueued")
    assert all(r.aggregate_id in entries for r in records if r.type.startswith("execution."))


def test_filtering_by_notification_gives_it_and_what_it_enqueued(
    day: tuple[str, dict[str, str]],
) -> None:
    store, _ = day
    records = shown(store, LogFilter(notification="up-1"))
    assert records[0].type == "notification.received"
    jobs = {r.state["job"] for r in records if r.type == "execution.enqueued"}
    assert jobs == {"ipx", "paris"}


def test_filtering_by_actor_time_and_position(day: tuple[str, dict[str, str]]) -> None:
    store, _ = day
    carol = shown(store, LogFilter(actor="carol"))
    assert carol
    assert {r.actor for r in carol} == {"carol"}
    everything = shown(store, LogFilter())
    middle = everything[len(everything) // 2]
    later = shown(store, LogFilter(since=middle.at))
    assert later
    assert all(r.at >= middle.at for r in later)
    earlier = shown(store, LogFilter(until=middle.at))
    assert all(r.at < middle.at for r in earlier)
    assert len(earlier) + len(later) == len(everything)
    window = shown(store, LogFilter(after=10, upto=20))
    assert [r.position for r in window] == list(range(11, 21))
    none = shown(store, LogFilter(since=everything[-1].at + timedelta(seconds=1)))
    assert none == []


def test_filters_combine_with_and(day: tuple[str, dict[str, str]]) -> None:
    store, ids = day
    records = shown(store, LogFilter(execution=ids["failed"], types=("execution.*",),
                                     actor="carol"))
    assert [r.type for r in records] == ["execution.reexecuted"]


def test_the_log_reads_in_pages_and_keeps_only_the_followed_ids(
    day: tuple[str, dict[str, str]],
) -> None:
    store, _ = day
    chosen = LogFilter(job="ipx")
    reader = StoreReader(store)
    pages: list[list[Any]] = list(reader.pages(page=7))
    reader.close()
    assert all(len(p) == 7 for p in pages[:-1])
    records = list(chosen.select(decode(row) for page in pages for row in page))
    assert records == shown(store, LogFilter(job="ipx"))
    assert len(chosen._executions) == sum(1 for r in records if r.type == "execution.enqueued")
