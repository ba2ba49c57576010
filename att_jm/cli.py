"""The `att-jm` command line: `serve`, `rebuild` and the operator verbs (MQTT requests).

Exit codes: 0 ok; 1 the service answered with an error; 2 bad usage or settings (checked
before anything is sent: unknown flags, malformed entry ids and job names, ...); 3 no answer
(broker unreachable or refusing, timeout, or the service's retained status says it is offline
or there is none). With `--json` every failure is also JSON, on stdout:
`{"ok": false, "error": {"code", "message"}}`, the code of an error reply as the service gave
it, else `usage`, `no_answer` or `offline`.

Building a request from argv (`parse_argv`, `parse_request`) and rendering a result (`render`)
are pure functions; only `main` and the `run_*` handlers do I/O. Heavy modules (paho, the
service) are imported inside the handlers so the command starts fast. Each verb group has its
own `add_*_commands(subparsers)` function; new groups (e.g. `audit`) are added the same way.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NoReturn
from uuid import UUID

import orjson

from att_jm.cli_site import add_site_commands, run_setup, run_users
from att_jm.config import SETTING_NAMES, ConfigError, MqttEndpoint, Settings, load_settings

EXIT_OK: Final = 0
EXIT_ERROR_REPLY: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_ANSWER: Final = 3
DEFAULT_TIMEOUT: Final = 10.0
CLEANUP_FIELDS: Final = ("max_rows", "max_age_days", "every_seconds")
CLEANUP_TABLES: Final = ("executed", "failed")
TEXT_WIDTH: Final = 40
NOTHING: Final = "-"

ArgsBuilder = Callable[[argparse.Namespace], dict[str, object]]


#: A job name, as the service checks it (`att_jm.domain.commands.NAME_RE`, not imported: the
#: CLI starts without the domain modules).
JOB_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UsageError(Exception):
    """The command line is well-formed for argparse but asks for something impossible."""


class ParseError(UsageError):
    """argparse refused the command line: `message`, and the (sub)parser that did, whose
    usage line goes with the message."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.message = message
        self.parser = parser


class Failure(Exception):
    """A run that ends without a result: its `code` (as in `--json`), `message` and exit code;
    `shown` is the line printed on stderr without `--json`."""

    def __init__(self, code: str, message: str, exit_code: int, shown: str | None = None
                 ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.shown = f"error: {message}" if shown is None else shown


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ParseError instead of printing and exiting, and notes in
    the namespace the deepest (sub)parser it went through (`_parser`)."""

    def error(self, message: str) -> NoReturn:
        raise ParseError(message, self)

    def parse_known_args(  # type: ignore[override]  # the same call, typed for a Namespace
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace = argparse.Namespace() if namespace is None else namespace
        namespace._parser = self  # a sub-verb's parser runs later and overwrites it
        return super().parse_known_args(args, namespace)


@dataclass(frozen=True)
class Request:
    """One command for the service: its name and its JSON arguments."""

    command: str
    args: dict[str, object]


# Value parsers (argparse `type=` functions) ----------------------------------------------


def parse_json_value(text: str) -> object:
    """`text` as JSON when it is valid JSON (3, true, null, "x"), else the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_match(text: str) -> tuple[str, object]:
    """`FIELD=VALUE` -> (FIELD, VALUE as JSON or string); dotted FIELD names stay as given."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return field, parse_json_value(value)


def parse_json_object(text: str) -> dict[str, object]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"site\": \"paris\"}'")
    return value


def parse_number(text: str) -> int | float:
    """An integer when `text` is one, else a finite float."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_number(text: str) -> int | float:
    value = parse_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def non_negative_number(text: str) -> int | float:
    value = parse_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def positive_int(text: str) -> int:
    value = parse_number(text)
    if not isinstance(value, int) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be an integer > 0, not {text}")
    return value


def optional_max_rows(text: str) -> int | None:
    if text.lower() == "none":
        return None
    value = positive_int(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"must be 1..10000 or none, not {text}")
    return value


def optional_positive(text: str) -> int | float | None:
    return None if text.lower() == "none" else positive_number(text)


def entry_id(text: str) -> str:
    """An entry (execution) id: a UUID, in any form UUID() reads, as the views show it."""
    try:
        return str(UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an entry id (a UUID like 6f1c7a52-52a4-4c1e-9d7e-0a7d3b1f2c11): {text!r}"
        ) from None


def job_name(text: str) -> str:
    """A job name as the service takes it: [A-Za-z0-9._-]{1,64}."""
    if not JOB_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a job name must match [A-Za-z0-9._-]{{1,64}}: {text!r}")
    return text


# Parser ----------------------------------------------------------------------------------


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per service setting (`--mqtt-url`, `--store`, ...), same names as ATT_JM_*."""
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (or ATT_JM_CONFIG)")
    for name in SETTING_NAMES:
        flag = "--" + name.replace("_", "-")
        if name == "log_format":
            parser.add_argument(flag, choices=("json", "console", "auto"), default=None,
                                help="log lines as JSON, for a console, or auto (console on "
                                "a terminal); overrides ATT_JM_LOG_FORMAT")
        else:
            parser.add_argument(flag, metavar=name.upper(), default=None,
                                help=f"overrides ATT_JM_{name.upper()}")


def _operator_options() -> argparse.ArgumentParser:
    """Options every operator verb takes; SUPPRESS keeps a sub-verb from resetting them."""
    common = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--mqtt-url", help="broker URL (default: ATT_JM_MQTT_URL, config file)")
    common.add_argument("--topic-prefix", help="topic prefix (default: ATT_JM_TOPIC_PREFIX, att)")
    common.add_argument("--config", metavar="FILE", help="TOML settings file (or ATT_JM_CONFIG)")
    common.add_argument(
        "--user", help="the broker user to act as (default: ATT_JM_USER, else `operator` when "
        "the site's secrets hold its password); its password comes from the site's secrets"
    )
    common.add_argument(
        "--actor", help="operator name in the command topic (default: ATT_JM_ACTOR, the MQTT "
        "user name, the login name); a site's broker takes only your own user name"
    )
    common.add_argument("--timeout", type=positive_number, metavar="SECONDS",
                        help=f"how long to wait for the reply (default {DEFAULT_TIMEOUT:g}); "
                        "a service whose retained status says offline is reported at once")
    common.add_argument("--json", action="store_true",
                        help='print the raw result as JSON; a failure as {"ok": false, '
                        '"error": {"code", "message"}}')
    return common


def _verb(
    subparsers: Any, name: str, common: argparse.ArgumentParser, help_text: str,
    command: str, build: ArgsBuilder,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, parents=[common], help=help_text, description=help_text
    )
    parser.set_defaults(handler="operator", request_command=command, build=build)
    return parser


def _view(name: str) -> ArgsBuilder:
    def build(ns: argparse.Namespace) -> dict[str, object]:
        args: dict[str, object] = {"view": name}
        for key in ("offset", "limit"):
            if getattr(ns, key, None) is not None:
                args[key] = getattr(ns, key)
        return args

    return build


def _show(name: str, key: str) -> ArgsBuilder:
    return lambda ns: {"view": name, "id": getattr(ns, key)}


def _paging(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--offset / --limit: a page of the view past its row cap (views.get)."""
    parser.add_argument("--offset", type=non_negative_int, metavar="N",
                        help="skip the first N rows (in the view's order)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="at most N rows (up to the service's view_rows)")
    return parser


def _entry_id(ns: argparse.Namespace) -> dict[str, object]:
    return {"id": ns.id}


def _sub_verbs(parser: argparse.ArgumentParser, dest: str, names: Sequence[str],
               required: bool = False) -> Any:
    """The sub-verbs of `parser` (`{a,b}` in its usage)."""
    return parser.add_subparsers(dest=dest, required=required,
                                 metavar="{" + ",".join(names) + "}",
                                 help="the sub-verb" + ("" if required else " (optional)"))


def _job_name_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("name", type=job_name, help=help_text + " ([A-Za-z0-9._-]{1,64})")


def add_service_commands(subparsers: Any) -> None:
    for name, text in (("serve", "run the Job Manager until SIGTERM/SIGINT"),
                       ("rebuild", "rebuild the views from the event log (service stopped)")):
        parser = subparsers.add_parser(name, help=text, description=text)
        _settings_flags(parser)
        parser.set_defaults(handler=name)


def add_job_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    _paging(_verb(subparsers, "jobs", common, "show the jobs", "views.get", _view("jobs")))
    text = "add, update, remove or show a job"
    job = subparsers.add_parser("job", help=text, description=text)
    verbs = _sub_verbs(job, "job_verb", ("add", "update", "remove", "show"), required=True)
    add = _verb(verbs, "add", common, "register a job", "job.add", job_add_args)
    _job_name_argument(add, "the new job's name")
    add.add_argument("--script", required=True, help="file name in the scripts directory")
    add.add_argument("--trigger", required=True, help="notification trigger (one topic level)")
    _match_options(add)
    add.add_argument("--command", metavar="TEMPLATE",
                     help="Command template, {field} and {a.b} filled from the notification")
    add.add_argument("--timeout-seconds", type=positive_int, metavar="N",
                     help="stop a run after N seconds (default 300)")
    add.add_argument("--disabled", action="store_true", help="register it disabled")
    _retry_options(add)
    update = _verb(verbs, "update", common, "change a job (--match replaces the whole match)",
                   "job.update", job_update_args)
    _job_name_argument(update, "the job to change")
    update.add_argument("--script", help="new file name in the scripts directory")
    update.add_argument("--trigger", help="new notification trigger (one topic level)")
    _match_options(update)
    update.add_argument("--no-match", action="store_true", help="remove the match conditions")
    template = update.add_mutually_exclusive_group()
    template.add_argument("--command", metavar="TEMPLATE", help="new Command template")
    template.add_argument("--no-command", action="store_true",
                          help="no template: the Command is the notification as JSON")
    update.add_argument("--timeout-seconds", type=positive_int, metavar="N",
                        help="stop a run after N seconds")
    _retry_options(update)
    update.add_argument("--no-retry", action="store_true",
                        help="no automatic retry: a failed attempt goes to Failed")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True,
                       help="new notifications enqueue it again")
    state.add_argument("--disable", dest="enabled", action="store_const", const=False,
                       help="new notifications no longer enqueue it (queued entries still run)")
    remove = _verb(verbs, "remove", common, "remove a job (its queued entries stay)",
                   "job.remove", lambda ns: {"name": ns.name})
    _job_name_argument(remove, "the job to remove")
    show = _verb(verbs, "show", common, "show one job in full (no cell cut)", "views.get",
                 _show("jobs", "name"))
    _job_name_argument(show, "the job to show")


def _retry_options(parser: argparse.ArgumentParser) -> None:
    """The retry policy (job.add / job.update `retry`), each part optional."""
    parser.add_argument("--retry-max-attempts", type=positive_int, metavar="N",
                        help="attempts in all, the first included (1..100): a failed attempt "
                        "before the last is queued again")
    parser.add_argument("--retry-delay-seconds", type=non_negative_number, metavar="S",
                        help="seconds to wait before the first retry (0..86400)")
    parser.add_argument("--retry-backoff", type=positive_number, metavar="F",
                        help="each later retry waits F times longer (1..10)")


def _match_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--match", action="append", type=parse_match, metavar="FIELD=VALUE", default=None,
        help="condition on the notification; VALUE is JSON when valid JSON, else a string; "
        "repeat for several",
    )
    parser.add_argument("--match-json", type=parse_json_object, metavar="JSON", default=None,
                        help="conditions as one JSON object (combined with --match)")


def add_table_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    groups = (
        ("queue", "show the queue", "queued", (
            ("remove", "remove a queued entry", "queue.remove"),
            ("execute-now", "run an entry as soon as the runner is free", "queue.execute-now"),
        )),
        ("executed", "show executed jobs", "executed", (
            ("remove", "remove a row from Executed", "executed.remove"),
        )),
        ("failed", "show failed jobs", "failed", (
            ("execute", "re-execute a failed entry at the front of the queue", "failed.execute"),
            ("delete", "permanently delete a row from Failed", "failed.delete"),
        )),
    )
    for group, text, which, actions in groups:
        parser = _paging(_verb(subparsers, group, common, text, "views.get", _view(group)))
        verbs = _sub_verbs(parser, f"{group}_verb", [a[0] for a in (*actions, ("show",))])
        id_help = f"the {which} entry's id (a UUID, as `att-jm {group}` shows it)"
        for name, action_text, command in actions:
            _verb(verbs, name, common, action_text, command, _entry_id).add_argument(
                "id", type=entry_id, help=id_help)
        _verb(verbs, "show", common, "show one row in full (no cell cut)", "views.get",
              _show(group, "id")).add_argument("id", type=entry_id, help=id_help)


def add_settings_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = _verb(subparsers, "settings", common, "show the settings", "views.get",
                   _view("settings"))
    verbs = _sub_verbs(parser, "settings_verb", ("set",))
    change = _verb(verbs, "set", common, "change settings (the other fields keep their values)",
                   "settings.set", settings_changes)
    unset = argparse.SUPPRESS  # an absent flag leaves no attribute: None means "none"
    change.add_argument("--interval-seconds", type=non_negative_number, metavar="N",
                        default=unset, help="minimum pause between two executions")
    for table in CLEANUP_TABLES:
        change.add_argument(f"--{table}-max-rows", type=optional_max_rows, metavar="N|none",
                            default=unset, help=f"keep at most N rows in {table} (1..10000)")
        change.add_argument(f"--{table}-max-age-days", type=optional_positive, metavar="D|none",
                            default=unset, help=f"remove {table} rows older than D days")
        change.add_argument(f"--{table}-every-seconds", type=positive_number, metavar="S",
                            default=unset, help=f"run the {table} cleanup every S seconds")
    text = "run Auto Cleanup now"
    cleanup = subparsers.add_parser("cleanup", help=text, description=text)
    cleanup_verbs = _sub_verbs(cleanup, "cleanup_verb", ("run",), required=True)
    run = _verb(cleanup_verbs, "run", common, text, "cleanup.run",
                lambda ns: {"table": ns.table})
    run.add_argument("table", nargs="?", choices=(*CLEANUP_TABLES, "all"), default="all",
                     help="the table to clean up (default: all)")


AUDIT_VERBS: Final = ("log", "views", "trace", "backtest", "verify", "export", "import")
VIEW_NAMES: Final = ("jobs", "queue", "executed", "failed", "settings")


def non_negative_int(text: str) -> int:
    value = parse_number(text)
    if not isinstance(value, int) or value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text}")
    return value


def _audit_options(store_help: str) -> argparse.ArgumentParser:
    """Options every audit verb takes."""
    common = Parser(add_help=False)
    common.add_argument("--store", metavar="FILE", help=store_help)
    common.add_argument("--config", metavar="FILE", help="TOML settings file (or ATT_JM_CONFIG)")
    common.add_argument("--json", action="store_true",
                        help="JSON (JSON Lines for log) instead of tables; a failure as "
                        '{"ok": false, "error": {"code", "message"}}')
    common.add_argument("--no-progress", action="store_true",
                        help="no progress bar, even on a terminal")
    return common


def _range_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--since", metavar="TIME", help=f"{what} at or after TIME (ISO-8601)")
    parser.add_argument("--until", metavar="TIME", help=f"{what} before TIME (ISO-8601)")
    parser.add_argument("--after", type=non_negative_int, metavar="POSITION",
                        help=f"{what} after this log position")
    parser.add_argument("--upto", type=non_negative_int, metavar="POSITION",
                        help=f"{what} up to this log position")


def add_audit_commands(subparsers: Any) -> None:
    """`att-jm audit VERB`: read the event log (read-only, while the service runs)."""
    text = ("replay, trace, backtest, verify and export the event log (read-only), or import "
            "an export into a new store")
    audit = subparsers.add_parser("audit", help=text, description=text,
                                  epilog="exit codes: 0 ok, 1 verify found a problem or not in "
                                  "the log, 2 usage or no store")
    verbs = _sub_verbs(audit, "audit_verb", AUDIT_VERBS, required=True)
    reading = _audit_options("the event store (default: ATT_JM_STORE, config file, "
                             "./var/att-jm.db); opened read-only")
    writing = _audit_options("the NEW store to write (required): a file that does not exist "
                             "yet or an empty store; the only store an audit verb writes")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        common = writing if name == "import" else reading
        parser: argparse.ArgumentParser = verbs.add_parser(
            name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(handler="audit")
        return parser

    log = verb("log", "the events in log order, filtered (streams any size of log)")
    _range_options(log, "events")
    log.add_argument("--type", action="append", metavar="TYPE",
                     help="event type, e.g. execution.failed or 'execution.*'; repeatable")
    log.add_argument("--job", metavar="NAME", help="the job, its notifications and executions")
    log.add_argument("--execution", metavar="ID", help="one execution and its notification")
    log.add_argument("--notification", metavar="ID",
                     help="one notification and the executions it enqueued")
    log.add_argument("--actor", metavar="NAME", help="events recorded with this actor")
    views = verb("views", "the views as they were at a past moment, rebuilt by replay")
    when = views.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="as they were at TIME (ISO-8601)")
    when.add_argument("--position", type=non_negative_int, metavar="N",
                      help="as they were at log position N (default: now)")
    views.add_argument("--view", action="append", choices=VIEW_NAMES,
                       help="only this view; repeatable")
    views.add_argument("--limit", type=positive_int, metavar="ROWS",
                       help="rows per view (default: ATT_JM_VIEW_ROWS, 1000, as published)")
    trace = verb("trace", "the lineage of one execution: notification, job, attempts, actions")
    trace.add_argument("id", help="the execution id (a UUID)")
    backtest = verb("backtest", "a draft job against stored notifications: what it would run")
    backtest.add_argument("--trigger", required=True, help="notification trigger")
    _match_options(backtest)
    backtest.add_argument("--command", metavar="TEMPLATE", help="Command template")
    backtest.add_argument("--script", help="script file name (shown only; never run)")
    backtest.add_argument("--name", help="job name (default: draft)")
    backtest.add_argument("--timeout-seconds", type=positive_int, metavar="N",
                          help="the draft's timeout (shown only; never run)")
    _range_options(backtest, "notifications received")
    check = verb("verify", "check the seal chain: name any event altered before the last seal")
    check.add_argument("--witness", metavar="FILE",
                       help="seals a witness kept (JSON Lines of P/job-manager/seals messages)")
    out = verb("export", "the log as JSON Lines, one event per line")
    out.add_argument("--output", "-o", metavar="FILE", help="write to FILE (default: stdout)")
    out.add_argument("--upto", type=non_negative_int, metavar="POSITION",
                     help="only the events up to this position")
    into = verb("import", "read an export into a NEW store given with --store (it must not "
                "exist yet, or hold no events): the only audit verb that writes")
    into.add_argument("file", metavar="FILE", help="the JSON Lines file, or - for stdin")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="att-jm",
        description="ATT Job Manager: runs automation scripts for Channel Manager notifications.",
        epilog="exit codes: 0 ok, 1 error reply, 2 usage or settings, 3 no answer",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND",
                                       help="what to do (`att-jm COMMAND --help` for more)")
    common = _operator_options()
    add_service_commands(subparsers)
    add_job_commands(subparsers, common)
    add_table_commands(subparsers, common)
    add_settings_commands(subparsers, common)
    add_audit_commands(subparsers)
    add_site_commands(subparsers)
    return parser


def _relaxed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` made to accept any shape of its own arguments (nothing required, no type, no
    choice, no exclusion), so that parsing only sorts out what it does not know."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = False
            for sub in set(action.choices.values()):
                _relaxed(sub)
            continue
        action.required = False
        action.type = None
        action.choices = None
        if not action.option_strings and action.nargs in (None, "+"):
            action.nargs = "?" if action.nargs is None else "*"
    parser._mutually_exclusive_groups = []
    return parser


def _find(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser | None:
    """The (sub)parser of `parser` called `prog`."""
    if parser.prog == prog:
        return parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found = _find(sub, prog)
                if found is not None:
                    return found
    return None


def _unknown(extras: Sequence[str]) -> str:
    """`unrecognized argument --x` for what parsing left over: the flags among it, if any."""
    flags = [arg for arg in extras if arg.startswith("-") and arg != "-"]
    named = flags or list(extras)
    return f"unrecognized argument{'' if len(named) == 1 else 's'} {' '.join(named)}"


def parse_argv(argv: Sequence[str]) -> argparse.Namespace:
    """The namespace of `argv`; ParseError (with the sub-verb's parser) on bad usage. An
    unknown flag is named even when something else is wrong too (a missing argument, most
    often caused by the misspelt flag)."""
    parser = build_parser()
    try:
        ns, extras = parser.parse_known_args(list(argv))
    except ParseError as error:
        try:
            probe, extras = _relaxed(build_parser()).parse_known_args(list(argv))
        except ParseError:
            raise error from None
        if not extras:
            raise
        raise ParseError(_unknown(extras), _find(parser, probe._parser.prog) or parser
                         ) from None
    deepest = ns._parser
    del ns._parser
    if extras:
        raise ParseError(_unknown(extras), deepest)
    return ns


# Requests (pure) -------------------------------------------------------------------------


def combine_match(
    pairs: Sequence[tuple[str, object]] | None, base: Mapping[str, object] | None
) -> dict[str, object] | None:
    """--match-json then each --match; None when neither was given; a field twice is an error."""
    if pairs is None and base is None:
        return None
    match = dict(base or {})
    for field, value in pairs or ():
        if field in match:
            raise UsageError(f"match field {field!r} is given twice")
        match[field] = value
    return match


def job_add_args(ns: argparse.Namespace) -> dict[str, object]:
    args: dict[str, object] = {"name": ns.name, "script": ns.script, "trigger": ns.trigger}
    match = combine_match(ns.match, ns.match_json)
    if match is not None:
        args["match"] = match
    if ns.command is not None:
        args["command"] = ns.command
    if ns.timeout_seconds is not None:
        args["timeout_seconds"] = ns.timeout_seconds
    if ns.disabled:
        args["enabled"] = False
    retry = retry_args(ns)
    if retry is not None:
        args["retry"] = retry
    return args


def retry_args(ns: argparse.Namespace) -> dict[str, object] | None:
    """The `retry` object of --retry-max-attempts / --retry-delay-seconds / --retry-backoff
    (None when none is given)."""
    given = {field: getattr(ns, f"retry_{field}", None)
             for field in ("max_attempts", "delay_seconds", "backoff")}
    given = {field: value for field, value in given.items() if value is not None}
    return given or None


def job_update_args(ns: argparse.Namespace) -> dict[str, object]:
    args: dict[str, object] = {"name": ns.name}
    for field in ("script", "trigger", "command", "timeout_seconds", "enabled"):
        if getattr(ns, field) is not None:
            args[field] = getattr(ns, field)
    match = combine_match(ns.match, ns.match_json)
    if ns.no_match and match is not None:
        raise UsageError("--no-match cannot be combined with --match or --match-json")
    if ns.no_match:
        args["match"] = None
    elif match is not None:
        args["match"] = match
    if ns.no_command:
        args["command"] = None
    retry = retry_args(ns)
    if ns.no_retry and retry is not None:
        raise UsageError("--no-retry cannot be combined with --retry-* options")
    if ns.no_retry:
        args["retry"] = None
    elif retry is not None:
        args["retry"] = retry
    if len(args) == 1:
        raise UsageError("job update needs at least one change, e.g. --trigger or --disable")
    return args


def settings_changes(ns: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line; cleanup objects partial (see merge_settings)."""
    changes: dict[str, object] = {}
    if hasattr(ns, "interval_seconds"):
        changes["interval_seconds"] = ns.interval_seconds
    for table in CLEANUP_TABLES:
        given = {f: getattr(ns, f"{table}_{f}") for f in CLEANUP_FIELDS
                 if hasattr(ns, f"{table}_{f}")}
        if given:
            changes[f"{table}_cleanup"] = given
    if not changes:
        raise UsageError("settings set needs at least one setting, e.g. --interval-seconds 10")
    return changes


def merge_settings(
    current: Mapping[str, object], changes: Mapping[str, object]
) -> dict[str, object]:
    """`changes` with each cleanup object completed from `current`, so it is sent whole."""
    merged: dict[str, object] = {}
    for key, value in changes.items():
        existing = current.get(key)
        if isinstance(value, Mapping) and isinstance(existing, Mapping):
            whole = {f: existing[f] for f in CLEANUP_FIELDS if f in existing}
            merged[key] = whole | dict(value)
        else:
            merged[key] = value
    return merged


def parse_request(argv: Sequence[str]) -> tuple[Request, argparse.Namespace]:
    """The service request an operator command line asks for (UsageError, or its ParseError,
    on bad usage); settings.set carries partial cleanup objects until merge_settings."""
    ns = parse_argv(argv)
    if getattr(ns, "handler", None) != "operator":
        raise UsageError("not an operator command")
    return Request(ns.request_command, ns.build(ns)), ns


# Rendering (pure) ------------------------------------------------------------------------


def short_time(value: object) -> str:
    """An ISO-8601 time in UTC to the second (`2024-05-01T12:34:56Z`); other values as text."""
    if not isinstance(value, str):
        return cell(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if moment.tzinfo else "")


def cell(value: object) -> str:
    """A value on one line: null as '-', numbers without a needless '.0', objects as JSON."""
    if value is None:
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    text = str(value)
    return "".join(c if c.isprintable() else " " for c in text)


def truncate(text: str, width: int = TEXT_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plural(count: object, noun: str, nouns: str | None = None) -> str:
    """`1 row`, `2 rows`, `1,000 rows` (`nouns`: an irregular plural); a count that is not
    an integer is shown as it is, with the plural."""
    if isinstance(count, int) and not isinstance(count, bool):
        return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
    return f"{cell(count)} {nouns or noun + 's'}"


def duration(seconds: object) -> str:
    """A duration to 3 significant digits, in ms below a second (`47.7 ms`), else in s
    (`1.23 s`, `312 s`: whole seconds from 100 s on); other values as `cell` shows them."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
        math.isfinite(seconds)
    ):
        return cell(seconds)
    value, unit = seconds * 1000, "ms"
    if abs(float(f"{value:.3g}")) >= 1000:
        value, unit = float(seconds), "s"
    rounded = float(f"{value:.3g}")
    if rounded == 0:
        return f"0 {unit}"
    if abs(rounded) >= 100:
        return f"{value:.0f} {unit}"
    decimals = 2 - math.floor(math.log10(abs(rounded)))
    return f"{rounded:.{decimals}f} {unit}"


RESULTS: Final = {3: "3 succeeded", 2: "2 failed"}


def result_cell(value: object) -> str:
    """Result 3 / 2 with its meaning."""
    if isinstance(value, int) and not isinstance(value, bool) and value in RESULTS:
        return RESULTS[value]
    return cell(value)


Column = tuple[str, str, Callable[[object], str]]  # row key, header, formatter


def _long(value: object) -> str:
    return truncate(cell(value))


def retry_cell(value: object) -> str:
    """A retry policy as `3x 10s *2`; `-` for none."""
    if not isinstance(value, Mapping):
        return NOTHING
    return (f"{cell(value.get('max_attempts'))}x {cell(value.get('delay_seconds'))}s "
            f"*{cell(value.get('backoff'))}")


HISTORY_COLUMNS: Final[tuple[Column, ...]] = (
    ("id", "ID", cell), ("job", "JOB", cell), ("result", "RESULT", result_cell),
    ("attempt", "ATTEMPT", cell), ("started_at", "STARTED", short_time),
    ("finished_at", "FINISHED", short_time), ("notification_id", "NOTIFICATION", _long),
    ("command", "COMMAND", _long), ("feedback", "FEEDBACK", _long),
)

COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "jobs": (
        ("name", "NAME", cell), ("enabled", "ENABLED", cell), ("trigger", "TRIGGER", cell),
        ("script", "SCRIPT", cell), ("match", "MATCH", _long), ("command", "COMMAND", _long),
        ("timeout_seconds", "TIMEOUT_S", cell), ("retry", "RETRY", retry_cell),
        ("updated_at", "UPDATED", short_time),
    ),
    "queue": (
        ("id", "ID", cell), ("job", "JOB", cell), ("state", "STATE", cell),
        ("attempt", "ATTEMPT", cell), ("enqueued_at", "ENQUEUED", short_time),
        ("started_at", "STARTED", short_time), ("not_before", "NOT_BEFORE", short_time),
        ("notification_id", "NOTIFICATION", _long),
        ("command", "COMMAND", _long), ("feedback", "FEEDBACK", _long),
    ),
    "executed": HISTORY_COLUMNS,
    "failed": HISTORY_COLUMNS,
}


def render_table(columns: Sequence[Column], rows: Sequence[Mapping[str, object]]) -> str:
    """Rows as left-aligned columns separated by two spaces, under an upper-case header."""
    grid = [[header for _, header, _ in columns]]
    grid += [[show(row.get(key)) for key, _, show in columns] for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in grid
    )


def render_settings(settings: Mapping[str, object]) -> str:
    lines = [f"interval_seconds  {cell(settings.get('interval_seconds'))}"]
    for table in CLEANUP_TABLES:
        policy = settings.get(f"{table}_cleanup")
        if isinstance(policy, Mapping):
            fields = ", ".join(f"{f} {cell(policy.get(f))}" for f in CLEANUP_FIELDS)
            lines.append(f"{table + '_cleanup':<17} {fields}")
    return "\n".join(lines)


def render_row(row: Mapping[str, object]) -> str:
    """One row in full: `field  value` lines, nothing cut."""
    width = max((len(key) for key in row), default=0)
    return "\n".join(f"{key:<{width}}  {cell(value)}" for key, value in row.items())


def render_view(payload: Mapping[str, object]) -> str:
    """A `views.get` result: a table and `N of TOTAL rows (position P)`, the settings, or one
    row in full."""
    name = str(payload.get("view"))
    position = cell(payload.get("position"))
    settings = payload.get("settings")
    if name == "settings" and isinstance(settings, Mapping):
        return f"{render_settings(settings)}\n(position {position})"
    row = payload.get("row")
    if isinstance(row, Mapping):
        return f"{render_row(row)}\n(position {position})"
    rows = [row for row in _list(payload.get("rows")) if isinstance(row, Mapping)]
    total = payload.get("total", len(rows))
    offset = payload.get("offset")
    if isinstance(offset, int) and rows:
        footer = f"rows {offset}-{offset + len(rows) - 1} of {cell(total)} (position {position})"
    else:
        footer = f"{len(rows):,} of {plural(total, 'row')} (position {position})"
    cut = payload.get("cut")
    if isinstance(cut, int) and cut:
        footer += f"; {plural(cut, 'long cell')} cut (`show ID` prints a row in full)"
    if not rows:
        return footer
    columns = COLUMNS.get(name) or tuple((k, k.upper(), _long) for k in rows[0])
    return f"{render_table(columns, rows)}\n{footer}"


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def render(request: Request, result: object) -> str:
    """What an operator reads after a successful command."""
    data = _mapping(result)
    what = request.args.get("id", request.args.get("name"))
    attempt = cell(data.get("attempt"))
    messages: dict[str, Callable[[], str]] = {
        "views.get": lambda: render_view(data),
        "job.add": lambda: f"added job {what}\n" + render_table(COLUMNS["jobs"], [data]),
        "job.update": lambda: f"updated job {what}\n" + render_table(COLUMNS["jobs"], [data]),
        "job.remove": lambda: f"removed job {what}",
        "queue.remove": lambda: f"removed {what} from the queue",
        "queue.execute-now": lambda: f"{what} will run as soon as the runner is free",
        "executed.remove": lambda: f"removed {what} from executed",
        "failed.execute": lambda: f"{what} queued at the front, attempt {attempt}",
        "failed.delete": lambda: f"deleted {what} from failed",
        "settings.set": lambda: "settings changed\n" + render_settings(data),
        "cleanup.run": lambda: "cleanup removed " + ", ".join(
            f"{plural(n, 'row')} from {table}" for table, n in data.items()),
    }
    show = messages.get(request.command)
    if show is None or not data:
        return cell(result)
    return show()


REASONS: Final = {"lost": "it crashed or lost its connection without a clean stop"}


def offline_message(topic: str, status: Mapping[str, object] | None, *, sent: bool) -> str:
    """Why nothing came back: the service's retained status (`at`, `reason` when it has them),
    or that there is none."""
    if status is None:
        return (f"the job manager is not running: no status is retained on {topic} (it never "
                "ran on this broker with this topic prefix, or you may not read that topic); "
                "nothing was sent")
    at = status.get("at")
    when = cell(short_time(at)) if isinstance(at, str) and at else None
    reason = status.get("reason")
    why = ""
    if reason is not None:
        meaning = REASONS.get(reason) if isinstance(reason, str) else None
        why = f" (reason: {cell(reason)}{': ' + meaning if meaning else ''})"
    if sent:
        return (f"the job manager went offline{'' if when is None else ' at ' + when}{why} "
                "before it answered: the command may or may not have been handled "
                "(`att-jm audit log` tells)")
    since = "" if when is None else f" since {when}"
    return f"the job manager is offline{since}{why}; nothing was sent"


def error_json(code: str, message: str) -> str:
    """A failure as `--json` prints it: `{"ok": false, "error": {"code", "message"}}`."""
    return orjson.dumps({"ok": False, "error": {"code": code, "message": message}}).decode()


def wants_json(argv: Sequence[str]) -> bool:
    """Whether `argv` asks for JSON (`--json` before any `--`), even when it does not parse."""
    given = list(argv)
    return "--json" in (given[: given.index("--")] if "--" in given else given)


def usage_failure(error: UsageError | ConfigError) -> Failure:
    """Bad usage as a Failure (exit 2, code `usage`); argparse's kind with its usage line."""
    if isinstance(error, ParseError):
        shown = f"{error.parser.format_usage()}{error.parser.prog}: error: {error.message}"
        return Failure("usage", error.message, EXIT_USAGE, shown)
    return Failure("usage", str(error), EXIT_USAGE, f"att-jm: error: {error}")


# Handlers (I/O) --------------------------------------------------------------------------


def settings_flags(ns: argparse.Namespace) -> dict[str, object]:
    return {name: getattr(ns, name, None) for name in SETTING_NAMES}


def run_service(ns: argparse.Namespace) -> int:
    settings = load_settings(settings_flags(ns), os.environ, ns.config)
    from att_jm import service  # noqa: PLC0415 -- lazy: the CLI starts fast without the store

    return service.serve(settings) if ns.handler == "serve" else service.rebuild(settings)


def resolve_actor(given: str | None, environ: Mapping[str, str], endpoint: MqttEndpoint) -> str:
    """--actor, else ATT_JM_ACTOR, else the MQTT user name, else the login name."""
    actor = given or environ.get("ATT_JM_ACTOR") or endpoint.username
    if not actor:
        try:
            actor = getpass.getuser()
        except (KeyError, OSError):
            raise UsageError("cannot tell who you are: pass --actor or set ATT_JM_ACTOR") from None
    if any(c in actor for c in "/+#\x00"):
        raise UsageError(f"actor {actor!r} must be one topic level: no / + # or NUL")
    return actor


def run_operator(ns: argparse.Namespace, request: Request) -> int:
    flags = {"mqtt_url": getattr(ns, "mqtt_url", None),
             "topic_prefix": getattr(ns, "topic_prefix", None)}
    settings = load_settings(flags, os.environ, getattr(ns, "config", None))
    endpoint = settings.endpoint_for(cli_user(getattr(ns, "user", None), os.environ, settings))
    actor = resolve_actor(getattr(ns, "actor", None), os.environ, endpoint)
    timeout = float(getattr(ns, "timeout", DEFAULT_TIMEOUT))
    reply = exchange(settings, endpoint, actor, request, timeout)
    if reply.get("ok") is not True:
        error = _mapping(reply.get("error"))
        code, message = cell(error.get("code", "internal")), cell(error.get("message", ""))
        raise Failure(code, message, EXIT_ERROR_REPLY, f"error: {code}: {message}")
    result = reply.get("result")
    if getattr(ns, "json", False):
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(request, result))
    return EXIT_OK


def cli_user(given: str | None, environ: Mapping[str, str], settings: Settings) -> str | None:
    """Who the CLI acts as: --user, else ATT_JM_USER, else `operator` when the site's secrets
    hold its password, else nobody (the URL's user, or anonymous)."""
    user = given or environ.get("ATT_JM_USER")
    if user:
        return user
    if settings.secrets_dir is not None and settings.password_of("operator") is not None:
        return "operator"
    return None


def exchange(
    settings: Settings, endpoint: MqttEndpoint, actor: str, request: Request, timeout: float
) -> dict[str, object]:
    """The service's reply to `request` (settings.set merged first); Failure (exit 3) when
    none comes, at once when the service's retained status says it is offline."""
    from att_jm.mqtt.requester import (  # noqa: PLC0415 -- lazy: paho only when talking MQTT
        Requester,
        RequesterError,
        RequestTimeout,
        ServiceOffline,
    )

    status_topic = f"{settings.topic_prefix}/job-manager/status"
    try:
        with Requester(endpoint, actor=actor, topic_prefix=settings.topic_prefix,
                       connect_timeout=timeout, max_payload_bytes=settings.max_payload_bytes,
                       status_topic=status_topic) as requester:
            args = request.args
            if request.command == "settings.set":
                current = requester.request("views.get", {"view": "settings"}, timeout)
                if current.get("ok") is not True:
                    return current
                now = _mapping(_mapping(current.get("result")).get("settings"))
                args = merge_settings(now, args)
            return requester.request(request.command, args, timeout)
    except ServiceOffline as offline:
        message = offline_message(offline.topic, offline.status, sent=offline.sent)
        raise Failure("offline", message, EXIT_NO_ANSWER) from None
    except RequesterError as error:
        hint = " (is att-jm serve running?)" if isinstance(error, RequestTimeout) else ""
        raise Failure("no_answer", f"no answer from the job manager: {error}{hint}",
                      EXIT_NO_ANSWER) from None


def run_audit(ns: argparse.Namespace) -> int:
    """An `audit` verb against the store of --store / ATT_JM_STORE / the config file."""
    if ns.audit_verb == "import" and not ns.store:
        raise UsageError("audit import needs --store FILE: the new, empty store to fill")
    settings = load_settings({"store": ns.store}, os.environ, ns.config)
    match = None
    if ns.audit_verb == "backtest":
        match = combine_match(ns.match, ns.match_json)
    from att_jm.audit import commands  # noqa: PLC0415 -- lazy: the CLI starts fast

    return commands.run(ns, settings.store, settings.view_rows, match,
                        view_max_bytes=settings.view_max_bytes)


def report(failure: Failure, as_json: bool) -> int:
    """Print `failure` (JSON on stdout with --json, else its line on stderr); its exit code."""
    if as_json:
        print(error_json(failure.code, failure.message), flush=True)
    else:
        print(failure.shown, file=sys.stderr)
    return failure.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run `att-jm` with `argv` (default: the process arguments); the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(args)
    try:
        ns = parse_argv(args)
        if getattr(ns, "handler", None) is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        if ns.handler == "operator":
            return run_operator(ns, Request(ns.request_command, ns.build(ns)))
        handlers: dict[str, Callable[[argparse.Namespace], int]] = {
            "audit": run_audit, "setup": run_setup, "users": run_users,
        }
        return handlers.get(ns.handler, run_service)(ns)
    except SystemExit as done:  # argparse's --help (0)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    except Failure as failure:
        return report(failure, as_json)
    except (ConfigError, UsageError) as error:
        return report(usage_failure(error), as_json)
