"""Parsing of operator commands: name + JSON arguments -> a typed, validated command."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from att_jm.domain.errors import InvalidInput, UnknownCommand
from att_jm.domain.matching import check_topic_level, template_fields

NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_TIMEOUT_SECONDS: Final = 300.0
MAX_TIMEOUT_SECONDS: Final = 7 * 24 * 3600.0
MAX_TEMPLATE_LENGTH: Final = 64 * 1024
VIEWS: Final = ("jobs", "queue", "executed", "failed", "settings")
TABLES: Final = ("executed", "failed", "all")
JOB_FIELDS: Final = ("script", "trigger", "match", "command", "timeout_seconds", "enabled")
CLEANUP_FIELDS: Final = ("max_rows", "max_age_days", "every_seconds")


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

    def fields(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "trigger": self.trigger,
            "match": self.match,
            "command": self.command,
            "timeout_seconds": self.timeout_seconds,
            "enabled": self.enabled,
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


@dataclass(frozen=True)
class CleanupRun:
    table: str


@dataclass(frozen=True)
class ViewsGet:
    view: str


Command = JobAdd | JobUpdate | JobRemove | EntryCommand | SettingsSet | CleanupRun | ViewsGet


def _only(args: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
        )


def _require(args: Mapping[str, Any], key: str) -> Any:
    if key not in args:
        raise InvalidInput(f"missing argument {key!r}")
    return args[key]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a number")
    return float(value)


def job_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidInput("name must match [A-Za-z0-9._-]{1,64}")
    return value


def _script(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or "\x00" in value:
        raise InvalidInput("script must be a file name in the scripts directory")
    return value


def _match(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("match must be an object of field -> value, or null")
    for key in value:
        if not key or len(key) > 200:
            raise InvalidInput("match field names must be 1-200 characters")
    return value or None


def _template(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("command must be a string template or null")
    if len(value) > MAX_TEMPLATE_LENGTH:
        raise InvalidInput(f"command must be at most {MAX_TEMPLATE_LENGTH} characters")
    template_fields(value)
    return value


def _timeout(value: Any) -> float:
    seconds = _number(value, "timeout_seconds")
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidInput(f"timeout_seconds must be > 0 and <= {MAX_TIMEOUT_SECONDS:g}")
    return seconds


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("enabled must be true or false")
    return value


_FIELD_CHECKS: Final[dict[str, Callable[[Any], Any]]] = {
    "script": _script,
    "trigger": lambda v: check_topic_level(v, "trigger"),
    "match": _match,
    "command": _template,
    "timeout_seconds": _timeout,
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
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidInput("id must be a non-empty string (an entry id)")
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
            isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= 10000
        ):
            raise InvalidInput(f"{what}.max_rows must be an integer 1..10000 or null")
        out["max_rows"] = rows
    if "max_age_days" in value:
        age = value["max_age_days"]
        if age is not None and _number(age, f"{what}.max_age_days") <= 0:
            raise InvalidInput(f"{what}.max_age_days must be > 0 or null")
        out["max_age_days"] = None if age is None else float(age)
    if "every_seconds" in value:
        every = _number(value["every_seconds"], f"{what}.every_seconds")
        if every <= 0:
            raise InvalidInput(f"{what}.every_seconds must be > 0")
        out["every_seconds"] = every
    return out


def parse_settings_set(args: Mapping[str, Any]) -> SettingsSet:
    _only(args, ("interval_seconds", "executed_cleanup", "failed_cleanup"))
    if not args:
        raise InvalidInput(
            "settings.set needs at least one of interval_seconds, executed_cleanup, failed_cleanup"
        )
    interval = None
    if "interval_seconds" in args:
        interval = _number(args["interval_seconds"], "interval_seconds")
        if interval < 0:
            raise InvalidInput("interval_seconds must be >= 0")
    return SettingsSet(
        interval_seconds=interval,
        executed_cleanup=parse_cleanup_policy(args["executed_cleanup"], "executed_cleanup")
        if "executed_cleanup" in args
        else None,
        failed_cleanup=parse_cleanup_policy(args["failed_cleanup"], "failed_cleanup")
        if "failed_cleanup" in args
        else None,
    )


def _one_of(args: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    _only(args, (key,))
    value = _require(args, key)
    if value not in allowed:
        raise InvalidInput(f"{key} must be one of {', '.join(allowed)}")
    return str(value)


def _entry(name: str) -> Callable[[Mapping[str, Any]], Command]:
    def parse(args: Mapping[str, Any]) -> Command:
        _only(args, ("id",))
        return EntryCommand(name, entry_id(_require(args, "id")))

    return parse


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
    "cleanup.run": lambda args: CleanupRun(_one_of(args, "table", TABLES)),
    "views.get": lambda args: ViewsGet(_one_of(args, "view", VIEWS)),
}

READ_ONLY: Final = frozenset({"views.get"})


def parse_command(name: str, args: Any) -> Command:
    """The typed command for `name` with JSON arguments `args`."""
    parser = PARSERS.get(name)
    if parser is None:
        raise UnknownCommand(f"unknown command {name!r}; known: {', '.join(PARSERS)}")
    if not isinstance(args, dict):
        raise InvalidInput("the arguments must be a JSON object ({} when none)")
    return parser(args)
