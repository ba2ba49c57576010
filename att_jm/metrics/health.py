"""`/healthz`: whether the writer and the relay are doing their work, from one observation.

Failing (503), each with a reason naming the part:
- `writer`: no stats block (never started here), or no loop turn for more than
  `stale_seconds` (the loop turns at least once a second: the writer is stopped, stuck, or
  gone; a gone one is named so), or a store fault (commits refused);
- `relay`: positions wait to be published (the log's end is past the relay's confirmed
  position) and that position has not moved for more than `stale_seconds`; with
  "broker disconnected" when the writer's own session says the broker is down;
- `store`: the store cannot be read.
Not failing, but said (`warnings`): a views fault, the broker disconnected with nothing
waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from att_jm.metrics.watch import Observation

DEFAULT_STALE_SECONDS: Final = 10.0


@dataclass(frozen=True)
class Health:
    ok: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    body: dict[str, Any]


def writer_fresh(obs: Observation, stale_seconds: float) -> bool:
    """Whether the writer turned its loop within `stale_seconds` of the observation."""
    stats = obs.stats
    return stats is not None and stats.heartbeat_age(obs.at) <= stale_seconds


def check(obs: Observation, stale_seconds: float = DEFAULT_STALE_SECONDS) -> Health:
    reasons: list[str] = []
    warnings: list[str] = []
    stats = obs.stats
    fresh = writer_fresh(obs, stale_seconds)
    writer: dict[str, Any] | None = None
    if stats is None:
        reasons.append(f"writer: {obs.stats_error}")
    else:
        age = stats.heartbeat_age(obs.at)
        writer = {"pid": stats.pid, "up": fresh, "heartbeat_age_seconds": round(age, 3),
                  "loop_turns": stats.turns, "broker_connected": stats.connected,
                  "fault": stats.fault}
        if obs.writer_alive is False:
            reasons.append(f"writer: not running (pid {stats.pid} has exited; its last loop "
                           f"turn was {age:.1f} s ago)")
        elif not fresh and stats.turns == 0:
            reasons.append(f"writer: starting (pid {stats.pid}), no loop turn in the "
                           f"{age:.1f} s since its start")
        elif not fresh:
            reasons.append(f"writer: no loop turn for {age:.1f} s (pid {stats.pid} is stopped "
                           f"or stuck; the loop turns at least once a second)")
        if obs.writer_alive is not False:
            if stats.fault == "store":
                reasons.append("writer: store fault, commits refused (retried with back-off; "
                               "messages wait unacknowledged)")
            elif stats.fault is not None:
                warnings.append(f"writer: {stats.fault} fault (the views lag the log; the "
                                "write side goes on)")
    relay: dict[str, Any] = {"confirmed_position": obs.relay_confirmed,
                             "log_position": obs.log_end, "lag": obs.relay_lag,
                             "stalled_seconds": round(obs.relay_stalled, 3)}
    broker_down = stats is not None and obs.writer_alive is not False and not stats.connected
    if obs.store_error is not None:
        reasons.append(f"store: cannot read {obs.store}: {obs.store_error}")
    elif obs.relay_stalled > stale_seconds:
        confirmed = "none recorded" if obs.relay_confirmed is None else obs.relay_confirmed
        why = ("broker disconnected" if broker_down
               else "the relay is not publishing (stopped, stuck or refused by the broker)")
        reasons.append(f"relay: {obs.relay_lag} positions wait to be published and the "
                       f"confirmed position ({confirmed}) has not moved for "
                       f"{obs.relay_stalled:.1f} s: {why}")
    elif broker_down:
        warnings.append("writer: broker disconnected")
    body = {"status": "failing" if reasons else "ok", "reasons": reasons, "warnings": warnings,
            "writer": writer, "relay": relay, "store": obs.store}
    return Health(not reasons, tuple(reasons), tuple(warnings), body)
