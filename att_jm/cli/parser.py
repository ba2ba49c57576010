"""The command line's grammar: every verb, flag and help text (pure: no I/O)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from att_jm.cli.common import (
    CLEANUP_TABLES,
    DEFAULT_TIMEOUT,
    ArgsBuilder,
    ParseError,
    Request,
    UsageError,
)
from att_jm.cli.requests import job_add_args, job_update_args, settings_changes
from att_jm.cli.site import add_site_commands
from att_jm.cli.values import (
    entry_id,
    job_name,
    non_negative_number,
    optional_max_rows,
    optional_positive,
    parse_json_object,
    parse_match,
    parse_number,
    positive_int,
    positive_number,
)
from att_jm.config import SETTING_NAMES
from att_jm.vocabulary import VIEWS


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
    # Listed for --help only: `att-jm metrics ...` goes to the exporter's own parser (handlers).
    subparsers.add_parser("metrics", help="serve /metrics and /healthz on a loopback port "
                          "(docs/metrics.md)", add_help=False)


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
    change.add_argument("--archive-max-age-days", type=optional_positive, metavar="D|none",
                        default=unset, help="automatic archival: archive the sealed rows older "
                        "than D days (none: off, the default)")
    change.add_argument("--archive-every-seconds", type=positive_number, metavar="S",
                        default=unset, help="automatic archival: look every S seconds")
    text = "run Auto Cleanup now"
    cleanup = subparsers.add_parser("cleanup", help=text, description=text)
    cleanup_verbs = _sub_verbs(cleanup, "cleanup_verb", ("run",), required=True)
    run = _verb(cleanup_verbs, "run", common, text, "cleanup.run",
                lambda ns: {"table": ns.table})
    run.add_argument("table", nargs="?", choices=(*CLEANUP_TABLES, "all"), default="all",
                     help="the table to clean up (default: all)")


AUDIT_VERBS: Final = ("log", "views", "trace", "backtest", "verify", "export", "import",
                      "archive")
VIEW_NAMES: Final = VIEWS


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


READ_ARCHIVES: Final = "their rows, then the store's after its anchor, read as one log"


def _archives_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--archive", action="append", metavar="FILE|DIR", default=None,
                        help=f"an archive of the store (`audit archive`), repeatable, oldest "
                        f"first; a directory: its *.arc files in name order: {what}")


def _range_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--since", metavar="TIME", help=f"{what} at or after TIME (ISO-8601)")
    parser.add_argument("--until", metavar="TIME", help=f"{what} before TIME (ISO-8601)")
    parser.add_argument("--after", type=non_negative_int, metavar="POSITION",
                        help=f"{what} after this log position")
    parser.add_argument("--upto", type=non_negative_int, metavar="POSITION",
                        help=f"{what} up to this log position")


def add_audit_commands(subparsers: Any) -> None:
    """`att-jm audit VERB`: read the event log (read-only, while the service runs)."""
    text = ("replay, trace, backtest, verify and export the event log (read-only), import "
            "an export into a new store, or archive its oldest sealed rows")
    audit = subparsers.add_parser("audit", help=text, description=text,
                                  epilog="exit codes: 0 ok, 1 verify found a problem, not in "
                                  "the log, or nothing to archive, 2 usage or no store")
    verbs = _sub_verbs(audit, "audit_verb", AUDIT_VERBS, required=True)
    reading = _audit_options("the event store (default: ATT_JM_STORE, config file, "
                             "./var/att-jm.db); opened read-only")
    writing = _audit_options("the NEW store to write (required): a file that does not exist "
                             "yet or an empty store; the only store an audit verb writes")
    archiving = _audit_options("the event store to archive (default: ATT_JM_STORE, config "
                               "file, ./var/att-jm.db); may be in use by the service")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        common = {"import": writing, "archive": archiving}.get(name, reading)
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
    _archives_option(log, READ_ARCHIVES)
    views = verb("views", "the views as they were at a past moment, rebuilt by replay")
    when = views.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="as they were at TIME (ISO-8601)")
    when.add_argument("--position", type=non_negative_int, metavar="N",
                      help="as they were at log position N (default: now)")
    views.add_argument("--view", action="append", choices=VIEW_NAMES,
                       help="only this view; repeatable")
    views.add_argument("--limit", type=positive_int, metavar="ROWS",
                       help="rows per view (default: ATT_JM_VIEW_ROWS, 1000, as published)")
    _archives_option(views, READ_ARCHIVES)
    trace = verb("trace", "the lineage of one execution: notification, job, attempts, actions")
    trace.add_argument("id", help="the execution id (a UUID)")
    _archives_option(trace, READ_ARCHIVES)
    backtest = verb("backtest", "a draft job against stored notifications: what it would run")
    backtest.add_argument("--trigger", required=True, help="notification trigger")
    _match_options(backtest)
    backtest.add_argument("--command", metavar="TEMPLATE", help="Command template")
    backtest.add_argument("--script", help="script file name (shown only; never run)")
    backtest.add_argument("--name", help="job name (default: draft)")
    backtest.add_argument("--timeout-seconds", type=positive_int, metavar="N",
                          help="the draft's timeout (shown only; never run)")
    _range_options(backtest, "notifications received")
    _archives_option(backtest, READ_ARCHIVES)
    check = verb("verify", "check the seal chain: name any event altered before the last seal")
    check.add_argument("--witness", metavar="FILE",
                       help="seals a witness kept (JSON Lines of P/job-manager/seals messages)")
    _archives_option(check, "check them and the store as one chain from position 1")
    out = verb("export", "the log as JSON Lines, one event per line")
    out.add_argument("--output", "-o", metavar="FILE", help="write to FILE (default: stdout)")
    out.add_argument("--upto", type=non_negative_int, metavar="POSITION",
                     help="only the events up to this position")
    _archives_option(out, "the whole log, from position 1 (an import of it is the store as "
                     "it was before the archival)")
    into = verb("import", "read an export into a NEW store given with --store (it must not "
                "exist yet, or hold no events): the only audit verb that writes; states are "
                "written as plain JSON unless ATT_JM_COMPACT_STATES (or the config file's "
                "compact_states) is true")
    into.add_argument("file", metavar="FILE", help="the JSON Lines file, or - for stdin")
    _archive_verb(verb)


def _archive_verb(verb: Any) -> None:
    text = ("move the oldest sealed rows to a compressed, self-verifying archive FILE and "
            "remove them from the store, leaving an anchor (works while the service runs). "
            "The cut is the end of a seal, before every execution still queued, running or "
            "in Executed/Failed, and not past what the views and the relay have read. Keep "
            "the archives: `verify --archive` and `log`/`trace`/`views`/`backtest --archive` "
            "read them. Notification ids older than the cut are no longer known to the "
            "service: a notification re-sent with such an id is taken as new (the "
            "de-duplication horizon is the archive's age)")
    archive = verb("archive", text)
    until = archive.add_mutually_exclusive_group(required=True)
    until.add_argument("--before", metavar="TIME",
                       help="archive the seals made before TIME (ISO-8601)")
    until.add_argument("--upto", type=non_negative_int, metavar="POSITION",
                       help="archive up to this log position at most")
    archive.add_argument("--output", "-o", required=True, metavar="FILE|DIR/",
                         help="the archive file to write (never overwritten); a directory "
                         "(existing, or ending in /): the file in it named by the range, "
                         "att-jm-FIRST-LAST_FROM_TO.arc")


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


def parse_request(argv: Sequence[str]) -> tuple[Request, argparse.Namespace]:
    """The service request an operator command line asks for (UsageError, or its ParseError,
    on bad usage); settings.set carries partial cleanup objects until merge_settings."""
    ns = parse_argv(argv)
    if getattr(ns, "handler", None) != "operator":
        raise UsageError("not an operator command")
    return Request(ns.request_command, ns.build(ns)), ns
