"""A job's retry policy: how many attempts in all, and how long to wait before each next one.

`{"max_attempts": N, "delay_seconds": S, "backoff": F}`: a failed attempt number k < N is
queued again as attempt k + 1, to run no earlier than S * F**(k - 1) seconds after it ended
(at most a day); attempt N failing goes to Failed. No policy (null): no retry, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from att_jm.domain import limits as lim
from att_jm.errors import InvalidInput

RETRY_FIELDS: Final = ("max_attempts", "delay_seconds", "backoff")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    delay_seconds: float = 0.0
    backoff: float = 1.0

    def to_json(self) -> dict[str, int | float]:
        return {"max_attempts": self.max_attempts, "delay_seconds": self.delay_seconds,
                "backoff": self.backoff}

    @classmethod
    def from_json(cls, data: Any) -> RetryPolicy | None:
        """A stored policy, every field clamped into its range; None for none (or garbage)."""
        if not isinstance(data, Mapping):
            return None
        attempts = lim.clamp_int(data.get("max_attempts"), lim.MIN_RETRY_ATTEMPTS,
                                 lim.MAX_RETRY_ATTEMPTS, 1)
        return cls(
            max_attempts=attempts or 1,
            delay_seconds=lim.clamp(data.get("delay_seconds"), 0.0,
                                    lim.MAX_RETRY_DELAY_SECONDS, 0.0),
            backoff=lim.clamp(data.get("backoff"), lim.MIN_RETRY_BACKOFF,
                              lim.MAX_RETRY_BACKOFF, 1.0),
        )

    def retries_after(self, attempt: int) -> bool:
        """Whether a failed attempt number `attempt` is tried again."""
        return attempt < self.max_attempts

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first)."""
        try:
            seconds = self.delay_seconds * self.backoff ** max(0, attempt - 1)
        except OverflowError:
            return lim.MAX_RETRY_DELAY_SECONDS
        return min(seconds, lim.MAX_RETRY_DELAY_SECONDS)

    def not_before(self, attempt: int, ended: datetime) -> datetime:
        return lim.add_seconds(ended, self.delay(attempt))


def parse_retry(value: Any) -> dict[str, Any] | None:
    """`job.add`'s `retry` argument: null, or an object of the three fields (each optional:
    max_attempts 1, delay_seconds 0, backoff 1 by default), validated."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("retry must be an object {max_attempts, delay_seconds, backoff} "
                           "or null")
    unknown = sorted(set(value) - set(RETRY_FIELDS))
    if unknown:
        named = ", ".join(lim.cut(key, 40) for key in unknown[:5])
        raise InvalidInput(f"unknown retry field(s) {named}; allowed: {', '.join(RETRY_FIELDS)}")
    attempts = value.get("max_attempts", 1)
    if (isinstance(attempts, bool) or not isinstance(attempts, int)
            or not lim.MIN_RETRY_ATTEMPTS <= attempts <= lim.MAX_RETRY_ATTEMPTS):
        raise InvalidInput("retry.max_attempts must be an integer "
                           f"{lim.range_text(lim.MIN_RETRY_ATTEMPTS, lim.MAX_RETRY_ATTEMPTS)}")
    delay = value.get("delay_seconds", 0.0)
    if not lim.is_number(delay) or not 0 <= delay <= lim.MAX_RETRY_DELAY_SECONDS:
        raise InvalidInput("retry.delay_seconds must be a number "
                           f"{lim.range_text(0, lim.MAX_RETRY_DELAY_SECONDS)} (seconds)")
    backoff = value.get("backoff", 1.0)
    if not lim.is_number(backoff) or not lim.MIN_RETRY_BACKOFF <= backoff <= lim.MAX_RETRY_BACKOFF:
        raise InvalidInput("retry.backoff must be a number "
                           f"{lim.range_text(lim.MIN_RETRY_BACKOFF, lim.MAX_RETRY_BACKOFF)}")
    return RetryPolicy(attempts, float(delay) + 0.0, float(backoff)).to_json()
