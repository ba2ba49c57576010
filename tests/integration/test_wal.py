"""WAL checkpoints: never inside the writer's commits; the relay's checkpointer does them."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from uuid import uuid4

from att_jm import wal
from att_jm.domain.executions import Execution
from att_jm.domain.times import parse_iso
from att_jm.store import WriterLog, open_store

AT = parse_iso("2026-03-02T08:00:00Z")


def fill(path: Path, events: int) -> WriterLog:
    app = open_store(str(path))
    log = WriterLog(app)
    for start in range(0, events, 500):
        log.append([
            app.mapper.to_stored_event(Execution.enqueued_event(
                uuid4(), "j", "s",
                "x" * 200, "t", f"n-{n}", 300.0, "cm", AT))
            for n in range(start, start + 500)
        ])
    return log


def frames(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it copied back into the database file)."""
    db = sqlite3.connect(path)
    try:  # after a complete checkpoint another PASSIVE one copies nothing and reports counts
        _, log, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log), int(done)
    finally:
        db.close()


def test_the_writers_commits_never_checkpoint_and_the_checkpointer_does(tmp_path: Path) -> None:
    store = tmp_path / "att-jm.db"
    log = fill(store, 12_000)  # ~3,000 pages: SQLite alone would have checkpointed twice
    wal_file = Path(wal.wal_path(str(store)))
    assert wal_file.stat().st_size > 1000 * 4096 * 2
    assert store.stat().st_size < 100 * 4096  # nothing copied back into the database file
    checkpointer = wal.Checkpointer([str(store), str(tmp_path / "absent.db")])
    checkpointer.run()
    assert store.stat().st_size > 1000 * 4096  # the checkpointer copied the pages back
    log_frames, copied = frames(store)
    assert log_frames == copied
    checkpointer.close()
    log.close()


def test_the_writer_checkpoints_itself_only_past_the_safety_size(tmp_path: Path) -> None:
    store = tmp_path / "att-jm.db"
    log = fill(store, 2_000)
    assert not log.checkpoint_if_large()  # small: left to the relay
    db = sqlite3.connect(store)
    assert wal.checkpoint_if_large(db, wal.wal_path(str(store)), pages=10)
    db.close()
    log.close()
    assert not os.path.exists(str(tmp_path / "nothing.db-wal"))
