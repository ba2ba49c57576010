"""UTC timestamps as the contract writes them (ISO-8601, millisecond precision, `Z`)."""

from __future__ import annotations

from datetime import UTC, datetime

_last: tuple[datetime | None, str] = (None, "")


def iso(at: datetime) -> str:
    """`at` as `2026-11-22T03:21:07.706Z`.

    The events of one batch share one timestamp object: the last answer is kept for it.
    """
    global _last  # noqa: PLW0603 -- a one-entry cache, replaced as a whole (thread-safe)
    last = _last
    if last[0] is at:
        return last[1]
    text = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _last = (at, text)
    return text


def parse_iso(text: str) -> datetime:
    """The inverse of `iso` (accepts any ISO-8601 form with an offset or `Z`)."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC)
