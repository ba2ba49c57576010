"""Text output shared by the CLI and the audit tool: cells, times, durations, plurals, tables,
and the JSON shape of a failure. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

import orjson

from att_jm.vocabulary import CLEANUP_FIELDS
from att_jm.vocabulary import TABLES as CLEANUP_TABLES

TEXT_WIDTH: Final = 40
NOTHING: Final = "-"

Column = tuple[str, str, Callable[[object], str]]  # row key, header, formatter


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


def render_table(columns: Sequence[Column], rows: Sequence[Mapping[str, object]]) -> str:
    """Rows as left-aligned columns separated by two spaces, under an upper-case header."""
    grid = [[header for _, header, _ in columns]]
    grid += [[show(row.get(key)) for key, _, show in columns] for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in grid
    )


# Views as tables ---------------------------------------------------------------------------

RESULTS: Final = {3: "3 succeeded", 2: "2 failed"}


def result_cell(value: object) -> str:
    """Result 3 / 2 with its meaning."""
    if isinstance(value, int) and not isinstance(value, bool) and value in RESULTS:
        return RESULTS[value]
    return cell(value)


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


def render_settings(settings: Mapping[str, object]) -> str:
    lines = [f"interval_seconds  {cell(settings.get('interval_seconds'))}"]
    for table in CLEANUP_TABLES:
        policy = settings.get(f"{table}_cleanup")
        if isinstance(policy, Mapping):
            fields = ", ".join(f"{f} {cell(policy.get(f))}" for f in CLEANUP_FIELDS)
            lines.append(f"{table + '_cleanup':<17} {fields}")
    archive = settings.get("archive")
    if isinstance(archive, Mapping):
        fields = ", ".join(f"{f} {cell(archive.get(f))}" for f in ("max_age_days", "every_seconds"))
        lines.append(f"{'archive':<17} {fields}")
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
    rows = [row for row in as_list(payload.get("rows")) if isinstance(row, Mapping)]
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


def as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def as_mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def error_json(code: str, message: str) -> str:
    """A failure as `--json` prints it: `{"ok": false, "error": {"code", "message"}}`."""
    return orjson.dumps({"ok": False, "error": {"code": code, "message": message}}).decode()
