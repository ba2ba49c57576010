"""`python -m att_jm.metrics.cost`: what each writer hook costs, in nanoseconds per call.

Each hook is called as the writer calls it (an attribute of an object holding the stats
block), on a real block in a temporary directory, and timed against the same call of an
empty method (the call itself, which the writer pays for any hook): the table shows both,
the median of `--repeat` runs of `--number` calls each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from att_jm.metrics.shared import WriterStats, open_writer_stats


class _Empty:
    """The same calls, doing nothing: what a method call costs by itself."""

    def turn(self, connected: bool) -> None:
        pass

    def committed(self, seconds: float) -> None:
        pass

    def replied(self, reply: Any) -> None:
        pass

    def fault(self, kind: str | None) -> None:
        pass


class _Holder:
    """Stands for the writer's parts: `self.stats.<hook>(...)`, `self.connection.connected`."""

    def __init__(self, stats: WriterStats | _Empty) -> None:
        self.stats = stats
        self.connected = True


def _cases(holder: _Holder) -> dict[str, Callable[[], None]]:
    ok: dict[str, Any] = {"ok": True, "result": None}
    error: dict[str, Any] = {"ok": False, "error": {"code": "not_found", "message": "x"}}

    def commit() -> None:  # as `Units._commit` times `manager.commit`
        started = perf_counter()
        holder.stats.committed(perf_counter() - started)

    def fault() -> None:
        holder.stats.fault("store")
        holder.stats.fault(None)

    return {
        "loop turn (heartbeat, connected)": lambda: holder.stats.turn(holder.connected),
        "commit (2 clock reads, histogram, sum)": commit,
        "reply ok": lambda: holder.stats.replied(ok),
        "reply error code": lambda: holder.stats.replied(error),
        "fault set, then cleared (2 calls)": fault,
    }


def measure(number: int = 200_000, repeat: int = 7) -> list[tuple[str, float, float]]:
    """(hook, ns per call, ns per call of an empty method) for every hook."""
    with tempfile.TemporaryDirectory(prefix="att-jm-cost-") as directory:
        stats = open_writer_stats(str(Path(directory) / "store.db"))
        real, empty = _cases(_Holder(stats)), _cases(_Holder(_Empty()))
        rows = []
        for name, call in real.items():
            hook = statistics.median(timeit.repeat(call, number=number, repeat=repeat))
            base = statistics.median(timeit.repeat(empty[name], number=number, repeat=repeat))
            rows.append((name, hook / number * 1e9, base / number * 1e9))
        stats.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m att_jm.metrics.cost", description=__doc__)
    parser.add_argument("--number", type=int, default=200_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs (the median is shown)")
    ns = parser.parse_args(argv)
    print(f"{'hook':36} {'ns/call':>8} {'empty call':>10} {'hook alone':>10}")  # noqa: T201
    for name, hook, base in measure(ns.number, ns.repeat):
        print(f"{name:36} {hook:8.0f} {base:10.0f} {hook - base:10.0f}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
