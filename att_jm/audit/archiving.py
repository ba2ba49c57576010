"""`att-jm audit archive`: move a sealed range of old rows to an archive file.

One archival of a store at a time (`att_jm.audit.archive_lock`), in this order, each step
safe to crash after (a re-run finishes the job):
a. the rows of positions (anchor, P] and the seals covering them are written to FILE.tmp,
   fsynced and renamed to FILE, then read back and checked (`check_archive`) before the
   store changes at all;
b. snapshots, so that every aggregate that can still be loaded loads without those rows:
   each aggregate with rows on both sides of P, every Job, the Scheduler and the Ledger,
   at its last version up to P (unless one at that version is stored; a later one does not
   stand in for it: `verify` from the anchor replays from it);
c. the anchor (`jm_anchor`): P, the last archived seal, the archive's name, size and
   SHA-256, and the views and the write index at P;
d. the rows up to P deleted in short transactions (`att_jm.store.prune`), then the
   snapshots older than the ones of step b.
A re-run first finishes a deletion a crash interrupted. The cut-off is chosen by
`att_jm.audit.cutoff`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from att_jm.application.index import TOPICS as INDEX_TOPICS
from att_jm.application.index import MemoryIndexStore, WriteIndex
from att_jm.audit.archive_lock import archival_lock
from att_jm.audit.cutoff import Cutoff, NothingToArchive, choose
from att_jm.domain.ids import SCHEDULER_ID
from att_jm.domain.seals import LEDGER_ID
from att_jm.domain.times import iso
from att_jm.log.anchor import Anchor, pack_state
from att_jm.log.archive import ArchiveReader, ArchiveWriter, Header
from att_jm.log.archive_check import check_archive
from att_jm.log.archive_names import SUFFIX, is_directory_target, range_name
from att_jm.log.backend import is_postgres, redact
from att_jm.log.records import decode
from att_jm.log.rows import AuditError, StoreReader
from att_jm.log.stored import Row
from att_jm.relay.window import published_position
from att_jm.store import JobManagerApp, open_store
from att_jm.store.prune import Pruner
from projections.anchor import anchor_of, views_state
from projections.rebuild import fill
from projections.views import Views

#: Raised between steps by tests (a crash after step "a", "b" or "c").
CrashHook = Callable[[str], None]


@dataclass
class Archived:
    """What an archival did."""

    position: int = 0
    archive: str = ""
    rows: int = 0
    seals: int = 0
    size: int = 0
    sha256: str = ""
    snapshots: int = 0
    deleted: int = 0
    finished: int = 0  # rows an interrupted archival had left, deleted now
    swept: int = 0  # snapshots an interrupted archival had left, deleted now
    limits: dict[str, Any] = field(default_factory=dict)
    #: Archives of an interrupted run renamed `.interrupted` (`_set_aside_interrupted`).
    set_aside: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "archive": self.archive, "rows": self.rows,
                "seals": self.seals, "size": self.size, "sha256": self.sha256,
                "snapshots": self.snapshots, "deleted": self.deleted,
                "finished_interrupted": self.finished, "snapshots_swept": self.swept,
                "limits": self.limits, "set_aside": self.set_aside}


def consumers(store: str, views_path: str) -> tuple[int | None, int | None]:
    """(views' tracked position, relay's published position), None where there is none."""
    views: int | None = None
    if is_postgres(views_path) or Path(views_path).is_file():
        reader: Views | None
        try:
            reader = Views(views_path, readonly=True)
        except Exception:  # noqa: BLE001 -- no views schema yet: no consumer there
            reader = None
        if reader is not None:
            try:
                views = reader.position
            except Exception:  # noqa: BLE001 -- idem: the tables are not there
                views = None
            finally:
                reader.close()
    return views, published_position(store)


def finish_interrupted(store: str, anchor: Anchor | None, result: Archived) -> None:
    """Delete the rows an interrupted archival left at or before the anchor, then the
    snapshots it had still to delete (step d)."""
    if anchor is None:
        return
    pruner = Pruner(store)
    try:
        if pruner.leftover(anchor.position):
            result.finished = pruner.delete_through(anchor.position)
        if not pruner.leftover(anchor.position):
            result.swept = pruner.sweep_snapshots()
    finally:
        pruner.close()


def archive(
    store: str, output: str, *, upto: int | None = None, before: datetime | None = None,
    views_path: str, compact: bool = False, crash: CrashHook | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Archived:
    """Archive what `upto`/`before` allow of the store `store` into the file `output`, or
    into a directory `output` under the range's name (`archive_names.range_name`)
    (ArchivalBusy while another archival of the store runs)."""
    with archival_lock(store):
        return _archive(store, output, upto=upto, before=before, views_path=views_path,
                        compact=compact, crash=crash, now=now)


def _archive(
    store: str, output: str, *, upto: int | None, before: datetime | None, views_path: str,
    compact: bool, crash: CrashHook | None, now: Callable[[], datetime],
) -> Archived:
    result = Archived()
    reader = StoreReader(store)
    try:
        anchor = anchor_of(reader)
        finish_interrupted(store, anchor, result)
        views, relay = consumers(store, views_path)
        try:
            cut = choose(reader, anchor, upto=upto, before=before, views=views, relay=relay)
        except NothingToArchive:
            if not (result.finished or result.swept) or anchor is None:
                raise
            result.position, result.archive = anchor.position, anchor.archive
            return result  # the interrupted archival is finished: that was the job
        result.limits = cut.limits
        named = is_directory_target(output)
        output = _resolve_output(output, reader, anchor, cut)
        _check_output(output, anchor)
        _write(reader, cut, anchor, output, store, now, result)  # a
        if named:
            result.set_aside = _set_aside_interrupted(output, anchor)
        if crash is not None:
            crash("a")
        app = open_store(store, compact=compact)
        try:
            kept = _snapshots(app, reader, cut.position, result)  # b
            if crash is not None:
                crash("b")
            state = _state(app, reader, anchor, cut.position)
        finally:
            app.close()
        new = Anchor(position=cut.position, first=(0 if anchor is None else anchor.position) + 1,
                     seal_first=cut.seal.ranges[0][0], seal_hash=cut.seal.hash,
                     seals=cut.seal.number, archive=os.path.basename(output),
                     archive_size=result.size, archive_sha256=result.sha256,
                     created_at=iso(now()), packed=pack_state(state))
        pruner = Pruner(store)
        try:
            pruner.record(new)  # c
            if crash is not None:
                crash("c")
            result.deleted = pruner.delete_through(cut.position)  # d
            if crash is not None:
                crash("d")
            pruner.delete_snapshots(kept)
        finally:
            pruner.close()
    finally:
        reader.close()
    return result


def _resolve_output(output: str, reader: StoreReader, anchor: Anchor | None,
                    cut: Cutoff) -> str:
    """`output`, or for a directory the file in it named by the range (`range_name`)."""
    if not is_directory_target(output):
        return output
    after = 0 if anchor is None else anchor.position
    first = next(reader.rows(after, cut.position, page=1), None)
    last = reader.row(cut.position)
    if first is None or last is None:
        raise AuditError(f"the rows of positions {after + 1}-{cut.position} are gone from "
                         "the store")
    Path(output).mkdir(parents=True, exist_ok=True)
    name = range_name(after + 1, cut.position, decode(first).at, decode(last).at)
    return str(Path(output) / name)


def _same_start(path: Path, anchor: Anchor | None, first_seal: Row | None = None) -> bool:
    """Whether the archive at `path` starts right after `anchor` (as the next one must) and,
    if `first_seal` is given, holds that first seal (the same log, not another store's)."""
    first = 1 if anchor is None else anchor.position + 1
    try:
        with ArchiveReader(str(path)) as found:
            return found.header.first == first and found.header.previous == (
                "" if anchor is None else anchor.seal_hash) and (
                first_seal is None or found.seal_rows[:1] == [first_seal])
    except AuditError:
        return False


def _set_aside_interrupted(output: str, anchor: Anchor | None) -> list[str]:
    """In a directory of archives named by their range: rename `.interrupted` every other
    archive that starts where `output` starts. Such a file was written by a run that
    stopped before its anchor (its range then differed: the cut-off moved on); no anchor
    names it and its rows are in `output` or still in the store, but left as `*.arc` it
    would break the chain that `--archive DIR` reads. Kept, not deleted; their new names."""
    kept, renamed = Path(output), []
    with ArchiveReader(output) as written:
        first_seal = written.seal_rows[0] if written.seal_rows else None
    for other in sorted(kept.parent.glob(f"att-jm-*{SUFFIX}")):
        if other == kept or first_seal is None or not _same_start(other, anchor, first_seal):
            continue  # (an archive of another store's log is left as it is)
        aside = other.with_name(other.name + ".interrupted")
        try:
            other.rename(aside)
        except OSError as error:  # nothing of the store changed yet: the next run retries
            raise AuditError(f"cannot set aside {other} (an interrupted archival's file, "
                             f"which would break the chain): {error.strerror}") from None
        renamed.append(str(aside))
    return renamed


def _check_output(output: str, anchor: Anchor | None) -> None:
    """Refuse to overwrite a file, unless an interrupted archival of the same range left it."""
    if not Path(output).exists():
        return
    if not _same_start(Path(output), anchor):
        raise AuditError(f"{output} exists: give another file (an archive is never "
                         "overwritten)")


def _write(reader: StoreReader, cut: Cutoff, anchor: Anchor | None, output: str, store: str,
           now: Callable[[], datetime], result: Archived) -> None:
    """Step a: the archive written, then read back and checked."""
    after = 0 if anchor is None else anchor.position
    header = Header(first=after + 1, last=cut.position,
                    previous="" if anchor is None else anchor.seal_hash,
                    seals_before=0 if anchor is None else anchor.seals,
                    store=redact(store), created=iso(now()))
    writer = ArchiveWriter(output, header)
    try:
        for seal in cut.seals:
            row = reader.row(seal.event_position)
            if row is None:
                raise AuditError(f"seal #{seal.number} at position {seal.event_position} "
                                 "is gone from the store")
            writer.add_seal(row)
        # Short reads, page by page: sealed rows never change while the writer appends.
        for rows in reader.pages(after, cut.position):
            writer.add_rows(rows)
        stored = reader.count(after, cut.position)
        result.rows, result.seals = writer.rows, writer.seals
        result.size, result.sha256 = writer.finish()
    except BaseException:
        writer.abort()
        raise
    check = check_archive(output)
    if not check.ok or check.rows != stored:
        problems = "; ".join(text for _, _, text in check.problems[:5]) or (
            f"{check.rows} rows read back, {stored} stored")
        raise AuditError(f"the archive does not verify, nothing was removed: {problems}")
    result.position, result.archive = cut.position, output


def _snapshots(app: JobManagerApp, reader: StoreReader, position: int,
               result: Archived) -> list[tuple[str, int]]:
    """Step b: (aggregate id as stored, version) of the snapshot each aggregate keeps."""
    wanted: dict[str, int] = {oid: version - 1 for oid, version in reader.straddling(position)}
    singletons = [SCHEDULER_ID.hex, LEDGER_ID.hex]
    jobs = [UUID(str(row[0])).hex for row in reader.connection.execute(
        "SELECT id FROM jm_jobs").fetchall()]
    for oid in (*singletons, *jobs):
        if oid in wanted:
            continue
        last = reader.last_event(oid)
        if last is not None and last.position <= position:
            wanted[oid] = last.originator_version
    # Exactly at that version, even when a later one is stored: `verify` without the
    # archives replays each aggregate from it (a later snapshot is then checked too).
    stored = set(reader.snapshot_keys())
    kept: list[tuple[str, int]] = []
    for oid, version in sorted(wanted.items()):
        kept.append((oid, version))
        if (oid, version) in stored:
            continue
        aggregate: Any = app.repository.get(UUID(oid), version=version)
        snapshot_class: Any = getattr(type(aggregate), "Snapshot", type(app).snapshot_class)
        assert app.snapshots is not None  # noqa: S101 -- snapshotting is on (store settings)
        app.snapshots.put([snapshot_class.take(aggregate)])
        result.snapshots += 1
    return kept


def _state(app: JobManagerApp, reader: StoreReader, anchor: Anchor | None,
           position: int) -> dict[str, Any]:
    """Step c's state: the views and the write index at `position`."""
    views = Views(":memory:")
    try:
        fill(app, views, upto=position)
        saved_views = views_state(views)
    finally:
        views.close()
    memory = MemoryIndexStore()
    try:
        index = WriteIndex(memory)
        after = 0
        if anchor is not None:
            index.load(anchor.state()["index"], anchor.position)
            after = anchor.position
        index.catch_up(reader.keyed_pages(after, position, INDEX_TOPICS), position)
        saved_index = index.state()
    finally:
        memory.close()
    return {"views": saved_views, "index": saved_index}
