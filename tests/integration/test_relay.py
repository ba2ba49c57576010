"""The events relay (`python -m att_jm.relay`) against a real mosquitto and a real store.

The log is built through the application layer as the writer builds it (JobManager, one
unit of work per step, the sealer), so it holds every event type the service stores. The
relay's main paths (every row once and in order, a drain at the stop, a SIGKILL and a death
resumed from the recorded position, the writer's hints, the views) run on an SQLite and on a
PostgreSQL store (`BOTH_BACKENDS`); the rest works on the SQLite file (a hand-edited position
file, forged rows) or on the broker, and runs on SQLite.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.broker import SHIPPED_ACL, Broker, BrokerFactory, make_password_file
from helpers.mqtt import Message, Subscription, TestClient
from helpers.postgres import BOTH_BACKENDS

from att_jm.application import UnitOfWork
from att_jm.config import Settings, parse_mqtt_url
from att_jm.log.messages import event_message, row_message
from att_jm.log.records import EVENT_TOPICS
from att_jm.log.rows import StoreReader
from att_jm.mqtt.publisher import PublishConnection
from att_jm.relay.constants import VIEW_PERIOD
from att_jm.relay.handle import EventsRelay, relay_environ
from att_jm.relay.window import position_path, published_position
from att_jm.store import log_position, read_log

EVENTS = "att/job-manager/events/#"


class Log(ScriptedRun):
    """A store written like the writer writes it (tests/helpers/audit_run.py); `live` holds
    the message of every event committed through it, built from the live events."""

    def __init__(self, directory: Path, store: str | None = None) -> None:
        super().__init__(directory, seal_every=1000, store=store)
        self.live: dict[int, dict[str, Any]] = {}
        self.bursts = 0
        commit, seal = self.manager.commit, self.sealer.seal

        def committed(uow: UnitOfWork) -> list[tuple[int, Any]]:
            return self._keep(commit(uow))

        def sealed(at: datetime) -> tuple[list[tuple[int, Any]], list[Any]]:
            stored, seals = seal(at)
            return self._keep(stored), seals

        self.manager.commit = committed  # type: ignore[method-assign]  # a spy on the real one
        self.sealer.seal = sealed  # type: ignore[method-assign]  # idem

    def _keep(self, stored: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        for position, event in stored:
            self.live[position] = event_message(position, event)
        return stored

    def burst(self, count: int) -> None:
        """`count` notifications that match no job, in one transaction (small events)."""
        topic = "att/channel-manager/notifications/burst"
        first = self.bursts
        self.bursts += count

        def work(uow: UnitOfWork) -> None:
            for n in range(first, first + count):
                self.manager.receive_notification(uow, "burst", topic, b'{"id":"b-%d"}' % n)
                uow.collect()

        self.unit(work)

    def every_event_type(self) -> None:
        """At least one event of every type the service stores, at times with fractions."""
        self.clock.advance(0.123456)
        typical_day(self)
        self.clock.advance(0.5)
        self.ok("job.add", {"name": "down", "script": "always-fail", "trigger": "other"})
        self.ok("job.add", {"name": "flaky", "script": "ipx-update", "trigger": "flaky",
                            "retry": {"max_attempts": 2, "delay_seconds": 1}})
        self.notify("flaky", {"id": "flaky-1"})
        while self.run_next(2, "exit code 1", exit_code=1) is not None:  # a retry, then Failed
            pass
        self.seal()
        self.notify("other", {"id": "after-seal", "nested": {"ü": [1, None, True, 2.5]}})
        stored, _ = self.sealer.close_log(self.clock())  # the marks a clean stop and a start
        self._keep(stored)                              # leave (here back to back; the
        self.sealer.open_log(self.clock())              # start's is not seen by the spies)


@pytest.fixture
def store_log(tmp_path: Path, store_location: str) -> Iterator[Log]:
    log = Log(tmp_path / "store", store_location)
    yield log
    log.close()


def settings_for(broker: Broker, store: str) -> Settings:
    return Settings(mqtt_url=broker.url, store=store, client_id="jm-under-test",
                    log_format="json")


def rows(store: str, after: int = 0) -> list[tuple[int, str, int, str, bytes]]:
    reader = StoreReader(store)
    try:
        return [raw for page in reader.raw_pages(after, None) for raw in page]
    finally:
        reader.close()


def expected(store: str, after: int = 0) -> list[bytes]:
    return [orjson.dumps(row_message(row)) for row in rows(store, after)]


def positions(messages: list[Message]) -> list[int]:
    return [orjson.loads(m.payload)["position"] for m in messages]


def connection_ends(broker: Broker, settings: Settings) -> int:
    """How many ends of the relay's connection (client id `<client_id>.events`) the broker
    logged: a DISCONNECT, a closed or reset socket, a take-over."""
    client_id = re.escape(f"{settings.client_id}.events")
    return len(re.findall(rf"\b[Cc]lient {client_id}[ ,]", broker.log_text()))


def taken_before_its_end(broker: Broker, settings: Settings, ends: int,
                         subscription: Subscription, marker_topic: str) -> list[Message]:
    """What `subscription` received of a relay whose connection is over, all of it: once the
    broker logged the end (its `ends`+1-th) it takes nothing more from that connection, and
    a marker published then on `marker_topic` comes after whatever it took
    (`Subscription.barrier`)."""
    deadline = time.monotonic() + 15
    while connection_ends(broker, settings) <= ends:
        assert time.monotonic() < deadline, broker.log_text()[-2000:]
        time.sleep(0.02)
    return subscription.barrier(marker_topic)


def wait_for_position(events: Subscription, position: int, timeout: float = 15.0) -> None:
    """Wait until a message with `position` has arrived (each message decoded once)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        messages = events.messages()
        if any(orjson.loads(m.payload)["position"] == position for m in messages[seen:]):
            return
        seen = len(messages)
        assert time.monotonic() < deadline, f"no position {position} after {timeout} s"
        time.sleep(0.01)


def wait_for_count(events: Subscription, count: int, timeout: float = 15.0) -> list[Message]:
    deadline = time.monotonic() + timeout
    while len(messages := events.messages()) < count:
        assert time.monotonic() < deadline, f"{len(messages)}/{count} after {timeout} s"
        time.sleep(0.01)
    return messages[:count]


class Child:
    """`python -m att_jm.relay` started by the test itself (stdin a pipe it holds)."""

    def __init__(self, settings: Settings, after: int = 0, tmp: Path | None = None) -> None:
        self.stderr_path = (tmp or Path(settings.store).parent) / f"relay-{time.time_ns()}.log"
        self.stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "att_jm.relay", "--after", str(after)],
            stdin=subprocess.PIPE, stderr=self.stderr,
            env=relay_environ(settings, os.environ),
        )

    def hint(self, position: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"%d\n" % position)
        self.process.stdin.flush()

    def close_stdin(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(15)

    def wait_logged(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.logs() if line["event"] == event]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {event} in {self.logs()}"
            time.sleep(0.02)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)

    def logs(self) -> list[dict[str, Any]]:
        self.stderr.flush()
        return [orjson.loads(line) for line in self.stderr_path.read_bytes().splitlines()
                if line.startswith(b"{")]

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.stderr.close()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def make(settings: Settings, after: int = 0) -> Child:
        child = Child(settings, after, tmp_path)
        started.append(child)
        return child

    yield make
    for child in started:
        child.cleanup()


# The row form of an event ----------------------------------------------------------------


@BOTH_BACKENDS
def test_every_stored_row_gives_the_message_the_writer_publishes_for_its_event(
    store_log: Log,
) -> None:
    store_log.every_event_type()
    stored = rows(store_log.store)
    decoded = dict(read_log(store_log.app, 0))
    assert {row_message(row)["type"] for row in stored} == set(EVENT_TOPICS)
    assert [row[0] for row in stored] == sorted(decoded)
    for row in stored:
        from_row = orjson.dumps(row_message(row))
        assert from_row == orjson.dumps(event_message(row[0], decoded[row[0]])), row
        if row[0] in store_log.live:  # all but the scheduler's creation and the start's mark
            assert from_row == orjson.dumps(store_log.live[row[0]]), row
    assert len(store_log.live) == len(stored) - 2  # and the start's mark


# The relay process -----------------------------------------------------------------------


@BOTH_BACKENDS
def test_every_row_is_published_once_in_log_order_with_its_payload_and_properties(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.every_event_type()
    end = log_position(store_log.app)
    events = mqtt.subscribe(EVENTS)
    child = children(settings_for(broker, store_log.store))
    wait_for_position(events, end)
    assert child.close_stdin() == 0
    received = events.messages()
    assert [m.payload for m in received] == expected(store_log.store)
    assert [m.topic for m in received] == [
        f"att/job-manager/events/{orjson.loads(m.payload)['type']}" for m in received
    ]
    assert {(m.prop("ContentType"), m.retain, m.qos) for m in received} == {
        ("application/json", False, 1)
    }
    assert published_position(store_log.store) == end
    logs = child.logs()
    started = next(line for line in logs if line["event"] == "relay.started")
    stopped = next(line for line in logs if line["event"] == "relay.stopped")
    assert (started["position"], started["source"], started["log_end"]) == (0, "--after", end)
    assert (stopped["position"], stopped["reason"], stopped["published"]) == (end, "eof", end)


def test_without_a_position_file_it_starts_after_the_given_position(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.burst(50)
    events = mqtt.subscribe(EVENTS)
    child = children(settings_for(broker, store_log.store), after=40)
    wait_for_position(events, log_position(store_log.app))
    assert child.close_stdin() == 0
    assert positions(events.messages()) == list(range(41, log_position(store_log.app) + 1))


def test_a_recorded_position_wins_over_after_and_is_clamped_to_the_end_of_the_log(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.burst(20)
    end = log_position(store_log.app)
    path = position_path(store_log.store)
    Path(path).write_text("10\n")
    events = mqtt.subscribe(EVENTS)
    first = children(settings_for(broker, store_log.store), after=0)
    wait_for_position(events, end)
    assert first.close_stdin() == 0
    assert positions(events.messages()) == list(range(11, end + 1))
    Path(path).write_text(f"{end + 500}\n")  # e.g. a store replaced by a shorter one
    events.clear()
    second = children(settings_for(broker, store_log.store), after=0)
    assert second.wait_logged("relay.started")["position"] == end
    store_log.burst(3)
    second.hint(end + 3)
    wait_for_position(events, end + 3)
    assert second.close_stdin() == 0
    assert positions(events.messages()) == [end + 1, end + 2, end + 3]


@BOTH_BACKENDS
@pytest.mark.parametrize("stop", ["eof", "SIGTERM"])
def test_eof_of_stdin_or_sigterm_drains_to_the_end_of_the_log_and_exits_0(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child], stop: str,
) -> None:
    events = mqtt.subscribe(EVENTS)
    child = children(settings_for(broker, store_log.store))
    child.wait_logged("relay.started")
    store_log.burst(5000)  # committed without a hint, just before the writer stops
    end = log_position(store_log.app)
    if stop == "eof":
        assert child.close_stdin() == 0
    else:
        child.process.send_signal(signal.SIGTERM)
        assert child.process.wait(15) == 0
    assert positions(wait_for_count(events, end, timeout=10)) == list(range(1, end + 1))
    assert published_position(store_log.store) == end
    stopped = child.wait_logged("relay.stopped")
    assert (stopped["reason"], stopped["position"], stopped["unconfirmed"]) == (stop, end, 0)


@BOTH_BACKENDS
def test_a_relay_killed_with_sigkill_resumes_after_its_recorded_position(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.burst(20_000)
    end = log_position(store_log.app)
    events = mqtt.subscribe(EVENTS)
    settings = settings_for(broker, store_log.store)
    first = children(settings)
    wait_for_count(events, 5000, timeout=15)
    ends = connection_ends(broker, settings)
    first.kill()
    recorded = published_position(store_log.store)
    assert recorded is not None
    assert recorded < end  # killed mid-stream
    # what the broker took before the kill, all arrived
    before = positions(taken_before_its_end(broker, settings, ends, events,
                                            "att/job-manager/events/marker"))
    assert before == list(range(1, len(before) + 1))  # in order, no gap
    assert recorded <= before[-1]  # only positions the broker acknowledged are recorded
    events.clear()
    second = children(settings)
    wait_for_position(events, end)
    assert second.close_stdin() == 0
    after = positions(events.messages())
    assert after == list(range(recorded + 1, end + 1))  # no gap; copies only after `recorded`


def test_a_broker_restart_loses_nothing_unacknowledged_publishes_are_sent_again(
    broker: Broker, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.burst(30_000)
    end = log_position(store_log.app)
    subscriber = TestClient(broker.url, client_id="events-subscriber", clean_start=False,
                            session_expiry=600).connect()
    try:
        events = subscriber.subscribe(EVENTS)
        child = children(settings_for(broker, store_log.store))
        wait_for_count(events, 3000, timeout=15)
        broker.stop()  # SIGTERM: the broker saves the subscriber's queue
        broker.start()
        subscriber.wait_connected(timeout=15)
        # 30,000 events: a few seconds here, much longer on a loaded 2-core machine (a bound
        # on liveness, not a speed figure)
        got = positions(wait_for_count(events, end, timeout=120))
        # ... and wait a little for the copies of the in-flight ones, then drain the rest
        wait_for_position(events, end, timeout=60)
        assert child.close_stdin() == 0
        received = set(positions(events.messages()))
        assert received == set(range(1, end + 1)), sorted(set(range(1, end + 1)) - received)[:20]
        assert got[0] == 1
        assert published_position(store_log.store) == end
    finally:
        subscriber.close()


def test_a_relay_started_before_the_broker_publishes_once_it_is_up(
    broker: Broker, store_log: Log, children: Callable[..., Child],
) -> None:
    broker.stop()
    store_log.burst(10)
    end = log_position(store_log.app)
    child = children(settings_for(broker, store_log.store))
    time.sleep(0.5)
    broker.start()
    with TestClient(broker.url) as mqtt:
        events = mqtt.subscribe(EVENTS)
        store_log.burst(1)
        child.hint(end + 1)
        wait_for_position(events, end + 1)
    assert child.close_stdin() == 0
    assert published_position(store_log.store) == end + 1


# The writer's handle -----------------------------------------------------------------------


@pytest.fixture
def handle(broker: Broker, store_log: Log) -> Iterator[EventsRelay]:
    relay = EventsRelay(settings_for(broker, store_log.store))
    yield relay
    relay.stop(timeout=10)


@BOTH_BACKENDS
def test_a_store_written_while_the_relay_runs_is_published_soon_after_each_notify(
    mqtt: TestClient, store_log: Log, handle: EventsRelay,
) -> None:
    events = mqtt.subscribe(EVENTS)
    handle.start(after=log_position(store_log.app))
    store_log.ok("job.add", {"name": "backup", "script": "b.sh", "trigger": "alarm"})
    wait_for_position(events, log_position(store_log.app), timeout=10)  # started and up
    latencies = []
    for n in range(30):
        store_log.notify("alarm", {"id": f"n-{n}"})
        committed = time.monotonic()
        position = log_position(store_log.app)
        handle.notify(position)
        handle.check()
        wait_for_position(events, position, timeout=5)
        latencies.append(time.monotonic() - committed)
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.05, latencies  # the hint, not the 0.5 s poll
    assert handle.stop() == 0
    assert [m.payload for m in events.messages()] == expected(store_log.store, after=1)
    assert published_position(store_log.store) == log_position(store_log.app)


@BOTH_BACKENDS
def test_a_relay_that_dies_is_restarted_and_resumes_from_its_recorded_position(
    mqtt: TestClient, store_log: Log, handle: EventsRelay,
) -> None:
    events = mqtt.subscribe(EVENTS)
    handle.start(after=0)
    end = log_position(store_log.app)
    wait_for_position(events, end, timeout=10)
    first = handle.pid
    assert first is not None
    deadline = time.monotonic() + 5
    while published_position(store_log.store) != end:  # saved within ~0.2 s
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(first, signal.SIGKILL)
    store_log.burst(5)
    handle.notify(end + 5)  # into a dead pipe: dropped, never raised
    deadline = time.monotonic() + 10
    while handle.pid in (None, first):
        assert time.monotonic() < deadline, "not restarted"
        handle.check()
        time.sleep(0.02)
    wait_for_position(events, end + 5, timeout=10)
    assert handle.stop() == 0
    assert positions(events.messages()) == list(range(1, end + 6))


def frozen_relay(broker: Broker, store: str) -> tuple[EventsRelay, int]:
    """A started relay, stopped with SIGSTOP: it reads nothing and never exits by itself."""
    relay = EventsRelay(settings_for(broker, store))
    relay.start(after=0)
    assert relay.pid is not None
    os.kill(relay.pid, signal.SIGSTOP)
    return relay, relay.pid


def test_notify_never_blocks_when_the_relay_does_not_read(
    store_log: Log, broker: Broker,
) -> None:
    relay, pid = frozen_relay(broker, store_log.store)
    try:  # the pipe fills up
        began = time.monotonic()
        for position in range(1, 50_001):
            relay.notify(position)
        assert time.monotonic() - began < 2.0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert relay.stop(timeout=10) == 0


def test_stop_kills_a_relay_that_does_not_finish_in_time(
    store_log: Log, broker: Broker,
) -> None:
    relay, _ = frozen_relay(broker, store_log.store)
    assert relay.stop(timeout=0.5) == -signal.SIGKILL


def test_the_relay_environment_holds_only_its_settings_and_no_other_att_jm_variable(
    tmp_path: Path,
) -> None:
    settings = Settings(mqtt_url="mqtt://u:secret@127.0.0.1:1884", store="rel/att-jm.db",
                        topic_prefix="site/a", client_id="jm-1", log_format=None)
    env = relay_environ(settings, {"PATH": "/bin", "ATT_JM_CONFIG": "x.toml",
                                   "ATT_JM_SCRIPTS": "/s", "ATT_JM_LOG_FORMAT": "console"})
    assert env == {
        "PATH": "/bin", "ATT_JM_MQTT_URL": "mqtt://u:secret@127.0.0.1:1884",
        "ATT_JM_STORE": str(Path("rel/att-jm.db").resolve()), "ATT_JM_TOPIC_PREFIX": "site/a",
        "ATT_JM_CLIENT_ID": "jm-1", "ATT_JM_VIEWS_DB": str(Path("rel/att-jm.views.db").resolve()),
        "ATT_JM_VIEW_ROWS": "1000", "ATT_JM_VIEW_MAX_BYTES": "1048576",
        "ATT_JM_MQTT_FAST_PATHS": "True",  # the writer's switch (att_jm.mqtt.fast_paths)
        "ATT_JM_RELAY_NICE": "19",  # its own priority (the relay sets it at its start)
        "ATT_JM_CONFIG": "none",  # no settings file of its own: exactly the writer's
    }
    secure = Settings(mqtt_username="att-job-manager", secrets_dir="/site/secrets",
                      tls_ca_file="/site/tls/ca.crt")
    env = relay_environ(secure, {})
    assert (env["ATT_JM_MQTT_USERNAME"], env["ATT_JM_SECRETS_DIR"], env["ATT_JM_TLS_CA_FILE"]) \
        == ("att-job-manager", "/site/secrets", "/site/tls/ca.crt")
    # bench/timeline.py's marks (att_jm/timeline.py) are taken in both processes or none.
    marked = relay_environ(settings, {"ATT_JM_TIMELINE": "/tmp/marks", "ATT_JM_SCRIPTS": "/s"})
    assert marked["ATT_JM_TIMELINE"] == "/tmp/marks" and "ATT_JM_SCRIPTS" not in marked


# The views --------------------------------------------------------------------------------

VIEW_NAMES = ("jobs", "queue", "executed", "failed", "settings")


@BOTH_BACKENDS
def test_every_view_is_published_retained_as_the_views_file_holds_it(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.every_event_type()
    child = children(settings_for(broker, store_log.store))
    child.wait_logged("relay.started")
    time.sleep(0.5)
    for name in VIEW_NAMES:
        message = mqtt.retained_message(f"att/job-manager/views/{name}")
        assert message.json() == store_log.views.payload(name, 1000)
        assert (message.prop("ContentType"), message.retain) == ("application/json", True)
    assert child.close_stdin() == 0


@BOTH_BACKENDS
def test_a_changed_view_is_published_again_coalesced_and_the_last_state_at_a_stop(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child],
) -> None:
    settings = settings_for(broker, store_log.store)
    child = children(settings)
    jobs = mqtt.subscribe("att/job-manager/views/jobs")
    wait_for_count(jobs, 1)  # the first publication, after connecting
    began = time.monotonic()
    for n in range(40):  # 40 changes in ~0.4 s (longer on PostgreSQL or a loaded machine)
        store_log.ok("job.add", {"name": f"j{n}", "script": "ok", "trigger": "t"})
        child.hint(log_position(store_log.app))
        assert child.process.stdin is not None
        child.process.stdin.write(b"v\n")
        child.process.stdin.flush()
        time.sleep(0.01)
    changing = time.monotonic() - began
    ends = connection_ends(broker, settings)
    assert child.close_stdin() == 0  # the stop publishes what changed since the last one
    received = [m.json() for m in taken_before_its_end(
        broker, settings, ends, jobs, "att/job-manager/views/jobs")]
    assert received[-1] == store_log.views.payload("jobs", 1000)
    assert len(received[-1]["rows"]) == 40
    # the first, at most one per period while the changes came, and the last
    assert len(received) <= 1 + changing / VIEW_PERIOD + 2, (len(received), changing)
    assert [r["position"] for r in received] == sorted({r["position"] for r in received})


def running_then_broker_killed(
    broker: Broker, store_log: Log, children: Callable[..., Child],
) -> Child:
    """A relay that published a log of every event type, then its broker SIGKILLed."""
    store_log.every_event_type()
    child = children(settings_for(broker, store_log.store))
    child.wait_logged("relay.started")
    time.sleep(0.5)
    broker.kill()
    return child


def test_the_views_are_published_again_after_a_broker_restart(
    broker: Broker, store_log: Log, children: Callable[..., Child],
) -> None:
    # A broker restarted from an older save (or none) holds older retained views, or none.
    child = running_then_broker_killed(broker, store_log, children)
    for stale in broker.persistence_dir.glob("*"):
        stale.unlink()  # it comes back with nothing retained
    broker.start()
    deadline = time.monotonic() + 15
    while sum(line["event"] == "mqtt.connected" for line in child.logs()) < 2:
        assert time.monotonic() < deadline, "the relay did not reconnect"
        time.sleep(0.05)
    time.sleep(0.3)
    with TestClient(broker.url) as watcher:
        for name in VIEW_NAMES:
            assert watcher.retained(f"att/job-manager/views/{name}", timeout=15) == (
                store_log.views.payload(name, 1000))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_relay_without_its_broker_waits_instead_of_spinning(
    broker: Broker, store_log: Log, children: Callable[..., Child],
) -> None:
    child = running_then_broker_killed(broker, store_log, children)
    time.sleep(0.5)
    before = cpu_seconds(child.process.pid)
    time.sleep(2.0)
    assert cpu_seconds(child.process.pid) - before < 0.3  # reconnect attempts only


# Credentials, the broker's refusals, paho's hooks -------------------------------------------

PASSWORDS = {"att-job-manager": "jm-secret", "alice": "alice-secret"}


@pytest.fixture
def acl_broker(broker_factory: BrokerFactory, tmp_path: Path) -> Broker:
    passwords = make_password_file(tmp_path / "passwd", PASSWORDS)
    return broker_factory(allow_anonymous=False, password_file=passwords, acl_file=SHIPPED_ACL)


def with_user(broker: Broker, user: str, store: str) -> Settings:
    url = f"mqtt://{user}:{PASSWORDS[user]}@{broker.host}:{broker.port}"
    return Settings(mqtt_url=url, store=store, client_id="att-job-manager", log_format="json")


def test_the_relay_publishes_as_the_service_user_given_in_its_environment_only(
    acl_broker: Broker, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.burst(10)
    end = log_position(store_log.app)
    with TestClient(acl_broker.url, username="alice", password=PASSWORDS["alice"]) as alice:
        events = alice.subscribe(EVENTS)  # every user may read the events
        child = children(with_user(acl_broker, "att-job-manager", store_log.store))
        argv = Path(f"/proc/{child.process.pid}/cmdline").read_bytes()
        assert b"jm-secret" not in argv
        wait_for_position(events, end)
        assert child.close_stdin() == 0
    assert positions(events.messages()) == list(range(1, end + 1))


def test_a_publish_the_broker_refuses_is_logged_and_the_relay_goes_on(
    acl_broker: Broker, store_log: Log, children: Callable[..., Child],
) -> None:
    end = log_position(store_log.app) + 2
    store_log.burst(2)
    child = children(with_user(acl_broker, "alice", store_log.store))  # may not publish events
    # A deadline for progress, not a speed: the relay runs at a lower priority (relay_nice)
    # and a loaded machine may give it little time.
    deadline = time.monotonic() + 60
    while published_position(store_log.store) != end:
        assert time.monotonic() < deadline, child.logs()
        time.sleep(0.05)
    assert child.close_stdin() == 0
    assert len([line for line in child.logs() if line["event"] == "relay.publish_refused"]) == end
    stopped = [line for line in child.logs() if line["event"] == "relay.stopped"]
    assert (stopped[0]["position"], stopped[0]["refused"]) == (end, end)


def test_the_publisher_reports_each_puback_with_or_without_subscribers(
    broker: Broker, mqtt: TestClient,
) -> None:
    acked: list[tuple[int, bool]] = []
    connection = PublishConnection(parse_mqtt_url(broker.url), client_id="publisher-test",
                                   on_acked=lambda mid, ok: acked.append((mid, ok)))
    mids = [connection.publish("att/job-manager/events/x", b"{}") for _ in range(3)]
    connection.start()  # published before the connection: sent once it is up
    deadline = time.monotonic() + 10
    while len(acked) < 3:  # no subscriber: "No matching subscribers", a success
        assert time.monotonic() < deadline
        connection.poll(0.05)
    events = mqtt.subscribe("att/job-manager/events/#")
    mids.append(connection.publish("att/job-manager/events/x", b'{"n":4}'))
    while len(acked) < 4:  # a subscriber: "Success"
        assert time.monotonic() < deadline
        connection.poll(0.05)
    connection.stop()
    assert acked == [(mid, True) for mid in mids]
    assert [m.payload for m in events.wait_for_count(1)] == [b'{"n":4}']


# Rows it cannot publish as they are ----------------------------------------------------------

NOTIFICATION = "att_jm:Notification.Received"


def forge(store: str, rows: list[tuple[Any, Any, Any, Any]]) -> list[int]:
    """Append rows (originator id, version, topic, state) straight into the store's SQLite
    table, as a damaged or hand-edited file would hold them; their positions."""
    db = sqlite3.connect(store, isolation_level=None)
    try:
        positions = []
        for row in rows:
            cursor = db.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?)", row)
            assert cursor.lastrowid is not None
            positions.append(cursor.lastrowid)
        return positions
    finally:
        db.close()


def forge_text_row(store: str, topic_bytes: bytes) -> int:
    """A row whose topic is TEXT that is not UTF-8 (what no sqlite3 reader can decode)."""
    db = sqlite3.connect(store, isolation_level=None)
    try:
        cursor = db.execute(
            "INSERT INTO stored_events VALUES (?, 1, CAST(? AS TEXT), ?)",
            (uuid4().hex, topic_bytes, notification_state("bad-topic")),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid
    finally:
        db.close()


def notification_state(notification_id: str, **payload: Any) -> bytes:
    """The stored state of a `notification.received` (as the transcoder writes it)."""
    return orjson.dumps({
        "timestamp": {"_type_": "datetime_iso", "_data_": "2026-03-02T08:00:01.250000+00:00"},
        "originator_topic": "att_jm.domain.notifications:Notification",
        "notification_id": notification_id, "trigger": "t",
        "payload": {"id": notification_id, **payload}, "enqueued": [], "skipped": [],
        "actor": "channel-manager",
    })


def by_position(events: Subscription) -> dict[int, dict[str, Any]]:
    return {message["position"]: message for message in (m.json() for m in events.messages())}


def test_rows_no_message_can_be_made_of_are_published_as_undecodable_in_order(
    broker: Broker, mqtt: TestClient, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.burst(3)
    garbage_time = orjson.loads(notification_state("t"))
    garbage_time["timestamp"] = {"_type_": "datetime_iso", "_data_": "garbage"}
    big = "x" * 3_000_000  # a 3 MB state: over EVENT_MESSAGE_MAX_BYTES
    aggregate = uuid4()
    forged = forge(store_log.store, [
        (uuid4().hex, 1, NOTIFICATION, b"{not json"),
        (uuid4().hex, 1, NOTIFICATION, b"[1, 2]"),
        (uuid4().hex, 1, NOTIFICATION, orjson.dumps(garbage_time)),
        (aggregate.hex, 1, NOTIFICATION, notification_state("big", blob=big, n=[big[:10]])),
        (uuid4().hex, 1, "evil:Th/ing+#.Wh\u00e9n", notification_state("evil")),
    ])
    forged.append(forge_text_row(store_log.store, b"att_jm:Bad\xff.Topic"))
    store_log.burst(3)
    end = log_position(store_log.app)
    events = mqtt.subscribe(EVENTS)
    child = children(settings_for(broker, store_log.store))
    wait_for_position(events, end)
    assert child.process.poll() is None  # it did not exit
    received = by_position(events)
    assert positions(events.messages()) == list(range(1, end + 1))  # every row, in order
    not_json, not_object, bad_time, big_one, evil, bad_text = (received[p] for p in forged)
    assert not_json == {"position": forged[0], "type": "notification.received", "at": None,
                        "data": None, "error": "state is not JSON"}
    assert not_object["error"] == "state is not a JSON object"
    assert (bad_time["error"], bad_time["at"], bad_time["data"]) == (
        "timestamp does not parse", None, None)
    assert (bad_text["type"], bad_text["error"]) == ("bad_.topic", "topic is not UTF-8 text")
    assert (evil["type"], evil["data"]["payload"]["id"]) == ("th_ing__.wh_n", "evil")
    assert big_one["cut"] is True
    assert big_one["data"]["payload"] == {
        "id": "big", "n": ["xxxxxxxxxx"],
        "blob": "x" * 1024 + "\u2026[cut: 2998976 more characters]"}
    assert (big_one["data"]["aggregate_id"], big_one["data"]["version"]) == (str(aggregate), 1)
    topics = {orjson.loads(m.payload)["position"]: m.topic for m in events.messages()}
    assert topics[forged[4]] == "att/job-manager/events/th_ing__.wh_n"
    assert child.close_stdin() == 0
    logs = child.logs()
    undecodable = [line for line in logs if line["event"] == "relay.row_undecodable"]
    assert sorted(line["position"] for line in undecodable) == sorted(
        [forged[0], forged[1], forged[2], forged[5]])  # once per row
    assert [line["position"] for line in logs if line["event"] == "relay.event_cut"] == [
        forged[3]]
    assert not [line for line in logs if line["event"] == "relay.failed"]
    assert published_position(store_log.store) == end
    # the log keeps the whole event
    assert StoreReader(store_log.store).row(forged[3]) is not None


def connects(child: Child) -> int:
    return sum(line["event"] == "mqtt.connected" for line in child.logs())


def test_a_broker_with_a_small_maximum_packet_size_gets_cut_events_and_views_only(
    broker_factory: BrokerFactory, store_log: Log, children: Callable[..., Child],
) -> None:
    small = broker_factory(extra_config=["max_packet_size 100000"])
    for n in range(120):  # a jobs view of ~160 KB
        store_log.ok("job.add", {"name": f"job-{n:03d}", "script": "ok", "trigger": "t",
                                 "command": f"{n}-" + "c" * 1000})
    store_log.burst(2)
    (before,) = forge(store_log.store, [
        (uuid4().hex, 1, NOTIFICATION, notification_state("big-1", blob="y" * 300_000))])
    store_log.burst(2)
    with TestClient(small.url) as watcher:
        events = watcher.subscribe(EVENTS)
        child = children(settings_for(small, store_log.store))
        end = log_position(store_log.app)
        wait_for_position(events, end)
        # ... and one more while connected
        (after,) = forge(store_log.store, [
            (uuid4().hex, 1, NOTIFICATION, notification_state("big-2", blob="z" * 99_990))])
        store_log.burst(1)
        child.hint(after + 1)
        wait_for_position(events, after + 1)
        received = by_position(events)
        assert positions(events.messages()) == list(range(1, after + 2))
        for position, letter in ((before, "y"), (after, "z")):
            assert received[position]["cut"] is True
            blob = received[position]["data"]["payload"]["blob"]
            assert blob.startswith(letter * 1024 + "\u2026[cut: ")
        assert all("cut" not in received[p] for p in received if p not in (before, after))
        jobs = watcher.retained_message("att/job-manager/views/jobs")
        shown = jobs.json()
        packet = len(jobs.payload) + len(jobs.topic) + 9 + 20  # headers, ContentType
        assert packet <= 100_000
        full = store_log.views.payload("jobs", 1000)
        assert 0 < len(shown["rows"]) < 120
        assert shown["rows"] == full["rows"][: len(shown["rows"])]
        assert shown["omitted"] == 120 - len(shown["rows"])
    assert child.close_stdin() == 0
    assert connects(child) == 1  # never dropped by the broker, so never reconnected
    assert [line["reason"] for line in child.logs() if line["event"] == "mqtt.disconnected"] == [
        "Normal disconnection"]  # its own, at the stop
    assert "exceeded" not in small.log_text().lower()
    assert published_position(store_log.store) == after + 1


def test_queued_publishes_over_a_restarted_brokers_smaller_limit_are_read_again_cut(
    broker: Broker, store_log: Log, children: Callable[..., Child],
) -> None:
    store_log.burst(3)
    child = children(settings_for(broker, store_log.store))
    with TestClient(broker.url) as watcher:
        events = watcher.subscribe(EVENTS)
        wait_for_position(events, log_position(store_log.app))
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)  # it takes no more packets: nothing is acknowledged
    (big,) = forge(store_log.store, [
        (uuid4().hex, 1, NOTIFICATION, notification_state("big", blob="w" * 500_000))])
    store_log.burst(3)
    end = log_position(store_log.app)
    child.hint(end)
    time.sleep(0.5)  # published (un-acked) at the stopped broker's full size
    broker.kill()
    with broker.config_path.open("a") as config:
        config.write("max_packet_size 100000\n")
    broker.start()
    with TestClient(broker.url) as watcher:
        events = watcher.subscribe(EVENTS)
        deadline = time.monotonic() + 15
        while published_position(store_log.store) != end:
            assert time.monotonic() < deadline, child.logs()
            time.sleep(0.05)
        got = by_position(events)
    assert child.close_stdin() == 0
    rewound = [line for line in child.logs() if line["event"] == "relay.rewound"]
    assert [(line["position"], line["oversized"]) for line in rewound] == [(big - 1, 1)]
    assert connects(child) == 2  # the first connection and the one after the restart
    if big in got:  # the watcher subscribed before the relay was back: it saw the cut copy
        assert got[big]["cut"] is True
        assert sorted(got) == list(range(min(got), end + 1))


def niceness(pid: int) -> int:
    """The nice value of process `pid` (field 19 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def may_return_to_a_lower_niceness() -> bool:
    """Whether a process of this user may lower its niceness again (CAP_SYS_NICE, or an
    RLIMIT_NICE that allows it), found by trying it in a child."""
    code = ("import os; n = os.getpriority(os.PRIO_PROCESS, 0); "
            "os.setpriority(os.PRIO_PROCESS, 0, n + 1); os.setpriority(os.PRIO_PROCESS, 0, n)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          check=False).returncode == 0


@pytest.mark.parametrize("nice", [0, 10, 19])
def test_the_relay_publishes_at_the_writers_niceness_once_caught_up(
    broker: Broker, store_log: Log, mqtt: TestClient, nice: int,
) -> None:
    """It starts at `relay_nice` (a backlog may wait) and, once it has published everything,
    returns to the niceness it was started with where the system allows it (else it stays
    at `relay_nice`: att_jm.relay.priority; tests/unit/test_relay_priority.py has the rest)."""
    events = mqtt.subscribe(EVENTS)
    relay = EventsRelay(dataclasses.replace(settings_for(broker, store_log.store),
                                            relay_nice=nice))
    own = niceness(os.getpid())
    expected = own if may_return_to_a_lower_niceness() else max(nice, own)
    try:
        relay.start(after=0)
        store_log.ok("job.add", {"name": "backup", "script": "b.sh", "trigger": "alarm"})
        relay.notify(log_position(store_log.app))
        wait_for_position(events, log_position(store_log.app), timeout=10)
        assert relay.pid is not None
        deadline = time.monotonic() + 10  # its turn ends after the PUBACKs it waited for
        while niceness(relay.pid) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert niceness(relay.pid) == expected
    finally:
        relay.stop(timeout=10)
