"""A script dispatched onto an idle queue starts once the broker has taken its events.

The writer asks the relay (`w<N>` on its stdin) to say when position N is confirmed (its
PUBACK arrived); the relay answers `<N>` on its stdout. The writer holds the start until the
answer, until HOLD_START_SECONDS have passed, or until something else is to be handled.
Real relay processes and a real mosquitto; the writer is driven directly (no MQTT client of
its own), as in test_writer_batches.py.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers.broker import Broker
from helpers.mqtt import TestClient
from helpers.service import populate_scripts_dir

from att_jm.config import Settings
from att_jm.mqtt.adapter import Inbound
from att_jm.relay.handle import EventsRelay
from att_jm.service import Writer, bootstrap
from att_jm.service.aftercommit import RELAY_DEFER_SECONDS, VIEWS_DEFER_SECONDS
from att_jm.service.held import HOLD_START_SECONDS


def message(topic: str, body: dict[str, object], correlation: bytes | None = None) -> Inbound:
    return Inbound(mid=1, qos=1, generation=0, topic=topic.encode(), payload=orjson.dumps(body),
                   response_topic=None, correlation=correlation)


def notification(nid: str) -> Inbound:
    return message("att/channel-manager/notifications/up", {"id": nid})


def answered(relay: EventsRelay, position: int, timeout: float) -> bool:
    """Wait up to `timeout` s for the relay to confirm `position`."""
    deadline = time.monotonic() + timeout
    while not relay.confirmed(position):
        left = deadline - time.monotonic()
        fd = relay.answers_fd()
        if left <= 0 or fd is None:
            return relay.confirmed(position)
        select.select([fd], [], [], left)
    return True


def ready(relay: EventsRelay, position: int) -> None:
    """The relay is up and connected, and it confirmed `position` (the log's end)."""
    assert relay.ask(position)
    assert answered(relay, position, 10)  # it runs and reads its stdin (connected or not)
    deadline = time.monotonic() + 10
    while not relay_connected(relay):  # before its connection is up it answers at once
        assert time.monotonic() < deadline, "the relay never connected"
        time.sleep(0.05)


def relay_connected(relay: EventsRelay) -> bool:
    """Whether a position beyond the log's end stays unanswered (a connected relay waits)."""
    probe = 10**9 + int(time.monotonic() * 1000)
    assert relay.ask(probe)
    return not answered(relay, probe, 0.2)


@pytest.fixture
def writer(tmp_path: Path, broker: Broker) -> Iterator[Writer]:
    scripts = populate_scripts_dir(tmp_path / "scripts")
    w = bootstrap(Settings(store=str(tmp_path / "store" / "att-jm.db"), scripts=str(scripts),
                        mqtt_url=broker.url, client_id="jm-held", log_format="json"))
    w.handle([
        message("att/job-manager/commands/tester/settings.set", {"interval_seconds": 0}, b"1"),
        message("att/job-manager/commands/tester/job.add",
                {"name": "j", "script": "ok", "trigger": "up"}, b"2"),
    ])
    w.parts.after.flush_views()  # the commands' wait a moment after their replies (no tick here)
    w.relay.start(after=w.parts.position())
    yield w
    w.close()


def test_the_relay_answers_once_the_position_is_confirmed_and_not_before(
    writer: Writer, mqtt: TestClient,
) -> None:
    events = mqtt.subscribe("att/job-manager/events/#")
    ready(writer.relay, writer.parts.position())
    beyond = writer.parts.position() + 1000  # not in the log: never confirmed while connected
    assert writer.relay.ask(beyond)
    # Then a position it confirmed already: the relay reads its questions in order and, each
    # time, answers every asked position it may (all of them when not connected); once it
    # answered this one, it has passed over `beyond`.
    known = writer.parts.position()
    assert writer.relay.ask(known)
    assert answered(writer.relay, known, 10)
    assert not writer.relay.confirmed(beyond)
    writer.handle([message("att/job-manager/commands/tester/settings.set",
                                  {"interval_seconds": 5}, b"3")])
    end = writer.parts.position()
    assert writer.relay.ask(end)
    assert answered(writer.relay, end, 10)
    deadline = time.monotonic() + 10
    while not any(orjson.loads(m.payload)["position"] == end for m in events.messages()):
        assert time.monotonic() < deadline, "the confirmed events never arrived"
        time.sleep(0.01)


def test_a_start_on_an_idle_queue_is_held_until_the_relay_confirms_its_events(
    writer: Writer, mqtt: TestClient,
) -> None:
    writer.held.seconds = 30.0  # only the answer releases it
    started = mqtt.subscribe("att/job-manager/events/execution.started")
    ready(writer.relay, writer.parts.position())
    writer.handle([notification("n-1")])
    assert writer.held.pending
    assert not writer.slot.fds()  # not started yet
    position = writer.held.position
    assert position == writer.parts.position()
    assert answered(writer.relay, position, 10)
    writer.held.release()
    assert not writer.held.pending
    assert writer.slot.fds()  # the script runs
    deadline = time.monotonic() + 10
    while not started.messages():
        assert time.monotonic() < deadline, "no execution.started event"
        time.sleep(0.01)
    assert orjson.loads(started.messages()[0].payload)["position"] <= position


def spied_acks(writer: Writer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many messages each acknowledgement of the writer took (the real method runs)."""
    calls: list[int] = []
    real = writer.connection.ack_all

    def recorded(messages: list[Inbound]) -> None:
        calls.append(len(messages))
        real(messages)
    monkeypatch.setattr(writer.connection, "ack_all", recorded)
    return calls


def test_a_held_start_holds_its_batch_s_acknowledgements_and_views_until_it_goes(
    writer: Writer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the commit and the relay's answer the writer neither acknowledges (the broker
    would wake) nor updates the views (an SQLite transaction): the events' way has the cores."""
    writer.held.seconds = 30.0  # only the answer releases it
    ready(writer.relay, writer.parts.position())
    acks = spied_acks(writer, monkeypatch)
    views = writer.parts.views
    writer.handle([notification("n-1"), notification("n-2")])
    assert writer.held.pending
    assert acks == []
    assert writer.held.waiting == 1  # the batch's acknowledgement, both messages
    assert views.position < writer.parts.position()
    writer.tick()  # the writer's timers leave the views alone while the start is held
    assert views.position < writer.parts.position()
    assert answered(writer.relay, writer.held.position or 0, 10)
    writer.held.release()
    assert acks == [2]  # just before the start
    assert writer.slot.fds()  # the script runs
    time.sleep(VIEWS_DEFER_SECONDS)
    writer.tick()  # while it runs the views wait VIEWS_DEFER_SECONDS at most
    assert views.position == writer.parts.position()


def test_a_stop_acknowledges_what_a_held_start_held_and_drops_the_start(
    writer: Writer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer.held.seconds = 30.0
    ready(writer.relay, writer.parts.position())
    pid = writer.relay.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # no answer
    try:
        acks = spied_acks(writer, monkeypatch)
        writer.handle([notification("n-1")])
        assert writer.held.pending
        assert acks == []
        writer.held.drop()  # as a stop does first
        assert acks == [1]  # committed: acknowledged
        assert not writer.held.pending
        assert writer.held.waiting == 0
        assert not writer.slot.fds()  # never started
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_held_start_goes_ahead_after_its_deadline_when_the_relay_does_not_answer(
    writer: Writer,
) -> None:
    ready(writer.relay, writer.parts.position())
    pid = writer.relay.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive, reading nothing
    try:
        began = time.monotonic()
        writer.handle([notification("n-1")])
        assert writer.held.pending
        while writer.held.pending:
            assert time.monotonic() - began < 5
            time.sleep(0.001)
            writer.held.release()
        assert time.monotonic() - began >= HOLD_START_SECONDS
        assert writer.slot.fds()
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_held_start_goes_first_when_something_else_arrives(
    writer: Writer,
) -> None:
    writer.held.seconds = 30.0
    ready(writer.relay, writer.parts.position())
    pid = writer.relay.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        writer.handle([notification("n-1")])
        assert writer.held.pending
        writer.held.release()
        assert writer.held.pending  # no answer, no deadline, nothing else: still held
        writer.inbox.put_local(notification("n-2"))
        writer.held.release()
        assert not writer.held.pending
        assert writer.slot.fds()
    finally:
        os.kill(pid, signal.SIGCONT)


def test_without_a_relay_the_start_is_not_held(writer: Writer) -> None:
    writer.relay.stop(timeout=10)
    writer.handle([notification("n-1")])
    assert not writer.held.pending
    assert writer.slot.fds()


def test_a_relay_without_its_broker_answers_at_once(writer: Writer, broker: Broker) -> None:
    ready(writer.relay, writer.parts.position())
    broker.stop()
    deadline = time.monotonic() + 10
    while relay_connected(writer.relay):  # until it saw the broker go
        assert time.monotonic() < deadline, "the relay never noticed the broker leave"
    began = time.monotonic()
    writer.handle([notification("n-1")])
    position = writer.held.position
    assert position is not None
    assert answered(writer.relay, position, 1.0)
    assert time.monotonic() - began < 1.0


def test_a_relay_that_is_gone_counts_as_an_answer(writer: Writer) -> None:
    ready(writer.relay, writer.parts.position())
    pid = writer.relay.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not writer.relay.confirmed(10**9):  # EOF on its stdout
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert writer.relay.answers_fd() is None


def _until_the_script_ended(writer: Writer) -> None:
    """Follow the running script, as the writer's loop does, until its end is in the inbox."""
    deadline = time.monotonic() + 10
    while writer.inbox.empty():
        assert time.monotonic() < deadline, "the script never ended"
        readable, _, _ = select.select(writer.slot.fds(), [], [], 0.5)
        writer.slot.step(set(readable))


def test_a_hand_over_tells_the_relay_later_unless_its_batch_holds_messages(
    writer: Writer,
) -> None:
    """After a script's end started the next entry, the relay is told of that commit's
    events at most RELAY_DEFER_SECONDS later (or once the new script ends): unless the batch
    also held a notification (or a command), whose events someone waits for: then at once."""
    ready(writer.relay, writer.parts.position())
    after = writer.parts.after
    writer.handle([notification("n-1"), notification("n-2"), notification("n-3")])
    while writer.held.pending:  # n-1 waits for its events' confirmation, then starts
        assert answered(writer.relay, writer.held.position or 0, 10)
        writer.held.release()
    assert after.relay_wait_seconds() is None  # not a hand-over: told at once
    _until_the_script_ended(writer)
    writer.handle(writer.inbox.drain(writer.parts.max_batch))  # n-1's end starts n-2
    wait = after.relay_wait_seconds()
    assert wait is not None and 0.0 < wait <= RELAY_DEFER_SECONDS
    told = writer.parts.position()
    time.sleep(RELAY_DEFER_SECONDS)
    writer.tick()  # the writer's timer: the relay is told now, the script still running or not
    assert after.relay_wait_seconds() is None
    assert writer.relay.ask(told)
    assert answered(writer.relay, told, 10)
    _until_the_script_ended(writer)
    writer.inbox.put_local(notification("n-4"))  # in the same batch as n-2's end
    writer.handle(writer.inbox.drain(writer.parts.max_batch))  # n-2's end starts n-3
    assert writer.slot.fds()  # a hand-over: n-3 runs
    assert after.relay_wait_seconds() is None  # told at once: n-4's events are awaited
