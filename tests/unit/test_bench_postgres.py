"""bench/postgres.py without a server: the run's store URLs and its two tables."""

from __future__ import annotations

import sys

from helpers.broker import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # bench/ lives at the repository root, beside tests/

from bench.postgres import (
    POSTGRESQL,
    SQLITE,
    VERSUS_HEADER,
    BenchDatabase,
    Series,
    tables,
)
from bench.suite import FULL, render


def test_each_store_is_a_new_schema_of_the_runs_database() -> None:
    database = BenchDatabase("postgresql://postgres@127.0.0.1:5432/postgres", name="att_jm_bench_7")
    assert database.url == "postgresql://postgres@127.0.0.1:5432/att_jm_bench_7"
    assert database.new_store() == "postgresql://postgres@127.0.0.1:5432/att_jm_bench_7?schema=s1"
    assert database.new_store().endswith("?schema=s2")


def test_postgresql_is_shown_against_sqlite_and_each_against_its_baseline() -> None:
    series = Series()
    for engine, rate, enqueue in ((SQLITE, 8000.0, 2.0), (POSTGRESQL, 4000.0, 3.0)):
        series.add(engine, "ingest", rate)
        series.add(engine, "enqueue_p99", enqueue)
        series.add(engine, "rtt_p99", 1.0)
    series.add("baseline", "ingest", 10000.0)
    versus, own = tables(series, FULL, 1_000_000)
    assert [f.name for f in versus] == ["ingest of 20,000 notifications", "latency: enqueue p99",
                                        "MQTT round trip p99 (same rounds)"]
    assert versus[0].compared() == ("0.50x", None)  # PostgreSQL / SQLite
    assert [f.name for f in own] == ["SQLite: ingest", "SQLite: enqueue p99",
                                     "PostgreSQL: ingest", "PostgreSQL: enqueue p99"]
    assert [f.compared()[1] for f in own] == [True, True, False, True]
    assert render(versus, VERSUS_HEADER).splitlines()[0].startswith(
        "| figure ") and "PostgreSQL / SQLite" in render(versus, VERSUS_HEADER)
