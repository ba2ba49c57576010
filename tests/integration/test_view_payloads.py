"""View messages built from the encoded-row cache equal those built from scratch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day

from projections.views import VIEWS, Views


@pytest.fixture
def run(tmp_path: Path) -> Iterator[ScriptedRun]:
    scripted = ScriptedRun(tmp_path / "store")
    yield scripted
    scripted.close()


def check_every_view(views: Views, reader: Views, limit: int) -> None:
    for name in VIEWS:
        expected = orjson.dumps(views.payload(name, limit))
        assert views.payload_json(name, limit) == expected, name
        assert reader.payload_json(name, limit) == expected, name  # another process's reader


def test_the_cached_view_messages_follow_every_change_byte_for_byte(run: ScriptedRun) -> None:
    reader = Views(run.views.path, readonly=True)
    steps = 0
    original = run.unit

    def checked(work):  # type: ignore[no-untyped-def]  # wraps the helper's generic unit()
        nonlocal steps
        result = original(work)
        steps += 1
        for limit in (1000, 3):  # a small limit: rows enter and leave the cap
            check_every_view(run.views, reader, limit)
        return result

    run.unit = checked  # type: ignore[method-assign]  # a spy on the real one
    typical_day(run)  # runs, failures, re-execution, removals, execute-now, cleanup
    run.ok("job.add", {"name": "again", "script": "ok", "trigger": "t"})
    for n in range(5):
        run.notify("t", {"id": f"t-{n}"})
    run.ok("settings.set", {"interval_seconds": 3600})
    run.run_next()  # one running, others queued
    assert steps > 40
    reader.close()


def test_the_cache_holds_only_the_rows_of_the_last_message(run: ScriptedRun) -> None:
    run.ok("settings.set", {"interval_seconds": 0})
    run.ok("job.add", {"name": "j", "script": "ok", "trigger": "t"})
    for n in range(30):
        run.notify("t", {"id": f"n-{n}"})
        run.run_next()
    run.views.payload_json("executed", 10)
    assert len(run.views._encoded["executed"]) == 10  # the bound is the point
