"""structlog configuration: JSON lines when not on a terminal, console on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog


def configure(log_format: str | None = None, level: int = logging.INFO) -> None:
    """Configure structlog once at start-up (`json`, `console`, or None = by terminal)."""
    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
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
