"""The metric families of one observation, in the Prometheus text format (`prometheus_client`).

Every metric is listed, with its type, labels and meaning, in docs/metrics.md. A source that
cannot be read leaves its metrics out (the `*_readable` and `att_jm_writer_up` gauges say
so); labels with a fixed set of values are always all present (0 until counted), so a
rate is defined from the first scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from att_jm.metrics.counts import LogCounts
from att_jm.metrics.health import Health, writer_fresh
from att_jm.metrics.shared import COMMIT_BOUNDS, FAULT_KINDS, StatsSnapshot
from att_jm.metrics.watch import Observation

PREFIX = "att_jm_"
_F = TypeVar("_F", CounterMetricFamily, GaugeMetricFamily)


def _histogram(name: str, documentation: str, bounds: Sequence[float],
               per_bucket: Sequence[int], total: float, labels: Sequence[str] = (),
               values: Sequence[str] = ()) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, documentation, labels=list(labels))
    add_histogram(family, bounds, per_bucket, total, values)
    return family


def add_histogram(family: HistogramMetricFamily, bounds: Sequence[float],
                  per_bucket: Sequence[int], total: float, values: Sequence[str] = ()) -> None:
    """Add one labelled histogram from per-bucket (not cumulative) counts, +Inf last."""
    cumulative = list(accumulate(per_bucket))
    les = [_le(bound) for bound in bounds] + ["+Inf"]
    family.add_metric(list(values), list(zip(les, cumulative, strict=True)), total)


def _le(bound: float) -> str:
    return repr(float(bound))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _labelled(family: _F, items: Iterable[tuple[Sequence[str], float]]) -> _F:
    for values, value in items:
        family.add_metric(list(values), value)
    return family


def families(obs: Observation, health: Health, stale_seconds: float) -> Iterator[Metric]:
    """Every metric family of `obs` (and of its health check)."""
    yield _gauge("healthy", "1 when /healthz answers 200, else 0", 1 if health.ok else 0)
    yield _gauge("exporter_start_time_seconds",
                 "When this exporter started (Unix time): its log counters start at 0 then",
                 obs.started_at)
    yield from _writer(obs, stale_seconds)
    yield _gauge("store_readable", "1 when the exporter could read the store",
                 0 if obs.store_error is not None else 1)
    if obs.store_error is None:
        yield from _store(obs)
        yield from _log_counts(obs.counts)


def _writer(obs: Observation, stale_seconds: float) -> Iterator[Metric]:
    stats = obs.stats
    yield _gauge("writer_up", f"1 when the writer turned its loop in the last {stale_seconds:g} s",
                 1 if writer_fresh(obs, stale_seconds) else 0)
    if stats is None:
        return
    yield from _stats(obs, stats)


def _stats(obs: Observation, stats: StatsSnapshot) -> Iterator[Metric]:
    yield _gauge("writer_start_time_seconds", "When the writer started (Unix time)",
                 stats.started_at)
    yield _gauge("writer_heartbeat_age_seconds", "Seconds since the writer's last loop turn",
                 stats.heartbeat_age(obs.at))
    yield _counter("writer_loop_turns", "Turns of the writer's loop since its start",
                   stats.turns)
    yield _gauge("broker_connected", "1 while the writer's MQTT session is connected",
                 1 if stats.connected else 0)
    yield _labelled(
        GaugeMetricFamily(PREFIX + "fault", "1 for the fault the service reports now "
                          "(store: commits refused; views: the views lag the log)",
                          labels=["kind"]),
        (((kind,), 1 if stats.fault == kind else 0) for kind in FAULT_KINDS))
    yield _labelled(
        CounterMetricFamily(PREFIX + "faults", "Faults begun since the writer started",
                            labels=["kind"]),
        (((kind,), count) for kind, count in stats.faults.items()))
    yield _histogram("commit_duration_seconds",
                     "Time the writer took to commit a unit of work that stored events (one "
                     "SQLite transaction, synchronous=FULL)",
                     COMMIT_BOUNDS, stats.commit_buckets, stats.commit_sum)
    yield _labelled(
        CounterMetricFamily(PREFIX + "command_replies",
                            "Replies the writer sent to commands, by code (ok or the error "
                            "code)", labels=["code"]),
        (((code,), count) for code, count in stats.replies.items()))
    yield _labelled(
        CounterMetricFamily(PREFIX + "archive_runs",
                            "Automatic archival runs since the writer started, by outcome "
                            "(done, nothing to archive, failed)", labels=["outcome"]),
        (((outcome,), count) for outcome, count in stats.archives.items()))


def _store(obs: Observation) -> Iterator[Metric]:
    if obs.log_end is not None:
        yield _gauge("log_position", "Position of the last event stored in the log",
                     obs.log_end)
    if obs.relay_confirmed is not None:
        yield _gauge("relay_confirmed_position",
                     "Last position the relay published and the broker confirmed, with every "
                     "earlier one", obs.relay_confirmed)
    lag = obs.relay_lag
    if lag is not None:
        yield _gauge("relay_lag_positions",
                     "Positions stored and not yet confirmed published by the relay", lag)
    yield _gauge("relay_stalled_seconds",
                 "Seconds positions have waited with the relay's confirmed position not "
                 "moving (0 when none wait)", obs.relay_stalled)
    if obs.queue is not None:
        yield _labelled(
            GaugeMetricFamily(PREFIX + "queue_entries", "Entries in the queue, by state",
                              labels=["state"]),
            ((("queued",), obs.queue["queued"]), (("running",), obs.queue["running"])))
        yield _gauge("queue_retries_waiting",
                     "Queued entries that are retries (waiting for their not-before time, or "
                     "their turn)", obs.queue["retries_waiting"])
    if obs.tables is not None:
        yield _labelled(
            GaugeMetricFamily(PREFIX + "table_rows", "Rows of the Executed and Failed tables",
                              labels=["table"]),
            (((table,), count) for table, count in obs.tables.items()))


def _log_counts(counts: LogCounts) -> Iterator[Metric]:
    yield _counter("notifications_received", "Notifications stored (accepted)",
                   counts.notifications)
    yield _labelled(
        CounterMetricFamily(PREFIX + "rejections", "Messages refused and recorded, by source "
                            "(notification or command) and error code",
                            labels=["source", "code"]),
        (((source, code), count) for (source, code), count in sorted(counts.rejections.items())))
    yield _counter("executions_enqueued", "Executions put in the queue", counts.enqueued)
    yield _counter("executions_started", "Attempts started", counts.started)
    yield _labelled(
        CounterMetricFamily(PREFIX + "executions_finished",
                            "Attempts ended, by outcome: succeeded, failed, retried (failed, "
                            "another attempt follows), interrupted (the service stopped while "
                            "it ran)", labels=["outcome"]),
        (((outcome,), count) for outcome, count in counts.outcomes.items()))
    yield _counter("executions_timed_out", "Attempts ended by their timeout (also counted by "
                   "outcome)", counts.timed_out)
    durations = HistogramMetricFamily(PREFIX + "script_duration_seconds",
                                      "How long scripts ran, by outcome", labels=["outcome"])
    for outcome, histogram in counts.durations.items():
        add_histogram(durations, histogram.bounds, histogram.buckets, histogram.total,
                      (outcome,))
    yield durations
    yield _labelled(
        CounterMetricFamily(PREFIX + "cleanup_runs", "Auto Cleanup runs, by table",
                            labels=["table"]),
        (((table,), count) for table, count in counts.cleanup_runs.items()))
    yield _labelled(
        CounterMetricFamily(PREFIX + "cleanup_rows", "Rows Auto Cleanup removed, by table",
                            labels=["table"]),
        (((table,), count) for table, count in counts.cleaned_rows.items()))
    yield _counter("log_rows_undecodable", "Counted rows whose state did not decode",
                   counts.undecodable)


class ObservationCollector(Collector):
    """A collector of one observation (a registry of its own per scrape)."""

    def __init__(self, obs: Observation, health: Health, stale_seconds: float) -> None:
        self.obs, self.health, self.stale_seconds = obs, health, stale_seconds

    def collect(self) -> Iterable[Metric]:
        return families(self.obs, self.health, self.stale_seconds)


def render(obs: Observation, health: Health, stale_seconds: float,
           accept: str = "") -> tuple[bytes, str]:
    """(body, Content-Type) of a scrape, in the format the `Accept` header asks for (the
    text format 0.0.4 by default, OpenMetrics on request), as prometheus_client's own
    handlers answer."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ObservationCollector(obs, health, stale_seconds))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
