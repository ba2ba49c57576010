"""The benchmark suite still works: `python -m bench.suite --quick --rounds 1` prints its table.

Benchmarks are not tests: this runs tiny sizes only to prove every figure can still be measured
(real broker, real `att-jm serve`); it never looks at the numbers or the verdicts.
"""

from __future__ import annotations

import subprocess
import sys

from helpers.broker import REPO_ROOT, require_mosquitto

FIGURES = (
    "ingest of",
    "latency: enqueue p50",
    "latency: enqueue p99",
    "latency: script start p99",
    "command: views.get p99",
    "command: settings.set p99",
    "executions:",
    "rebuild of",
    "start-up with",
    "peak RSS after",
    "view publishing during the ingest",
)


def test_the_quick_suite_prints_one_row_per_figure_and_exits_0() -> None:
    require_mosquitto()
    done = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--quick", "--rounds", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows and rows[0].startswith("| figure"), output
    for figure in FIGURES:
        row = next((r for r in rows if r.startswith(f"| {figure}")), None)
        assert row is not None, f"no row for {figure!r}\n{output}"
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[-1] in {"PASS", "FAIL", "info"}, f"{figure!r} was not measured\n{output}"
