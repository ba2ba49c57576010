"""`att-jm audit ...` in-process against a real store: what the auditor reads, exit codes; on an
SQLite and on a PostgreSQL store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BACKENDS
from helpers.store import another_store, copy_store, rewrite_state, store_for

from att_jm import cli
from att_jm.domain.ids import execution_id


@pytest.fixture(scope="module", params=BACKENDS)
def day(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("day")
    run = ScriptedRun(directory, seal_every=30,
                      store=store_for(request, request.param, directory))
    ids = typical_day(run)
    run.seal()
    run.close()
    yield run.store, ids


def audit(capsys: pytest.CaptureFixture[str], store: str, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["audit", *argv, "--store", store])
    out, err = capsys.readouterr()
    return code, out, err


def test_log_prints_a_table_or_json_lines(day: tuple[str, dict[str, str]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = day
    code, out, _ = audit(capsys, store, "log", "--type", "job.added")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["POSITION", "AT", "TYPE", "ACTOR", "AGGREGATE", "DATA"]
    assert len(lines) == 1 + 3 + 1
    assert lines[-1] == "3 events"
    assert "name=ipx" in lines[1]
    code, out, _ = audit(capsys, store, "log", "--actor", "carol", "--json")
    assert code == 0
    events = [orjson.loads(line) for line in out.splitlines()]
    assert events
    assert all(e["data"]["actor"] == "carol" for e in events)
    assert set(events[0]) == {"position", "type", "at", "data"}


def test_views_print_every_view_or_one_as_json(day: tuple[str, dict[str, str]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = day
    code, out, err = audit(capsys, store, "views", "--position", "30")
    assert code == 0, err
    assert out.startswith("views at log position 30\n")
    for name in ("jobs", "queue", "executed", "failed", "settings"):
        assert f"== {name} ==" in out
    code, out, _ = audit(capsys, store, "views", "--view", "jobs", "--json", "--limit", "1")
    shown = orjson.loads(out)
    assert list(shown["views"]) == ["jobs"]
    assert len(shown["views"]["jobs"]["rows"]) == 1
    assert shown["views"]["jobs"]["total"] == 2  # ipx and paris; down was removed


def test_trace_reads_as_a_story_and_an_unknown_id_exits_1(
    day: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    store, ids = day
    code, out, _ = audit(capsys, store, "trace", ids["failed"])
    assert code == 0
    assert "attempt 1: started" in out
    assert "operator carol: failed.execute" in out
    assert "-> attempt 2" in out
    code, _, err = audit(capsys, store, "trace", str(execution_id("none", "ipx")))
    assert code == 1
    assert "no execution" in err


def test_backtest_prints_what_it_would_run_and_the_counts(
    day: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = day
    code, out, _ = audit(capsys, store, "backtest", "--trigger", "channel-up", "--match",
                         "site=paris", "--command", "c={channel}")
    assert code == 0
    assert "WOULD" in out.splitlines()[0]
    assert "c=C1" in out
    assert out.splitlines()[-1].startswith("9 notifications")
    code, _, err = audit(capsys, store, "backtest", "--trigger", "a/b")
    assert code == 2
    assert "invalid draft job" in err


def test_verify_exits_0_on_an_intact_log_and_1_on_a_damaged_one(
    day: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    store, _ = day
    code, out, _ = audit(capsys, store, "verify")
    assert code == 0
    assert out.startswith("verify: OK\n")
    damaged = copy_store(store, another_store(request, store, tmp_path / "damaged"))
    rewrite_state(damaged, 12, lambda _: b"{not json")
    code, out, _ = audit(capsys, str(damaged), "verify", "--json")
    assert code == 1
    report = orjson.loads(out)
    assert report["ok"] is False
    assert report["findings"][0]["kind"] == "modified"
    assert report["findings"][0]["position"] == 12
    code, out, err = audit(capsys, str(damaged), "log", "--upto", "13")
    assert code == 0  # the log goes on past an unreadable event, and says so
    assert "position 12: unreadable event state" in err
    assert out.splitlines()[-1] == "12 events"


def test_export_and_import_round_trip_on_the_command_line(
    day: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    store, _ = day
    exported = tmp_path / "log.jsonl"
    code, _, err = audit(capsys, store, "export", "--output", str(exported))
    assert code == 0
    assert err.startswith("exported ")
    copy = another_store(request, store, tmp_path / "copy")
    code, out, _ = audit(capsys, copy, "import", str(exported), "--json")
    assert code == 0
    assert orjson.loads(out)["events"] == len(exported.read_bytes().splitlines())
    assert audit(capsys, copy, "verify")[0] == 0
    code, _, err = audit(capsys, copy, "import", str(exported))
    assert code == 2
    assert "already holds events" in err


def test_a_bad_time_is_a_usage_error(day: tuple[str, dict[str, str]],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = day
    code, _, err = audit(capsys, store, "views", "--at", "yesterday")
    assert code == 2
    assert "not an ISO-8601 time" in err
