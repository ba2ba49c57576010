"""Ingest, enqueue latency and rebuild on a PostgreSQL store beside SQLite, in the same run.

Usage: python -m bench.postgres [--rounds 3] [--only ingest,latency,rebuild] [--quick]

Each round measures every figure on both engines, one after the other (SQLite first in odd
rounds, PostgreSQL first in even ones), with the suite's own measuring code: `bench.ingest`
(`service_round`, and its bare paho + SQLite baseline), `bench.latency` (`one_round`: the
enqueue latency and the commands, against the interleaved MQTT round trip) and, for SQLite,
`bench.scale` (`rebuild_round`) with the same sizes as `python -m bench.suite`. Each service
round runs on a fresh store: an SQLite file in the round's folder, or a fresh schema of a
database made for the run.

PostgreSQL: the server named by `ATT_JM_BENCH_POSTGRES` (a URL of a role that may create
databases), else `postgresql://postgres@127.0.0.1:5432/postgres`. The run creates the
database `att_jm_bench_<pid>` with the server's settings as they are (fsync, synchronous
commit: a message is acknowledged only once its effect is durable, as on SQLite with
synchronous=FULL) and drops it at the end, whatever happens.

Rebuild on PostgreSQL: the same cached `bench.biglog` log as the SQLite figure, copied into a
schema once per run by `att-jm audit export` and `att-jm audit import` (what an operator
moving a store does), then `att-jm rebuild --store URL` each round, timed from spawn to exit,
against a raw select of every row + `orjson.loads` of its state through psycopg (the
counterpart of the SQLite baseline's raw select).

Prints two tables: PostgreSQL against SQLite (the ratio is PostgreSQL / SQLite), and each
engine against the baseline of the same round. Benchmarks are not tests: exit 0 whatever the
figures, 1 when one could not be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson
import psycopg
from psycopg import sql

from att_jm.log.backend import PG_EVENTS, parse_postgres, pg_connect
from bench import ingest, latency, scale
from bench.biglog import cached_log
from bench.suite import FULL, QUICK, Figure, Sizes, render

ENV_URL: Final = "ATT_JM_BENCH_POSTGRES"
DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
POLL_SECONDS: Final = ingest.POLL_SECONDS
SQLITE: Final = "SQLite"
POSTGRESQL: Final = "PostgreSQL"
FIGURES: Final = ("ingest", "latency", "rebuild")


# The server and the run's database -------------------------------------------------------


@dataclass
class BenchDatabase:
    """The run's database on the server at `admin_url`: created at `open`, dropped at
    `close`; each store is a schema of it nobody used yet (`new_store`)."""

    admin_url: str
    name: str = field(default_factory=lambda: f"att_jm_bench_{os.getpid()}")
    _count: int = 0

    @property
    def url(self) -> str:
        base = self.admin_url.split("?", 1)[0].rsplit("/", 1)[0]
        return f"{base}/{self.name}"

    def open(self) -> BenchDatabase:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.name)))
            db.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(self.name)))
        return self

    def new_store(self) -> str:
        self._count += 1
        return f"{self.url}?schema=s{self._count}"

    def settings(self) -> dict[str, str]:
        """The server's settings that decide what a commit costs."""
        with psycopg.connect(self.url, autocommit=True) as db:
            return {name: str(db.execute(sql.SQL("SHOW {}").format(sql.Identifier(name)))
                              .fetchone()[0])  # type: ignore[index]  # SHOW gives one row
                    for name in ("server_version", "fsync", "synchronous_commit",
                                 "wal_sync_method", "shared_buffers")}

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error), psycopg.connect(
                self.admin_url, autocommit=True, connect_timeout=10) as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.name)))


@contextlib.contextmanager
def bench_database() -> Iterator[BenchDatabase]:
    database = BenchDatabase(os.environ.get(ENV_URL) or DEFAULT_URL).open()
    try:
        yield database
    finally:
        database.close()


def wait_for_pg_row(store: str, execution: str, timeout: float = 600) -> float:
    """Poll the PostgreSQL store `store` read-only until the version-1 event of aggregate
    `execution` (hex) is committed; perf_counter then (`bench.ingest.wait_for_enqueued`)."""
    deadline = time.monotonic() + timeout
    key = uuid.UUID(execution)
    query = f"SELECT 1 FROM {PG_EVENTS} WHERE originator_id = %s AND originator_version = 1"  # noqa: S608 -- a constant
    db = pg_connect(parse_postgres(store), readonly=True)
    try:
        while time.monotonic() < deadline:
            try:
                if db.execute(query, (key,)).fetchone() is not None:
                    return time.perf_counter()
            except psycopg.errors.UndefinedTable:  # not created yet
                pass
            time.sleep(POLL_SECONDS)
    finally:
        db.close()
    raise RuntimeError(f"no row for {execution} in the store within {timeout} s")


# Rebuild on PostgreSQL ---------------------------------------------------------------------


def att_jm(*args: str, timeout: float = 1800) -> None:
    """`att-jm ARGS` in a new process, with no site settings file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATT_JM_")}
    env["ATT_JM_CONFIG"] = "none"
    subprocess.run([sys.executable, "-m", "att_jm", *args], check=True, capture_output=True,
                   timeout=timeout, env=env)


def copy_into(database: BenchDatabase, log: Path) -> str:
    """The SQLite log `log` copied into a new schema (export, then import); its URL."""
    store = database.new_store()
    with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
        export = Path(tmp) / "log.jsonl"
        att_jm("audit", "export", "--store", str(log), "--output", str(export), "--no-progress")
        att_jm("audit", "import", str(export), "--store", store, "--no-progress")
    return store


def pg_raw_read(store: str) -> tuple[int, float]:
    """(rows, seconds) of a plain select of every stored row + orjson.loads of each state."""
    started = time.perf_counter()
    db = pg_connect(parse_postgres(store), readonly=True, autocommit=False)
    rows = 0
    try:
        with db.cursor(name="raw") as cursor:
            cursor.itersize = 10_000
            cursor.execute(f"SELECT notification_id, topic, state FROM {PG_EVENTS} "  # noqa: S608 -- a constant
                           "ORDER BY notification_id")
            for _, _, state in cursor:
                orjson.loads(state)
                rows += 1
    finally:
        db.close()
    return rows, time.perf_counter() - started


def pg_rebuild_round(store: str) -> tuple[float, float]:
    """(rebuild events/s, raw events/s) over the PostgreSQL store `store`."""
    rows, raw_seconds = pg_raw_read(store)
    started = time.perf_counter()
    att_jm("rebuild", "--store", store, "--log-format", "json", timeout=600)
    return rows / (time.perf_counter() - started), rows / raw_seconds


# The run -----------------------------------------------------------------------------------


@dataclass
class Series:
    """Per engine, per figure key: one value per round."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the figures that could not be measured

    def add(self, engine: str, key: str, value: float) -> None:
        self.values.setdefault((engine, key), []).append(value)

    def get(self, engine: str, key: str) -> list[float]:
        return self.values.get((engine, key), [])


def measure_round(series: Series, engine: str, new_store: Callable[[], str | None],
                  names: Sequence[str], sizes: Sizes, rebuild_store: str | Path | None) -> None:
    """One round of every figure in `names` on one engine, each service on a fresh store
    (`new_store()`; None: an SQLite file of the round). A figure that fails is recorded in
    `series.errors` and the others still run."""

    def ingest_figure() -> None:
        rate, _ = ingest.service_round(sizes.ingest, new_store())
        series.add(engine, "ingest", rate)

    def latency_figure() -> None:
        values = latency.one_round(sizes.latency, sizes.commands, new_store())
        for name in ("enqueue", "rtt", "settings_set", "views_get"):
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                series.add(engine, f"{name}_{label}",
                           latency.percentile(values[name], q) * 1e3)

    def rebuild_figure() -> None:
        if isinstance(rebuild_store, Path):
            rebuilt, raw = scale.rebuild_round(rebuild_store)
        else:
            assert rebuild_store is not None
            rebuilt, raw = pg_rebuild_round(rebuild_store)
        series.add(engine, "rebuild", rebuilt)
        series.add(engine, "rebuild_raw", raw)

    figures = {"ingest": ingest_figure, "latency": latency_figure, "rebuild": rebuild_figure}
    for name in names:
        try:
            figures[name]()
        except Exception as error:  # noqa: BLE001 -- one failed figure must not hide the others
            traceback.print_exc()
            series.errors.append(f"{engine} {name}: {error!r}"[:200])


def run(names: Sequence[str], rounds: int, quick: bool,
        say: Callable[[str], None]) -> tuple[Series, dict[str, str], int]:
    """Every round; (the values, the server's settings, the rebuild log's size in events)."""
    sizes = QUICK if quick else FULL
    events = scale._sizes(quick)[0]
    series = Series()
    with bench_database() as database:
        settings = database.settings()
        log: Path | None = None
        pg_log: str | None = None
        if "rebuild" in names:
            say(f"the {events:,}-event log (bench.biglog, cached), copied into PostgreSQL")
            log = cached_log(events)
            started = time.monotonic()
            pg_log = copy_into(database, log)
            say(f"copied in {time.monotonic() - started:.0f} s")
        engines: list[tuple[str, Callable[[], str | None], str | Path | None]] = [
            (SQLITE, lambda: None, log), (POSTGRESQL, database.new_store, pg_log)]
        for number in range(rounds):
            for engine, new_store, rebuild_store in engines[::-1 if number % 2 else 1]:
                started = time.monotonic()
                say(f"round {number + 1}/{rounds}: {engine} ...")
                measure_round(series, engine, new_store, names, sizes, rebuild_store)
                say(f"round {number + 1}/{rounds}: {engine}: {time.monotonic() - started:.0f} s")
            if "ingest" in names:  # the suite's baseline, once per round
                series.add("baseline", "ingest", ingest.baseline_round(sizes.ingest))
    return series, settings, events


def tables(series: Series, sizes: Sizes, events: int) -> tuple[list[Figure], list[Figure]]:
    """(PostgreSQL against SQLite, each engine against its baseline of the same rounds)."""
    def pair(name: str, unit: str, key: str) -> Figure:
        return Figure(name, unit, series.get(POSTGRESQL, key), series.get(SQLITE, key),
                      target_text="-")

    versus = [
        pair(f"ingest of {sizes.ingest:,} notifications", "msg/s", "ingest"),
        pair("latency: enqueue p50", "ms", "enqueue_p50"),
        pair("latency: enqueue p99", "ms", "enqueue_p99"),
        pair("command: settings.set p50", "ms", "settings_set_p50"),
        pair("command: settings.set p99", "ms", "settings_set_p99"),
        pair("command: views.get p99", "ms", "views_get_p99"),
        pair("MQTT round trip p99 (same rounds)", "ms", "rtt_p99"),
        pair(f"rebuild of {events:,} events", "events/s", "rebuild"),
        pair("raw select + orjson.loads (rebuild baseline)", "events/s", "rebuild_raw"),
    ]
    own: list[Figure] = []
    for engine in (SQLITE, POSTGRESQL):
        own += [
            Figure(f"{engine}: ingest", "msg/s", series.get(engine, "ingest"),
                   series.get("baseline", "ingest"), ("ratio>=", 0.8),
                   ">= 0.8x bare paho + SQLite batch"),
            Figure(f"{engine}: enqueue p99", "ms", series.get(engine, "enqueue_p99"),
                   series.get(engine, "rtt_p99"), ("ratio<=", 3.0), "<= 3x MQTT round trip p99"),
            Figure(f"{engine}: rebuild", "events/s", series.get(engine, "rebuild"),
                   series.get(engine, "rebuild_raw"), ("ratio>=", 0.5),
                   f">= 0.5x raw select ({engine}) + orjson.loads"),
        ]
    return ([f for f in versus if f.service or f.baseline],
            [f for f in own if f.service and f.baseline])


VERSUS_HEADER: Final = ("figure", "PostgreSQL median (min-max)", "SQLite median (min-max)",
                        "PostgreSQL / SQLite", "target", "verdict")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated figures among {', '.join(FIGURES)}")
    parser.add_argument("--quick", action="store_true", help="the suite's tiny sizes")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FIGURES))
    if unknown or args.rounds < 1:
        parser.error(f"unknown figures {unknown}" if unknown else "--rounds must be >= 1")

    def say(text: str) -> None:
        print(f"-- {text}", file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        series, settings, events = run(names, args.rounds, args.quick, say)
    except Exception:  # noqa: BLE001 -- say what failed, exit 1
        traceback.print_exc()
        return 1
    sizes = QUICK if args.quick else FULL
    versus, own = tables(series, sizes, events)
    shown = ", ".join(f"{k} {v}" for k, v in settings.items())
    print(f"PostgreSQL beside SQLite: {args.rounds} round(s), "
          f"{'quick sizes' if args.quick else 'the suite' + chr(39) + 's full sizes'}; "
          f"median (min-max) of the rounds; PostgreSQL: {shown}")
    print(render(versus, VERSUS_HEADER))
    print()
    print(render(own))
    for error in series.errors:
        print(f"not measured: {error}")
    print(f"took {time.monotonic() - started:.0f} s")
    return 1 if series.errors else 0


if __name__ == "__main__":
    sys.exit(main())
