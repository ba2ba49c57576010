"""What a command's reply says: `{"ok": true, "result": ...}` or `{"ok": false, "error":
{"code", "message"}}` (the code from `att_jm.errors.reply_code`)."""

from __future__ import annotations

from typing import Any

from att_jm.domain import limits as lim
from att_jm.domain.jobs import Job
from att_jm.domain.retry import RetryPolicy
from att_jm.domain.times import iso
from att_jm.errors import reply_code


def error_reply(error: BaseException) -> dict[str, Any]:
    message = lim.cut(str(error), lim.MAX_REASON_CHARS)
    return {"ok": False, "error": {"code": reply_code(error), "message": message}}


def ok_reply(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def job_row(job: Job) -> dict[str, Any]:
    """A job as replies show it (and as the jobs view holds it)."""
    return {
        "name": job.name,
        "script": job.script,
        "trigger": job.trigger,
        "match": job.match,
        "command": job.command,
        "timeout_seconds": lim.clamp_timeout(job.timeout_seconds),
        "enabled": job.enabled,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "retry": _policy_json(getattr(job, "retry", None)),
    }


def _policy_json(value: Any) -> dict[str, Any] | None:
    policy = RetryPolicy.from_json(value)
    return None if policy is None else policy.to_json()
