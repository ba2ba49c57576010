"""The writer's batches, driven directly (a real store, views and scripts; no broker); on an
SQLite and on a PostgreSQL store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers.postgres import BOTH_BACKENDS
from helpers.service import populate_scripts_dir

from att_jm.config import Settings
from att_jm.mqtt.adapter import Inbound
from att_jm.service import Writer, aftercommit, bootstrap

pytestmark = BOTH_BACKENDS


def message(topic: str, body: dict[str, object], correlation: bytes | None = None) -> Inbound:
    return Inbound(mid=1, qos=1, generation=0, topic=topic.encode(), payload=orjson.dumps(body),
                   response_topic=None, correlation=correlation)


def command(name: str, body: dict[str, object], n: int) -> Inbound:
    return message(f"att/job-manager/commands/tester/{name}", body, b"c-%d" % n)


def notification(nid: str) -> Inbound:
    return message("att/channel-manager/notifications/up", {"id": nid})


@pytest.fixture
def writer(tmp_path: Path, store_location: str) -> Iterator[Writer]:
    scripts = populate_scripts_dir(tmp_path / "scripts")
    w = bootstrap(Settings(store=store_location, scripts=str(scripts)))
    w.handle([command("settings.set", {"interval_seconds": 0}, 1),
                     command("job.add", {"name": "j", "script": "ok", "trigger": "up"}, 2)])
    yield w
    w.close()


def states(writer: Writer) -> list[tuple[str, str]]:
    """The queue view as a views.get reads it (while a script runs the views may wait for a
    batch's events: a read brings them up to the log first)."""
    writer.parts.after.flush_views()
    return [(row["notification_id"], row["state"]) for row in writer.parts.views.rows("queue", 100)]


def test_a_notification_meeting_an_idle_queue_is_started_in_its_own_transaction(
    writer: Writer,
) -> None:
    writer.handle([notification("n-1"), notification("n-2")])  # no tick in between
    assert states(writer) == [("n-1", "running"), ("n-2", "queued")]
    assert writer.slot.fds()  # the script runs


def test_a_batch_with_a_command_leaves_the_start_to_the_next_turn(writer: Writer) -> None:
    writer.handle([notification("n-1"), command("views.get", {"view": "jobs"}, 3)])
    assert states(writer) == [("n-1", "queued")]
    writer.tick()
    assert states(writer) == [("n-1", "running")]


def test_one_entry_runs_at_a_time_however_many_notifications_arrive(writer: Writer) -> None:
    writer.handle([command("settings.set", {"interval_seconds": 3600}, 4)])
    writer.handle([notification("n-1")])
    writer.handle([notification("n-2")])
    assert states(writer) == [("n-1", "running"), ("n-2", "queued")]


def spied_order(writer: Writer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the writer does after a commit, in order: the relay woken (`wake`), the batch
    acknowledged (`ack`), a reply sent (`reply`); the real methods still run."""
    calls: list[str] = []

    def spy(obj: object, name: str, label: str) -> None:
        real = getattr(obj, name)

        def recorded(*args: object, **kwargs: object) -> object:
            calls.append(label)
            return real(*args, **kwargs)
        monkeypatch.setattr(obj, name, recorded)

    spy(writer.relay, "notify", "wake")
    spy(writer.relay, "ask", "wake")
    spy(writer.connection, "ack_all", "ack")
    spy(writer.connection, "reply", "reply")
    return calls


def test_a_batch_without_replies_wakes_the_relay_before_it_is_acknowledged(
    writer: Writer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = spied_order(writer, monkeypatch)
    writer.handle([notification("n-1"), notification("n-2")])
    # Subscribers wait for the events, nobody for the acknowledgements.
    assert calls.index("wake") < calls.index("ack")


def test_a_batch_with_a_reply_sends_it_and_acknowledges_before_the_relay_is_woken(
    writer: Writer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = spied_order(writer, monkeypatch)
    reply_to = Inbound(mid=2, qos=1, generation=0,
                       topic=b"att/job-manager/commands/tester/settings.set",
                       payload=orjson.dumps({"interval_seconds": 7}),
                       response_topic="att/job-manager/replies/tester", correlation=b"c-9")
    writer.handle([reply_to, notification("n-1")])
    # The requester waits for its reply.
    assert calls.index("reply") < calls.index("ack") < calls.index("wake")


def test_while_more_messages_wait_the_views_take_a_batch_later(writer: Writer) -> None:
    """In a burst (the inbox not empty after a commit) the views wait, as while a script runs
    (VIEWS_DEFER_SECONDS or VIEWS_DEFER_EVENTS at most), and take every waiting batch in one
    transaction once the inbox is empty: a read still sees every committed batch."""
    views = writer.parts.views
    quiet = message("att/channel-manager/notifications/none", {"id": "q-0"})  # no job: no start
    writer.handle([quiet])
    assert views.position == writer.parts.position()  # nothing waited: applied at once
    writer.inbox.put_local(message("att/channel-manager/notifications/none", {"id": "q-2"}))
    writer.handle([message("att/channel-manager/notifications/none", {"id": "q-1"})])
    assert not writer.slot.fds()
    assert views.position < writer.parts.position()  # q-2 waits: the views wait too
    writer.handle(writer.inbox.drain(writer.parts.max_batch))  # the inbox is empty after it
    assert views.position == writer.parts.position()


def test_after_a_batch_of_commands_the_relay_and_the_views_wait_a_moment(
    writer: Writer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The requester's client takes its reply while the relay and the views wait
    (REPLY_QUIET_SECONDS, lengthened here so that the wait can be seen), then both catch up
    from the writer's timers."""
    monkeypatch.setattr(aftercommit, "REPLY_QUIET_SECONDS", 0.5)
    writer.tick()  # the first turn's timers (Auto Cleanup's first run commits)
    calls = spied_order(writer, monkeypatch)
    views = writer.parts.views
    begun = time.monotonic()
    writer.handle([command("settings.set", {"interval_seconds": 7}, 5)])
    writer.tick()
    assert calls == ["ack"]  # the command was answered and acknowledged, the relay not woken
    assert views.position < writer.parts.position()
    while "wake" not in calls:
        assert time.monotonic() - begun < 10, "the relay was never woken"
        time.sleep(0.01)
        writer.tick()
    assert time.monotonic() - begun >= 0.5
    assert views.position == writer.parts.position()


def test_the_next_batch_ends_the_wait_after_a_batch_of_commands(
    writer: Writer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A notification (or a script's end) is not held back by the commands before it: its
    commit wakes the relay for both batches' events and the views take both."""
    monkeypatch.setattr(aftercommit, "REPLY_QUIET_SECONDS", 60.0)
    calls = spied_order(writer, monkeypatch)
    views = writer.parts.views
    writer.handle([command("settings.set", {"interval_seconds": 7}, 6)])
    assert "wake" not in calls
    writer.handle([message("att/channel-manager/notifications/none", {"id": "q-1"})])
    # The command acknowledged; then the notification's batch wakes the relay (for both
    # batches' events) before its acknowledgement.
    assert calls[:3] == ["ack", "wake", "ack"]
    assert views.position == writer.parts.position()
    assert writer.parts.after.relay_wait_seconds() is None  # nothing left untold


def test_a_flood_of_commands_still_has_its_views_applied_every_views_defer_seconds(
    writer: Writer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each batch of commands starts the wait again; the views still take the waiting events
    once the oldest has waited VIEWS_DEFER_SECONDS, and the relay's limit stays the first
    untold batch's."""
    monkeypatch.setattr(aftercommit, "REPLY_QUIET_SECONDS", 60.0)
    writer.tick()  # the first turn's timers
    views = writer.parts.views
    begun = time.monotonic()
    writer.handle([command("settings.set", {"interval_seconds": 1}, 10)])
    first = writer.parts.position()
    assert views.position < first
    waited = writer.parts.after.relay_wait_seconds()
    assert waited is not None and waited > 50
    n = 11
    while views.position < first:  # a new batch of commands every few milliseconds
        assert time.monotonic() - begun < 10, "the views never took the flood's events"
        time.sleep(0.005)
        writer.handle([command("settings.set", {"interval_seconds": n % 2}, n)])
        n += 1
    assert time.monotonic() - begun >= aftercommit.VIEWS_DEFER_SECONDS
    assert n > 12  # several batches came and went meanwhile
    left = writer.parts.after.relay_wait_seconds()
    assert left is not None and left < waited - aftercommit.VIEWS_DEFER_SECONDS / 2
