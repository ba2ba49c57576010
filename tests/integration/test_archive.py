"""Archival (`att-jm audit archive`): a sealed range moved to a file, the store anchored.

A log is built with the real application (`ScriptedRun`: jobs, notifications, runs, Auto
Cleanup so that the oldest executions are gone), about half of it archived, and every audit
verb must answer with `--archive` exactly as before; the store shrinks, verifies from its
anchor, and with its archives as one chain; a tampered archive is named; the views and the
write index rebuilt from the anchor equal the live ones; the application goes on and starts
again on the anchored store. On an SQLite and on a PostgreSQL store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from helpers.archive import audit, busy_history, index_from_anchor, stored_rows
from helpers.audit_run import ScriptedRun
from helpers.postgres import BACKENDS
from helpers.store import another_store, store_for

from att_jm.audit.archiving import archive
from att_jm.domain.ids import SCHEDULER_ID, job_id
from att_jm.domain.seals import LEDGER_ID
from att_jm.log.archive import ArchiveReader
from att_jm.log.backend import is_postgres
from att_jm.log.rows import StoreReader
from att_jm.store import open_store
from projections.rebuild import catch_up
from projections.views import VIEWS, Views

ENQUEUED = "att_jm:Execution.Enqueued"


def used_pages(store: str) -> int:
    db = sqlite3.connect(store)
    try:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) - int(free)
    finally:
        db.close()


def executions(store: str) -> list[tuple[str, int]]:
    """(id, position of its Enqueued) of every execution of the log."""
    reader = StoreReader(store)
    try:
        return [(str(UUID(row.originator_id)), row.position)
                for row in reader.rows(topics=(ENQUEUED,))]
    finally:
        reader.close()


def loaded(store: str, ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    """Each aggregate as the application loads it (its attributes)."""
    app = open_store(store, readonly=True)
    try:
        return {key: dict(vars(app.repository.get(key))) for key in ids}
    finally:
        app.close()


@dataclass
class Archived:
    store: str
    views_path: str
    archive: str
    position: int  # the anchor
    end: int  # the log's end (nothing was appended since the archival)
    before: dict[str, Any]  # what the verbs answered before the archival
    rows_before: int
    pages_before: int | None
    aggregates: dict[UUID, dict[str, Any]]  # loaded before the archival
    live_views: dict[str, Any]  # the views the run kept, at the end


@pytest.fixture(scope="module", params=BACKENDS)
def archived(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archived]:
    directory = tmp_path_factory.mktemp("archived")
    run = ScriptedRun(directory, seal_every=20,
                      store=store_for(request, request.param, directory))
    busy_history(run)
    run.seal()
    end = run.position
    store = run.store
    live_views = {name: run.views.payload(name, 1000) for name in VIEWS}
    run.close()
    ids = executions(store)
    before: dict[str, Any] = {
        "log": audit(store, "log", "--json"),
        "log_range": audit(store, "log", "--json", "--after", "10", "--upto", str(end - 5)),
        "views": {p: audit(store, "views", "--json", "--position", str(p))
                  for p in (end // 5, end // 3, end // 2 + 7, end)},
        "views_at": audit(store, "views", "--json", "--at", "2026-03-02T08:20:00Z"),
        "views_early": audit(store, "views", "--json", "--at", "2026-03-02T08:05:00Z"),
        "trace": {key: audit(store, "trace", key, "--json") for key, _ in ids},
        "backtest": audit(store, "backtest", "--trigger", "channel-up", "--match", "site=paris",
                          "--json"),
    }
    jobs = [job_id("ipx"), job_id("paris")]
    aggregates = loaded(store, [SCHEDULER_ID, LEDGER_ID, *jobs])
    rows_before = stored_rows(store)
    pages_before = None if is_postgres(store) else used_pages(store)
    output = str(directory / "first.arc")
    result = archive(store, output, upto=end // 2, views_path=run.views_path)
    yield Archived(store, run.views_path, output, result.position, end, before, rows_before,
                   pages_before, aggregates, live_views)


def test_about_half_of_the_log_moves_to_the_archive_and_the_store_shrinks(
        archived: Archived) -> None:
    assert archived.end // 3 < archived.position <= archived.end // 2
    left = stored_rows(archived.store)
    assert left == archived.rows_before - archived.position
    with ArchiveReader(archived.archive) as reader:
        assert (reader.header.first, reader.header.last) == (1, archived.position)
        assert sum(1 for _ in reader.rows()) == archived.position
    if not is_postgres(archived.store):
        # freed pages are reused by later rows: the used pages drop
        assert archived.pages_before is not None
        assert used_pages(archived.store) < archived.pages_before


def test_the_store_verifies_from_its_anchor_and_with_its_archive_from_position_1(
        archived: Archived) -> None:
    code, out = audit(archived.store, "verify", "--json")
    result = orjson.loads(out)
    assert code == 0, result["findings"]
    assert result["archived"]["anchor"]["position"] == archived.position
    assert result["events"] == archived.end - archived.position
    code, out = audit(archived.store, "verify", "--json", "--archive", archived.archive)
    result = orjson.loads(out)
    assert code == 0, result["findings"]
    assert result["events"] == archived.end
    assert result["snapshots"] >= 3  # the anchor's snapshots, proven by the replay from 1


def test_every_verb_answers_with_the_archive_as_before(archived: Archived) -> None:
    store, before, arc = archived.store, archived.before, archived.archive
    assert audit(store, "log", "--json", "--archive", arc) == before["log"]
    assert audit(store, "log", "--json", "--after", "10", "--upto", str(archived.end - 5),
                 "--archive", arc) == before["log_range"]
    for position, answer in before["views"].items():
        assert audit(store, "views", "--json", "--position", str(position),
                     "--archive", arc) == answer
    assert audit(store, "views", "--json", "--at", "2026-03-02T08:20:00Z",
                 "--archive", arc) == before["views_at"]
    assert audit(store, "views", "--json", "--at", "2026-03-02T08:05:00Z",
                 "--archive", arc) == before["views_early"]
    assert audit(store, "backtest", "--trigger", "channel-up", "--match", "site=paris",
                 "--json", "--archive", arc) == before["backtest"]
    straddling = 0
    for key, position in executions_of(archived):
        assert audit(store, "trace", key, "--json", "--archive", arc) == before["trace"][key]
        events = orjson.loads(before["trace"][key][1])["events"]
        straddling += position <= archived.position < events[-1]["position"]
    assert straddling  # an execution with events on both sides of the cut


def executions_of(archived: Archived) -> list[tuple[str, int]]:
    return [(key, int(orjson.loads(answer[1])["enqueued"]["position"]))
            for key, answer in archived.before["trace"].items()]


def test_without_the_archive_questions_after_the_anchor_are_answered_from_it(
        archived: Archived) -> None:
    store, before = archived.store, archived.before
    for position, answer in before["views"].items():
        if position >= archived.position:
            assert audit(store, "views", "--json", "--position", str(position)) == answer
    code, out = audit(store, "views", "--json", "--position", str(archived.position - 1))
    assert code == 2
    message = orjson.loads(out)["error"]["message"]
    assert f"after position {archived.position} only" in message
    assert "--archive" in message
    assert audit(store, "views", "--json", "--at", "2026-03-02T08:20:00Z") == before["views_at"]
    assert audit(store, "views", "--json", "--at", "2026-03-02T08:05:00Z")[0] == 2
    code, out = audit(store, "log", "--json", "--after", str(archived.position))
    assert code == 0
    shown = [orjson.loads(line)["position"] for line in out.splitlines()]
    assert shown == list(range(archived.position + 1, archived.end + 1))
    old = next(key for key, position in executions_of(archived)
               if position <= archived.position)
    assert audit(store, "trace", old, "--json")[0] == 1


def test_aggregates_load_from_the_anchor_snapshots_as_before(archived: Archived) -> None:
    after = loaded(archived.store, list(archived.aggregates))
    for key, attributes in archived.aggregates.items():
        assert after[key] == attributes, key


def test_a_rebuild_and_the_write_index_start_from_the_anchor(archived: Archived) -> None:
    app = open_store(archived.store)
    try:
        views = Views(":memory:")
        catch_up(app, views)  # from empty views, as `att-jm rebuild` after its reset
        assert {name: views.payload(name, 1000) for name in VIEWS} == archived.live_views
        views.close()
    finally:
        app.close()
    rebuilt, live = index_from_anchor(archived.store)
    assert rebuilt == live
    assert live["jm_finished"]  # not trivially equal


def test_an_export_with_the_archive_imports_into_the_store_as_it_was(
        archived: Archived, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    exported = tmp_path / "log.jsonl"
    code, _ = audit(archived.store, "export", "--output", str(exported),
                    "--archive", archived.archive)
    assert code == 0
    lines = exported.read_bytes().splitlines()
    assert [orjson.loads(line)["position"] for line in lines] == list(
        range(1, archived.end + 1))
    copy = another_store(request, archived.store, tmp_path / "copy")
    assert audit(copy, "import", str(exported))[0] == 0
    code, out = audit(copy, "verify", "--json")
    assert code == 0, out
    assert orjson.loads(out)["archived"] is None  # a whole log again, from position 1
    assert audit(copy, "views", "--json", "--position", str(archived.end // 5)) == (
        archived.before["views"][archived.end // 5])
