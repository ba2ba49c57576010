"""WAL checkpoints on a thread of their own (att_jm.checkpoints), on real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from helpers.waits import eventually

from att_jm.checkpoints import Checkpointer


def writer_without_checkpoints(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    return db


def fill(db: sqlite3.Connection, rows: int) -> None:
    for _ in range(rows):
        db.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(2000),))


def test_the_pages_reach_the_database_file_by_the_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.db"
    db = writer_without_checkpoints(path)
    fill(db, 3000)  # ~6 MB, with the commits' own checkpoints off (to see the thread's)
    assert path.stat().st_size < 100_000  # every page is still in the WAL only
    checkpointer = Checkpointer(str(path), period=0.05)
    try:
        deadline = time.monotonic() + 10
        while path.stat().st_size < 5_000_000:
            assert time.monotonic() < deadline, "no checkpoint within 10 s"
            time.sleep(0.02)
        fill(db, 10)
        count = checkpointer.checkpoints
        while checkpointer.checkpoints < count + 2:  # it goes on, every period
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        checkpointer.close()
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 3010
    db.close()


def test_close_stops_the_thread_after_a_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = writer_without_checkpoints(path)
    checkpointer = Checkpointer(str(path), period=3600)
    fill(db, 1000)
    before = path.stat().st_size
    checkpointer.close()
    assert path.stat().st_size > before + 1_000_000  # the last checkpoint at close
    assert not checkpointer._thread.is_alive()
    db.close()


def test_a_failing_checkpoint_is_logged_and_tried_again(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = writer_without_checkpoints(path)
    checkpointer = Checkpointer(str(path), period=0.05)
    try:
        checkpointer._db.close()  # every checkpoint now fails: logged, the thread lives on
        eventually(lambda: checkpointer.failures >= 3, "three failed checkpoints", timeout=10)
        assert checkpointer._thread.is_alive()
        assert checkpointer.checkpoints == 0
    finally:
        checkpointer.close()
    db.close()
