"""What the end of the log says about the previous stop: read by the writer at start.

A clean stop ends the log with a `Ledger.Closed` mark, written with the final seals (see
`att_jm.domain.seals`); the next start records `Ledger.Opened` before anything else. So at
start, before the writer writes anything:

- the Ledger's last event is `Closed` and no row follows it: the log is exactly as the
  service left it (every row before the mark is sealed);
- rows follow the `Closed` mark: they were written while the service was stopped, outside
  it (`appended`);
- the Ledger's last event is anything else: the previous stop did not close the log (a crash,
  a kill, a stop during a store fault, or a version from before the marks); the rows after
  the last seal are `unsealed`: nothing proves they are the service's;
- no Ledger: a first start (any rows already there are unsealed).

Cost: two or three look-ups in the (aggregate id, version) key and a count of the rows after
the last Ledger event: independent of the log's length (measured: ~0.1 ms on a
1,000,000-event log, see README "Audit").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from att_jm.domain.seals import LEDGER_ID
from att_jm.log.chain import CLOSED_TOPIC, LEDGER_TOPICS, SEALED_TOPIC
from att_jm.log.codec import loads_state
from att_jm.log.rows import Row, StoreReader

LEDGER_HEX = LEDGER_ID.hex


@dataclass(frozen=True)
class Tail:
    """The end of the log, as the writer finds it at start."""

    ledger: bool  # the log has a Ledger (a start or a seal was recorded before)
    closed: int | None  # position of the `Closed` mark the log ends with (a clean stop)
    sealed_through: int  # the last position the seals cover
    appended: int  # rows after the `Closed` mark: written while the service was stopped
    first: int | None  # their first and last positions
    last: int | None
    unsealed: int  # rows no seal covers, the Ledger's own aside (appended ones included)

    @property
    def clean(self) -> bool:
        """The previous stop closed the log and nothing was written since."""
        return self.closed is not None and self.appended == 0

    def message(self) -> str:
        if self.appended:
            where = (f"position {self.first}" if self.first == self.last
                     else f"positions {self.first}-{self.last}")
            return (f"{self.appended} row{'s were' if self.appended > 1 else ' was'} appended "
                    f"to the log outside the service, after its clean stop at position "
                    f"{self.closed} ({where})")
        if self.clean:
            return f"the log was closed cleanly at position {self.closed}"
        if not self.ledger:
            return (f"first start: no seal yet ({self.unsealed} unsealed "
                    f"row{'' if self.unsealed == 1 else 's'})")
        return (f"the previous stop did not close the log: {self.unsealed} "
                f"row{'' if self.unsealed == 1 else 's'} after position {self.sealed_through} "
                "are not sealed and nothing proves they are the service's")

    def to_json(self) -> dict[str, Any]:
        return {"clean": self.clean, "closed": self.closed,
                "sealed_through": self.sealed_through, "appended": self.appended,
                "first": self.first, "last": self.last, "unsealed": self.unsealed}

    def flag(self) -> dict[str, Any] | None:
        """What the writer puts in its retained status: None when nothing was appended."""
        if not self.appended:
            return None
        return {"appended": self.appended, "first": self.first, "last": self.last,
                "after": self.closed}


def _state(row: Row) -> dict[str, Any] | None:
    try:
        state = loads_state(row.state)
    except ValueError:  # not JSON, or an encoding that does not decode
        return None
    return state if isinstance(state, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def tail_check(reader: StoreReader) -> Tail:
    """The end of the log (see the module): whether rows were appended after the last clean
    stop, or how many rows are unsealed after an unclean one."""
    last = reader.last_event(LEDGER_HEX)
    if last is None:
        count, _, _ = reader.tail(0)
        return Tail(ledger=False, closed=None, sealed_through=0, appended=0, first=None,
                    last=None, unsealed=count)
    state = _state(last) if last.topic == CLOSED_TOPIC else None
    through = None if state is None else _int(state.get("position"))
    if through is not None:  # a clean stop: everything after the mark was written since
        count, first, end = reader.tail(last.position)
        return Tail(ledger=True, closed=last.position, sealed_through=through, appended=count,
                    first=first, last=end, unsealed=count)
    seal = reader.last_event(LEDGER_HEX, SEALED_TOPIC)
    sealed = _state(seal) if seal is not None else None
    through = (None if sealed is None else _int(sealed.get("position"))) or 0
    count, _, _ = reader.tail(through)
    own = reader.count_topics(through, LEDGER_TOPICS)
    return Tail(ledger=True, closed=None, sealed_through=through, appended=0, first=None,
                last=None, unsealed=count - own)
