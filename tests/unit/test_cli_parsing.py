"""The att-jm command line: argv -> service request, settings merge, and result rendering."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import orjson
import pytest

from att_jm.cli import handlers as cli
from att_jm.cli import main
from att_jm.cli.common import (
    EXIT_ERROR_REPLY,
    EXIT_NO_ANSWER,
    EXIT_USAGE,
    JOB_NAME,
    Failure,
    ParseError,
    Request,
    UsageError,
    wants_json,
)
from att_jm.cli.handlers import resolve_actor
from att_jm.cli.parser import build_parser, parse_argv, parse_request
from att_jm.cli.render import offline_message, render
from att_jm.cli.requests import merge_settings
from att_jm.cli.values import parse_match
from att_jm.config import MqttEndpoint
from att_jm.output import cell, duration, error_json, plural, render_view, short_time, truncate

ENDPOINT = MqttEndpoint("h", 1883, None, None, False)
E1, E2, E3, E4, E5, E8, E9 = (f"0b9f1c8e-5a4d-4e7b-9a51-3f3d2f7f9c1{n}" for n in "1234589")


@pytest.mark.parametrize(
    ("argv", "command", "args"),
    [
        (["jobs"], "views.get", {"view": "jobs"}),
        (["queue"], "views.get", {"view": "queue"}),
        (["executed"], "views.get", {"view": "executed"}),
        (["failed"], "views.get", {"view": "failed"}),
        (["settings"], "views.get", {"view": "settings"}),
        (["queue", "--offset", "1000", "--limit", "50"], "views.get",
         {"view": "queue", "offset": 1000, "limit": 50}),
        (["failed", "--limit", "5"], "views.get", {"view": "failed", "limit": 5}),
        (["executed", "show", E9], "views.get", {"view": "executed", "id": E9}),
        (["queue", "show", E8], "views.get", {"view": "queue", "id": E8}),
        (["job", "show", "backup"], "views.get", {"view": "jobs", "id": "backup"}),
        (["queue", "remove", E1], "queue.remove", {"id": E1}),
        (["queue", "execute-now", E2], "queue.execute-now", {"id": E2}),
        (["executed", "remove", E3], "executed.remove", {"id": E3}),
        (["failed", "execute", E4], "failed.execute", {"id": E4}),
        (["failed", "delete", E5], "failed.delete", {"id": E5}),
        (["job", "remove", "backup"], "job.remove", {"name": "backup"}),
        (["cleanup", "run"], "cleanup.run", {"table": "all"}),
        (["cleanup", "run", "failed"], "cleanup.run", {"table": "failed"}),
        (
            ["job", "add", "backup", "--script", "run.sh", "--trigger", "alarm"],
            "job.add",
            {"name": "backup", "script": "run.sh", "trigger": "alarm"},
        ),
        (
            ["job", "add", "b", "--script", "s", "--trigger", "t", "--command", "go {site.name}",
             "--timeout-seconds", "30", "--disabled"],
            "job.add",
            {"name": "b", "script": "s", "trigger": "t", "command": "go {site.name}",
             "timeout_seconds": 30, "enabled": False},
        ),
        (["job", "update", "b", "--trigger", "t2"], "job.update", {"name": "b", "trigger": "t2"}),
        (["job", "update", "b", "--disable"], "job.update", {"name": "b", "enabled": False}),
        (["job", "update", "b", "--enable"], "job.update", {"name": "b", "enabled": True}),
        (["job", "update", "b", "--no-match"], "job.update", {"name": "b", "match": None}),
        (["job", "update", "b", "--no-command"], "job.update", {"name": "b", "command": None}),
        (["job", "update", "b", "--no-retry"], "job.update", {"name": "b", "retry": None}),
        (["job", "add", "b", "--script", "s", "--trigger", "t", "--retry-max-attempts", "3",
          "--retry-delay-seconds", "10", "--retry-backoff", "2"], "job.add",
         {"name": "b", "script": "s", "trigger": "t",
          "retry": {"max_attempts": 3, "delay_seconds": 10, "backoff": 2}}),
        (["job", "update", "b", "--retry-max-attempts", "5"], "job.update",
         {"name": "b", "retry": {"max_attempts": 5}}),
        (
            ["job", "update", "b", "--script", "x", "--match", "a=1", "--timeout-seconds", "9"],
            "job.update",
            {"name": "b", "script": "x", "match": {"a": 1}, "timeout_seconds": 9},
        ),
        (
            ["settings", "set", "--interval-seconds", "0"],
            "settings.set",
            {"interval_seconds": 0},
        ),
        (
            ["settings", "set", "--executed-max-rows", "none", "--failed-max-age-days", "30",
             "--failed-every-seconds", "600.5"],
            "settings.set",
            {"executed_cleanup": {"max_rows": None},
             "failed_cleanup": {"max_age_days": 30, "every_seconds": 600.5}},
        ),
        (
            ["settings", "set", "--archive-max-age-days", "90", "--archive-every-seconds",
             "86400"],
            "settings.set",
            {"archive": {"max_age_days": 90, "every_seconds": 86400}},
        ),
        (
            ["settings", "set", "--archive-max-age-days", "none"],
            "settings.set",
            {"archive": {"max_age_days": None}},
        ),
    ],
)
def test_command_lines_become_service_requests(
    argv: list[str], command: str, args: dict[str, object]
) -> None:
    request, _ = parse_request(argv)
    assert request == Request(command, args)


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("site=paris", ("site", "paris")),
        ("count=3", ("count", 3)),
        ("ok=true", ("ok", True)),
        ("gone=null", ("gone", None)),
        ('name="3"', ("name", "3")),
        ("site.name=a=b", ("site.name", "a=b")),
        ("empty=", ("empty", "")),
        ('tags=["a"]', ("tags", ["a"])),
        ("ratio=0.5", ("ratio", 0.5)),
    ],
)
def test_match_values_are_json_when_valid_json_else_strings(
    text: str, pair: tuple[str, object]
) -> None:
    assert parse_match(text) == pair


def test_match_flags_combine_with_match_json() -> None:
    request, _ = parse_request([
        "job", "add", "j", "--script", "s", "--trigger", "t", "--match", "a=1",
        "--match", "b.c=x", "--match-json", '{"d": false}',
    ])
    assert request.args["match"] == {"d": False, "a": 1, "b.c": "x"}


@pytest.mark.parametrize(
    "argv",
    [
        ["job", "add", "j", "--script", "s", "--trigger", "t", "--match", "a=1", "--match", "a=2"],
        ["job", "add", "j", "--script", "s", "--trigger", "t", "--match", "a=1",
         "--match-json", '{"a": 1}'],
        ["job", "update", "j", "--no-match", "--match", "a=1"],
        ["job", "update", "j"],
        ["settings", "set"],
    ],
)
def test_impossible_requests_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_request(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["job", "add", "j", "--script", "s"],
        ["job", "add", "j", "--script", "s", "--trigger", "t", "--match", "novalue"],
        ["job", "add", "j", "--script", "s", "--trigger", "t", "--match-json", "[1]"],
        ["job", "add", "j", "--script", "s", "--trigger", "t", "--timeout-seconds", "0"],
        ["job", "update", "j", "--enable", "--disable"],
        ["job", "update", "j", "--command", "x", "--no-command"],
        ["settings", "set", "--executed-max-rows", "10001"],
        ["settings", "set", "--interval-seconds", "-1"],
        ["settings", "set", "--failed-every-seconds", "none"],
        ["settings", "set", "--failed-max-age-days", "nan"],
        ["cleanup", "run", "everything"],
        ["jobs", "--timeout", "0"],
        ["queue", "remove"],
    ],
)
def test_malformed_command_lines_exit_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ParseError):
        parse_argv(argv)
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: att-jm ")
    assert "error:" in err


def test_main_turns_usage_errors_into_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["job", "update", "j"]) == EXIT_USAGE
    assert "needs at least one change" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE
    assert main(["serve", "--topic-prefix", "a/#"]) == EXIT_USAGE
    assert "topic_prefix" in capsys.readouterr().err


def test_common_options_are_kept_before_and_after_a_sub_verb() -> None:
    _, before = parse_request(["queue", "--json", "--timeout", "2", "remove", E1])
    _, after = parse_request(["queue", "remove", E1, "--actor", "bob", "--json"])
    assert (before.json, before.timeout) == (True, 2)
    assert (after.json, after.actor) == (True, "bob")


def test_serve_flags_are_the_setting_names() -> None:
    ns = build_parser().parse_args(
        ["serve", "--mqtt-url", "mqtt://b", "--views-db", "v.db", "--log-format", "json",
         "--max-payload-bytes", "10", "--view-rows", "5", "--config", "c.toml"]
    )
    assert (ns.handler, ns.mqtt_url, ns.views_db, ns.log_format, ns.config) == (
        "serve", "mqtt://b", "v.db", "json", "c.toml"
    )
    assert (ns.max_payload_bytes, ns.view_rows, ns.store) == ("10", "5", None)


@pytest.mark.parametrize(
    ("given", "environ", "endpoint", "expected"),
    [
        ("carol", {"ATT_JM_ACTOR": "dave"}, MqttEndpoint("h", 1, "erin", "p", False), "carol"),
        (None, {"ATT_JM_ACTOR": "dave"}, MqttEndpoint("h", 1, "erin", "p", False), "dave"),
        (None, {}, MqttEndpoint("h", 1, "erin", "p", False), "erin"),
    ],
)
def test_the_actor_comes_from_flag_env_then_url(
    given: str | None, environ: dict[str, str], endpoint: MqttEndpoint, expected: str
) -> None:
    assert resolve_actor(given, environ, endpoint) == expected


def test_without_any_actor_the_login_name_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "frank")
    assert resolve_actor(None, {}, ENDPOINT) == "frank"


@pytest.mark.parametrize("actor", ["a/b", "a+", "#", "x\x00"])
def test_an_actor_must_be_one_topic_level(actor: str) -> None:
    with pytest.raises(UsageError, match="one topic level"):
        resolve_actor(actor, {}, ENDPOINT)


CURRENT = {
    "interval_seconds": 5,
    "executed_cleanup": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 3600.0},
    "failed_cleanup": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 3600.0,
                       "last_run_at": "2024-01-01T00:00:00Z"},
    "archive": {"max_age_days": None, "every_seconds": 3600.0},
}


@pytest.mark.parametrize(
    ("changes", "merged"),
    [
        ({"interval_seconds": 1}, {"interval_seconds": 1}),
        (
            {"executed_cleanup": {"max_rows": None}},
            {"executed_cleanup": {"max_rows": None, "max_age_days": 7.0, "every_seconds": 3600.0}},
        ),
        (
            {"failed_cleanup": {"every_seconds": 60}, "interval_seconds": 0},
            {"failed_cleanup": {"max_rows": 1000, "max_age_days": 7.0, "every_seconds": 60},
             "interval_seconds": 0},
        ),
        (
            {"archive": {"max_age_days": 30}},
            {"archive": {"max_age_days": 30, "every_seconds": 3600.0}},
        ),
    ],
)
def test_settings_changes_are_merged_into_whole_cleanup_objects(
    changes: dict[str, object], merged: dict[str, object]
) -> None:
    assert merge_settings(CURRENT, changes) == merged


def test_merging_without_current_settings_sends_the_changes_as_given() -> None:
    assert merge_settings({}, {"executed_cleanup": {"max_rows": 5}}) == {
        "executed_cleanup": {"max_rows": 5}
    }


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2024-05-01T12:34:56.789123+00:00", "2024-05-01T12:34:56Z"),
        ("2024-05-01T14:34:56.1+02:00", "2024-05-01T12:34:56Z"),
        ("2024-05-01T12:34:56Z", "2024-05-01T12:34:56Z"),
        ("yesterday", "yesterday"),
        (None, "-"),
    ],
)
def test_times_are_shown_in_utc_to_the_second(value: object, shown: str) -> None:
    assert short_time(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"), (True, "yes"), (False, "no"), (7.0, "7"), (2.5, "2.5"), (3, "3"),
        ({"a": 1}, '{"a":1}'), ("two\nlines\tand tab", "two lines and tab"),
    ],
)
def test_cells_are_one_line(value: object, shown: str) -> None:
    assert cell(value) == shown


def test_long_text_is_truncated_with_an_ellipsis() -> None:
    assert truncate("x" * 50, 10) == "x" * 9 + "…"
    assert truncate("short", 10) == "short"


EXECUTION_ID = "0b9f1c8e-5a4d-4e7b-9a51-3f3d2f7f9c10"

QUEUE_VIEW = {
    "view": "queue",
    "position": 42,
    "total": 3,
    "rows": [
        {"id": EXECUTION_ID, "job": "backup", "command": "c" * 100, "trigger": "alarm",
         "notification_id": "n-1", "enqueued_at": "2024-05-01T12:00:00.5+00:00",
         "state": "running", "started_at": "2024-05-01T12:00:01+00:00", "attempt": 1,
         "feedback": None},
        {"id": "e-2", "job": "restart", "command": "go", "trigger": "alarm",
         "notification_id": "n-2", "enqueued_at": "2024-05-01T12:00:02+00:00",
         "state": "queued", "started_at": None, "attempt": 2, "feedback": "exit 1\nboom"},
    ],
}


def test_a_view_renders_as_an_aligned_table_with_a_count_line() -> None:
    lines = render_view(QUEUE_VIEW).splitlines()
    assert lines[0].split() == [
        "ID", "JOB", "STATE", "ATTEMPT", "ENQUEUED", "STARTED", "NOT_BEFORE", "NOTIFICATION",
        "COMMAND",
        "FEEDBACK",
    ]
    assert lines[1].startswith(EXECUTION_ID + "  backup")
    assert "c" * 39 + "…" in lines[1]
    assert "2024-05-01T12:00:00Z" in lines[1]
    assert lines[2].split()[:3] == ["e-2", "restart", "queued"]
    assert lines[2].endswith("exit 1 boom")
    assert lines[0].index("JOB") == lines[1].index("backup") == lines[2].index("restart")
    assert lines[-1] == "2 of 3 rows (position 42)"


def test_history_views_show_the_meaning_of_the_result() -> None:
    view = {"view": "failed", "position": 7, "total": 1, "rows": [
        {"id": "e-9", "job": "j", "command": "x", "trigger": "t", "notification_id": "n",
         "enqueued_at": None, "started_at": None, "finished_at": "2024-05-01T00:00:00+00:00",
         "attempt": 2, "result": 2, "feedback": "timed out after 5 s"},
    ]}
    text = render_view(view)
    assert "2 failed" in text
    assert "timed out after 5 s" in text
    assert text.endswith("1 of 1 row (position 7)")


def test_an_empty_view_is_just_the_count_line() -> None:
    assert render_view({"view": "jobs", "position": 0, "total": 0, "rows": []}) == (
        "0 of 0 rows (position 0)"
    )


def test_the_jobs_view_shows_match_and_enabled() -> None:
    job: dict[str, object] = {
        "name": "backup", "script": "run.sh", "trigger": "alarm", "match": {"site": "paris"},
        "command": None, "timeout_seconds": 300, "enabled": True,
        "created_at": "2024-05-01T00:00:00+00:00", "updated_at": "2024-05-02T00:00:00+00:00"}
    view = {"view": "jobs", "position": 3, "total": 1, "rows": [job]}
    row = render_view(view).splitlines()[1].split()
    assert row == ["backup", "yes", "alarm", "run.sh", '{"site":"paris"}', "-", "300", "-",
                   "2024-05-02T00:00:00Z"]
    job["retry"] = {"max_attempts": 3, "delay_seconds": 10, "backoff": 2}
    assert "3x 10s *2" in render_view(view)


def test_the_settings_view_lists_each_setting() -> None:
    view = {"view": "settings", "position": 9, "settings": CURRENT}
    text = render_view(view)
    assert "interval_seconds  5" in text
    assert "executed_cleanup  max_rows 1000, max_age_days 7, every_seconds 3600" in text
    assert "archive           max_age_days -, every_seconds 3600" in text  # off
    assert text.endswith("(position 9)")


@pytest.mark.parametrize(
    ("request_", "result", "expected"),
    [
        (Request("job.remove", {"name": "b"}), {"name": "b", "removed": True}, "removed job b"),
        (Request("queue.remove", {"id": "e"}), {"id": "e", "status": "removed", "attempt": 1},
         "removed e from the queue"),
        (Request("failed.execute", {"id": "e"}), {"id": "e", "status": "queued", "attempt": 2},
         "e queued at the front, attempt 2"),
        (Request("failed.delete", {"id": "e"}), {"id": "e"}, "deleted e from failed"),
        (Request("executed.remove", {"id": "e"}), {"id": "e"}, "removed e from executed"),
        (Request("cleanup.run", {"table": "all"}), {"executed": 3, "failed": 0},
         "cleanup removed 3 rows from executed, 0 rows from failed"),
        (Request("job.remove", {"name": "b"}), None, "-"),
    ],
)
def test_mutations_print_a_short_confirmation(
    request_: Request, result: object, expected: str
) -> None:
    assert render(request_, result) == expected


def test_adding_a_job_prints_its_row() -> None:
    row = {"name": "b", "script": "s", "trigger": "t", "match": None, "command": "x",
           "timeout_seconds": 300, "enabled": False, "created_at": None, "updated_at": None}
    lines = render(Request("job.add", {"name": "b"}), row).splitlines()
    assert lines[0] == "added job b"
    assert lines[2].split() == ["b", "no", "t", "s", "-", "x", "300", "-", "-"]


def test_one_row_is_printed_in_full_and_a_page_says_which_rows_it_holds() -> None:
    feedback = "f" * 5000
    text = render_view({"view": "failed", "position": 9,
                        "row": {"id": "e-1", "feedback": feedback}})
    assert text.splitlines() == ["id        e-1", f"feedback  {feedback}", "(position 9)"]
    page = render_view({"view": "queue", "position": 3, "total": 80, "offset": 10, "omitted": 78,
                        "cut": 1, "rows": [{"id": "a"}, {"id": "b"}]})
    assert page.splitlines()[-1] == (
        "rows 10-11 of 80 (position 3); 1 long cell cut (`show ID` prints a row in full)")


# Usage errors: unknown flags named, malformed ids and names refused before anything is sent --


@pytest.fixture
def nothing_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to talk to the service fails the test."""
    def exchange(*args: object) -> dict[str, object]:
        raise AssertionError("a request was sent")

    monkeypatch.setattr(cli, "exchange", exchange)


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        (["queue", "--frobnicate"], "att-jm queue"),
        (["queue", "remove", "--frobnicate"], "att-jm queue remove"),  # the id is missing too
        (["job", "add", "--frobnicate"], "att-jm job add"),  # name, --script, --trigger too
        (["job", "add", "x", "--frobnicate", "--script", "s"], "att-jm job add"),
        (["job", "--frobnicate"], "att-jm job"),  # the sub-verb is missing too
        (["settings", "set", "--frobnicate=3"], "att-jm settings set"),
        (["audit", "trace", "--frobnicate"], "att-jm audit trace"),
        (["users", "add", "--frobnicate"], "att-jm users add"),
        (["--frobnicate"], "att-jm"),
    ],
)
def test_an_unknown_flag_is_named_even_when_arguments_are_missing_too(
    argv: list[str], prog: str, capsys: pytest.CaptureFixture[str], nothing_sent: None,
) -> None:
    flag = argv[-1] if argv[-1].startswith("--frob") else "--frobnicate"
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {prog} ")
    assert err.splitlines()[-1] == f"{prog}: error: unrecognized argument {flag}"


def test_several_unknown_arguments_are_all_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "--frob", "--nicate"]) == EXIT_USAGE
    assert capsys.readouterr().err.endswith("unrecognized arguments --frob --nicate\n")
    assert main(["jobs", "extra"]) == EXIT_USAGE
    assert capsys.readouterr().err.endswith("att-jm jobs: error: unrecognized argument extra\n")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["queue", "remove", "e-1"], "not an entry id (a UUID"),
        (["queue", "show", "12345"], "not an entry id (a UUID"),
        (["failed", "execute", "0b9f1c8e"], "not an entry id (a UUID"),
        (["executed", "remove", ""], "not an entry id (a UUID"),
        (["job", "add", "bad/name", "--script", "s", "--trigger", "t"], "a job name must match"),
        (["job", "update", "x" * 65, "--disable"], "a job name must match"),
        (["job", "remove", "a b"], "a job name must match"),
        (["job", "show", ""], "a job name must match"),
    ],
)
def test_malformed_ids_and_names_are_usage_errors_before_anything_is_sent(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str], nothing_sent: None,
) -> None:
    assert main(argv) == EXIT_USAGE
    assert said in capsys.readouterr().err


def test_an_entry_id_is_sent_as_the_views_show_it() -> None:
    request, _ = parse_request(["queue", "show", EXECUTION_ID.replace("-", "").upper()])
    assert request.args == {"view": "queue", "id": EXECUTION_ID}


def test_the_cli_checks_job_names_as_the_service_does() -> None:
    from att_jm.domain.commands import NAME_RE  # noqa: PLC0415 -- only to compare

    assert JOB_NAME.pattern == NAME_RE.pattern


# --json: every failure as {"ok": false, "error": {"code", "message"}} on stdout ---------------


def json_out(capsys: pytest.CaptureFixture[str]) -> object:
    captured = capsys.readouterr()
    assert captured.err == ""
    return orjson.loads(captured.out)


def test_a_usage_error_with_json_is_json_on_stdout(
    capsys: pytest.CaptureFixture[str], nothing_sent: None,
) -> None:
    assert main(["queue", "--frobnicate", "--json"]) == EXIT_USAGE
    assert json_out(capsys) == {"ok": False, "error": {
        "code": "usage", "message": "unrecognized argument --frobnicate"}}
    assert main(["queue", "remove", "--json"]) == EXIT_USAGE
    assert json_out(capsys) == {"ok": False, "error": {
        "code": "usage", "message": "the following arguments are required: id"}}
    assert main(["job", "update", "j", "--json"]) == EXIT_USAGE
    error = json_out(capsys)
    assert isinstance(error, dict)
    assert "needs at least one change" in error["error"]["message"]


def test_an_error_reply_with_json_is_the_error_on_stdout_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    reply = {"ok": False, "error": {"code": "not_found", "message": f"no entry {EXECUTION_ID}"}}
    monkeypatch.setattr(cli, "exchange", lambda *args: reply)
    argv = ["queue", "remove", EXECUTION_ID, "--mqtt-url", "mqtt://127.0.0.1:1", "--actor", "a"]
    assert main([*argv, "--json"]) == EXIT_ERROR_REPLY
    assert json_out(capsys) == reply
    assert main(argv) == EXIT_ERROR_REPLY
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"error: not_found: no entry {EXECUTION_ID}\n")


@pytest.mark.parametrize(("code", "exit_code"), [("offline", 3), ("no_answer", 3)])
def test_no_answer_with_json_is_json_on_stdout_and_exit_3(
    code: str, exit_code: int, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exchange(*args: object) -> dict[str, object]:
        raise Failure(code, "the job manager is offline; nothing was sent", EXIT_NO_ANSWER)

    monkeypatch.setattr(cli, "exchange", exchange)
    argv = ["jobs", "--mqtt-url", "mqtt://127.0.0.1:1", "--actor", "a"]
    assert main([*argv, "--json"]) == exit_code
    assert json_out(capsys) == {"ok": False, "error": {
        "code": code, "message": "the job manager is offline; nothing was sent"}}
    assert main(argv) == exit_code
    assert capsys.readouterr().err == "error: the job manager is offline; nothing was sent\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["jobs", "--json"], True), (["jobs"], False), (["--", "--json"], False),
        (["job", "add", "--json", "--", "x"], True), (["--jsonx"], False),
    ],
)
def test_json_is_asked_for_even_on_a_line_that_does_not_parse(
    argv: list[str], expected: bool
) -> None:
    assert wants_json(argv) is expected


def test_an_error_is_one_line_of_json() -> None:
    text = error_json("usage", 'bad "x"')
    assert "\n" not in text
    assert orjson.loads(text) == {"ok": False, "error": {"code": "usage", "message": 'bad "x"'}}


# The service's status: what an operator reads when it is offline -----------------------------


TOPIC = "att/job-manager/status"


@pytest.mark.parametrize(
    ("status", "sent", "expected"),
    [
        ({"state": "offline", "at": "2026-03-02T08:15:00.123+00:00", "pid": 7}, False,
         "the job manager is offline since 2026-03-02T08:15:00Z; nothing was sent"),
        ({"state": "offline", "reason": "lost"}, False,
         "the job manager is offline (reason: lost: it crashed or lost its connection without "
         "a clean stop); nothing was sent"),
        ({"state": "offline", "at": "2026-03-02T08:15:00Z", "reason": "maintenance"}, False,
         "the job manager is offline since 2026-03-02T08:15:00Z (reason: maintenance); "
         "nothing was sent"),
        ({"state": "offline", "at": "2026-03-02T08:15:00Z"}, True,
         "the job manager went offline at 2026-03-02T08:15:00Z before it answered: the "
         "command may or may not have been handled (`att-jm audit log` tells)"),
    ],
)
def test_an_offline_status_is_told_with_its_time_and_reason(
    status: dict[str, object], sent: bool, expected: str
) -> None:
    assert offline_message(TOPIC, status, sent=sent) == expected


def test_no_status_at_all_says_the_service_is_not_running() -> None:
    text = offline_message(TOPIC, None, sent=False)
    assert text.startswith("the job manager is not running: no status is retained on "
                           "att/job-manager/status")
    assert text.endswith("nothing was sent")


# Durations and counts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.04772419000005357, "47.7 ms"), (1.2345, "1.23 s"), (312.4, "312 s"),
        (0.0005, "0.500 ms"), (0.009999, "10.0 ms"), (0.00999, "9.99 ms"),
        (0.9994, "999 ms"), (0.9996, "1.00 s"), (99.94, "99.9 s"), (99.96, "100 s"),
        (5, "5.00 s"), (3600.4, "3600 s"), (0, "0 ms"), (0.0, "0 ms"),
        (None, "-"), ("soon", "soon"), (True, "yes"), (float("nan"), "nan"),
    ],
)
def test_durations_have_three_significant_digits_in_ms_or_s(seconds: object, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("count", "noun", "shown"),
    [(0, "row", "0 rows"), (1, "row", "1 row"), (2, "row", "2 rows"),
     (1000, "event", "1,000 events"), (None, "row", "- rows")],
)
def test_counts_agree_with_their_nouns(count: object, noun: str, shown: str) -> None:
    assert plural(count, noun) == shown


def test_one_row_is_a_row() -> None:
    view = {"view": "jobs", "position": 3, "total": 1, "rows": [{"name": "a"}], "cut": 1}
    assert render_view(view).splitlines()[-1] == (
        "1 of 1 row (position 3); 1 long cell cut (`show ID` prints a row in full)")
    assert render(Request("cleanup.run", {"table": "all"}), {"executed": 1, "failed": 2}) == (
        "cleanup removed 1 row from executed, 2 rows from failed")


# Help ---------------------------------------------------------------------------------------


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("att-jm",)
         ) -> Iterator[tuple[str, argparse.Action]]:
    """Every action of the whole tree of (sub)parsers, with the command it belongs to."""
    for action in parser._actions:
        yield " ".join(path), action
        if isinstance(action, argparse._SubParsersAction):
            yield from ((" ".join(path), choice) for choice in action._choices_actions)
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def test_every_flag_argument_and_sub_verb_has_help_text() -> None:
    actions = list(walk(build_parser()))
    assert len(actions) > 200  # the walk reached the sub-verbs' flags
    missing = [f"{where}: {'/'.join(a.option_strings) or a.dest}" for where, a in actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []


def test_every_command_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = sorted({where for where, _ in walk(build_parser())})
    assert "att-jm audit import" in commands
    for command in commands:
        assert main([*command.split()[1:], "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: {command}")


def test_audit_import_help_says_it_writes_a_new_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "import", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "read-only" not in text
    assert "--store FILE the NEW store to write" in text
