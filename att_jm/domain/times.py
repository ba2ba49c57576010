"""UTC timestamps as the contract writes them (ISO-8601, millisecond precision, `Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(at: datetime) -> str:
    """`at` as `2026-11-22T03:21:07.706Z`."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """The inverse of `iso` (accepts any ISO-8601 form with an offset or `Z`)."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC)
