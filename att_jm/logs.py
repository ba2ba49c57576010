"""structlog configuration: JSON lines when not on a terminal, console on a terminal.

Log lines stay small whatever arrives: every value is cut to LOG_VALUE_CHARS characters with a
marker (a 60 kB topic copied into every line once made a 301 MB log in minutes), nested values
to a few items, a traceback to LOG_EXCEPTION_CHARS (its start and its end), and a rendered JSON
line over LOG_LINE_BYTES is replaced by a short one that says so.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Final

import orjson
import structlog

LOG_VALUE_CHARS: Final = 300
LOG_EXCEPTION_CHARS: Final = 4000
LOG_ITEMS: Final = 20  # items kept of a list or dict value
LOG_DEPTH: Final = 3  # nesting kept of a value
LOG_LINE_BYTES: Final = 8192


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[cut: {len(text) - limit} more characters]"


def _cap_container(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {_cut(str(key), 80): cap_value(item, depth + 1) for key, item in items[:LOG_ITEMS]}
        if len(items) > LOG_ITEMS:
            out["…"] = f"{len(items) - LOG_ITEMS} more"
        return out
    seq = list(value)
    kept: list[Any] = [cap_value(item, depth + 1) for item in seq[:LOG_ITEMS]]
    if len(seq) > LOG_ITEMS:
        kept.append(f"… {len(seq) - LOG_ITEMS} more")
    return kept


def cap_value(value: Any, depth: int = 0) -> Any:
    """`value` with strings cut, bytes shown cut, and containers cut in items and depth."""
    if isinstance(value, str):
        return _cut(value, LOG_VALUE_CHARS)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        text = bytes(value[: LOG_VALUE_CHARS + 1]).decode("utf-8", "replace")
        more = "" if len(value) <= LOG_VALUE_CHARS else f" ({len(value)} bytes)"
        return _cut(text, LOG_VALUE_CHARS) + more
    if depth < LOG_DEPTH and isinstance(value, Mapping | list | tuple | set | frozenset):
        return _cap_container(value, depth)
    return _cut(repr(value) if depth >= LOG_DEPTH else str(value), LOG_VALUE_CHARS)


def _cut_traceback(text: str) -> str:
    if len(text) <= LOG_EXCEPTION_CHARS:
        return text
    half = LOG_EXCEPTION_CHARS // 2
    return f"{text[:half]}\n…[cut: {len(text) - 2 * half} characters]…\n{text[-half:]}"


def cap_event(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every value of the event capped (`cap_value`); a traceback keeps
    its start and its end."""
    for key, value in event.items():
        if key == "exception" and isinstance(value, str):
            event[key] = _cut_traceback(value)
        else:
            event[key] = cap_value(value)
    return event


def dumps_capped(event: Any, **kwargs: Any) -> bytes:
    """orjson.dumps for the JSON renderer; a line over LOG_LINE_BYTES becomes a short one."""
    line = orjson.dumps(event, default=str)
    if len(line) <= LOG_LINE_BYTES:
        return line
    short = {key: event.get(key) for key in ("timestamp", "level", "event", "process")
             if key in event}
    short["line_cut"] = f"{len(line)} bytes: over {LOG_LINE_BYTES}"
    return orjson.dumps(short, default=str)


def configure(log_format: str | None = None, level: int = logging.INFO) -> None:
    """Configure structlog once at start-up (`json`, `console`, or None = by terminal)."""
    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        cap_event,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=dumps_capped))
        factory: Any = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer())
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
