"""Parsing of operator commands: name + JSON arguments -> a typed, validated command."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from att_jm.domain import limits as lim
from att_jm.domain.limits import DEFAULT_TIMEOUT_SECONDS, cut, is_number, range_text, shown
from att_jm.domain.matching import check_topic_level, template_fields
from att_jm.domain.retry import parse_retry
from att_jm.errors import InvalidInput, UnknownCommand
from att_jm.vocabulary import TABLES, VIEWS

NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: What `cleanup.run` takes: a table, or both.
CLEANUP_TABLES: Final = (*TABLES, "all")
JOB_FIELDS: Final = ("script", "trigger", "match", "command", "timeout_seconds", "enabled",
                      "retry")
CLEANUP_FIELDS: Final = ("max_rows", "max_age_days", "every_seconds")
ARCHIVE_FIELDS: Final = ("max_age_days", "every_seconds")


@dataclass(frozen=True)
class JobSpec:
    """A job's definition as `job.add` gives it."""

    name: str
    script: str
    trigger: str
    match: dict[str, Any] | None = None
    command: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    enabled: bool = True
    retry: dict[str, Any] | None = None  # see att_jm.domain.retry (None: no retry)

    def fields(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "trigger": self.trigger,
            "match": self.match,
            "command": self.command,
            "timeout_seconds": self.timeout_seconds,
            "enabled": self.enabled,
            "retry": self.retry,
        }


@dataclass(frozen=True)
class JobAdd:
    spec: JobSpec


@dataclass(frozen=True)
class JobUpdate:
    name: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class JobRemove:
    name: str


@dataclass(frozen=True)
class EntryCommand:
    """A command on one queue / executed / failed row, named by its id."""

    command: str
    id: str


@dataclass(frozen=True)
class SettingsSet:
    interval_seconds: float | None
    executed_cleanup: dict[str, Any] | None
    failed_cleanup: dict[str, Any] | None
    archive: dict[str, Any] | None = None


@dataclass(frozen=True)
class CleanupRun:
    table: str


@dataclass(frozen=True)
class ViewsGet:
    """A view: the retained message's form, a page of it (`offset`/`limit`), or one row."""

    view: str
    id: str | None = None
    offset: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class TraceGet:
    """The lineage of one execution (what `att-jm audit trace` shows), read from the log."""

    id: str


#: The read commands: answered once the batch is committed, never recorded.
ReadCommand = ViewsGet | TraceGet
Command = (JobAdd | JobUpdate | JobRemove | EntryCommand | SettingsSet | CleanupRun | ViewsGet
           | TraceGet)


def _only(args: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        named = ", ".join(cut(key, 40) for key in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidInput(
            f"unknown argument(s) {named}{more}; allowed: {', '.join(allowed) or 'none'}"
        )


def _require(args: Mapping[str, Any], key: str) -> Any:
    if key not in args:
        raise InvalidInput(f"missing argument {key!r}")
    return args[key]


def number_in(value: Any, what: str, low: float, high: float, unit: str = "") -> float:
    """`value` as a float if it is a finite number in [low, high], else InvalidInput naming
    the range (-0.0 comes back as 0.0)."""
    if not is_number(value) or not low <= value <= high:
        raise InvalidInput(f"{what} must be a number {range_text(low, high)}{unit}")
    return float(value) + 0.0


def job_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidInput("name must match [A-Za-z0-9._-]{1,64}")
    return value


def _script(value: Any) -> str:
    if (
        not isinstance(value, str) or not value or "\x00" in value
        or len(value.encode("utf-8", "surrogatepass")) > lim.MAX_SCRIPT_BYTES
    ):
        raise InvalidInput(
            f"script must be a file name in the scripts directory "
            f"(1-{lim.MAX_SCRIPT_BYTES} bytes, no NUL)"
        )
    return value


def _match(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("match must be an object of field -> value, or null")
    if len(value) > lim.MAX_MATCH_FIELDS:
        raise InvalidInput(f"match may have at most {lim.MAX_MATCH_FIELDS} fields")
    for key, expected in value.items():
        if not key or len(key) > lim.MAX_MATCH_FIELD_CHARS:
            raise InvalidInput(
                f"match field names must be 1-{lim.MAX_MATCH_FIELD_CHARS} characters"
            )
        if len(orjson.dumps(expected)) > lim.MAX_MATCH_VALUE_BYTES:
            raise InvalidInput(
                f"match value of {shown(key, 40)} must be at most "
                f"{lim.MAX_MATCH_VALUE_BYTES} bytes as compact JSON"
            )
    return value or None


def _template(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("command must be a string template or null")
    if len(value.encode("utf-8", "surrogatepass")) > lim.MAX_TEMPLATE_BYTES:
        raise InvalidInput(f"command must be at most {lim.MAX_TEMPLATE_BYTES} bytes (UTF-8)")
    if "\x00" in value:
        raise InvalidInput("command must not contain a NUL character")
    if len(template_fields(value)) > lim.MAX_PLACEHOLDERS:
        raise InvalidInput(f"command may have at most {lim.MAX_PLACEHOLDERS} placeholders")
    return value


def _timeout(value: Any) -> float:
    return number_in(value, "timeout_seconds", lim.MIN_TIMEOUT_SECONDS,
                     lim.MAX_TIMEOUT_SECONDS, " (seconds)")


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("enabled must be true or false")
    return value


_FIELD_CHECKS: Final[dict[str, Callable[[Any], Any]]] = {
    "script": _script,
    "trigger": lambda v: check_topic_level(v, "trigger", lim.MAX_TRIGGER_CHARS),
    "match": _match,
    "command": _template,
    "timeout_seconds": _timeout,
    "retry": parse_retry,
    "enabled": _enabled,
}


def parse_job_add(args: Mapping[str, Any]) -> JobAdd:
    _only(args, ("name", *JOB_FIELDS))
    fields = {key: _FIELD_CHECKS[key](args[key]) for key in JOB_FIELDS if key in args}
    _require(args, "script")
    _require(args, "trigger")
    return JobAdd(JobSpec(name=job_name(_require(args, "name")), **fields))


def parse_job_update(args: Mapping[str, Any]) -> JobUpdate:
    _only(args, ("name", *JOB_FIELDS))
    name = job_name(_require(args, "name"))
    changes = {key: _FIELD_CHECKS[key](args[key]) for key in JOB_FIELDS if key in args}
    if not changes:
        raise InvalidInput(f"job.update needs at least one of {', '.join(JOB_FIELDS)}")
    return JobUpdate(name, changes)


def entry_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > lim.MAX_ENTRY_ID_CHARS:
        raise InvalidInput(f"id must be an entry id: a string of 1-{lim.MAX_ENTRY_ID_CHARS} "
                           "characters")
    return value


def parse_cleanup_policy(value: Any, what: str) -> dict[str, Any]:
    """The given fields of a cleanup object, validated one by one (merging comes later)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object with {', '.join(CLEANUP_FIELDS)}")
    _only(value, CLEANUP_FIELDS)
    out: dict[str, Any] = {}
    if "max_rows" in value:
        rows = value["max_rows"]
        if rows is not None and (
            isinstance(rows, bool) or not isinstance(rows, int)
            or not lim.MIN_MAX_ROWS <= rows <= lim.MAX_MAX_ROWS
        ):
            raise InvalidInput(f"{what}.max_rows must be an integer "
                               f"{range_text(lim.MIN_MAX_ROWS, lim.MAX_MAX_ROWS)}, or null")
        out["max_rows"] = rows
    if "max_age_days" in value:
        age = value["max_age_days"]
        if age is not None:
            try:
                age = number_in(age, f"{what}.max_age_days", lim.MIN_MAX_AGE_DAYS,
                                lim.MAX_MAX_AGE_DAYS, " (days)")
            except InvalidInput as error:
                raise InvalidInput(f"{error.message}, or null") from None
        out["max_age_days"] = age
    if "every_seconds" in value:
        out["every_seconds"] = number_in(value["every_seconds"], f"{what}.every_seconds",
                                         lim.MIN_EVERY_SECONDS, lim.MAX_EVERY_SECONDS,
                                         " (seconds)")
    return out


def parse_archive_policy(value: Any) -> dict[str, Any]:
    """The given fields of the `archive` object, validated one by one (merged later)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"archive must be an object with {', '.join(ARCHIVE_FIELDS)}")
    _only(value, ARCHIVE_FIELDS)
    return parse_cleanup_policy(value, "archive")  # max_age_days null: off


def parse_settings_set(args: Mapping[str, Any]) -> SettingsSet:
    _only(args, ("interval_seconds", "executed_cleanup", "failed_cleanup", "archive"))
    if not args:
        raise InvalidInput(
            "settings.set needs at least one of interval_seconds, executed_cleanup, "
            "failed_cleanup, archive"
        )
    interval = None
    if "interval_seconds" in args:
        interval = number_in(args["interval_seconds"], "interval_seconds",
                             lim.MIN_INTERVAL_SECONDS, lim.MAX_INTERVAL_SECONDS, " (seconds)")
    return SettingsSet(
        interval_seconds=interval,
        executed_cleanup=parse_cleanup_policy(args["executed_cleanup"], "executed_cleanup")
        if "executed_cleanup" in args
        else None,
        failed_cleanup=parse_cleanup_policy(args["failed_cleanup"], "failed_cleanup")
        if "failed_cleanup" in args
        else None,
        archive=parse_archive_policy(args["archive"]) if "archive" in args else None,
    )


def _one_of(
    args: Mapping[str, Any], key: str, allowed: tuple[str, ...], optional: tuple[str, ...] = (),
) -> str:
    _only(args, (key, *optional))
    value = _require(args, key)
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInput(f"{key} must be one of {', '.join(allowed)}")
    return value


def _count(args: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    if key not in args:
        return None
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{key} must be an integer {range_text(low, high)}")
    return value


def parse_views_get(args: Mapping[str, Any], max_limit: int = 10_000) -> ViewsGet:
    """`view`, and either `id` (one row, in full) or `offset`/`limit` (a page)."""
    view = _one_of(args, "view", VIEWS, ("id", "offset", "limit"))
    row = None
    if "id" in args:
        if view == "settings":
            raise InvalidInput("id is for the table views (jobs, queue, executed, failed)")
        if "offset" in args or "limit" in args:
            raise InvalidInput("id names one row: offset and limit do not go with it")
        value = args["id"]
        row = job_name(value) if view == "jobs" else entry_id(value)
    offset = _count(args, "offset", 0, lim.MAX_VIEW_OFFSET)
    limit = _count(args, "limit", 1, max_limit)
    if view == "settings" and (offset is not None or limit is not None):
        raise InvalidInput("offset and limit are for the table views")
    return ViewsGet(view, row, offset, limit)


def _entry(name: str) -> Callable[[Mapping[str, Any]], Command]:
    def parse(args: Mapping[str, Any]) -> Command:
        _only(args, ("id",))
        return EntryCommand(name, entry_id(_require(args, "id")))

    return parse


def _trace_get(args: Mapping[str, Any]) -> Command:
    _only(args, ("id",))
    return TraceGet(entry_id(_require(args, "id")))


def _job_remove(args: Mapping[str, Any]) -> Command:
    _only(args, ("name",))
    return JobRemove(job_name(_require(args, "name")))


PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], Command]]] = {
    "job.add": parse_job_add,
    "job.update": parse_job_update,
    "job.remove": _job_remove,
    "queue.remove": _entry("queue.remove"),
    "queue.execute-now": _entry("queue.execute-now"),
    "executed.remove": _entry("executed.remove"),
    "failed.execute": _entry("failed.execute"),
    "failed.delete": _entry("failed.delete"),
    "settings.set": parse_settings_set,
    "cleanup.run": lambda args: CleanupRun(_one_of(args, "table", CLEANUP_TABLES)),
    "views.get": parse_views_get,
    "trace.get": _trace_get,
}

READ_ONLY: Final = frozenset({"views.get", "trace.get"})


def parse_command(name: str, args: Any) -> Command:
    """The typed command for `name` with JSON arguments `args`."""
    parser = PARSERS.get(name)
    if parser is None:
        raise UnknownCommand(f"unknown command {shown(name)}; known: {', '.join(PARSERS)}")
    if not isinstance(args, dict):
        raise InvalidInput("the arguments must be a JSON object ({} when none)")
    return parser(args)
