"""The writer's stats block: counters in a fixed-layout file next to the store.

The writer creates `<store>.stats` at start (a new file renamed into place, mode 0644), maps
it, and from then on only stores into that memory: a loop turn, a commit, a reply or a fault
is a few 8-byte writes (no system call, no allocation but Python's own). Readers (the
exporter, `att_jm.metrics.exporter`) read the file with `pread`; they never map it writable
and never write it. A writer's restart makes a new file: a reader holding the old one
notices (another inode) and opens the new one; the block's counters restart at zero, as
Prometheus counters may.

Layout, in the host's byte order (the block never leaves its host). A header of 64 bytes:

    offset  type  what
    0       8s    magic b"ATTJMSTB"
    8       u32   LAYOUT_VERSION
    12      u32   layout fingerprint: CRC-32 of the slot names, bucket bounds and labels
    16      u64   size of the block in bytes
    24      i64   the writer's pid
    32      f64   the writer's start, wall clock (Unix seconds)
    40      f64   the writer's start, CLOCK_MONOTONIC (one clock for every process of a host)
    48      16x   reserved

then SLOTS slots of 8 bytes (signed 64-bit integers, or IEEE doubles where `FLOAT_SLOTS` says),
named by the constants below. A reader refuses a block whose magic, version, fingerprint or
size is not its own (`StatsLayoutError`): a layout change (a new reply code in
`att_jm.errors.REPLY_CODES`, other bucket bounds) changes the fingerprint even without a
version bump.

Each value is one aligned 8-byte store; a reader takes two reads that agree (`read_stats`),
so it never sees a value half written. The histogram's count is the sum of its buckets (not
a slot of its own): count and +Inf bucket always agree, and a commit costs one store less.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
import zlib
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Final

import structlog

from att_jm.errors import REPLY_CODES

log = structlog.get_logger("att_jm")

SUFFIX: Final = ".stats"
MAGIC: Final = b"ATTJMSTB"
LAYOUT_VERSION: Final = 1
HEADER: Final = struct.Struct("=8sIIQqdd16x")
HEADER_BYTES: Final = 64

#: Upper bounds (seconds, `le`) of the commit latency buckets; one more bucket is +Inf.
COMMIT_BOUNDS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5)
#: Reply labels: `ok`, then every error code a reply may carry.
REPLY_LABELS: Final = ("ok", *sorted(REPLY_CODES))
#: Fault kinds of the retained status (`att_jm.service.status`); `other` for any other.
FAULT_KINDS: Final = ("store", "views", "other")
#: Outcomes of an automatic archival run (`att_jm.service.archival`).
ARCHIVE_OUTCOMES: Final = ("done", "nothing", "failed")

# Slots ------------------------------------------------------------------------------------
TURNS: Final = 0  # loop turns since the start
CONNECTED: Final = 1  # 1 while the writer's MQTT session is connected
FAULT: Final = 2  # 0: no fault, else 1 + its index in FAULT_KINDS
FAULTS: Final = 3  # faults begun, one slot per kind of FAULT_KINDS
COMMIT_BUCKETS: Final = FAULTS + len(FAULT_KINDS)  # commits per bucket (not cumulative), +Inf last
REPLIES: Final = COMMIT_BUCKETS + len(COMMIT_BOUNDS) + 1  # replies, one slot per REPLY_LABELS
HEARTBEAT: Final = REPLIES + len(REPLY_LABELS)  # f64: CLOCK_MONOTONIC at the last loop turn
COMMIT_SUM: Final = HEARTBEAT + 1  # f64: seconds spent in commits
ARCHIVES: Final = COMMIT_SUM + 1  # automatic archival runs, one slot per ARCHIVE_OUTCOMES
SLOTS: Final = ARCHIVES + len(ARCHIVE_OUTCOMES)
FLOAT_SLOTS: Final = frozenset({HEARTBEAT, COMMIT_SUM})
SIZE: Final = HEADER_BYTES + 8 * SLOTS

_REPLY_SLOTS: Final = {label: REPLIES + i for i, label in enumerate(REPLY_LABELS)}
_REPLY_OK: Final = _REPLY_SLOTS["ok"]
_REPLY_INTERNAL: Final = _REPLY_SLOTS["internal"]


def _fingerprint() -> int:
    layout = (
        f"turns={TURNS};connected={CONNECTED};fault={FAULT};faults={FAULTS}:{FAULT_KINDS};"
        f"commit_buckets={COMMIT_BUCKETS}:{COMMIT_BOUNDS};replies={REPLIES}:{REPLY_LABELS};"
        f"heartbeat={HEARTBEAT};commit_sum={COMMIT_SUM};archives={ARCHIVES}:{ARCHIVE_OUTCOMES};"
        f"slots={SLOTS};floats={sorted(FLOAT_SLOTS)}"
    )
    return zlib.crc32(layout.encode())


FINGERPRINT: Final = _fingerprint()


class StatsLayoutError(ValueError):
    """The file is not a stats block this code reads (the message says why)."""


def stats_path(store: str) -> str | None:
    """The stats block of the store at `store`; None for a store that is no local file (in
    memory, or a database server's URL)."""
    if store == ":memory:" or store.startswith("file:") or "://" in store:
        return None
    return store + SUFFIX


class WriterStats:
    """The writer's side: the mapped block and the hooks that update it.

    Every hook is a handful of stores into the mapping; none allocates beyond Python's
    integers and floats or makes a system call (`time.monotonic` is read from the vDSO).
    """

    __slots__ = ("_floats", "_ints", "_map", "path", "pid", "started_at", "started_mono")

    def __init__(self, block: mmap.mmap, path: str | None, pid: int, started_at: float,
                 started_mono: float) -> None:
        self._map = block
        view = memoryview(block)[HEADER_BYTES:SIZE]
        self._ints = view.cast("q")
        self._floats = view.cast("d")
        self.path = path
        self.pid = pid
        self.started_at = started_at
        self.started_mono = started_mono

    # The hooks ---------------------------------------------------------------------------

    def turn(self, connected: bool) -> None:
        """One turn of the writer's loop: the heartbeat, and whether the broker is connected."""
        ints = self._ints
        ints[TURNS] += 1
        ints[CONNECTED] = connected
        self._floats[HEARTBEAT] = monotonic()

    def archived(self, outcome: str) -> None:
        """An automatic archival run ended with `outcome` (one of ARCHIVE_OUTCOMES)."""
        if outcome in ARCHIVE_OUTCOMES:
            self._ints[ARCHIVES + ARCHIVE_OUTCOMES.index(outcome)] += 1

    def committed(self, seconds: float) -> None:
        """A commit that took `seconds`."""
        self._ints[COMMIT_BUCKETS + bisect_left(COMMIT_BOUNDS, seconds)] += 1
        self._floats[COMMIT_SUM] += seconds

    def replied(self, reply: Mapping[str, Any]) -> None:
        """A command's reply: `{"ok": true, ...}` or `{"ok": false, "error": {"code", ...}}`."""
        if reply.get("ok") is True:
            slot = _REPLY_OK
        else:
            error = reply.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            slot = _REPLY_SLOTS.get(code, _REPLY_INTERNAL) if isinstance(code, str) \
                else _REPLY_INTERNAL
        self._ints[slot] += 1

    def fault(self, kind: str | None) -> None:
        """The retained status's fault is now `kind` (None: no fault); a new fault is counted."""
        ints = self._ints
        value = 0 if kind is None else 1 + (
            FAULT_KINDS.index(kind) if kind in FAULT_KINDS else len(FAULT_KINDS) - 1)
        if value and value != ints[FAULT]:
            ints[FAULTS + value - 1] += 1
        ints[FAULT] = value

    # ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap (the file stays: readers see the last values, and a stale heartbeat)."""
        self._ints.release()
        self._floats.release()
        self._map.close()


def open_writer_stats(store: str, *, pid: int | None = None) -> WriterStats:
    """The writer's stats block for the store at `store`, made new (zeroed) at each start.

    In memory only (an anonymous mapping, nothing for readers) for an in-memory store or
    when the file cannot be made (a read-only directory): the hooks work the same.
    """
    pid = os.getpid() if pid is None else pid
    started_at, started_mono = time.time(), monotonic()
    header = HEADER.pack(MAGIC, LAYOUT_VERSION, FINGERPRINT, SIZE, pid, started_at, started_mono)
    path = stats_path(store)
    block: mmap.mmap | None = None
    if path is not None:
        try:
            block = _create_file(path, header)
        except OSError as error:
            log.warning("metrics.stats_block_unavailable", path=path, error=repr(error))
            path = None
    if block is None:
        block = mmap.mmap(-1, SIZE)
        block[:HEADER_BYTES] = header
    stats = WriterStats(block, path, pid, started_at, started_mono)
    stats._floats[HEARTBEAT] = started_mono
    return stats


def _create_file(path: str, header: bytes) -> mmap.mmap:
    """A new block at `path`: written whole under a temporary name, then renamed over the
    old one (a reader of the old file never sees it shrink or change layout)."""
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # whatever the umask: readers may run as another user
        os.write(fd, header + bytes(SIZE - len(header)))
        block = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.replace(temp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    os.close(fd)  # the mapping keeps the file
    return block


# Reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsSnapshot:
    """What a stats block says, read once."""

    pid: int
    started_at: float
    started_mono: float
    turns: int
    heartbeat_mono: float
    connected: bool
    fault: str | None
    faults: dict[str, int]
    commit_buckets: tuple[int, ...]  # per bucket of COMMIT_BOUNDS, +Inf last (not cumulative)
    commit_sum: float
    replies: dict[str, int]
    archives: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ARCHIVE_OUTCOMES, 0))

    @property
    def commit_count(self) -> int:
        return sum(self.commit_buckets)

    @property
    def heartbeat_at(self) -> float:
        """The last loop turn, wall clock (Unix seconds), from the start's two clocks."""
        return self.started_at + (self.heartbeat_mono - self.started_mono)

    def heartbeat_age(self, now_mono: float | None = None) -> float:
        """Seconds since the last loop turn."""
        return max(0.0, (monotonic() if now_mono is None else now_mono) - self.heartbeat_mono)


def decode(data: bytes) -> StatsSnapshot:
    """The snapshot in `data` (a whole block); StatsLayoutError when it is not one this code
    reads."""
    if len(data) < HEADER_BYTES:
        raise StatsLayoutError(f"{len(data)} bytes: shorter than the header")
    magic, version, fingerprint, size, pid, started_at, started_mono = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StatsLayoutError("not a stats block (wrong magic)")
    if version != LAYOUT_VERSION or fingerprint != FINGERPRINT:
        raise StatsLayoutError(
            f"layout version {version} (fingerprint {fingerprint:08x}) is not this reader's "
            f"{LAYOUT_VERSION} ({FINGERPRINT:08x}): the writer and the exporter are of "
            "different releases")
    if size != SIZE or len(data) < SIZE:
        raise StatsLayoutError(f"size {size} (read {len(data)}) is not {SIZE}")
    ints = struct.unpack_from(f"={SLOTS}q", data, HEADER_BYTES)
    floats = struct.unpack_from(f"={SLOTS}d", data, HEADER_BYTES)
    fault = ints[FAULT]
    return StatsSnapshot(
        pid=pid, started_at=started_at, started_mono=started_mono, turns=ints[TURNS],
        heartbeat_mono=floats[HEARTBEAT], connected=bool(ints[CONNECTED]),
        fault=FAULT_KINDS[fault - 1] if 0 < fault <= len(FAULT_KINDS) else None,
        faults={kind: ints[FAULTS + i] for i, kind in enumerate(FAULT_KINDS)},
        commit_buckets=ints[COMMIT_BUCKETS:COMMIT_BUCKETS + len(COMMIT_BOUNDS) + 1],
        commit_sum=floats[COMMIT_SUM],
        replies={label: ints[slot] for label, slot in _REPLY_SLOTS.items()},
        archives={o: ints[ARCHIVES + i] for i, o in enumerate(ARCHIVE_OUTCOMES)},
    )


def read_stats(fd: int, tries: int = 10) -> StatsSnapshot:
    """Read the block open at `fd`: until two reads in a row agree (no value half written),
    `tries` reads at most (then the last)."""
    data = os.pread(fd, SIZE, 0)
    for _ in range(tries - 1):
        again = os.pread(fd, SIZE, 0)
        if again == data:
            break
        data = again
    return decode(data)


class StatsReader:
    """A reader of the block at `path` that follows the writer's restarts (a new file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    def read(self) -> StatsSnapshot | None:
        """The block as it is now; None when there is none (FileNotFoundError is not raised);
        StatsLayoutError for a file of another layout; OSError when it cannot be read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.close()
            return None
        key = (st.st_dev, st.st_ino)
        if key != self._key or self._fd is None:
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._key = (os.fstat(self._fd).st_dev, os.fstat(self._fd).st_ino)
        return read_stats(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._key = None, None
