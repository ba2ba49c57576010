"""The relay: a second process that publishes the log on `P/job-manager/events/{type}` and
the views on `P/job-manager/views/{name}`.

The writer stores events and keeps the views; this process tails the store file
(read-only, WAL: it never blocks the writer) and publishes every row after its position,
in log order, at QoS 1 (ContentType application/json, not retained), as
`att_jm.log.messages.row_message` builds it; and it publishes each view (retained) when it
changed, at most every `VIEW_PERIOD` s each, read from the views file in one read
transaction. So the writer's core is spared building those packets (a view of 1,000 rows
takes milliseconds) and handling their PUBACKs, and a notification or a command never
waits behind a view publication.

- Position: `<store>.events.pos` holds the last position whose PUBACK (and every earlier
  one's) has arrived. It is written as a temp file + `os.replace` (no fsync), at most every
  `SAVE_EVERY` s and at exit. On start the relay resumes after it (clamped to the log's end),
  or after `--after` when there is no such file. At least once, in order: a crash of either
  process republishes at most the un-confirmed tail (same `position`: consumers drop
  duplicates) and loses nothing. One relay per store at a time (a lock next to the file).
- Wake-ups: stdin is a pipe from the writer, one line per commit (the position just
  committed: a hint, the relay always reads to the log's end) and `v` once the views took
  a batch; the relay waits with select() on it and on its MQTT socket, and reads the log
  and the views' positions every `LOG_POLL` s anyway.
- Answers: a line `w<N>` is a hint that also asks to be told once position N is confirmed
  (its PUBACK and every earlier one's arrived); the relay then writes the line `<N>` to its
  stdout (a pipe the writer reads), at once when it is not connected (nothing to wait
  for). The writer asks this before it starts a script on an idle queue (see
  `att_jm.service.Writer`); it waits a few milliseconds at most, answer or not.
- Views: every view is published on each (re)connect (a broker restarted from an older
  save holds older retained ones), then whenever its position changed; never while
  disconnected (no backlog of stale views), and once more, changed ones, at a stop. Each
  table view message is at most `view_max_bytes` (and what the broker takes), see
  `projections.views`.
- Rows it cannot publish as they are: a row no message can be made of (state not JSON, not
  an object, a timestamp that does not parse, text that is not UTF-8, ...) is published as
  `att_jm.log.messages.undecodable_message` (`"data": null`, `"error"`) and logged once
  (`relay.row_undecodable`); a message over EVENT_MESSAGE_MAX_BYTES, or over the broker's
  Maximum Packet Size (its CONNACK), is published cut (`att_jm.log.messages.cut_message`,
  `relay.event_cut`), or skipped when even that does not fit (`relay.event_skipped`). So no
  row stops the relay or makes the broker drop it, and positions still advance in order.
  Events are read and published only while connected (the broker's limit is known); at a
  CONNACK with a smaller limit, the queued publishes over it are dropped and the log is
  read again from the first of them (`relay.rewound`).
- Stop: EOF on stdin (the writer stopped or died) or SIGTERM/SIGINT: publish what remains up
  to the log's end and wait for the PUBACKs, for at most `DRAIN_SECONDS` in all; record the
  position, disconnect normally, exit 0 (what did not make it goes out at the next start).
- Logs (structlog, stderr, `process: relay` on every line): `relay.started` (the position
  it resumes after, its source, the log's end), `relay.stopping`, `relay.stopped`
  (position, published, unconfirmed, refused), `relay.publish_refused`, `relay.failed`,
  `relay.row_undecodable`, `relay.event_cut`, `relay.event_skipped`, `relay.rewound`.

`python -m att_jm.relay [--after N]`, settings from the environment (ATT_JM_MQTT_URL,
ATT_JM_STORE, ATT_JM_TOPIC_PREFIX, ATT_JM_CLIENT_ID, ATT_JM_LOG_FORMAT, the credentials and
TLS files), client id `<client id>.events` (a client id of the service's user).
`EventsRelay` is its handle in the writer, which starts it: with the runner, the only code
that starts processes.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import fcntl
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

import orjson
import structlog

from att_jm.config import ENV_PREFIX, ConfigError, Settings, env_name, load_settings
from att_jm.log.messages import (
    EVENT_MESSAGE_MAX_BYTES,
    MAX_TYPE_CHARS,
    UndecodableText,
    cut_message,
    row_message,
    undecodable_message,
)
from att_jm.log.rows import TABLE, AuditError, StoreReader, readonly_uri
from att_jm.logs import configure
from att_jm.mqtt.publisher import PublishConnection
from projections.views import VIEW_MAX_BYTES, VIEW_MIN_BYTES, VIEWS, Views

log = structlog.get_logger("att_jm.relay")

POSITION_SUFFIX: Final = ".events.pos"
PAGE: Final = 1000  # rows per read
WANTED: Final = 64  # most positions waiting for an answer (`w<N>` lines)
WINDOW: Final = 4000  # most messages published and not yet acknowledged
SAVE_EVERY: Final = 0.2  # seconds between two writes of the position file
LOG_POLL: Final = 0.5  # the log is read at least this often, hint or not
VIEW_PERIOD: Final = 0.25  # seconds between two publications of one view (coalescing)
VIEWS_RETRY: Final = 1.0  # after the views file could not be read
DRAIN_SECONDS: Final = 5.0  # at a stop: how long to wait for the last PUBACKs
#: The settings the relay reads from its environment (the writer sets them from its own).
RELAY_SETTINGS: Final = (
    "mqtt_url", "store", "topic_prefix", "client_id", "log_format", "views_db", "view_rows",
    "view_max_bytes", "mqtt_username", "mqtt_password_file", "secrets_dir", "tls_ca_file",
    "tls_cert_file", "tls_key_file",
)


def position_path(store: str) -> str:
    """The relay's position file of the store at `store`."""
    return store + POSITION_SUFFIX


def read_position(path: str) -> int | None:
    """The position recorded in `path`; None when there is none (or it is unreadable)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        log.warning("relay.position_unreadable", path=path, error=repr(error))
        return None
    try:
        return max(0, int(text.strip()))
    except ValueError:
        log.warning("relay.position_unreadable", path=path, text=text[:40])
        return None


def write_position(path: str, position: int) -> None:
    """Record `position` in `path`: a temp file renamed over it (atomic, no fsync)."""
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="ascii") as handle:
        handle.write(f"{position}\n")
    os.replace(temp, path)


class Window:
    """The messages published and not yet confirmed, in log order.

    `confirmed` is the last position whose PUBACK, and every earlier one's, has arrived.
    """

    def __init__(self, confirmed: int) -> None:
        self.confirmed = confirmed
        self._order: collections.deque[int] = collections.deque()  # mids, in publish order
        self._positions: dict[int, int] = {}  # mid -> position
        self._acked: set[int] = set()  # acked mids not at the head yet

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, mid: int) -> bool:
        """Whether `mid` is an event published and not yet confirmed."""
        return mid in self._positions

    def add(self, mid: int, position: int) -> None:
        self._order.append(mid)
        self._positions[mid] = position

    def skip(self, position: int) -> None:
        """A position with nothing published: confirmed once every earlier one is."""
        key = -position  # paho's message ids are positive
        self.add(key, position)
        self.ack(key)

    def position(self, mid: int) -> int | None:
        """The position published with `mid`, while unconfirmed."""
        return self._positions.get(mid)

    def rewind(self, position: int) -> list[int]:
        """Forget the messages of `position` and after (the newest ones); their message ids."""
        dropped: list[int] = []
        order = self._order
        while order and self._positions[order[-1]] >= position:
            mid = order.pop()
            del self._positions[mid]
            self._acked.discard(mid)
            if mid > 0:
                dropped.append(mid)
        return dropped

    def ack(self, mid: int) -> None:
        if mid not in self._positions:
            return
        self._acked.add(mid)
        order, acked = self._order, self._acked
        while order and order[0] in acked:
            head = order.popleft()
            acked.discard(head)
            self.confirmed = self._positions.pop(head)


class ViewsPublisher:
    """Publishes the retained views when they changed, each at most every VIEW_PERIOD s."""

    def __init__(
        self, path: str, prefix: str, rows: int, publish: Callable[[str, bytes], object],
        *, max_bytes: int = VIEW_MAX_BYTES, room: Callable[[str], int] | None = None,
    ) -> None:
        self._path = path
        self._prefix = f"{prefix}/job-manager/views/"
        self._rows = rows
        self._publish = publish
        self._max_bytes = max_bytes
        self._room = room  # topic -> the largest payload the broker takes on it
        self._refused: set[str] = set()  # views too large for the broker, logged
        self._views: Views | None = None
        self._sent: dict[str, int] = {}  # view -> the position it was published at
        self._at: dict[str, float] = {}  # view -> when
        self._force: set[str] = set(VIEWS)  # to publish whatever their position
        self._next_check = 0.0

    def republish(self) -> None:
        """Publish every view again (after a (re)connect)."""
        self._force = set(VIEWS)
        self._next_check = 0.0

    def wake(self) -> None:
        """The views took a batch: look at their positions now."""
        self._next_check = 0.0

    def wait(self, now: float) -> float:
        return max(0.0, self._next_check - now)

    def check(self, now: float, *, final: bool = False) -> None:
        """Publish the views that changed and whose period has passed (`final`: all changed)."""
        if now < self._next_check and not final:
            return
        try:
            views = self._open()
            positions = views.view_positions()
            due: list[str] = []
            later = now + LOG_POLL
            for name in VIEWS:
                if name not in self._force and positions.get(name, 0) == self._sent.get(name):
                    continue
                ready = self._at.get(name, -VIEW_PERIOD) + VIEW_PERIOD
                if final or now >= ready:
                    due.append(name)
                else:
                    later = min(later, ready)
            rooms = {name: self._room(self._prefix + name) if self._room else self._max_bytes
                     for name in due}
            cap = max(VIEW_MIN_BYTES, min([self._max_bytes, *rooms.values()]))
            for name, position, payload in (
                views.payloads(due, self._rows, max_bytes=cap) if due else ()
            ):
                if len(payload) <= rooms[name]:
                    self._publish(self._prefix + name, payload)
                    self._refused.discard(name)
                elif name not in self._refused:  # a broker that takes less than 1 KiB
                    self._refused.add(name)
                    log.error("relay.view_too_large", view=name, bytes=len(payload),
                              broker_room=rooms[name])
                self._sent[name] = position
                self._at[name] = now
                self._force.discard(name)
            self._next_check = later
        except (sqlite3.Error, OSError) as error:  # not created yet, or a broken disk: later
            log.warning("relay.views_unreadable", views=self._path, error=repr(error))
            self.close()
            self._next_check = now + VIEWS_RETRY

    def _open(self) -> Views:
        if self._views is None:
            if not os.path.exists(self._path):
                raise FileNotFoundError(self._path)
            self._views = Views(self._path, readonly=True)
        return self._views

    def close(self) -> None:
        if self._views is not None:
            with contextlib.suppress(sqlite3.Error):
                self._views.close()
            self._views = None


class Relay:
    """The relay process's loop (see the module docstring)."""

    def __init__(
        self, settings: Settings, after: int, *, wake_fd: int | None, stop_fd: int | None = None,
        answer_fd: int | None = None, monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.prefix = f"{settings.topic_prefix}/job-manager/events/"
        self.path = position_path(settings.store)
        self.reader = StoreReader(settings.store)
        recorded = read_position(self.path)
        end = self.reader.max_position()
        self.source = "--after" if recorded is None else "position file"
        start = min(after if recorded is None else recorded, end)
        self.window = Window(start)
        self.sent = start  # the last position published
        self.saved = start if recorded == start else -1
        self.saved_at = 0.0
        self.caught_up = False  # the last read reached the log's end
        self.next_read = 0.0
        self.hint = 0
        self.published = 0
        self.refused = 0
        self.stopping: str | None = None
        self.wanted: list[int] = []  # positions to answer about once confirmed, sorted
        # A message longer than this (bytes) is looked at before it is published: over
        # EVENT_MESSAGE_MAX_BYTES or over what the broker takes on its topic (`_on_connect`).
        self.event_limit = EVENT_MESSAGE_MAX_BYTES
        self._wake_fd = wake_fd
        self._answer_fd = answer_fd
        self._stop_fd = stop_fd
        self._partial = b""
        self._monotonic = monotonic
        self.connection = PublishConnection(
            settings.mqtt, client_id=f"{settings.client_id}.events", on_acked=self._acked,
            on_connect=self._on_connect, monotonic=monotonic,
        )
        self.views = ViewsPublisher(
            settings.views_path(), settings.topic_prefix, settings.view_rows,
            lambda topic, payload: self.connection.publish(topic, payload, retain=True),
            max_bytes=settings.view_max_bytes,
            room=self.connection.payload_room,
        )
        self.log = log.bind(store=settings.store)
        self.log.info("relay.started", position=start, source=self.source, log_end=end,
                      pid=os.getpid())

    def run(self) -> int:
        self.connection.start()
        deadline = float("inf")
        started = self._monotonic()
        while True:
            self._read_wake_ups()
            self._answer()
            now = self._monotonic()
            if self.stopping is not None and deadline == float("inf"):
                deadline = now + DRAIN_SECONDS
                self.caught_up = False  # read up to the log's end once more
                self.log.info("relay.stopping", reason=self.stopping, sent=self.sent,
                              position=self.window.confirmed)
            if self._read_due(now):
                self._publish_more(now)
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
            self.connection.poll(wait, self._fds())
        self._save(self._monotonic(), force=True)
        self.connection.stop()
        self.reader.close()
        self.views.close()
        self.log.info("relay.stopped", reason=self.stopping, position=self.window.confirmed,
                      sent=self.sent, unconfirmed=len(self.window), published=self.published,
                      refused=self.refused, seconds=round(self._monotonic() - started, 3))
        return 0

    # Reading and publishing --------------------------------------------------------------

    def _read_due(self, now: float) -> bool:
        if len(self.window) >= WINDOW or not self.connection.connected:
            return False  # not connected: the broker's limit is not known (and nobody reads)
        return not self.caught_up or self.hint > self.sent or now >= self.next_read

    def _publish_more(self, now: float) -> None:
        """Publish rows after `sent` until the window is full or the log's end is reached."""
        # Not corked (TCP_CORK): the broker then passes on the first event while the others
        # are being written (measured: corked, publish -> enqueued event p50 +0.07 ms).
        publish, prefix, window = self.connection.publish, self.prefix, self.window
        limit, dumps = self.event_limit, orjson.dumps
        while (room := WINDOW - len(window)) > 0 and self.connection.connected:
            count = min(PAGE, room)
            rows = self._page(count)
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

    def _page(self, count: int) -> list[tuple[int, str, int, str, bytes]]:
        """The next `count` rows after `sent`."""
        try:
            return next(self.reader.raw_pages(self.sent, None, page=count), [])
        except sqlite3.OperationalError as error:  # "Could not decode to UTF-8 column ..."
            if "decode" not in str(error):
                raise
            return self._page_bytes(count)

    def _page_bytes(self, count: int) -> list[tuple[int, str, int, str, bytes]]:
        """`_page` for rows holding text that is not UTF-8: read as bytes; such a row gets
        an `UndecodableText` as its state (so it is published as undecodable)."""
        db = sqlite3.connect(readonly_uri(self.reader.path), uri=True, isolation_level=None)
        db.text_factory = bytes
        try:
            raws = db.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {TABLE} "  # noqa: S608 -- fixed name
                "WHERE rowid > ? ORDER BY rowid LIMIT ?", (self.sent, count),
            ).fetchall()
        finally:
            db.close()
        rows: list[Any] = []  # as `raw_pages` gives them, or with an UndecodableText state
        for position, originator_id, version, topic, state in raws:
            texts = {"originator_id": originator_id, "topic": topic}
            bad = None
            for column, value in texts.items():
                if isinstance(value, bytes):
                    try:
                        texts[column] = value.decode()
                    except UnicodeDecodeError:
                        texts[column] = value.decode("utf-8", "replace")
                        bad = bad or column
            rows.append((position, texts["originator_id"], version, texts["topic"],
                         state if bad is None else UndecodableText(bad)))
        return rows

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
            write_position(self.path, confirmed)
        except OSError as error:  # a full disk: the position stays behind, nothing is lost
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

    def _fds(self) -> Sequence[int]:
        return tuple(fd for fd in (self._wake_fd, self._stop_fd) if fd is not None)

    def _read_wake_ups(self) -> None:
        if self._stop_fd is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._stop_fd, 512):
                    pass
        if self._wake_fd is None:
            return
        data = b""
        try:
            while chunk := os.read(self._wake_fd, 65536):
                data += chunk
            self._wake_fd = None  # EOF: the writer stopped or died
            self.stopping = self.stopping or "eof"
        except BlockingIOError:
            pass
        if data:
            self._take_hints(data)

    def _answer(self) -> None:
        """Tell the writer that the position it asked about is confirmed (or that it cannot
        be soon: not connected)."""
        wanted = self.wanted
        if not wanted or (self.window.confirmed < wanted[0] and self.connection.connected):
            return
        if self.connection.connected:
            done = bisect.bisect_right(wanted, self.window.confirmed)
            answers, self.wanted = wanted[:done], wanted[done:]
        else:
            answers, self.wanted = wanted, []
        if self._answer_fd is None:
            return
        try:
            os.write(self._answer_fd, b"".join(b"%d\n" % position for position in answers))
        except BlockingIOError:  # a full pipe: the writer stopped reading; it waits no longer
            pass
        except OSError:  # the writer is gone
            self._answer_fd = None

    def _take_hints(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-64:]
        asked = [line for line in lines if line[:1] == b"w"]
        if asked:
            lines = [line for line in lines if line[:1] != b"w"] + [line[1:] for line in asked]
            for line in asked:
                with contextlib.suppress(ValueError):
                    bisect.insort(self.wanted, int(line[1:]))
            del self.wanted[:-WANTED]  # a writer that asks more than that has stopped waiting
        if b"v" in lines:
            self.views.wake()
            lines = [line for line in lines if line != b"v"]
            if not lines:
                return
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                self.hint = max(self.hint, int(line))
                return
        self.hint = max(self.hint, self.sent + 1)  # no readable line: read anyway

    def stop(self, reason: str) -> None:
        """Finish (from a signal handler: only sets a flag; the stop pipe wakes the loop)."""
        self.stopping = self.stopping or reason


# The process -------------------------------------------------------------------------------


def _lock(path: str, relay_stopping: Callable[[], bool]) -> IO[bytes] | None:
    """Take the store's relay lock, waiting for a previous relay to finish; None if stopped
    meanwhile."""
    handle = open(path + ".lock", "ab")  # noqa: SIM115 -- held for the process's life
    waited = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if not waited:
                log.info("relay.waiting_for_previous", lock=path + ".lock")
                waited = True
            if relay_stopping():
                handle.close()
                return None
            time.sleep(0.05)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m att_jm.relay",
        description="Publish the stored events of ATT_JM_STORE on P/job-manager/events/{type}.",
    )
    parser.add_argument("--after", type=int, default=0, metavar="N",
                        help="without a position file, start after log position N (default 0)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings({}, os.environ if environ is None else environ, None)
    except ConfigError as error:
        print(f"att_jm.relay: {error}", file=sys.stderr)  # noqa: T201 -- before logging is set up
        return 2
    configure(settings.log_format)
    structlog.contextvars.bind_contextvars(process="relay")
    stop_r, stop_w = os.pipe()
    for fd in (stop_r, stop_w):
        os.set_blocking(fd, False)
    stop_requested: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signal.Signals(signum).name)  # no logging in a handler
        if relay is not None:
            relay.stop(stop_requested[0])

    relay: Relay | None = None
    signal.set_wakeup_fd(stop_w)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    # The answers go to stdout, where nothing else writes (logs go to stderr): when it is the
    # writer's pipe; a terminal or a file (run by hand) is left alone, nobody asks there.
    out = sys.stdout.fileno()
    answers = out if stat.S_ISFIFO(os.fstat(out).st_mode) else None
    if answers is not None:
        os.set_blocking(answers, False)
    lock = _lock(position_path(settings.store), lambda: bool(stop_requested))
    if lock is None:
        return 0
    try:
        relay = Relay(settings, max(0, args.after), wake_fd=stdin, stop_fd=stop_r,
                      answer_fd=answers)
        if stop_requested:
            relay.stop(stop_requested[0])
        return relay.run()
    except AuditError as error:  # no store (yet), or not one
        log.error("relay.no_store", store=settings.store, error=str(error))
        return 2
    except Exception:  # the writer restarts it; it resumes from its position file
        log.exception("relay.failed", store=settings.store)
        return 1
    finally:
        lock.close()


# The writer's handle ------------------------------------------------------------------------

RESTART_DELAYS: Final = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_SECONDS: Final = 30.0  # a relay that lived this long restarts after the first delay
CHECK_EVERY: Final = 0.1  # `check()` looks at the child at most this often


def relay_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without any ATT_JM_* variable, plus the relay's settings from `settings`."""
    env = {key: value for key, value in environ.items() if not key.startswith(ENV_PREFIX)}
    env["ATT_JM_CONFIG"] = "none"  # exactly the writer's settings, no file of its own
    for name in RELAY_SETTINGS:
        value = settings.views_path() if name == "views_db" else getattr(settings, name)
        if value is not None:
            path = name in ("store", "views_db")
            env[env_name(name)] = str(Path(value).resolve()) if path else str(value)
    return env


class EventsRelay:
    """The writer's handle on the relay process: start, wake up, watch, stop.

    Every method is cheap and never raises into the writer for the child's sake; call them
    from the writer's thread.
    """

    def __init__(
        self, settings: Settings, *, python: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.position_file = position_path(str(Path(settings.store).resolve()))
        self._python = python
        self._environ = os.environ if environ is None else environ
        self._monotonic = monotonic
        self._process: subprocess.Popen[bytes] | None = None
        self._stdin: int | None = None
        self._after: int | None = None
        self._started_at = 0.0
        self._failures = 0
        self._restart_at: float | None = None
        self._next_check = 0.0
        self._last_hint = -1
        self._answers: int | None = None  # the relay's stdout: the positions it confirmed
        self._answered: set[int] = set()  # answers since the last `ask`
        self._partial = b""

    @property
    def pid(self) -> int | None:
        """The running child's process id (None between a death and its restart)."""
        return None if self._process is None else self._process.pid

    def start(self, after: int) -> None:
        """Start the relay; without a position file it begins after log position `after`."""
        if self._after is not None:
            raise RuntimeError("the events relay is started already")
        self._after = after
        self._spawn()

    def notify(self, position: int) -> None:
        """Tell the relay that `position` is committed (one line; dropped if the pipe is full)."""
        fd = self._stdin
        if fd is None or position == self._last_hint:
            return
        try:
            os.write(fd, b"%d\n" % position)
        except OSError:  # full (the relay is busy and will read to the end) or gone: check()
            return
        self._last_hint = position

    def ask(self, position: int) -> bool:
        """Tell the relay that `position` is committed and ask to be told once its PUBACK has
        arrived (`confirmed`); False when there is no relay to ask."""
        fd = self._stdin
        if fd is None or self._answers is None:
            return False
        try:
            os.write(fd, b"w%d\n" % position)
        except OSError:
            return False
        self._last_hint = position
        self._answered.clear()  # late answers to earlier questions
        return True

    def answers_fd(self) -> int | None:
        """Readable when the relay answered an `ask`."""
        return self._answers

    def confirmed(self, position: int) -> bool:
        """Whether the relay answered the `ask` of `position`: it is confirmed, or the relay
        cannot say so soon (it is not connected), or the relay is gone."""
        fd = self._answers
        if fd is None:
            return True
        data = b""
        try:
            while chunk := os.read(fd, 4096):
                data += chunk
            self._close_answers()  # EOF: the relay is gone
            return True
        except BlockingIOError:
            pass
        except OSError:
            self._close_answers()
            return True
        if data:
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()[-64:]
            for line in lines:
                with contextlib.suppress(ValueError):
                    self._answered.add(int(line))
        return position in self._answered

    def notify_views(self) -> None:
        """Tell the relay that the views took a batch (dropped if the pipe is full)."""
        if self._stdin is not None:
            with contextlib.suppress(OSError):
                os.write(self._stdin, b"v\n")

    def check(self) -> None:
        """Restart the relay, with back-off, if it died (it resumes from its position file)."""
        now = self._monotonic()
        if now < self._next_check or self._after is None:
            return
        self._next_check = now + CHECK_EVERY
        process = self._process
        if process is None:
            if self._restart_at is not None and now >= self._restart_at:
                self._spawn()
            return
        code = process.poll()
        if code is None:
            return
        if now - self._started_at >= STABLE_SECONDS:
            self._failures = 0
        delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
        self._failures += 1
        log.error("relay.died", pid=process.pid, returncode=code, restart_in=delay)
        self._close_stdin()
        self._process = None
        self._restart_at = now + delay

    def stop(self, timeout: float = 10.0) -> int | None:
        """Close the relay's stdin (it drains and exits), wait; SIGKILL after `timeout` s.
        Its exit code (None if it was not running)."""
        self._after = None
        self._restart_at = None
        process = self._process
        self._close_stdin()
        if process is None:
            return None
        self._process = None
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("relay.killed", pid=process.pid, after_seconds=timeout)
            process.kill()
            return process.wait()

    def _spawn(self) -> None:
        self._restart_at = None
        self._last_hint = -1
        try:
            process = subprocess.Popen(
                [self._python, "-m", "att_jm.relay", "--after", str(self._after)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=relay_environ(self.settings, self._environ),
                # Its own process group: a Ctrl-C or a group kill aimed at the writer does not
                # stop it before the writer's last commits; its stdin's EOF does.
                process_group=0,
            )
        except OSError as error:
            delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
            self._failures += 1
            log.error("relay.start_failed", error=repr(error), restart_in=delay)
            self._restart_at = self._monotonic() + delay
            return
        assert process.stdin is not None and process.stdout is not None  # noqa: S101 -- PIPEs
        self._stdin = process.stdin.fileno()
        os.set_blocking(self._stdin, False)
        self._answers = process.stdout.fileno()
        os.set_blocking(self._answers, False)
        self._answered.clear()
        self._partial = b""
        self._process = process
        self._started_at = self._monotonic()
        log.info("relay.spawned", pid=process.pid, after=self._after)

    def _close_stdin(self) -> None:
        if self._process is not None:
            _close(self._process.stdin)
        self._stdin = None
        self._close_answers()

    def _close_answers(self) -> None:
        if self._process is not None:
            _close(self._process.stdout)
        self._answers = None


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with contextlib.suppress(OSError):
            pipe.close()


if __name__ == "__main__":
    sys.exit(main())
