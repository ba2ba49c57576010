"""Where the latency goes inside the service: `bench.latency` run with the writer's and the
relay's marks on (att_jm/timeline.py), then every batch that stored events cut into steps.

Usage: python -m bench.timeline [--count 1000] [--marks DIR]
       (--marks DIR: only read the marks a run left in DIR)

Steps of one batch (milliseconds; CLOCK_MONOTONIC, one clock for both processes):
- handle: from the writer draining the batch from its inbox to the start of its commit
  (parsing, the domain, encoding the events, the write index);
- commit: the store's transaction (its SQL and the COMMIT: `fdatasync` of the WAL);
- to relay: from the commit's end to the writer waking the relay (a batch's replies and
  their acknowledgements go first; a batch without replies is acknowledged after the wake);
- relay turn: from the wake to the relay's loop seeing it (a process switch on a busy core);
- read: the relay reading the batch's rows from the log;
- publish: from the rows read to every one of them handed to the socket (the public
  messages built and published at QoS 1);
- drain -> first published: the whole of the above for the batch's first event.
Then every commit that stored events, grouped by what ran beside it (a WAL checkpoint of the
store or of the views file, on their threads; the first commit after a store checkpoint,
which starts the WAL over and syncs its header; nothing), and an SQLite store's transaction
in two parts: its SQL (the inserts, the write index) and its COMMIT (the WAL frames written
and `fdatasync`ed).
The run's own `bench.latency` table is printed first: its series add the broker's two hops
(the notification in, the event out) to these steps. Batches are grouped by the rows they
stored: in `bench.latency` a notification stores 4 (received, enqueued, dispatched,
started), a `settings.set` and a script's end store 2 each.
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.latency import main as latency_main
from bench.latency import percentile

STEPS = ("handle", "commit", "to relay", "relay turn", "read", "publish",
         "drain -> first published")


@dataclass
class Marks:
    """Every mark of a run: kind -> [(values..., time)]."""

    by_kind: dict[str, list[tuple[int, ...]]]

    @classmethod
    def read(cls, directory: Path) -> Marks:
        by_kind: dict[str, list[tuple[int, ...]]] = defaultdict(list)
        for path in sorted(directory.glob("*.txt")):
            for line in path.read_text().splitlines():
                kind, *values = line.split()
                by_kind[kind].append(tuple(int(v) for v in values))
        for marks in by_kind.values():
            marks.sort(key=lambda m: m[-1])
        return cls(dict(by_kind))

    def of(self, kind: str) -> list[tuple[int, ...]]:
        return self.by_kind.get(kind, [])


def _turn_after(turns: Sequence[tuple[int, ...]], times: Sequence[int], when: int,
                position: int) -> tuple[int, ...] | None:
    """The relay's first loop turn at or after `when` that knew of `position`."""
    i = bisect.bisect_left(times, when)
    while i < len(turns):
        if turns[i][0] >= position:
            return turns[i]
        i += 1
    return None


def steps(marks: Marks) -> dict[int, dict[str, list[float]]]:
    """rows per batch -> step -> the milliseconds of each batch of that size."""
    drains = marks.of("drain")
    drain_times = [m[-1] for m in drains]
    wakes = {m[0]: m[-1] for m in marks.of("wake")}
    turns = marks.of("turn")
    turn_times = [m[-1] for m in turns]
    reads = {m[0]: m for m in marks.of("read")}  # first row -> (first, count, asked, time)
    published: dict[int, int] = {}
    for first, last, when in marks.of("published"):
        for position in range(first, last + 1):
            published.setdefault(position, when)
    found: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for first, last, begun, ended in marks.of("commit"):
        i = bisect.bisect_right(drain_times, begun) - 1
        if i < 0 or last not in wakes or first not in published or first not in reads:
            continue  # a timer's unit (no drained batch), or not seen by the relay
        drained, woken = drain_times[i], wakes[last]
        turn = _turn_after(turns, turn_times, woken, last)
        if turn is None:
            continue
        _, _, asked, read = reads[first]
        batch = found[last - first + 1]
        for name, value in (
            ("handle", begun - drained), ("commit", ended - begun), ("to relay", woken - ended),
            ("relay turn", turn[-1] - woken), ("read", read - asked),
            ("publish", published[first] - read),
            ("drain -> first published", published[first] - drained),
        ):
            batch[name].append(value / 1e6)
    return found


def table(found: dict[int, dict[str, list[float]]], top: int = 2) -> Iterable[str]:
    sizes = sorted(found, key=lambda rows: -len(found[rows]["commit"]))[:top]
    for rows in sizes:
        batch = found[rows]
        yield f"batches of {rows} rows: {len(batch['commit']):,}"
        yield f"  {'step':<26} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8}"
        for name in STEPS:
            values = batch[name]
            if not values:
                continue
            yield (f"  {name:<26} {percentile(values, 0.5):7.3f} {percentile(values, 0.9):7.3f}"
                   f" {percentile(values, 0.99):7.3f} {max(values):8.3f}")


def commits(marks: Marks) -> dict[str, list[float]]:
    """The milliseconds of every commit that stored events, by what ran beside it: a WAL
    checkpoint of the store or of the views file (the checkpoint threads' marks), the
    first commit after a store checkpoint (the WAL starts over: its header is synced), or
    nothing; and the store's transaction in two parts, its SQL and its COMMIT."""
    spans = {label: sorted((m[-2], m[-1]) for m in marks.of("checkpoint") if m[0] == label)
             for label in (0, 1)}
    groups: dict[str, list[float]] = defaultdict(list)
    after = 0  # the end of the last store checkpoint a commit followed
    for _, _, begun, ended in sorted(marks.of("commit"), key=lambda m: m[2]):
        name = "no checkpoint running"
        last = bisect.bisect_left(spans[0], (begun, 0)) - 1
        if last >= 0 and after < spans[0][last][1] < begun:
            after = spans[0][last][1]
            name = "first after a store one"
        for label, what in ((0, "a store checkpoint running"), (1, "a views checkpoint running")):
            ends = spans[label]
            i = bisect.bisect_left(ends, (begun, 0)) - 1
            if name == "no checkpoint running" and any(
                b < ended and e > begun for b, e in ends[max(0, i):i + 3]
            ):
                name = what
                break
        groups[name].append((ended - begun) / 1e6)
    for begun, before_commit, ended in marks.of("append"):
        groups["part: the SQL"].append((before_commit - begun) / 1e6)
        groups["part: the COMMIT"].append((ended - before_commit) / 1e6)
    return dict(groups)


def commits_table(marks: Marks) -> Iterable[str]:
    found = commits(marks)
    stores = sum(1 for m in marks.of("checkpoint") if m[0] == 0)
    yield (f"commits and WAL checkpoints ({stores} of the store, "
           f"{len(marks.of('checkpoint')) - stores} of the views file), ms:")
    yield f"  {'commits':<28} {'count':>6} {'p50':>7} {'p99':>7} {'max':>8}"
    for name, values in sorted(found.items()):
        yield (f"  {name:<28} {len(values):6,} {percentile(values, 0.5):7.3f}"
               f" {percentile(values, 0.99):7.3f} {max(values):8.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--marks", type=Path, default=None,
                        help="read the marks left in this directory; run nothing")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if options.marks is not None:
        marks = Marks.read(options.marks)
        print("\n".join([*table(steps(marks)), *commits_table(marks)]))
        return
    with tempfile.TemporaryDirectory(prefix="att-jm-timeline-") as directory:
        os.environ["ATT_JM_TIMELINE"] = directory
        try:
            latency_main(["--count", str(options.count), "--rounds", "1"])
        finally:
            del os.environ["ATT_JM_TIMELINE"]
        print(f"\ninside the service, ms (python -m bench.timeline --count {options.count}):")
        marks = Marks.read(Path(directory))
        print("\n".join([*table(steps(marks)), *commits_table(marks)]))


if __name__ == "__main__":
    main()
