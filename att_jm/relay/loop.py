"""The relay process's loop: read the log, publish in order, follow the PUBACKs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from att_jm import timeline
from att_jm.config import Settings
from att_jm.log.messages import (
    EVENT_MESSAGE_MAX_BYTES,
    MAX_TYPE_CHARS,
    cut_message,
    row_message,
    undecodable_message,
)
from att_jm.log.rows import StoreReader
from att_jm.mqtt.publisher import PublishConnection
from att_jm.relay.constants import DRAIN_SECONDS, LOG_POLL, PAGE, SAVE_EVERY, WINDOW
from att_jm.relay.pipe import WriterPipe
from att_jm.relay.priority import Priority
from att_jm.relay.views import ViewsPublisher
from att_jm.relay.window import PublishedPosition, Window
from att_jm.topics import Topics

log = structlog.get_logger("att_jm.relay")


class Relay:
    """The relay process's loop (see the module docstring)."""

    def __init__(
        self, settings: Settings, after: int, *, wake_fd: int | None, stop_fd: int | None = None,
        answer_fd: int | None = None, monotonic: Callable[[], float] = time.monotonic,
        priority: Priority | None = None,
    ) -> None:
        self.settings = settings
        self.prefix = Topics(settings.topic_prefix).events_root  # + an event's type
        self.recorded = PublishedPosition(settings.store)
        self.reader = StoreReader(settings.store)
        recorded = self.recorded.read()
        end = self.reader.max_position()
        self.source = "--after" if recorded is None else "position file"
        start = min(after if recorded is None else recorded, end)
        self.window = Window(start)
        self.sent = start  # the last position published
        self.saved = start if recorded == start else -1
        self.saved_at = 0.0
        self.caught_up = False  # the last read reached the log's end
        self.next_read = 0.0
        self.published = 0
        self.refused = 0
        self.stopping: str | None = None
        # A message longer than this (bytes) is looked at before it is published: over
        # EVENT_MESSAGE_MAX_BYTES or over what the broker takes on its topic (`_on_connect`).
        self.event_limit = EVENT_MESSAGE_MAX_BYTES
        self.pipe = WriterPipe(wake_fd, stop_fd, answer_fd)
        self.priority = priority
        self._monotonic = monotonic
        self.connection = PublishConnection(
            settings.mqtt, client_id=f"{settings.client_id}.events", on_acked=self._acked,
            on_connect=self._on_connect, monotonic=monotonic,
            fast_paths=settings.mqtt_fast_paths,
        )
        self.views = ViewsPublisher(
            settings.views_path(), settings.topic_prefix, settings.view_rows,
            lambda topic, payload: self.connection.publish(topic, payload, retain=True),
            max_bytes=settings.view_max_bytes,
            room=self.connection.payload_room,
        )
        self.log = log.bind(store=settings.store_shown)
        self.log.info("relay.started", position=start, source=self.source, log_end=end,
                      pid=os.getpid())

    def run(self) -> int:
        self.connection.start()
        deadline = float("inf")
        started = self._monotonic()
        while True:
            self._read_pipe()
            timeline.mark("turn", self.pipe.hint)
            self.pipe.answer(self.window.confirmed, self.connection.connected)
            now = self._monotonic()
            if self.stopping is not None and deadline == float("inf"):
                deadline = now + DRAIN_SECONDS
                self.caught_up = False  # read up to the log's end once more
                self.log.info("relay.stopping", reason=self.stopping, sent=self.sent,
                              position=self.window.confirmed)
            backlog = self.pipe.hint - self.sent
            if self.priority is not None:  # before the reads: how they will be scheduled
                self.priority.follow(backlog, self.caught_up)
            if self._read_due(now):
                self._publish_more(now)
            if self.priority is not None:
                self.priority.follow(backlog, self.caught_up)
            if self.connection.connected:
                self.views.check(now)
            self._save(now)
            if self.stopping is not None and (
                (self._read_all() and not self.window) or now >= deadline
            ):
                if self.connection.connected:
                    self.views.check(now, final=True)
                break
            wait = self._wait(now, deadline)
            if self.connection.connected:  # no view is published while disconnected
                wait = min(wait, self.views.wait(now))
            self.connection.poll(wait, self.pipe.fds())
        self._save(self._monotonic(), force=True)
        self.connection.stop()
        self.reader.close()
        self.views.close()
        self.recorded.close()
        self.log.info("relay.stopped", reason=self.stopping, position=self.window.confirmed,
                      sent=self.sent, unconfirmed=len(self.window), published=self.published,
                      refused=self.refused, seconds=round(self._monotonic() - started, 3))
        return 0

    # Reading and publishing --------------------------------------------------------------

    def _read_due(self, now: float) -> bool:
        if len(self.window) >= WINDOW or not self.connection.connected:
            return False  # not connected: the broker's limit is not known (and nobody reads)
        return not self.caught_up or self.pipe.hint > self.sent or now >= self.next_read

    def _publish_more(self, now: float) -> None:
        """Publish rows after `sent` until the window is full or the log's end is reached."""
        # Not corked (TCP_CORK): the broker then passes on the first event while the others
        # are being written (measured: corked, publish -> enqueued event p50 +0.07 ms).
        publish, prefix, window = self.connection.publish, self.prefix, self.window
        limit, dumps = self.event_limit, orjson.dumps
        while (room := WINDOW - len(window)) > 0 and self.connection.connected:
            count = min(PAGE, room)
            asked = timeline.now() if timeline.ON else 0
            rows = self._page(count)
            if rows:
                timeline.mark("read", rows[0][0], len(rows), asked)
            for row in rows:
                try:
                    message = row_message(row)
                    payload = dumps(message)
                except Exception as error:  # noqa: BLE001 -- a row no message can be made of
                    message = self._undecodable(row, error)
                    payload = dumps(message)
                if len(payload) > limit:
                    cut = self._fit(message, payload)
                    if cut is None:
                        window.skip(row[0])
                        continue
                    payload = cut
                window.add(publish(prefix + message["type"], payload), row[0])
            if rows:
                timeline.mark("published", rows[0][0], rows[-1][0])
                self.sent = rows[-1][0]
                self.published += len(rows)
            if len(rows) < count:
                self.caught_up = True
                self.next_read = now + LOG_POLL
                return
        self.caught_up = False  # the window is full (more to read once PUBACKs come), or the
        # connection was lost while publishing

    def _read_all(self) -> bool:
        """Whether every row of the log has been published (not connected: read nothing
        since it was)."""
        if self.caught_up:
            return True
        return not self.connection.connected and self.reader.max_position() <= self.sent

    def _page(self, count: int) -> list[tuple[int, str, int, str, Any]]:
        """The next `count` rows after `sent` (a row with text that is not UTF-8 carries an
        `UndecodableText` as its state: it is published as undecodable)."""
        return self.reader.next_rows(self.sent, count)

    def _undecodable(self, row: tuple[Any, ...], error: Exception) -> dict[str, Any]:
        """The message of a row no message can be made of; logged (once: the row is read
        again only after a restart or a rewind)."""
        message = undecodable_message(row, error)
        self.log.error("relay.row_undecodable", position=row[0], type=message["type"],
                       error=message["error"])
        return message

    def _fit(self, message: dict[str, Any], payload: bytes) -> bytes | None:
        """`payload` (over `event_limit`) as it may be published: itself when it is within
        EVENT_MESSAGE_MAX_BYTES and what the broker takes on its topic, else cut; None when
        even the cut message is too large (then nothing is published for it)."""
        limit = min(EVENT_MESSAGE_MAX_BYTES,
                    self.connection.payload_room(self.prefix + message["type"]))
        if len(payload) <= limit:
            return payload
        cut = cut_message(message, limit)
        if cut is None:
            self.log.error("relay.event_skipped", position=message["position"],
                           type=message["type"], bytes=len(payload), limit=limit)
        else:
            self.log.warning("relay.event_cut", position=message["position"],
                             type=message["type"], bytes=len(payload), cut_bytes=len(cut),
                             limit=limit)
        return cut

    def _on_connect(self) -> None:
        """At a CONNACK (before paho sends its un-acked publishes again): take the broker's
        packet limit, and read the log again from the first queued event over it."""
        room = self.connection.payload_room(self.prefix) - MAX_TYPE_CHARS
        self.event_limit = min(EVENT_MESSAGE_MAX_BYTES, room)
        self.views.republish()
        oversized = self.connection.oversized()
        if not oversized:
            return
        positions = [p for mid in oversized if (p := self.window.position(mid)) is not None]
        dropped = set(oversized)
        if positions:
            first = min(positions)
            dropped.update(self.window.rewind(first))
            self.sent = first - 1
            self.caught_up = False
        self.connection.forget(dropped)
        self.log.warning("relay.rewound", oversized=len(oversized), dropped=len(dropped),
                         position=self.sent, max_packet_size=self.connection.max_packet_size)

    def _acked(self, mid: int, ok: bool) -> None:
        if not ok:  # the broker refused it (e.g. the ACL): sending it again would not help
            if mid in self.window:
                self.refused += 1
                self.log.error("relay.publish_refused", mid=mid)
            else:
                self.log.error("relay.view_refused", mid=mid)
        self.window.ack(mid)

    def _save(self, now: float, *, force: bool = False) -> None:
        confirmed = self.window.confirmed
        if confirmed == self.saved or (not force and now - self.saved_at < SAVE_EVERY):
            return
        try:
            self.recorded.write(confirmed)
        except self.recorded.errors as error:  # a full disk: the position stays behind,
            # nothing is lost
            self.log.error("relay.position_write_failed", error=repr(error))
        else:
            self.saved = confirmed
        self.saved_at = now

    def _wait(self, now: float, deadline: float) -> float:
        # Not connected: nothing is read; the CONNACK (the socket), a wake-up or a deadline
        # ends the wait.
        reading = self.connection.connected and len(self.window) < WINDOW
        if reading and not self.caught_up:
            return 0.0
        wait = max(0.0, self.next_read - now) if reading else LOG_POLL
        if self.window.confirmed != self.saved:
            wait = min(wait, max(0.0, self.saved_at + SAVE_EVERY - now))
        return min(wait, LOG_POLL, max(0.0, deadline - now))

    # Wake-ups ----------------------------------------------------------------------------

    def _read_pipe(self) -> None:
        self.pipe.read(self.sent)
        if self.pipe.eof:
            self.stopping = self.stopping or "eof"
        if self.pipe.take_views_wake():
            self.views.wake()

    def stop(self, reason: str) -> None:
        """Finish (from a signal handler: only sets a flag; the stop pipe wakes the loop)."""
        self.stopping = self.stopping or reason
