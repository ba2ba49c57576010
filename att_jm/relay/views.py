"""Publishing the retained views when they changed, coalesced."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import structlog

from att_jm.log.backend import dialect_of, is_postgres, redact
from att_jm.relay.constants import LOG_POLL, VIEW_PERIOD, VIEWS_RETRY
from att_jm.topics import Topics
from att_jm.vocabulary import VIEWS
from projections.reader import VIEW_MAX_BYTES, VIEW_MIN_BYTES, ViewReader, open_reader

log = structlog.get_logger("att_jm.relay")


class ViewsPublisher:
    """Publishes the retained views when they changed, each at most every VIEW_PERIOD s."""

    def __init__(
        self, path: str, prefix: str, rows: int, publish: Callable[[str, bytes], object],
        *, max_bytes: int = VIEW_MAX_BYTES, room: Callable[[str], int] | None = None,
    ) -> None:
        self._path = path
        self._errors: tuple[type[BaseException], ...] = (OSError, *dialect_of(path).errors())
        self._prefix = Topics(prefix).views_root  # + a view's name
        self._rows = rows
        self._publish = publish
        self._max_bytes = max_bytes
        self._room = room  # topic -> the largest payload the broker takes on it
        self._refused: set[str] = set()  # views too large for the broker, logged
        self._views: ViewReader | None = None
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
        except self._errors as error:  # not created yet, a broken disk or link: later
            log.warning("relay.views_unreadable", views=redact(self._path), error=repr(error))
            self.close()
            self._next_check = now + VIEWS_RETRY

    def _open(self) -> ViewReader:
        if self._views is None:
            if not is_postgres(self._path) and not os.path.exists(self._path):
                raise FileNotFoundError(self._path)
            self._views = open_reader(self._path)
        return self._views

    def close(self) -> None:
        if self._views is not None:
            with contextlib.suppress(*self._errors):
                self._views.close()
            self._views = None
