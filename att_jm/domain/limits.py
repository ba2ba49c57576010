"""Every range and cap the Job Manager enforces, and the arithmetic that cannot overflow.

Each number a command or setting accepts has a minimum and a maximum a real deployment could
want; each string a length cap; each event a size cap. Outside its range an input is refused
(`invalid`, naming the range). A value already in the log from an older version is clamped
into its range when it is read (`clamp`), never trusted: a stored `every_seconds` of 1e12
once stopped every start of the service with an OverflowError. Time arithmetic goes through
`add_seconds`, which saturates at the ends of `datetime` instead of raising.

docs/operations.md ("Ranges and caps") lists these values; keep the two in step.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final

DAY: Final = 86_400.0

# Operator settings (settings.set) --------------------------------------------------------
MIN_INTERVAL_SECONDS: Final = 0.0
MAX_INTERVAL_SECONDS: Final = DAY
MIN_MAX_ROWS: Final = 1
MAX_MAX_ROWS: Final = 10_000
MIN_MAX_AGE_DAYS: Final = 0.00001  # 0.864 s
MAX_MAX_AGE_DAYS: Final = 3650.0  # ten years
MIN_EVERY_SECONDS: Final = 1.0
MAX_EVERY_SECONDS: Final = 30 * DAY

# Jobs (job.add / job.update) --------------------------------------------------------------
MAX_JOBS: Final = 1000  # jobs defined at once (a notification enqueues at most this many)
MAX_NAME_CHARS: Final = 64
MAX_SCRIPT_BYTES: Final = 255  # a file name (NAME_MAX)
MAX_TRIGGER_CHARS: Final = 200
MIN_TIMEOUT_SECONDS: Final = 0.1
MAX_TIMEOUT_SECONDS: Final = 7 * DAY
DEFAULT_TIMEOUT_SECONDS: Final = 300.0
MAX_MATCH_FIELDS: Final = 32
MAX_MATCH_FIELD_CHARS: Final = 200
MAX_MATCH_VALUE_BYTES: Final = 1024  # each value, as compact JSON
MAX_TEMPLATE_BYTES: Final = 16 * 1024  # UTF-8
MAX_PLACEHOLDERS: Final = 256

# Notifications and the Commands they build ------------------------------------------------
MAX_NOTIFICATION_ID_CHARS: Final = 200
#: A filled Command, in UTF-8 bytes. Linux takes at most 128 KiB (131,072 bytes with the NUL)
#: per argument and per environment string, and a script gets its Command as both
#: (argv[1] and ATT_JM_COMMAND=...): 128,000 fits either with room to spare.
MAX_COMMAND_BYTES: Final = 128_000
#: Deepest nesting of inbound JSON (objects and arrays). orjson reads 1024 levels but writes at
#: most 254, and a stored event nests a payload a few levels deeper.
MAX_JSON_DEPTH: Final = 64

# Commands ----------------------------------------------------------------------------------
MAX_ACTOR_CHARS: Final = 200
MAX_ENTRY_ID_CHARS: Final = 200
MAX_CORRELATION_BYTES: Final = 256
MAX_VIEW_OFFSET: Final = 1_000_000_000

# Events, records, replies and logs ----------------------------------------------------------
#: No stored event is larger than this (its JSON state); a message whose events would be is
#: refused (`too_large`) with the reason recorded.
MAX_EVENT_BYTES: Final = 2 * 1024 * 1024
MAX_REASON_CHARS: Final = 1024  # a recorded rejection's or skip's reason, an error message
MAX_TOPIC_SHOWN_CHARS: Final = 256  # a topic kept in a rejection or an error message
MAX_EXCERPT_BYTES: Final = 512  # the start of a rejected payload kept for the record
MAX_SHOWN_CHARS: Final = 80  # a user value quoted inside an error message

#: The extremes of time: what saturated arithmetic gives instead of an OverflowError.
TIME_MIN: Final = datetime.min.replace(tzinfo=UTC)
TIME_MAX: Final = datetime.max.replace(tzinfo=UTC)


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean), finite (an integer too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond 1e308
        return False


def clamp(value: Any, low: float, high: float, default: float) -> float:
    """`value` forced into [low, high]; `default` when it is not a finite number at all."""
    if not is_number(value):
        return default
    return float(min(max(value, low), high)) + 0.0  # + 0.0: never -0.0


def clamp_int(value: Any, low: int, high: int, default: int | None) -> int | None:
    """An integer `value` forced into [low, high]; `default` when it is not a number."""
    if not is_number(value):
        return default
    return int(min(max(value, low), high))


def add_seconds(at: datetime, seconds: float) -> datetime:
    """`at + seconds`, saturating at TIME_MIN / TIME_MAX (never raises)."""
    if math.isnan(seconds):
        return at
    try:
        return at + timedelta(seconds=seconds)
    except OverflowError:
        return TIME_MAX if seconds > 0 else TIME_MIN


#: A view cell (a string, or the compact JSON of another value) longer than this is cut.
CELL_MAX_CHARS: Final = 1024
#: What follows a cut text: U+2026, then `[cut: N more characters]` (N = characters removed).
CUT_MARKER: Final = "\u2026[cut: {} more characters]"


def cut_text(text: str) -> str:
    """`text` as a view shows it: its first CELL_MAX_CHARS characters and CUT_MARKER when it
    is longer, else unchanged."""
    return cut(text, CELL_MAX_CHARS)


def cut(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and a marker saying how
    much was left out: `abc…[cut: 1200 more characters]`."""
    if len(text) <= limit:
        return text
    return text[:limit] + CUT_MARKER.format(len(text) - limit)


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """`repr(value)` for an error message, cut to `limit` characters."""
    if isinstance(value, str) and len(value) > limit:
        value = value[: limit + 1]  # repr of a 60 kB string is not built just to be cut
    return cut(repr(value), limit)


def plain(number: float) -> str:
    """A number as a person writes it: 259200, 0.5, 0.00001 (no exponent, no trailing .0)."""
    value = float(number)
    if value.is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0")


def range_text(low: float, high: float) -> str:
    """`from 0 to 259200`, the numbers written plainly."""
    return f"from {plain(low)} to {plain(high)}"


def clamp_timeout(value: Any) -> float:
    """A stored script timeout forced into its range (older logs may hold any number)."""
    return clamp(value, MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, DEFAULT_TIMEOUT_SECONDS)

# Automatic retries (a job's `retry`) ---------------------------------------------------------
MIN_RETRY_ATTEMPTS: Final = 1  # attempts in all, the first included (1: no retry)
MAX_RETRY_ATTEMPTS: Final = 100
MAX_RETRY_DELAY_SECONDS: Final = DAY
MIN_RETRY_BACKOFF: Final = 1.0
MAX_RETRY_BACKOFF: Final = 10.0
