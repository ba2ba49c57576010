"""`export` / `import`: the log as JSON Lines and back, byte for byte; a log on SQLite and on
PostgreSQL, each copied into a store on the same engine."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BACKENDS
from helpers.store import all_rows, another_store, exported, store_for, views_for

from att_jm.audit.replay import replay_views
from att_jm.audit.transfer import export, export_line, import_log
from att_jm.audit.verify import verify
from att_jm.log.codec import decode_state
from att_jm.log.rows import AuditError, StoreReader
from att_jm.store import open_store
from projections.rebuild import catch_up
from projections.views import Views


@pytest.fixture(scope="module", params=BACKENDS)
def original(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("original")
    run = ScriptedRun(directory, seal_every=25,
                      store=store_for(request, request.param, directory))
    typical_day(run)
    run.seal()
    run.notify("channel-up", {"id": "unsealed", "channel": "Z"})
    run.close()
    yield run.store


@pytest.fixture
def fresh(original: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """A new, empty store on the engine of `original` (in the folder `name` on SQLite)."""
    return lambda name: another_store(request, original, tmp_path / name)


def test_export_then_import_gives_the_same_rows_byte_for_byte(
    original: str, fresh: Callable[[str], str],
) -> None:
    text = exported(original)
    copy = fresh("copy")
    count = import_log(copy, text.splitlines())
    assert count == len(all_rows(original)) == text.count(b"\n")
    assert all_rows(copy) == all_rows(original)


def test_after_import_verify_passes_and_the_views_are_identical(
    original: str, fresh: Callable[[str], str], tmp_path: Path,
) -> None:
    copy = fresh("copy")
    import_log(copy, exported(original).splitlines())
    reader = StoreReader(copy)
    result = verify(reader)
    reader.close()
    assert result.ok
    assert result.unsealed == 2  # the notification and its entry after the last seal
    here, there = replay_views(original), replay_views(copy)
    try:
        assert here.payloads() == there.payloads()
        assert here.views.snapshot() == there.views.snapshot()
    finally:
        here.close()
        there.close()
    views = Views(views_for(copy, tmp_path))  # what the service builds on its start
    app = open_store(copy)
    catch_up(app, views)
    moment = replay_views(original)
    try:
        assert views.snapshot() == moment.views.snapshot()
    finally:
        moment.close()
        views.close()
        app.close()


def test_each_line_has_the_documented_fields_in_order(original: str) -> None:
    first = orjson.loads(exported(original).splitlines()[1])
    assert list(first) == ["position", "originator_id", "originator_version", "topic", "type",
                           "at", "state"]
    assert first["position"] == 2
    assert len(first["originator_id"]) == 32
    assert first["at"].endswith("Z")
    assert first["state"]["timestamp"]["_type_"] == "datetime_iso"


def test_a_state_that_compact_json_would_not_reproduce_travels_as_base64(
    original: str, tmp_path: Path
) -> None:
    reader = StoreReader(original)
    row = next(reader.rows())
    reader.close()
    spaced = row._replace(state=decode_state(row.state).replace(b":", b": ", 1))
    line = orjson.loads(export_line(spaced))
    assert base64.b64decode(line["state_base64"]) == spaced.state
    assert line["state"] == orjson.loads(spaced.state)


def test_import_refuses_a_store_that_already_holds_events(original: str) -> None:
    with pytest.raises(AuditError, match="already holds events"):
        import_log(original, exported(original).splitlines())


def test_import_names_the_line_of_a_bad_event_and_stores_nothing(
    original: str, fresh: Callable[[str], str],
) -> None:
    lines = exported(original).splitlines()
    bad = fresh("bad")
    with pytest.raises(AuditError, match="line 4"):
        import_log(bad, [*lines[:3], b'{"position": 4, "topic": "x"}', *lines[4:]])
    unknown = orjson.loads(lines[3])
    unknown["topic"] = "att_jm:Nothing.Such"
    with pytest.raises(AuditError, match="line 4: not an event of this service"):
        import_log(bad, [*lines[:3], orjson.dumps(unknown), *lines[4:]])
    with pytest.raises(AuditError, match="line 3: position 2 does not follow 2"):
        import_log(bad, [lines[0], lines[1], lines[1]])
    assert all_rows(bad) == []


def test_export_up_to_a_position_stops_there(original: str) -> None:
    reader = StoreReader(original)
    out = io.BytesIO()
    try:
        written = export(reader, out, upto=10)
    finally:
        reader.close()
    assert written == 10
    assert orjson.loads(out.getvalue().splitlines()[-1])["position"] == 10
