"""Parsing of operator commands: every command of the contract table, valid and invalid."""

from __future__ import annotations

from typing import Any

import pytest

from att_jm import errors
from att_jm.domain.commands import (
    PARSERS,
    READ_ONLY,
    CleanupRun,
    Command,
    EntryCommand,
    JobAdd,
    JobRemove,
    JobSpec,
    JobUpdate,
    SettingsSet,
    ViewsGet,
    parse_command,
)
from att_jm.errors import InvalidInput, UnknownCommand

CONTRACT_COMMANDS = {
    "job.add", "job.update", "job.remove", "queue.remove", "queue.execute-now",
    "executed.remove", "failed.execute", "failed.delete", "settings.set", "cleanup.run",
    "views.get", "trace.get",  # trace.get: this service's addition (docs/asyncapi.yaml)
}
ENTRY_COMMANDS = ("queue.remove", "queue.execute-now", "executed.remove", "failed.execute",
                  "failed.delete")
JOB = {"name": "backup", "script": "backup.sh", "trigger": "nightly"}
WEEK = 7 * 24 * 3600


def test_the_parsers_are_exactly_the_commands_of_the_contract() -> None:
    assert set(PARSERS) == CONTRACT_COMMANDS
    assert set(READ_ONLY) == {"views.get", "trace.get"}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.AttJmError, "internal"),
        (errors.InvalidInput, "invalid"),
        (errors.NotFound, "not_found"),
        (errors.Conflict, "conflict"),
        (errors.UnknownCommand, "unknown_command"),
        (errors.TooLarge, "too_large"),
    ],
)
def test_every_error_carries_the_contract_code(
    error: type[errors.AttJmError], code: str
) -> None:
    raised = error("what went wrong")
    assert raised.code == code
    assert raised.message == "what went wrong"
    assert isinstance(raised, errors.AttJmError)


# Valid commands -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("job.add", JOB, JobAdd(JobSpec("backup", "backup.sh", "nightly"))),
        (
            "job.add",
            {**JOB, "match": {"site": "paris", "device.kind": "router", "up": True},
             "command": "--site={site} {{literal}}", "timeout_seconds": 10, "enabled": False},
            JobAdd(JobSpec("backup", "backup.sh", "nightly",
                           match={"site": "paris", "device.kind": "router", "up": True},
                           command="--site={site} {{literal}}", timeout_seconds=10.0,
                           enabled=False)),
        ),
        ("job.add", {**JOB, "match": {}}, JobAdd(JobSpec("backup", "backup.sh", "nightly"))),
        ("job.add", {**JOB, "match": None, "command": None},
         JobAdd(JobSpec("backup", "backup.sh", "nightly"))),
        ("job.add", {**JOB, "timeout_seconds": 0.5},
         JobAdd(JobSpec("backup", "backup.sh", "nightly", timeout_seconds=0.5))),
        ("job.add", {**JOB, "timeout_seconds": WEEK},
         JobAdd(JobSpec("backup", "backup.sh", "nightly", timeout_seconds=float(WEEK)))),
        ("job.add", {**JOB, "name": "A.b_c-9" + "x" * 57},
         JobAdd(JobSpec("A.b_c-9" + "x" * 57, "backup.sh", "nightly"))),
        ("job.update", {"name": "backup", "enabled": False},
         JobUpdate("backup", {"enabled": False})),
        ("job.update", {"name": "backup", "match": None, "command": None},
         JobUpdate("backup", {"match": None, "command": None})),
        ("job.update", {"name": "backup", "match": {}}, JobUpdate("backup", {"match": None})),
        (
            "job.update",
            {"name": "backup", "script": "b.sh", "trigger": "t", "timeout_seconds": 3},
            JobUpdate("backup", {"script": "b.sh", "trigger": "t", "timeout_seconds": 3.0}),
        ),
        ("job.remove", {"name": "backup"}, JobRemove("backup")),
        *[
            (name, {"id": "0b7c4c1e-7d1e-5a36-8f0e-2f1f9c0f0a11"},
             EntryCommand(name, "0b7c4c1e-7d1e-5a36-8f0e-2f1f9c0f0a11"))
            for name in ENTRY_COMMANDS
        ],
        ("settings.set", {"interval_seconds": 0}, SettingsSet(0.0, None, None)),
        ("settings.set", {"interval_seconds": 2.5}, SettingsSet(2.5, None, None)),
        ("settings.set", {"executed_cleanup": {"max_rows": 10}},
         SettingsSet(None, {"max_rows": 10}, None)),
        (
            "settings.set",
            {"failed_cleanup": {"max_rows": None, "max_age_days": 1, "every_seconds": 60}},
            SettingsSet(None, None,
                        {"max_rows": None, "max_age_days": 1.0, "every_seconds": 60.0}),
        ),
        ("settings.set", {"executed_cleanup": {"max_rows": 1, "max_age_days": None}},
         SettingsSet(None, {"max_rows": 1, "max_age_days": None}, None)),
        ("settings.set", {"executed_cleanup": {"max_rows": 10000, "max_age_days": 0.01}},
         SettingsSet(None, {"max_rows": 10000, "max_age_days": 0.01}, None)),
        ("settings.set", {"executed_cleanup": {}}, SettingsSet(None, {}, None)),
        (
            "settings.set",
            {"interval_seconds": 1, "executed_cleanup": {"every_seconds": 1.5},
             "failed_cleanup": {"max_age_days": 30}},
            SettingsSet(1.0, {"every_seconds": 1.5}, {"max_age_days": 30.0}),
        ),
        ("cleanup.run", {"table": "executed"}, CleanupRun("executed")),
        ("cleanup.run", {"table": "failed"}, CleanupRun("failed")),
        ("cleanup.run", {"table": "all"}, CleanupRun("all")),
        *[("views.get", {"view": view}, ViewsGet(view))
          for view in ("jobs", "queue", "executed", "failed", "settings")],
        ("views.get", {"view": "queue", "offset": 1000, "limit": 50},
         ViewsGet("queue", None, 1000, 50)),
        ("views.get", {"view": "failed", "id": "e-1"}, ViewsGet("failed", "e-1")),
        ("views.get", {"view": "jobs", "id": "backup"}, ViewsGet("jobs", "backup")),
        ("settings.set", {"interval_seconds": -0.0}, SettingsSet(0.0, None, None)),
        ("settings.set", {"interval_seconds": 86400}, SettingsSet(86400.0, None, None)),
        ("settings.set", {"archive": {"max_age_days": 30}},
         SettingsSet(None, None, None, {"max_age_days": 30.0})),
        ("settings.set", {"archive": {"max_age_days": None}},
         SettingsSet(None, None, None, {"max_age_days": None})),
        ("settings.set", {"archive": {"max_age_days": 0.00001, "every_seconds": 1}},
         SettingsSet(None, None, None, {"max_age_days": 0.00001, "every_seconds": 1.0})),
        ("settings.set", {"archive": {"max_age_days": 3650, "every_seconds": 2592000}},
         SettingsSet(None, None, None, {"max_age_days": 3650.0, "every_seconds": 2592000.0})),
        ("settings.set", {"archive": {}}, SettingsSet(None, None, None, {})),
    ],
)
def test_valid_arguments_parse_into_typed_commands(
    name: str, args: dict[str, Any], expected: Command
) -> None:
    assert parse_command(name, args) == expected


def test_job_add_defaults_follow_the_contract() -> None:
    command = parse_command("job.add", JOB)
    assert isinstance(command, JobAdd)
    assert command.spec.timeout_seconds == 300.0
    assert command.spec.enabled is True
    assert command.spec.match is None
    assert command.spec.command is None


# Invalid commands ---------------------------------------------------------------------------

MISSING = [
    ("job.add", {"script": "s", "trigger": "t"}, "missing argument 'name'"),
    ("job.add", {"name": "n", "trigger": "t"}, "missing argument 'script'"),
    ("job.add", {"name": "n", "script": "s"}, "missing argument 'trigger'"),
    ("job.add", {}, "missing argument"),
    ("job.update", {"enabled": True}, "missing argument 'name'"),
    ("job.update", {"name": "n"}, "needs at least one of"),
    ("job.remove", {}, "missing argument 'name'"),
    *[(name, {}, "missing argument 'id'") for name in ENTRY_COMMANDS],
    ("settings.set", {}, "needs at least one of"),
    ("cleanup.run", {}, "missing argument 'table'"),
    ("views.get", {}, "missing argument 'view'"),
]

WRONG_TYPE = [
    ("job.add", {**JOB, "name": 7}, "name must match"),
    ("job.add", {**JOB, "script": 7}, "script must be"),
    ("job.add", {**JOB, "trigger": 7}, "trigger must be a non-empty string"),
    ("job.add", {**JOB, "match": [1]}, "match must be an object"),
    ("job.add", {**JOB, "match": "site=paris"}, "match must be an object"),
    ("job.add", {**JOB, "command": 7}, "command must be a string"),
    ("job.add", {**JOB, "command": ["a"]}, "command must be a string"),
    ("job.add", {**JOB, "timeout_seconds": "10"}, "timeout_seconds must be a number"),
    ("job.add", {**JOB, "timeout_seconds": True}, "timeout_seconds must be a number"),
    ("job.add", {**JOB, "timeout_seconds": None}, "timeout_seconds must be a number"),
    ("job.add", {**JOB, "timeout_seconds": float("nan")}, "timeout_seconds must be a number"),
    ("job.add", {**JOB, "enabled": "yes"}, "enabled must be true or false"),
    ("job.add", {**JOB, "enabled": 1}, "enabled must be true or false"),
    ("job.add", {**JOB, "enabled": None}, "enabled must be true or false"),
    ("job.update", {"name": "n", "enabled": 0}, "enabled must be true or false"),
    ("job.update", {"name": ["n"], "enabled": True}, "name must match"),
    ("job.remove", {"name": None}, "name must match"),
    *[(name, {"id": 7}, "id must be an entry id") for name in ENTRY_COMMANDS],
    ("settings.set", {"interval_seconds": "5"}, "interval_seconds must be a number"),
    ("settings.set", {"interval_seconds": True}, "interval_seconds must be a number"),
    ("settings.set", {"interval_seconds": None}, "interval_seconds must be a number"),
    ("settings.set", {"executed_cleanup": None}, "executed_cleanup must be an object"),
    ("settings.set", {"failed_cleanup": [1]}, "failed_cleanup must be an object"),
    ("settings.set", {"executed_cleanup": {"max_rows": "10"}}, "max_rows must be an integer"),
    ("settings.set", {"executed_cleanup": {"max_rows": True}}, "max_rows must be an integer"),
    ("settings.set", {"executed_cleanup": {"max_rows": 10.5}}, "max_rows must be an integer"),
    ("settings.set", {"executed_cleanup": {"max_age_days": "7"}}, "max_age_days must be a number"),
    ("settings.set", {"executed_cleanup": {"every_seconds": None}},
     "every_seconds must be a number"),
    ("cleanup.run", {"table": 1}, "table must be one of"),
    ("views.get", {"view": None}, "view must be one of"),
    ("settings.set", {"archive": None}, "archive must be an object with max_age_days, "
     "every_seconds"),
    ("settings.set", {"archive": [30]}, "archive must be an object"),
    ("settings.set", {"archive": {"max_rows": 10}}, "unknown argument(s) max_rows"),
    ("settings.set", {"archive": {"max_age_days": "7"}}, "archive.max_age_days must be a number"),
    ("settings.set", {"archive": {"max_age_days": True}}, "archive.max_age_days must be a number"),
    ("settings.set", {"archive": {"every_seconds": None}}, "archive.every_seconds must be a num"),
]

OUT_OF_RANGE = [
    ("job.add", {**JOB, "name": ""}, "name must match"),
    ("job.add", {**JOB, "name": "x" * 65}, "name must match"),
    ("job.add", {**JOB, "name": "has space"}, "name must match"),
    ("job.add", {**JOB, "name": "a/b"}, "name must match"),
    ("job.add", {**JOB, "name": "ünï"}, "name must match"),
    ("job.add", {**JOB, "name": "ok\n"}, "name must match"),
    ("job.add", {**JOB, "script": ""}, "script must be"),
    ("job.add", {**JOB, "script": "s" * 256}, "script must be"),
    ("job.add", {**JOB, "script": "a\x00b"}, "script must be"),
    ("job.add", {**JOB, "trigger": ""}, "trigger must be a non-empty string"),
    ("job.add", {**JOB, "trigger": "a/b"}, "trigger must be one topic level"),
    ("job.add", {**JOB, "trigger": "+"}, "trigger must be one topic level"),
    ("job.add", {**JOB, "trigger": "t" * 201}, "trigger must be at most 200"),
    ("job.add", {**JOB, "match": {"": 1}}, "match field names"),
    ("job.add", {**JOB, "match": {"k" * 201: 1}}, "match field names"),
    ("job.add", {**JOB, "command": "run {site"}, "stray"),
    ("job.add", {**JOB, "command": "{}"}, "stray"),
    ("job.add", {**JOB, "command": "x" * (16 * 1024 + 1)}, "at most 16384 bytes"),
    ("job.add", {**JOB, "command": "é" * (8 * 1024 + 1)}, "at most 16384 bytes"),
    ("job.add", {**JOB, "command": "{a}" * 257}, "at most 256 placeholders"),
    ("job.add", {**JOB, "command": "a\x00b"}, "must not contain a NUL"),
    ("job.add", {**JOB, "script": "é" * 128}, "script must be"),
    ("job.add", {**JOB, "match": {f"k{i}": i for i in range(33)}}, "at most 32 fields"),
    ("job.add", {**JOB, "match": {"k": "v" * 1100}}, "at most 1024 bytes"),
    ("job.add", {**JOB, "timeout_seconds": 1e308}, "from 0.1 to 604800"),
    ("job.add", {**JOB, "timeout_seconds": 0.05}, "from 0.1 to 604800"),
    ("job.add", {**JOB, "timeout_seconds": 0}, "timeout_seconds must be a number from 0.1"),
    ("job.add", {**JOB, "timeout_seconds": -1}, "timeout_seconds must be a number from 0.1"),
    ("job.add", {**JOB, "timeout_seconds": WEEK + 1}, "from 0.1 to 604800 (seconds)"),
    ("job.update", {"name": "n", "timeout_seconds": 0}, "timeout_seconds must be a number"),
    ("job.update", {"name": "n", "trigger": "a#"}, "one topic level"),
    *[(name, {"id": ""}, "id must be an entry id") for name in ENTRY_COMMANDS],
    *[(name, {"id": "i" * 201}, "1-200 characters") for name in ENTRY_COMMANDS],
    ("settings.set", {"interval_seconds": -0.5}, "interval_seconds must be a number from 0 to "
     "86400 (seconds)"),
    ("settings.set", {"interval_seconds": 86401}, "from 0 to 86400"),
    ("settings.set", {"interval_seconds": 1e308}, "from 0 to 86400"),
    ("settings.set", {"executed_cleanup": {"every_seconds": 1e12}}, "from 1 to 2592000"),
    ("settings.set", {"executed_cleanup": {"every_seconds": 0.5}}, "from 1 to 2592000"),
    ("settings.set", {"executed_cleanup": {"max_age_days": 1e308}}, "from 0.00001 to 3650"),
    ("settings.set", {"executed_cleanup": {"max_age_days": 3651}}, "from 0.00001 to 3650"),
    ("settings.set", {"executed_cleanup": {"max_rows": 0}}, "max_rows must be an integer from 1 "
     "to 10000"),
    ("settings.set", {"failed_cleanup": {"max_rows": 10001}}, "max_rows must be an integer"),
    ("settings.set", {"executed_cleanup": {"max_age_days": 0}}, "max_age_days must be a number "
     "from 0.00001 to 3650 (days), or null"),
    ("settings.set", {"executed_cleanup": {"max_age_days": -1}}, "max_age_days must be a number"),
    ("settings.set", {"failed_cleanup": {"every_seconds": 0}}, "every_seconds must be a number "
     "from 1 to 2592000 (seconds)"),
    ("settings.set", {"failed_cleanup": {"every_seconds": -5}}, "every_seconds must be a number"),
    ("settings.set", {"archive": {"max_age_days": 0}}, "archive.max_age_days must be a number "
     "from 0.00001 to 3650 (days), or null"),
    ("settings.set", {"archive": {"max_age_days": -1}}, "archive.max_age_days must be a number"),
    ("settings.set", {"archive": {"max_age_days": 3651}}, "from 0.00001 to 3650"),
    ("settings.set", {"archive": {"max_age_days": 1e308}}, "from 0.00001 to 3650"),
    ("settings.set", {"archive": {"max_age_days": 10**400}}, "from 0.00001 to 3650"),
    ("settings.set", {"archive": {"every_seconds": 0.5}}, "archive.every_seconds must be a "
     "number from 1 to 2592000 (seconds)"),
    ("settings.set", {"archive": {"every_seconds": 1e12}}, "from 1 to 2592000"),
    ("settings.set", {"archive": {"every_seconds": -1}}, "archive.every_seconds must be a num"),
    ("cleanup.run", {"table": "queue"}, "table must be one of executed, failed, all"),
    ("cleanup.run", {"table": "Executed"}, "table must be one of"),
    ("views.get", {"view": "rejections"}, "view must be one of"),
    ("views.get", {"view": "queue", "limit": 0}, "limit must be an integer from 1 to 10000"),
    ("views.get", {"view": "queue", "limit": 10001}, "limit must be an integer"),
    ("views.get", {"view": "queue", "offset": -1}, "offset must be an integer from 0"),
    ("views.get", {"view": "queue", "offset": 1.5}, "offset must be an integer"),
    ("views.get", {"view": "queue", "id": "x", "limit": 3}, "offset and limit do not go"),
    ("views.get", {"view": "settings", "id": "x"}, "id is for the table views"),
    ("views.get", {"view": "settings", "limit": 3}, "are for the table views"),
    ("views.get", {"view": "jobs", "id": "bad name"}, "name must match"),
    ("views.get", {"view": "failed", "id": ""}, "id must be an entry id"),
]

UNKNOWN_ARGUMENT = [
    ("job.add", {**JOB, "colour": "red"}, "unknown argument(s) colour"),
    ("job.add", {**JOB, "id": "x", "zz": 1}, "unknown argument(s) id, zz"),
    ("job.update", {"name": "n", "timeout": 3}, "unknown argument(s) timeout"),
    ("job.remove", {"name": "n", "force": True}, "unknown argument(s) force"),
    *[(name, {"id": "x", "name": "n"}, "unknown argument(s) name") for name in ENTRY_COMMANDS],
    ("settings.set", {"interval": 3}, "unknown argument(s) interval"),
    ("settings.set", {"executed_cleanup": {"rows": 3}}, "unknown argument(s) rows"),
    ("cleanup.run", {"table": "all", "now": True}, "unknown argument(s) now"),
    ("views.get", {"view": "jobs", "rows": 3}, "unknown argument(s) rows"),
]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        *[pytest.param(*case, id=f"missing-{i}") for i, case in enumerate(MISSING)],
        *[pytest.param(*case, id=f"wrong-type-{i}") for i, case in enumerate(WRONG_TYPE)],
        *[pytest.param(*case, id=f"out-of-range-{i}") for i, case in enumerate(OUT_OF_RANGE)],
        *[pytest.param(*case, id=f"unknown-arg-{i}") for i, case in enumerate(UNKNOWN_ARGUMENT)],
    ],
)
def test_invalid_arguments_raise_invalid_input_saying_why(
    name: str, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_command(name, args)
    assert caught.value.code == "invalid"
    assert message in caught.value.message


@pytest.mark.parametrize("name", ["job.delete", "", "JOB.ADD", "job.add ", "views", "queue.clear"])
def test_an_unknown_command_raises_unknown_command(name: str) -> None:
    with pytest.raises(UnknownCommand) as caught:
        parse_command(name, {})
    assert caught.value.code == "unknown_command"
    assert "job.add" in caught.value.message  # the reply lists the known commands


@pytest.mark.parametrize("args", [[], ["name"], "x", None, 3, 1.5, True])
@pytest.mark.parametrize("name", sorted(CONTRACT_COMMANDS))
def test_arguments_that_are_not_an_object_are_invalid(name: str, args: Any) -> None:
    with pytest.raises(InvalidInput, match="must be a JSON object") as caught:
        parse_command(name, args)
    assert caught.value.code == "invalid"


def test_an_unknown_command_is_reported_before_bad_arguments() -> None:
    with pytest.raises(UnknownCommand):
        parse_command("nope", [])
