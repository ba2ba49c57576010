"""Per-actor command rate limits: token buckets (a burst, then a steady rate). Pure: the
caller passes the time (seconds, any monotonic origin)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

MAX_ACTORS: Final = 10_000  # buckets kept; the least recently used go first (then start full)


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """`take(actor, now)` is True while `actor` has a token: it starts with `burst`, and one
    comes back every 1/`rate` seconds, up to `burst`."""

    def __init__(self, rate: float, burst: int, max_actors: int = MAX_ACTORS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._max = max_actors
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, actor: str, now: float) -> bool:
        bucket = self._buckets.get(actor)
        if bucket is None:
            bucket = self._buckets[actor] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(actor)
            elapsed = max(0.0, now - bucket.at)  # a clock set back refills nothing
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False
