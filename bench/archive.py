"""Archival: `att-jm audit archive` of about half of a generated log.

Usage: python -m bench.archive [--events 200000] [--store PATH]

The log is generated first (`bench.replay`'s generator: the real aggregates and
application, sealed every 1,000 events; or reused from `--store`), its write index built as
the service's first start builds it; then about half of it (up to the middle position) is
archived, in one process, with the verb's own code. Printed: the seconds the archival
took, the archive's bytes against the bytes of the rows removed (their id, topic and state
as stored), the store file's size and its used pages (page_count - freelist_count) before
and after, and the seconds of `verify --archive` (archive + store as one chain) and of
`verify` from the anchor.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from att_jm.application.model import WriteModel
from att_jm.audit.archiving import archive
from att_jm.audit.verify import verify
from att_jm.log.archive import ArchiveReader
from att_jm.log.history import History
from att_jm.store import open_store
from bench.replay import generate


def _pages(path: Path) -> tuple[int, int]:
    """(file bytes with its WAL, used pages) of an SQLite store."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = db.execute("PRAGMA page_size").fetchone()[0]
        used = db.execute("PRAGMA page_count").fetchone()[0] - db.execute(
            "PRAGMA freelist_count").fetchone()[0]
    finally:
        db.close()
    return path.stat().st_size, int(used) * int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--store", type=Path, help="store file to create (default: a temp dir)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    store = args.store or directory / "att-jm.db"
    seconds = generate(store, args.events)
    print(f"generated {args.events:,} events in {seconds:.1f} s: {store}")
    app = open_store(str(store))
    WriteModel(app, lambda: datetime.now(UTC)).close()  # the write index, as a first start
    app.close()
    history = History(str(store))
    end = history.max_position()
    history.close()
    output = directory / "half.arc"
    file_before, used_before = _pages(store)
    started = time.perf_counter()
    result = archive(str(store), str(output), upto=end // 2,
                     views_path=str(directory / "none.views.db"))
    took = time.perf_counter() - started
    with ArchiveReader(str(output)) as archived:  # the rows removed, as they were stored
        row_bytes = sum(len(r.originator_id) + len(r.topic) + len(r.state)
                        for r in archived.rows())
    file_after, used_after = _pages(store)
    print(f"archived positions 1-{result.position:,} of {end:,} ({result.rows:,} rows, "
          f"{result.seals} seals, {result.snapshots} snapshots) in {took:.2f} s "
          f"({result.rows / took:,.0f} rows/s)")
    print(f"archive file: {result.size:,} bytes ({result.size / result.rows:.1f} B/row); "
          f"the rows removed held {row_bytes:,} bytes of id, topic and state "
          f"({row_bytes / result.rows:.0f} B/row)")
    print(f"store file: {file_before:,} -> {file_after:,} bytes; used pages: "
          f"{used_before:,} -> {used_after:,} bytes (freed {used_before - used_after:,}, "
          f"{(used_before - used_after) / result.rows:.0f} B/row)")
    for label, archives in (("verify --archive", [str(output)]), ("verify", [])):
        started = time.perf_counter()
        history = History(str(store), archives)
        ok = verify(history).ok
        history.close()
        print(f"{label}: {'OK' if ok else 'FAILED'} in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
