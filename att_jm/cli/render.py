"""A result -> what an operator reads (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from att_jm.cli.common import Request
from att_jm.output import (
    COLUMNS,
    as_mapping,
    cell,
    plural,
    render_settings,
    render_table,
    render_view,
    short_time,
)

# Rendering (pure) ------------------------------------------------------------------------


def render(request: Request, result: object) -> str:
    """What an operator reads after a successful command."""
    data = as_mapping(result)
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
