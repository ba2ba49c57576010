"""`att-jm audit` on the command line: parsing, the progress bar and the text rendering."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime

import orjson
import pytest

from att_jm import cli
from att_jm.audit.backtest import Counts
from att_jm.audit.progress import Progress
from att_jm.audit.render import (
    log_line,
    render_counts,
    render_trace,
    render_verification,
    summary,
)
from att_jm.audit.verify import Finding, Verification
from att_jm.cli.parser import build_parser
from att_jm.log.lineage import Trace
from att_jm.log.records import Record


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["audit", *argv])


def test_every_audit_verb_parses_with_its_options() -> None:
    ns = parse("log", "--type", "execution.*", "--type", "job.added", "--job", "ipx",
               "--since", "2026-01-01", "--after", "10", "--json", "--store", "s.db")
    assert ns.type == ["execution.*", "job.added"]
    assert ns.after == 10
    assert ns.handler == "audit"
    views = parse("views", "--position", "40", "--view", "queue", "--limit", "5")
    assert views.position == 40
    assert views.view == ["queue"]
    backtest = parse("backtest", "--trigger", "up", "--match", "site=paris", "--match",
                     "level.major=true", "--command", "x={channel}")
    assert backtest.match == [("site", "paris"), ("level.major", True)]
    assert parse("trace", "abc").id == "abc"
    assert parse("verify", "--witness", "w.jsonl").witness == "w.jsonl"
    assert parse("import", "-", "--store", "new.db").file == "-"


@pytest.mark.parametrize("argv", [
    ("views", "--at", "2026-01-01", "--position", "3"),
    ("log", "--after", "-1"),
    ("backtest",),
    ("trace",),
    ("nothing",),
])
def test_bad_audit_usage_exits_with_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    assert cli.main(["audit", *argv]) == 2


def test_import_needs_an_explicit_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "import", "x.jsonl"]) == 2
    assert "needs --store" in capsys.readouterr().err


def test_an_audit_of_a_missing_store_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "verify", "--store", "/nonexistent/att-jm.db"]) == 2
    assert "no store file" in capsys.readouterr().err


def test_the_progress_bar_appears_only_on_a_terminal_after_a_delay() -> None:
    ticks = iter([0.0, 0.5, 1.5, 1.55, 2.0])
    stream = io.StringIO()
    bar = Progress(200, "verify", stream=stream, enabled=True, delay=1.0,
                   clock=lambda: next(ticks))
    bar(10)  # 0.5 s: too early
    assert stream.getvalue() == ""
    bar(100)  # 1.5 s
    assert "verify [###############...............]  50% 100/200" in stream.getvalue()
    bar(150)  # 1.55 s: within 0.1 s of the last draw
    assert "150/200" not in stream.getvalue()
    bar.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    off = Progress(10, "log", stream=quiet)  # a StringIO is no terminal
    off(5)
    off.clear()
    assert quiet.getvalue() == ""


def test_a_log_line_has_fixed_columns_and_a_short_data_summary() -> None:
    record = Record(12, "att_jm:Execution.Failed", "1f0c", 3,
                    datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
                    {"result": 2, "feedback": "exit code 1: busy\nline", "actor": "scheduler"})
    line = log_line(record)
    assert line.startswith("       12  2026-03-02T08:00:00.000Z  execution.failed")
    assert 'result=2 feedback="exit code 1: busy\\nline"' in line
    assert "scheduler" in line
    assert len(summary({"x": "y" * 500})) == 100


def test_counts_and_a_verification_read_as_sentences() -> None:
    text = render_counts(Counts(notifications=9, trigger=4, matched=3, enqueued=2, skipped=1,
                                first=3, last=40))
    assert text == ("9 notifications (positions 3-40): 4 with the trigger, 3 matching, "
                    "2 would enqueue, 1 would skip")
    failed = Verification(events=10, findings=[Finding("deleted", 4, "position 4: deleted")])
    lines = render_verification(failed).splitlines()
    assert lines[0] == "verify: FAILED (1 problem)"
    assert "  deleted: position 4: deleted" in lines
    one = Verification(events=1, unsealed=1, aggregates=1, snapshots=1)
    assert render_verification(one).splitlines()[1:4] == [
        "1 event; no seal yet", "1 event after position 0 is not sealed yet",
        "versions followed for 1 aggregate; 1 snapshot compared with a replay of their events"]
    assert render_counts(Counts(notifications=1)).startswith("1 notification: ")


EXECUTION = "0b9f1c8e-5a4d-4e7b-9a51-3f3d2f7f9c10"


def test_a_trace_shows_durations_in_ms_or_s_and_says_what_is_not_in_the_log() -> None:
    ended = {"position": 5, "at": "2026-03-02T08:00:01Z", "result": 3, "feedback": "ok",
             "exit_code": 0, "duration_seconds": 0.04772419000005357}
    trace = Trace(
        execution_id=EXECUTION, status="executed", notification=None, job=None,
        enqueued={"position": 3, "at": "2026-03-02T08:00:00Z", "actor": "scheduler",
                  "job": "ipx", "command": "go"},
        attempts=[{"attempt": 1, "started": {"position": 4, "at": "2026-03-02T08:00:01Z"},
                   "ended": ended},
                  {"attempt": 2, "started": {"position": 6, "at": "2026-03-02T08:00:02Z"},
                   "ended": {**ended, "position": 7, "duration_seconds": 312.4}}],
        events=[{"position": 3, "type": "execution.enqueued", "at": "2026-03-02T08:00:00Z",
                 "data": {"notification_id": "n-1"}}],
    )
    text = render_trace(trace)
    assert "exit code 0, 47.7 ms" in text
    assert "exit code 0, 312 s" in text
    assert "0.0477" not in text
    assert "no notification n-1 in the log" in text
    assert "no definition of job ipx in the log before the enqueue" in text
    assert text.endswith("1 event in this lineage (--json lists them)")


def test_a_log_line_shows_a_run_duration_in_ms() -> None:
    assert summary({"result": 3, "duration_seconds": 1.23456}) == "result=3 duration=1.23 s"


def test_a_malformed_execution_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "trace", "e-1", "--store", "/nonexistent/att-jm.db"]) == 2
    assert "'e-1' is not an execution id (a UUID)" in capsys.readouterr().err


def test_an_audit_failure_with_json_is_json_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["audit", "verify", "--store", "/nonexistent/att-jm.db", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ""
    error = orjson.loads(captured.out)
    assert error["ok"] is False
    assert error["error"]["code"] == "usage"
    assert "no store file" in error["error"]["message"]
    assert cli.main(["audit", "import", "x.jsonl", "--json"]) == 2
    assert orjson.loads(capsys.readouterr().out)["error"] == {
        "code": "usage", "message": "audit import needs --store FILE: the new, empty store to fill"}
    assert cli.main(["audit", "log", "--frobnicate", "--json"]) == 2
    assert orjson.loads(capsys.readouterr().out)["error"]["message"] == (
        "unrecognized argument --frobnicate")
