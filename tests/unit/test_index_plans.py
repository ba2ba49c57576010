"""The write index's reads search an index, whatever the queue's length.

`next_queued` and `next_retry_at` ask first whether any queued entry is a retry with a
`not_before` (once per write, i.e. once per execution). Answered from the queue-order index
alone, SQLite walked every queued entry to find none: 0.5 ms with 3,000 queued, 22 ms with
100,000, at each execution. A partial index of the queued entries with a `not_before`
answers it in one step; another, of the queued entries by sort key, gives the next one. Both
hold queued entries only, so that an execution's start and end write fewer pages (the
commit's `fdatasync` grows with them; docs/adr/0001-write-side-queue.md).
"""

from __future__ import annotations

import sqlite3

import pytest

from att_jm.application.index import _READS, SCHEMA

NOW = "2026-12-04T12:00:00.000000+00:00"


@pytest.fixture
def queue() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO jm_queue VALUES (?, 'queued', ?, NULL)",
                   [(f"e{n:06d}", n) for n in range(5000)])
    db.executemany("INSERT INTO jm_queue VALUES (?, 'done', ?, ?)",
                   [(f"d{n:06d}", n, NOW) for n in range(100)])
    return db


def plan(queue: sqlite3.Connection, read: str) -> str:
    """SQLite's plan of the index's read `read`."""
    sql = _READS[read]
    args = (NOW,) if "?" in sql else ()
    return " ".join(str(row[-1]) for row in queue.execute("EXPLAIN QUERY PLAN " + sql, args))


@pytest.mark.parametrize("read", ["waiting", "retry_at"])
def test_the_retry_reads_search_by_state_and_not_before(
    queue: sqlite3.Connection, read: str,
) -> None:
    found = plan(queue, read)
    assert "jm_queue_retries" in found and "not_before" in found, found


@pytest.mark.parametrize("read", ["next", "next_due"])
def test_the_next_entry_is_read_from_the_queued_entries_by_sort_key(
    queue: sqlite3.Connection, read: str,
) -> None:
    found = plan(queue, read)
    assert "jm_queue_next" in found and "TEMP B-TREE" not in found, found


def test_an_index_of_an_earlier_version_is_replaced_by_the_partial_ones() -> None:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA.replace(
        "DROP INDEX IF EXISTS jm_queue_order;", "").replace(
        "DROP INDEX IF EXISTS jm_queue_retry;", ""))
    db.executescript("CREATE INDEX jm_queue_order ON jm_queue (state, sort_key); "
                     "CREATE INDEX jm_queue_retry ON jm_queue (state, not_before);")
    db.executescript(SCHEMA)  # the next start
    indexes = {row[0] for row in db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jm_queue' "
        "AND sql IS NOT NULL")}
    assert indexes == {"jm_queue_next", "jm_queue_retries"}


def test_the_retry_reads_answer_as_a_scan_would(queue: sqlite3.Connection) -> None:
    queue.execute("UPDATE jm_queue SET not_before = '2026-12-04T13:00:00.000000+00:00' "
                  "WHERE id IN ('e004000', 'e000007')")
    queue.execute("UPDATE jm_queue SET not_before = '2026-12-04T11:00:00.000000+00:00' "
                  "WHERE id = 'e000003'")

    def read(name: str) -> list[tuple[object, ...]]:
        sql = _READS[name]
        return queue.execute(sql, (NOW,) if "?" in sql else ()).fetchall()

    indexed = {name: read(name) for name in ("waiting", "retry_at", "next_due")}
    queue.execute("DROP INDEX jm_queue_retries")
    queue.execute("DROP INDEX jm_queue_next")
    assert {name: read(name) for name in indexed} == indexed
    assert indexed == {"waiting": [(1,)], "retry_at": [("2026-12-04T13:00:00.000000+00:00",)],
                       "next_due": [("e000000", 0)]}
