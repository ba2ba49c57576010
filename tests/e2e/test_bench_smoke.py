"""The benchmark suite still works: `python -m bench.suite --quick --rounds 1` prints its table.

Benchmarks are not tests: this runs tiny sizes only to prove every figure can still be measured
(real broker, real `att-jm serve`); it never looks at the numbers or the verdicts.
"""

from __future__ import annotations

import os
import subprocess
import sys

from helpers.broker import REPO_ROOT, require_mosquitto

from att_jm import direct_start

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


def test_the_timeline_cuts_each_notification_batch_into_its_steps() -> None:
    """`python -m bench.timeline`: the real service with its marks on (att_jm/timeline.py);
    every notification's batch (4 rows in bench.latency) is found in the marks of both
    processes, each step measured and none negative."""
    require_mosquitto()
    done = subprocess.run(
        [sys.executable, "-m", "bench.timeline", "--count", "20"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    lines = done.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("batches of 4 rows")))
    assert int(lines[start].split(": ")[1].replace(",", "")) >= 20, output  # warm-up included
    steps = {line[:28].strip(): [float(v) for v in line[28:].split()]
             for line in lines[start + 2:start + 9]}
    assert set(steps) == {"handle", "commit", "to relay", "relay turn", "read", "publish",
                          "drain -> first published"}, output
    assert all(v >= 0 for values in steps.values() for v in values), output
    assert steps["drain -> first published"][0] >= steps["commit"][0], output


def test_the_executions_say_where_each_core_s_time_goes() -> None:
    """`python -m bench.executions --cores`: the real service drains its queue and the bare loop
    runs; each side's table has a row per process with its CPU time, and the scripts' time
    (the children of the service or of its spawner, the loop's children) was counted on both
    sides. The processes' own time is read to the nanosecond; the scripts' in clock ticks
    (10 ms), which 60 executions fill a few times over."""
    require_mosquitto()
    done = subprocess.run(
        [sys.executable, "-m", "bench.executions", "--count", "60", "--rounds", "1", "--cores"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    lines = done.stdout.splitlines()
    tables: dict[str, dict[str, float]] = {}
    side = ""
    for line in lines[lines.index(next(x for x in lines if x.startswith("where each core"))):]:
        if line.startswith("  ") and not line.startswith("    "):
            side = line.split(":")[0].strip()
            tables[side] = {}
        elif line.startswith("    ") and line.split()[0] != "process":
            name, _cpu, _cores, per_execution = line.split()[:4]
            tables[side][name] = float(per_execution)  # us of CPU per execution
    assert set(tables) == {"service", "baseline"}, output
    assert set(tables["service"]) == {"writer", "scripts", "spawner", "relay", "broker", "counter",
                                      "all"}
    if os.geteuid() == 0:  # the scripts run as the script user: the writer's own children
        # where the C part is built (ADR 0003), else the spawner's
        assert (tables["service"]["spawner"] > 0) is not direct_start.available(), output
    assert set(tables["baseline"]) == {"loop", "scripts", "all"}, output
    assert tables["service"]["scripts"] > 0 and tables["baseline"]["scripts"] > 0, output
    assert tables["service"]["writer"] > 0 and tables["baseline"]["loop"] > 0, output


def test_the_start_cost_loops_each_print_a_rate() -> None:
    """`python -m bench.startcost`: four bare loops (fork or vfork, with or without a durable
    commit per start) each start the script and print a positive rate and its ratio."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.startcost", "--count", "20", "--rounds", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    rows = {line[:18].strip(): line[18:].split() for line in done.stdout.splitlines()[1:]}
    assert set(rows) == {"fork", "fork + commit", "vfork", "vfork + commit"}, output
    assert all(float(values[0].replace(",", "")) > 0 for values in rows.values()), output
    assert rows["fork"][-1] == "1.00x", output


def test_the_floor_times_both_responders_and_the_durable_one_commits() -> None:
    """`python -m bench.floor`: the round trip through a bare echo and through one that first
    commits (WAL, synchronous=FULL); every request the durable responder answered stored its
    rows."""
    require_mosquitto()
    count, rows = 20, 2
    done = subprocess.run(
        [sys.executable, "-m", "bench.floor", "--count", str(count), "--rounds", "1",
         "--rows", str(rows)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    lines = done.stdout.splitlines()
    assert any(line.strip().startswith("echo p99") and "durable p99" in line for line in lines)
    stored = next(line for line in lines if "rows the durable responder stored" in line)
    committed = int(stored.split(": ")[1].split()[0].replace(",", ""))
    requests = int(stored.split("(")[1].split()[0].replace(",", ""))  # its warm-up and count
    assert requests > count, output
    assert committed >= rows * requests, output  # its first answer may take pings
    assert committed % rows == 0, output
