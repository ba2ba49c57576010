"""What the relay published and the broker confirmed, and where it keeps that position:
`<store>.events.pos` next to an SQLite store, the row `relay` of the table `jm_positions` in
a PostgreSQL store (`PublishedPosition`)."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any, Final

import structlog

from att_jm.log.backend import is_postgres, redact
from att_jm.relay.constants import POSITION_SUFFIX

log = structlog.get_logger("att_jm.relay")
RELAY: Final = "relay"  # its row in a PostgreSQL store's jm_positions


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


class PublishedPosition:
    """The relay's recorded position of the store `store` (see the module)."""

    def __init__(self, store: str) -> None:
        self.postgres = is_postgres(store)
        self.path = None if self.postgres else position_path(store)
        self.shown = f"{redact(store)} ({RELAY} in jm_positions)" if self.path is None \
            else self.path
        self._rows: Any = None
        #: What a failed write raises (a full disk, the database gone): logged, tried again.
        self.errors: tuple[type[BaseException], ...] = (OSError,)
        if self.postgres:
            import psycopg  # noqa: PLC0415 -- only for a PostgreSQL store

            from att_jm.store.postgres import PgPositions  # noqa: PLC0415 -- idem

            self._rows = PgPositions(store)
            self.errors = (OSError, psycopg.Error)

    def read(self) -> int | None:
        """The recorded position; None when there is none (or it cannot be read)."""
        if self.path is not None:
            return read_position(self.path)
        try:
            found: int | None = self._rows.read(RELAY)
        except self.errors as error:
            log.warning("relay.position_unreadable", where=self.shown, error=repr(error))
            return None
        return found

    def write(self, position: int) -> None:
        """Record `position` (raises one of `errors` when it cannot)."""
        if self.path is not None:
            write_position(self.path, position)
        else:
            self._rows.write(RELAY, position)

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()


def published_position(store: str) -> int | None:
    """The position the relay of the store `store` recorded (None: none yet)."""
    recorded = PublishedPosition(store)
    try:
        return recorded.read()
    finally:
        recorded.close()


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
