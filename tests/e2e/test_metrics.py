"""Metrics for on-call: the real `att-jm serve`, the real exporter (`python -m att_jm.metrics`),
a real broker. `/metrics` parses with Prometheus's text parser and moves by the right amounts
as work is done; `/healthz` names a stopped writer, and a relay held up by a lost broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.broker import Broker, free_port
from helpers.mqtt import TestClient
from helpers.service import Service, ServiceFactory
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Operator, new_id

#: /healthz fails after this long without a loop turn (or with the relay's position still).
STALE_SECONDS = 2.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exporter:
    """`python -m att_jm.metrics` for one store (a file or a PostgreSQL URL), on a free
    loopback port."""

    def __init__(self, store: Path | str, log_path: Path) -> None:
        self.store = store
        self.port = free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Exporter:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATT_JM_")}
        env["ATT_JM_CONFIG"] = "none"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "att_jm.metrics", "--store", str(self.store),
                 "--port", str(self.port), "--stale-seconds", str(STALE_SECONDS),
                 "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/")
                return self
            except (urllib.error.URLError, OSError):
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the exporter did not start: {self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, Content-Type, body) of a GET, whatever the status."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as answer:  # noqa: S310
                return answer.status, answer.headers["Content-Type"], answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    def samples(self) -> Samples:
        """Every sample of a scrape, parsed by Prometheus's text parser: (name, labels) -> value."""
        status, content_type, text = self.get("/metrics")
        assert status == 200, text
        assert content_type.startswith("text/plain; version=0.0.4")
        found: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def health(self) -> tuple[int, dict[str, Any]]:
        status, content_type, body = self.get("/healthz")
        assert content_type == "application/json"
        return status, json.loads(body)

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.returncode == 0, self.log_text()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(exporter: Exporter, predicate: Callable[[Samples], bool], what: str,
             timeout: float = 20.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = exporter.samples()
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            shown = {k: v for k, v in samples.items() if not k[0].endswith("_bucket")}
            raise AssertionError(f"{what} never held: {shown}")
        time.sleep(0.1)


def wait_health(exporter: Exporter, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = exporter.health()
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz never answered {status}: {code} {body}")
        time.sleep(0.1)


@pytest.fixture
def exporter(service_factory: ServiceFactory, tmp_path: Path) -> Iterator[tuple[Service, Exporter]]:
    service = service_factory()
    started = Exporter(service.store, tmp_path / "exporter.log").start()
    yield service, started
    started.stop()


def test_metrics_parse_and_move_as_work_is_done(
    exporter: tuple[Service, Exporter], mqtt: TestClient
) -> None:
    service, metrics = exporter
    operator = Operator(service, mqtt)
    before = metrics.samples()
    assert value(before, "att_jm_writer_up") == 1
    assert value(before, "att_jm_broker_connected") == 1
    assert value(before, "att_jm_healthy") == 1
    assert value(before, "att_jm_notifications_received_total") == 0  # from the exporter's start
    assert value(before, "att_jm_executions_finished_total", outcome="succeeded") == 0
    assert value(before, "att_jm_writer_start_time_seconds") > 0

    def replies(samples: Samples, code: str) -> float:
        return value(samples, "att_jm_command_replies_total", code=code) - value(
            before, "att_jm_command_replies_total", code=code)

    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("slow", "sleep-then-ok", "slow", command="{seconds}")
    operator.add_job("fine", "ok", "fine")
    operator.add_job("broken", "always-fail", "broken")
    assert operator.error("job.add", {"name": "x", "script": "no-such-script",
                                      "trigger": "t"})["code"] == "invalid"
    assert operator.command("no.such-command")["error"]["code"] == "unknown_command"
    # Without CorrelationData a refused command is recorded as a rejection (with it, as the
    # command's record); without a ResponseTopic its reply is counted, not sent. The rejection
    # is counted from the log at its commit, the reply once it is sent, after the commit: the
    # exporter may see the one before the other.
    mqtt.publish(service.command_topic("no.such-command"), {})
    after_commands = wait_for(
        metrics, lambda s: value(s, "att_jm_rejections_total", source="command",
                                 code="unknown_command") == 1
        and replies(s, "unknown_command") == 2, "a command rejection and its reply counted")
    assert replies(after_commands, "ok") == 4
    assert replies(after_commands, "invalid") == 1
    assert replies(after_commands, "unknown_command") == 2

    # One slow script holds the queue: the others wait in it.
    operator.notify("slow", {"id": new_id(), "seconds": "3"})
    operator.notify("fine", {"id": new_id()})
    operator.notify("broken", {"id": new_id()})
    operator.notify("fine", b"{not json")  # refused: a rejection of a notification
    waiting = wait_for(
        metrics, lambda s: value(s, "att_jm_queue_entries", state="running") == 1
        and value(s, "att_jm_queue_entries", state="queued") == 2, "queue depth 1 + 2")
    assert value(waiting, "att_jm_executions_enqueued_total") == 3

    done = wait_for(metrics, lambda s: value(s, "att_jm_table_rows", table="failed") == 1
                    and value(s, "att_jm_table_rows", table="executed") == 2,
                    "executed 2, failed 1")
    assert value(done, "att_jm_notifications_received_total") == 3
    assert value(done, "att_jm_rejections_total", source="notification", code="invalid") == 1
    assert value(done, "att_jm_executions_started_total") == 3
    assert value(done, "att_jm_executions_finished_total", outcome="succeeded") == 2
    assert value(done, "att_jm_executions_finished_total", outcome="failed") == 1
    assert value(done, "att_jm_executions_finished_total", outcome="retried") == 0
    assert value(done, "att_jm_queue_entries", state="queued") == 0
    assert value(done, "att_jm_queue_entries", state="running") == 0
    durations = value(done, "att_jm_script_duration_seconds_count", outcome="succeeded")
    assert durations == 2
    assert value(done, "att_jm_script_duration_seconds_bucket", outcome="succeeded",
                 le="1.0") == 1  # the 3 s one is over 1 s, `ok` well under it
    assert value(done, "att_jm_script_duration_seconds_sum", outcome="succeeded") >= 3
    commits = value(done, "att_jm_commit_duration_seconds_count")
    assert commits > value(before, "att_jm_commit_duration_seconds_count")
    assert value(done, "att_jm_commit_duration_seconds_bucket", le="+Inf") == commits

    # Every stored event is published in the end: the relay's lag returns to 0.
    settled = wait_for(metrics, lambda s: value(s, "att_jm_relay_lag_positions") == 0,
                       "relay lag 0")
    assert value(settled, "att_jm_relay_confirmed_position") == value(
        settled, "att_jm_log_position")
    status, body = metrics.health()
    assert status == 200, body
    assert body["status"] == "ok" and body["writer"]["pid"] == service.pid


def test_healthz_names_a_stopped_writer_and_recovers(exporter: tuple[Service, Exporter]) -> None:
    service, metrics = exporter
    assert wait_health(metrics, 200, 10)["writer"]["up"] is True
    assert service.pid is not None
    os.kill(service.pid, signal.SIGSTOP)
    try:
        body = wait_health(metrics, 503, STALE_SECONDS + 5)
        # Unhealthy only once the last loop turn is older than the bound (the reason says how
        # old: the turn may have come a little before the SIGSTOP on a busy machine).
        ages = [float(match.group(1)) for reason in body["reasons"]
                if (match := re.match(r"writer: no loop turn for ([0-9.]+) s", reason))]
        assert ages and ages[0] >= STALE_SECONDS - 0.05, body
        assert value(metrics.samples(), "att_jm_writer_up") == 0
    finally:
        os.kill(service.pid, signal.SIGCONT)
    body = wait_health(metrics, 200, 10)
    assert body["reasons"] == []
    assert value(metrics.samples(), "att_jm_writer_up") == 1


def test_healthz_says_the_relay_is_held_up_by_a_lost_broker(
    exporter: tuple[Service, Exporter], broker: Broker, mqtt: TestClient
) -> None:
    service, metrics = exporter
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("slow", "sleep-then-ok", "slow", command="{seconds}")
    operator.notify("slow", {"id": new_id(), "seconds": "2"})
    wait_for(metrics, lambda s: value(s, "att_jm_queue_entries", state="running") == 1,
             "the script running")
    broker.stop()  # the script ends meanwhile: its events wait for the broker
    body = wait_health(metrics, 503, STALE_SECONDS + 10)
    relay = [reason for reason in body["reasons"] if reason.startswith("relay:")]
    assert relay and relay[0].endswith("broker disconnected"), body
    assert body["relay"]["lag"] > 0
    samples = metrics.samples()
    assert value(samples, "att_jm_broker_connected") == 0
    assert value(samples, "att_jm_relay_lag_positions") > 0
    assert value(samples, "att_jm_relay_stalled_seconds") > STALE_SECONDS
    assert value(samples, "att_jm_writer_up") == 1  # the writer itself turns on
    broker.start()
    wait_health(metrics, 200, 30)
    wait_for(metrics, lambda s: value(s, "att_jm_relay_lag_positions") == 0
             and value(s, "att_jm_broker_connected") == 1, "the relay caught up")
