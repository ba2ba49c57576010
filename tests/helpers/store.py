"""Reading a store file the way an auditor would (read-only), for assertions."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from att_jm.log.codec import loads_state


def stored_states(store: Path, topic: str) -> list[dict[str, Any]]:
    """The stored state of every event of `topic` (e.g. `att_jm:Rejection.Rejected`), in
    log order."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT state FROM stored_events WHERE topic = ? ORDER BY rowid",
                          (topic,)).fetchall()
    return [loads_state(state) for (state,) in rows]


def count_events(store: Path, topic: str) -> int:
    """How many events of `topic` the log holds."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM stored_events WHERE topic = ?",
                              (topic,)).fetchone()[0])


def rejections(store: Path) -> list[dict[str, Any]]:
    """Every recorded rejection, in log order."""
    return stored_states(store, "att_jm:Rejection.Rejected")
