"""The benchmark suite (issue 5): every figure against its baseline of the same run, one table.

Usage: python -m bench.suite [--quick] [--rounds N] [--only ingest,latency,...]

Each figure is the median of N rounds (default 5), shown with the min and max of the rounds,
next to its baseline measured in the same run, the ratio (or the bound) its target compares,
the target, and PASS or FAIL. Benchmarks are not tests: the exit code is 0 whatever the
verdicts, 1 only when a figure could not be measured. `--quick` runs tiny sizes (the CI smoke
test); its verdicts mean nothing. See bench/README.md for what each figure measures.

Figures measured by other modules (rebuild, start-up, memory) plug in through functions
`(quick: bool, rounds: int) -> list[bench.suite.Figure]` named in SLOTS (`bench/scale.py`);
while a module or that function is missing, its
row says "not run".
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One row of the table: per-round values of the service and of its baseline.

    `target` tells how they compare: ("ratio<=", 3.0) means median(service) <= 3 x
    median(baseline); ("ratio>=", 0.8) means >= 0.8 x; ("plus<=", 5.0) means
    median(service) <= median(baseline) + 5 (the baseline being already the sum of its parts).
    No target: the row is for information.
    """

    name: str
    unit: str
    service: Sequence[float] = ()
    baseline: Sequence[float] = ()
    target: tuple[str, float] | None = None
    target_text: str = "-"
    note: str = ""  # replaces the numbers: "not run", "error: ...", or a row of its own
    passed: bool | None = None  # the verdict of a row given as a note
    #: Issue 16's raised target for this figure (same form as `target`), and its text.
    raised: tuple[str, float] | None = None
    raised_text: str = "-"

    def compared(self, target: tuple[str, float] | None = None) -> tuple[str, bool | None]:
        """(the ratio or bound column, whether the target holds; None without target);
        `target`: another one than the figure's (its `raised`)."""
        if not self.service or not self.baseline:
            return "-", None
        service = statistics.median(self.service)
        baseline = statistics.median(self.baseline)
        kind, value = target or self.target or ("ratio", 0.0)
        if kind == "plus<=":
            bound = baseline + value
            return f"bound {fmt(bound, self.unit)}", service <= bound
        ratio = service / baseline if baseline else float("inf")
        text = f"{ratio:.2f}x"
        if kind == "ratio<=":
            return text, ratio <= value
        if kind == "ratio>=":
            return text, ratio >= value
        return text, None


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}"


def spread(values: Sequence[float], unit: str) -> str:
    """`median (min-max)` of the rounds."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    number = fmt(statistics.median(values), unit)
    short = fmt(low, unit).rsplit(" ", 1)[0], fmt(high, unit).rsplit(" ", 1)[0]
    return f"{number} ({short[0]}-{short[1]})"


# Sizes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    ingest: int  # notifications in the burst
    latency: int  # notifications, one at a time
    commands: int  # commands of each kind, one at a time
    executions: int  # queued entries drained at interval 0


FULL = Sizes(ingest=20_000, latency=1000, commands=1000, executions=2000)
QUICK = Sizes(ingest=200, latency=30, commands=30, executions=30)


# The figures owned here -------------------------------------------------------------------


def ingest_figures(sizes: Sizes, rounds: int) -> list[Figure]:
    from bench import ingest  # noqa: PLC0415 -- each figure's module loads only when it runs

    result = ingest.measure(sizes.ingest, rounds)
    bare = "bare paho + SQLite batch"
    return [Figure(f"ingest of {sizes.ingest:,} notifications", "msg/s", result["service"],
                   result["baseline"], ("ratio>=", 0.8), f">= 0.8x {bare}",
                   raised=("ratio>=", 0.9), raised_text=f">= 0.9x {bare}"),
            Figure(f"ingest of {sizes.ingest:,}, to the queue view", "msg/s",
                   result["visible"], result["baseline"], target_text=f"- (vs {bare})",
                   raised=("ratio>=", 0.9), raised_text=f">= 0.9x {bare}"),
            view_publishing(result["views"])]


VIEW_PERIOD = 0.25  # the relay's coalescing: one message per view per period at most
VIEW_ROWS = 1000  # the contract's row cap (the default setting)


def view_publishing(watches: Sequence[Any]) -> Figure:
    """What came on `views/#` during each ingest round, against the coalescing bound."""
    worst = max(watches, key=lambda w: max(w.topics.values(), default=0) / max(w.seconds, 1e-9))
    busiest = max(worst.topics.values(), default=0)
    bound = int(worst.seconds / VIEW_PERIOD) + 2  # the first and the last of the round too
    largest = max(w.largest for w in watches)
    rows = max(w.rows for w in watches)
    passed = all(max(w.topics.values(), default=0) <= int(w.seconds / VIEW_PERIOD) + 2
                 and w.rows <= VIEW_ROWS for w in watches)
    note = (f"{worst.count} msgs in {worst.seconds:.1f} s (busiest view {busiest}, bound "
            f"{bound}); largest {largest:,} B, {rows} rows")
    return Figure("view publishing during the ingest", "", note=note, passed=passed,
                  target_text=f"<= 4/s per view, <= {VIEW_ROWS} rows")


def latency_figures(sizes: Sizes, rounds: int) -> list[Figure]:
    from bench import latency  # noqa: PLC0415 -- idem

    r = latency.measure(sizes.latency, rounds, sizes.commands)

    def plus(*keys: str) -> list[float]:
        return [sum(parts) for parts in zip(*(r[key] for key in keys), strict=True)]

    rtt = "MQTT round trip"
    return [
        Figure("latency: enqueue p50", "ms", r["enqueue_p50"], r["rtt_p50"],
               target_text=f"- (vs {rtt} p50)"),
        Figure("latency: enqueue p99", "ms", r["enqueue_p99"], r["rtt_p99"], ("ratio<=", 3.0),
               f"<= 3x {rtt} p99", raised=("ratio<=", 2.0), raised_text=f"<= 2x {rtt} p99"),
        Figure("latency: started event p99", "ms", r["started_event_p99"], r["rtt_p99"],
               target_text=f"- (vs {rtt} p99)"),
        Figure("latency: script start p50", "ms", r["start_p50"], plus("rtt_p50", "spawn_p50"),
               target_text="- (vs round trip + spawn p50)"),
        Figure("latency: script start p99", "ms", r["start_p99"], plus("rtt_p99", "spawn_p99"),
               ("plus<=", 5.0), "<= round trip p99 + spawn p99 + 5 ms"),
        Figure("command: views.get p50", "ms", r["views_get_p50"], r["rtt_p50"],
               target_text=f"- (vs {rtt} p50)"),
        Figure("command: views.get p99", "ms", r["views_get_p99"], r["rtt_p99"],
               ("ratio<=", 2.0), f"<= 2x {rtt} p99", raised=("ratio<=", 1.5),
               raised_text=f"<= 1.5x {rtt} p99"),
        Figure("command: settings.set p50", "ms", r["settings_set_p50"], r["rtt_p50"],
               target_text=f"- (vs {rtt} p50)"),
        Figure("command: settings.set p99", "ms", r["settings_set_p99"], r["rtt_p99"],
               ("ratio<=", 2.0), f"<= 2x {rtt} p99", raised=("ratio<=", 1.5),
               raised_text=f"<= 1.5x {rtt} p99"),
        Figure("latency: spawn p50 (baseline part)", "ms", baseline=r["spawn_p50"]),
        Figure("latency: spawn p99 (baseline part)", "ms", baseline=r["spawn_p99"]),
        Figure("round trip p99, back to back (info)", "ms", baseline=r["rtt_burst_p99"]),
    ]


def execution_figures(sizes: Sizes, rounds: int) -> list[Figure]:
    from bench import executions  # noqa: PLC0415 -- idem

    result = executions.measure(sizes.executions, rounds)
    return [Figure(f"executions: {sizes.executions:,} queued, interval 0", "exec/s",
                   result["service"], result["baseline"], ("ratio>=", 0.8),
                   ">= 0.8x bare subprocess.run loop", raised=("ratio>=", 0.9),
                   raised_text=">= 0.9x bare subprocess.run loop")]


# The slots of figures measured by other modules ------------------------------------------

SLOTS = {  # figure -> (module, function(quick, rounds) -> list[Figure])
    "rebuild": ("bench.scale", "rebuild_figures"),
    "startup": ("bench.scale", "startup_figures"),
    "memory": ("bench.scale", "memory_figures"),
}


def slot_figures(name: str, quick: bool, rounds: int) -> list[Figure]:
    module_name, function = SLOTS[name]
    if importlib.util.find_spec(module_name) is None:
        return [Figure(name, "", note=f"not run ({module_name.replace('.', '/')}.py is missing)")]
    module = importlib.import_module(module_name)
    provide: Callable[[bool, int], list[Figure]] | None = getattr(module, function, None)
    if provide is None:
        return [Figure(name, "", note=f"not run ({module_name} has no {function})")]
    return provide(quick, rounds)


# The table ----------------------------------------------------------------------------------

HEADER = ("figure", "service median (min-max)", "baseline median (min-max)", "ratio or bound",
          "target", "verdict")


def rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    table: list[tuple[str, ...]] = []
    for figure in figures:
        if figure.note:
            verdict = "-" if figure.passed is None else ("PASS" if figure.passed else "FAIL")
            table.append((figure.name, figure.note, "", "", figure.target_text, verdict))
            continue
        compared, passed = figure.compared()
        verdict = "info" if passed is None else ("PASS" if passed else "FAIL")
        table.append((figure.name, spread(figure.service, figure.unit),
                      spread(figure.baseline, figure.unit), compared, figure.target_text, verdict))
    return table


def raised_rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    """(figure, ratio, raised target, verdict) of each figure that has a raised target."""
    table: list[tuple[str, ...]] = []
    for figure in figures:
        if figure.raised is None or figure.note:
            continue
        compared, passed = figure.compared(figure.raised)
        verdict = "-" if passed is None else ("PASS" if passed else "FAIL")
        table.append((figure.name, compared, figure.raised_text, verdict))
    return table


def render(figures: Sequence[Figure], header: Sequence[str] = HEADER) -> str:
    """A Markdown table (readable in a terminal, pasteable into an issue); `header`: other
    names for its six columns (bench/postgres.py)."""
    return render_rows(header, rows(figures))


def render_rows(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table of `header` and the rows of `body`."""
    table = [tuple(header), *body]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                          strict=True)) + " |"

    return "\n".join([line(header), line(["-" * width for width in widths]),
                      *(line(row) for row in table[1:])])


FIGURES = ("ingest", "latency", "executions", *SLOTS)


def run(names: Sequence[str], quick: bool, rounds: int) -> tuple[list[Figure], bool]:
    """Every figure asked for; (the rows, whether all of them could be measured)."""
    sizes = QUICK if quick else FULL
    owned: dict[str, Callable[[Sizes, int], list[Figure]]] = {
        "ingest": ingest_figures, "latency": latency_figures, "executions": execution_figures,
    }
    figures: list[Figure] = []
    complete = True
    for name in names:
        started = time.monotonic()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            if name in owned:
                figures += owned[name](sizes, rounds)
            else:
                figures += slot_figures(name, quick, rounds)
        except Exception as error:  # noqa: BLE001 -- one broken figure must not hide the others
            traceback.print_exc()
            figures.append(Figure(name, "", note=f"error: {error!r}"[:120]))
            complete = False
        print(f"-- {name}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return figures, complete


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CI smoke test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated figures among {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FIGURES))
    if unknown or args.rounds < 1:
        parser.error(f"unknown figures {unknown}" if unknown else "--rounds must be >= 1")
    started = time.monotonic()
    figures, complete = run(names, args.quick, args.rounds)
    sizes = QUICK if args.quick else FULL
    print(f"ATT Job Manager benchmark suite: {args.rounds} round(s), "
          f"{'quick (smoke) sizes: verdicts mean nothing' if args.quick else 'full sizes'} "
          f"(ingest {sizes.ingest:,}, latency {sizes.latency:,}, commands {sizes.commands:,}, "
          f"executions {sizes.executions:,}); median (min-max) of the rounds")
    print(render(figures))
    raised = raised_rows(figures)
    if raised:
        print("\nIssue 16's raised targets, the same figures:")
        print(render_rows(("figure", "ratio or bound", "raised target", "verdict"), raised))
    print(f"took {time.monotonic() - started:.0f} s")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
