"""The att-jm command line: argv -> service request, settings merge, and result rendering."""

from __future__ import annotations

import pytest

from att_jm.cli import (
    EXIT_USAGE,
    Request,
    UsageError,
    build_parser,
    cell,
    main,
    merge_settings,
    parse_match,
    parse_request,
    render,
    render_view,
    resolve_actor,
    short_time,
    truncate,
)
from att_jm.config import MqttEndpoint

ENDPOINT = MqttEndpoint("h", 1883, None, None, False)


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
        (["executed", "show", "e-9"], "views.get", {"view": "executed", "id": "e-9"}),
        (["queue", "show", "e-8"], "views.get", {"view": "queue", "id": "e-8"}),
        (["job", "show", "backup"], "views.get", {"view": "jobs", "id": "backup"}),
        (["queue", "remove", "e-1"], "queue.remove", {"id": "e-1"}),
        (["queue", "execute-now", "e-2"], "queue.execute-now", {"id": "e-2"}),
        (["executed", "remove", "e-3"], "executed.remove", {"id": "e-3"}),
        (["failed", "execute", "e-4"], "failed.execute", {"id": "e-4"}),
        (["failed", "delete", "e-5"], "failed.delete", {"id": "e-5"}),
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
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == EXIT_USAGE
    assert "error:" in capsys.readouterr().err


def test_main_turns_usage_errors_into_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["job", "update", "j"]) == EXIT_USAGE
    assert "needs at least one change" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE
    assert main(["serve", "--topic-prefix", "a/#"]) == EXIT_USAGE
    assert "topic_prefix" in capsys.readouterr().err


def test_common_options_are_kept_before_and_after_a_sub_verb() -> None:
    _, before = parse_request(["queue", "--json", "--timeout", "2", "remove", "x"])
    _, after = parse_request(["queue", "remove", "x", "--actor", "bob", "--json"])
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
    assert text.endswith("1 of 1 rows (position 7)")


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
