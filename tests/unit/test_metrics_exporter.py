"""The exporter's parts on a store file made here: what it counts from the log, the index's
gauges, the relay's lag and stall, `/healthz`'s verdicts, the text format (parsed by
Prometheus's own parsers) and the HTTP server (paths, methods, Host, loopback only)."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from att_jm.application.index import SCHEMA
from att_jm.metrics import counts as c
from att_jm.metrics.counts import DURATION_BOUNDS, LogCounts
from att_jm.metrics.exporter import (
    ExporterError,
    ExporterSettings,
    build_server,
    is_loopback,
    parse_args,
)
from att_jm.metrics.exposition import render
from att_jm.metrics.health import check
from att_jm.metrics.shared import REPLY_LABELS, StatsSnapshot, open_writer_stats
from att_jm.metrics.watch import Observation, Watch
from att_jm.relay.window import write_position
from att_jm.store import open_store

STAMP = {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00.000000+00:00"}


class Store:
    """A store file with the real schema (the library's tables, the write index), rows
    appended by hand."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        open_store(self.path)  # the library makes its tables (WAL)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.executescript(SCHEMA)
        self.versions = 0

    def append(self, topic: str, **state: Any) -> None:
        self.versions += 1
        self.db.execute(
            "INSERT INTO stored_events VALUES (?, 1, ?, ?)",
            (f"{self.versions:032x}", topic, orjson.dumps({"timestamp": STAMP, **state})))

    def queue(self, entry: str, state: str, not_before: str | None = None) -> None:
        self.db.execute("INSERT INTO jm_queue VALUES (?, ?, 0, ?)", (entry, state, not_before))

    def finished(self, entry: str, table: str) -> None:
        self.db.execute("INSERT INTO jm_finished VALUES (?, ?, 0, 'x')", (entry, table))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(tmp_path / "att-jm.db")
    yield made
    made.db.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# What the log says ---------------------------------------------------------------------------


def test_counts_of_rows_by_topic_outcome_source_and_code() -> None:
    counts = LogCounts()
    rows: list[tuple[Any, ...]] = []

    def row(topic: str, **state: Any) -> None:
        rows.append((len(rows) + 1, "id", 1, topic, orjson.dumps(state)))

    row(c.NOTIFICATION, payload={"big": "x" * 1000})
    row(c.NOTIFICATION)
    row(c.REJECTED, source="notification", code="invalid")
    row(c.REJECTED, source="command", code="forbidden")
    row(c.REJECTED, source="forged", code="made-up")  # bounded labels: other, other
    row(c.ENQUEUED)
    row(c.STARTED)
    row(c.SUCCEEDED, duration_seconds=0.2)
    row(c.FAILED, duration_seconds=7, timed_out=True, interrupted=False)
    row(c.ATTEMPT_FAILED, duration_seconds=0.05, timed_out=False, interrupted=False)
    row(c.ATTEMPT_FAILED, duration_seconds=1, timed_out=False, interrupted=True)
    row(c.FAILED, duration_seconds="soon", interrupted=True)  # no number: not observed
    row(c.CLEANED_UP, table="executed")
    row(c.CLEANUP_RAN, table="failed", removed=0)
    rows.append((99, "id", 1, c.SUCCEEDED, b"not json"))
    rows.append((100, "id", 1, c.SUCCEEDED, b"[1]"))
    rows.append((101, "id", 1, "att_jm:Job.Added", b"whatever"))  # not counted, not read
    counts.add(rows)
    assert counts.notifications == 2
    assert counts.rejections[("notification", "invalid")] == 1
    assert counts.rejections[("command", "forbidden")] == 1
    assert counts.rejections[("other", "other")] == 1
    assert counts.enqueued == 1 and counts.started == 1
    assert counts.outcomes == {"succeeded": 1, "failed": 1, "retried": 1, "interrupted": 2}
    assert counts.timed_out == 1
    assert counts.durations["succeeded"].buckets[DURATION_BOUNDS.index(0.25)] == 1
    assert counts.durations["failed"].total == 7
    assert counts.durations["retried"].buckets[0] == 1  # 0.05 is on the first bound
    assert sum(counts.durations["interrupted"].buckets) == 1
    assert counts.cleaned_rows == {"executed": 1, "failed": 0}
    assert counts.cleanup_runs == {"executed": 0, "failed": 1}
    assert counts.undecodable == 2
    copy = counts.copy()
    counts.add([(200, "id", 1, c.SUCCEEDED, orjson.dumps({"duration_seconds": 1}))])
    assert copy.outcomes["succeeded"] == 1 and copy.durations["succeeded"].total == 0.2


def test_the_watch_counts_from_the_log_end_at_its_start(store: Store) -> None:
    store.append(c.NOTIFICATION)  # before the exporter: not counted
    store.append(c.SUCCEEDED, duration_seconds=1)
    watch = Watch(store.path)
    first = watch.look()
    assert first.store_error is None and first.log_end == 2 and first.counted_from == 2
    assert first.counts.notifications == 0
    store.append(c.NOTIFICATION)
    store.append(c.REJECTED, source="command", code="invalid")
    store.append("att_jm:Job.Added", name="j")
    store.append(c.STARTED)
    then = watch.look()
    assert then.log_end == 6
    assert then.counts.notifications == 1 and then.counts.started == 1
    assert then.counts.rejections[("command", "invalid")] == 1
    assert then.counts.outcomes["succeeded"] == 0
    assert watch.look().counts.notifications == 1  # nothing new: nothing counted twice
    watch.close()


def test_the_watch_reads_the_queue_and_the_tables_from_the_write_index(store: Store) -> None:
    store.queue("a", "running")
    store.queue("b", "queued")
    store.queue("c", "queued", "2026-01-01T00:00:00.000Z")
    store.finished("d", "executed")
    store.finished("e", "failed")
    store.finished("f", "failed")
    seen = Watch(store.path).look()
    assert seen.queue == {"queued": 2, "running": 1, "retries_waiting": 1}
    assert seen.tables == {"executed": 1, "failed": 2}


def test_a_store_without_the_index_has_no_queue_gauges(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    open_store(path)
    seen = Watch(path).look()
    assert seen.store_error is None and seen.queue is None and seen.tables is None
    assert seen.log_end == 0


def test_a_missing_store_is_an_error_until_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "later.db"
    watch = Watch(str(path))
    missing = watch.look()
    assert missing.store_error is not None and "no store file" in missing.store_error
    assert missing.stats is None and "no stats block" in str(missing.stats_error)
    made = Store(path)
    made.append(c.NOTIFICATION)
    assert watch.look().store_error is None
    made.db.close()


def test_the_relay_lag_and_how_long_it_stalled(store: Store) -> None:
    clock = Clock()
    watch = Watch(store.path, monotonic=clock)
    position = store.path + ".events.pos"
    assert watch.look().relay_confirmed is None  # no position file yet, nothing waits
    for _ in range(3):
        store.append(c.NOTIFICATION)
    write_position(position, 1)
    seen = watch.look()
    assert (seen.relay_confirmed, seen.relay_lag, seen.relay_stalled) == (1, 2, 0.0)
    clock.now += 4
    assert watch.look().relay_stalled == 4.0
    write_position(position, 2)  # it moved: the stall starts again
    clock.now += 1
    assert watch.look().relay_stalled == 0.0
    clock.now += 3
    assert watch.look().relay_stalled == 3.0
    write_position(position, 3)  # caught up
    clock.now += 30
    caught_up = watch.look()
    assert (caught_up.relay_lag, caught_up.relay_stalled) == (0, 0.0)


# /healthz --------------------------------------------------------------------------------------


def snapshot(**fields: Any) -> StatsSnapshot:
    base: dict[str, Any] = {
        "pid": 4242, "started_at": 1.7e9, "started_mono": 100.0, "turns": 10,
        "heartbeat_mono": 1000.0, "connected": True, "fault": None,
        "faults": {"store": 0, "views": 0, "other": 0}, "commit_buckets": (0,) * 13,
        "commit_sum": 0.0, "replies": dict.fromkeys(REPLY_LABELS, 0),
    }
    return StatsSnapshot(**(base | fields))


def observation(**fields: Any) -> Observation:
    base: dict[str, Any] = {"at": 1001.0, "store": "/s.db", "log_end": 10, "relay_confirmed": 10,
                            "stats": snapshot(), "writer_alive": True}
    return Observation(**(base | fields))


def test_healthy_when_the_writer_turns_and_nothing_waits() -> None:
    health = check(observation(), 10)
    assert health.ok and health.reasons == () and health.body["status"] == "ok"
    assert health.body["writer"]["pid"] == 4242 and health.body["relay"]["lag"] == 0


@pytest.mark.parametrize(("fields", "reason"), [
    ({"stats": None, "stats_error": "no stats block at /s.db.stats"}, "writer: no stats block"),
    ({"at": 1011.0}, "writer: no loop turn for 11.0 s (pid 4242 is stopped"),
    ({"at": 1011.0, "stats": snapshot(turns=0)}, "writer: starting (pid 4242)"),
    ({"writer_alive": False}, "writer: not running (pid 4242 has exited"),
    ({"stats": snapshot(fault="store")}, "writer: store fault"),
    ({"log_end": 12, "relay_stalled": 11.0},
     "relay: 2 positions wait to be published and the confirmed position (10) has not moved "
     "for 11.0 s: the relay is not publishing"),
    ({"log_end": 12, "relay_stalled": 11.0, "stats": snapshot(connected=False)},
     "relay: 2 positions wait"),
    ({"store_error": "FileNotFoundError: gone"}, "store: cannot read /s.db"),
])
def test_failing_with_a_reason_that_names_the_part(fields: dict[str, Any], reason: str) -> None:
    health = check(observation(**fields), 10)
    assert not health.ok and health.body["status"] == "failing"
    assert any(r.startswith(reason) for r in health.reasons), health.reasons


def test_a_lost_broker_is_named_when_it_holds_the_relay_up() -> None:
    held = check(observation(log_end=12, relay_stalled=11.0, stats=snapshot(connected=False)), 10)
    assert held.reasons[0].endswith(": broker disconnected")
    idle = check(observation(stats=snapshot(connected=False)), 10)
    assert idle.ok and idle.warnings == ("writer: broker disconnected",)


def test_a_views_fault_or_a_slow_relay_is_not_failing() -> None:
    views = check(observation(stats=snapshot(fault="views")), 10)
    assert views.ok and "views fault" in views.warnings[0]
    slow = check(observation(log_end=500, relay_stalled=9.0), 10)
    assert slow.ok


# The text format -------------------------------------------------------------------------------


def full_observation() -> Observation:
    counts = LogCounts()
    counts.add([(1, "x", 1, c.SUCCEEDED, orjson.dumps({"duration_seconds": 2.0})),
                (2, "x", 1, c.SUCCEEDED, orjson.dumps({"duration_seconds": 0.3})),
                (3, "x", 1, c.NOTIFICATION, b"{}")])
    buckets = (1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)
    stats = snapshot(commit_buckets=buckets, commit_sum=5.5, fault="store",
                     faults={"store": 2, "views": 0, "other": 0},
                     replies=dict.fromkeys(REPLY_LABELS, 0) | {"ok": 7, "invalid": 1},
                     archives={"done": 2, "nothing": 5, "failed": 1})
    return replace(observation(stats=stats, log_end=12, relay_confirmed=9, relay_stalled=1.5),
                   queue={"queued": 4, "running": 1, "retries_waiting": 2},
                   tables={"executed": 30, "failed": 3}, counts=counts, started_at=1.8e9)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_text_format_parses_and_says_what_was_observed() -> None:
    obs = full_observation()
    body, content_type = render(obs, check(obs, 10), 10)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["att_jm_commit_duration_seconds"] == "histogram"
    assert types["att_jm_command_replies"] == "counter"
    assert types["att_jm_queue_entries"] == "gauge"
    got = samples(text)
    assert got[("att_jm_healthy", ())] == 0  # a store fault
    assert got[("att_jm_writer_up", ())] == 1
    assert got[("att_jm_fault", (("kind", "store"),))] == 1
    assert got[("att_jm_faults_total", (("kind", "store"),))] == 2
    assert got[("att_jm_command_replies_total", (("code", "ok"),))] == 7
    assert got[("att_jm_command_replies_total", (("code", "invalid"),))] == 1
    assert got[("att_jm_archive_runs_total", (("outcome", "nothing"),))] == 5
    assert got[("att_jm_archive_runs_total", (("outcome", "failed"),))] == 1
    assert got[("att_jm_commit_duration_seconds_bucket", (("le", "0.0005"),))] == 1
    assert got[("att_jm_commit_duration_seconds_bucket", (("le", "0.001"),))] == 3  # cumulative
    assert got[("att_jm_commit_duration_seconds_bucket", (("le", "+Inf"),))] == 4
    assert got[("att_jm_commit_duration_seconds_count", ())] == 4
    assert got[("att_jm_commit_duration_seconds_sum", ())] == 5.5
    assert got[("att_jm_queue_entries", (("state", "queued"),))] == 4
    assert got[("att_jm_queue_entries", (("state", "running"),))] == 1
    assert got[("att_jm_queue_retries_waiting", ())] == 2
    assert got[("att_jm_table_rows", (("table", "executed"),))] == 30
    assert got[("att_jm_log_position", ())] == 12
    assert got[("att_jm_relay_confirmed_position", ())] == 9
    assert got[("att_jm_relay_lag_positions", ())] == 3
    assert got[("att_jm_relay_stalled_seconds", ())] == 1.5
    assert got[("att_jm_notifications_received_total", ())] == 1
    assert got[("att_jm_executions_finished_total", (("outcome", "succeeded"),))] == 2
    duration = (("le", "1.0"), ("outcome", "succeeded"))
    assert got[("att_jm_script_duration_seconds_bucket", duration)] == 1
    assert got[("att_jm_script_duration_seconds_count", (("outcome", "succeeded"),))] == 2
    assert got[("att_jm_exporter_start_time_seconds", ())] == 1.8e9
    for outcome in c.OUTCOMES:  # every label value present from the start
        assert ("att_jm_executions_finished_total", (("outcome", outcome),)) in got


def test_a_source_that_cannot_be_read_leaves_its_metrics_out() -> None:
    obs = observation(stats=None, stats_error="none", store_error="gone")
    got = samples(render(obs, check(obs, 10), 10)[0].decode())
    assert got[("att_jm_writer_up", ())] == 0
    assert got[("att_jm_store_readable", ())] == 0
    assert not any(name.startswith(("att_jm_commit", "att_jm_queue", "att_jm_notifications"))
                   for name, _ in got)


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    obs = full_observation()
    body, content_type = render(obs, check(obs, 10), 10,
                                "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    parsed = openmetrics_families(body.decode())  # type: ignore[no-untyped-call]
    names = {family.name for family in parsed}
    assert {"att_jm_commit_duration_seconds", "att_jm_command_replies"} <= names


# The server -------------------------------------------------------------------------------------


@pytest.fixture
def server(store: Store) -> Iterator[tuple[str, int]]:
    stats = open_writer_stats(store.path)
    stats.turn(True)
    httpd, exporter = build_server(ExporterSettings(store=store.path, port=0))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield "127.0.0.1", int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()
    thread.join()
    exporter.watch.close()
    stats.close()


def request(where: tuple[str, int], path: str, method: str = "GET",
            host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(*where, timeout=5)
    headers = {} if host is None else {"Host": host}
    connection.request(method, path, headers=headers)
    answer = connection.getresponse()
    result = answer.status, dict(answer.getheaders()), answer.read()
    connection.close()
    return result


def test_the_server_answers_metrics_and_healthz(server: tuple[str, int]) -> None:
    status, headers, body = request(server, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert samples(body.decode())[("att_jm_writer_up", ())] == 1
    status, headers, body = request(server, "/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    assert request(server, "/")[0] == 200
    assert request(server, "/metrics", "HEAD")[2] == b""
    assert request(server, "/nothing")[0] == 404
    status, headers, _ = request(server, "/metrics", "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert request(server, "/metrics", host=f"localhost:{server[1]}")[0] == 200
    assert request(server, "/metrics", host=f"evil.example:{server[1]}")[0] == 400


def test_healthz_fails_without_a_writer(store: Store) -> None:
    httpd, _ = build_server(ExporterSettings(store=store.path, port=0))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        status, _, body = request(("127.0.0.1", int(httpd.server_address[1])), "/healthz")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert status == 503
    assert json.loads(body)["reasons"][0].startswith("writer: no stats block")


def test_only_loopback_unless_allowed() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1")
    assert is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("example.com")
    with pytest.raises(ExporterError, match="not a loopback address"):
        build_server(ExporterSettings(store="x.db", host="0.0.0.0", port=0))


def test_settings_from_flags_and_environment(tmp_path: Path) -> None:
    env = {"ATT_JM_CONFIG": "none", "ATT_JM_STORE": str(tmp_path / "s.db"),
           "ATT_JM_METRICS_PORT": "9200", "ATT_JM_METRICS_STALE_SECONDS": "3",
           "ATT_JM_METRICS_ALLOW_NON_LOOPBACK": "1"}
    settings = parse_args([], env)
    assert settings.store == str(tmp_path / "s.db") and settings.port == 9200
    assert settings.stale_seconds == 3 and settings.allow_non_loopback is True
    flags = parse_args(["--store", "other.db", "--port", "0", "--host", "::1"], {
        "ATT_JM_CONFIG": "none"})
    assert (flags.store, flags.port, flags.host, flags.allow_non_loopback) == (
        "other.db", 0, "::1", False)
    with pytest.raises(SystemExit):
        parse_args(["--stale-seconds", "0.1"], {"ATT_JM_CONFIG": "none"})


def test_a_postgresql_store_is_refused_without_showing_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--store", "postgresql://jm:s3cret@db.example:5432/jm"],
                   {"ATT_JM_CONFIG": "none"})
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "postgresql://jm:***@db.example:5432/jm" in err and "s3cret" not in err
    assert "instance's retained status" in err
