"""The writer's stats block (`att_jm.metrics.shared`): its layout written and read back, the
refusal of another layout, a writer's restart, and the hooks' semantics."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from att_jm.errors import REPLY_CODES
from att_jm.metrics import cost, shared
from att_jm.metrics.shared import (
    COMMIT_BOUNDS,
    HEADER_BYTES,
    SIZE,
    StatsLayoutError,
    StatsReader,
    decode,
    open_writer_stats,
)


def store(tmp_path: Path) -> str:
    return str(tmp_path / "att-jm.db")


def test_what_the_writer_stores_a_reader_reads_back(tmp_path: Path) -> None:
    stats = open_writer_stats(store(tmp_path))
    assert stats.path == store(tmp_path) + ".stats"
    reader = StatsReader(stats.path)
    first = reader.read()
    assert first is not None
    assert first.pid == os.getpid() and first.turns == 0
    assert abs(first.started_at - time.time()) < 5
    assert first.heartbeat_mono == first.started_mono  # no turn yet: the start
    stats.turn(True)
    stats.turn(False)
    stats.committed(0.0003)
    stats.committed(0.001)  # on a bound: in that bucket (le)
    stats.committed(99.0)  # over every bound: +Inf
    stats.replied({"ok": True, "result": {}})
    stats.replied({"ok": False, "error": {"code": "not_found", "message": "no job"}})
    stats.replied({"ok": False, "error": {"code": "made-up"}})  # not a reply code: internal
    stats.replied({"ok": False})
    stats.fault("views")
    stats.archived("done")
    stats.archived("nothing")
    stats.archived("nothing")
    stats.archived("made-up")  # not an outcome: not counted
    read = reader.read()
    assert read is not None
    assert read.turns == 2 and read.connected is False
    assert read.heartbeat_mono > read.started_mono
    assert read.heartbeat_age() < 5
    assert abs(read.heartbeat_at - time.time()) < 5
    buckets = list(read.commit_buckets)
    assert len(buckets) == len(COMMIT_BOUNDS) + 1
    assert buckets[0] == 1 and buckets[COMMIT_BOUNDS.index(0.001)] == 1 and buckets[-1] == 1
    assert read.commit_count == 3
    assert read.commit_sum == pytest.approx(99.0013)
    assert read.replies == {"ok": 1, "not_found": 1, "internal": 2} | {
        code: 0 for code in REPLY_CODES - {"not_found", "internal"}}
    assert read.fault == "views" and read.faults["views"] == 1
    assert read.archives == {"done": 1, "nothing": 2, "failed": 0}
    stats.close()
    reader.close()


def test_a_fault_is_counted_when_it_begins(tmp_path: Path) -> None:
    stats = open_writer_stats(store(tmp_path))
    reader = StatsReader(str(stats.path))
    for kind in ("store", "store", None, "store", "views", None, "something-new"):
        stats.fault(kind)
    read = reader.read()
    assert read is not None
    assert read.faults == {"store": 2, "views": 1, "other": 1}
    assert read.fault == "other"
    stats.fault(None)
    again = reader.read()
    assert again is not None and again.fault is None


def test_the_file_is_readable_by_all_and_never_by_a_half_written_name(tmp_path: Path) -> None:
    stats = open_writer_stats(store(tmp_path))
    path = Path(str(stats.path))
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.stat().st_size == SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["att-jm.db.stats"]  # no temp left


def test_a_restarted_writer_makes_a_new_block_and_the_reader_follows(tmp_path: Path) -> None:
    first = open_writer_stats(store(tmp_path), pid=111)
    reader = StatsReader(str(first.path))
    first.turn(True)
    before = reader.read()
    assert before is not None and before.pid == 111 and before.turns == 1
    second = open_writer_stats(store(tmp_path), pid=222)
    after = reader.read()
    assert after is not None and after.pid == 222 and after.turns == 0  # counters restart
    first.turn(True)  # the old mapping (an unlinked file) no longer shows
    still = reader.read()
    assert still is not None and still.turns == 0
    first.close()
    second.close()


def test_no_block_reads_as_none(tmp_path: Path) -> None:
    assert StatsReader(str(tmp_path / "nothing.stats")).read() is None


@pytest.mark.parametrize("where", [":memory:", "file:x?mode=memory&cache=shared",
                                   "postgresql://user@db.example/att"])
def test_a_store_that_is_no_local_file_gets_an_anonymous_block(where: str) -> None:
    stats = open_writer_stats(where)
    assert stats.path is None
    stats.turn(True)
    stats.committed(0.01)
    stats.close()


def test_a_block_that_cannot_be_made_is_anonymous_and_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    stats = open_writer_stats(str(tmp_path / "a-file" / "att-jm.db"))  # its "directory" is a file
    assert stats.path is None
    stats.turn(True)
    assert "metrics.stats_block_unavailable" in capsys.readouterr().out


def _block(tmp_path: Path) -> bytes:
    stats = open_writer_stats(store(tmp_path))
    stats.turn(True)
    data = Path(str(stats.path)).read_bytes()
    stats.close()
    return data


def test_a_reader_refuses_another_version(tmp_path: Path) -> None:
    data = bytearray(_block(tmp_path))
    assert decode(bytes(data)).turns == 1
    struct.pack_into("=I", data, 8, shared.LAYOUT_VERSION + 1)
    with pytest.raises(StatsLayoutError, match="layout version 2"):
        decode(bytes(data))


def test_a_reader_refuses_another_layout_of_the_same_version(tmp_path: Path) -> None:
    data = bytearray(_block(tmp_path))
    struct.pack_into("=I", data, 12, shared.FINGERPRINT ^ 1)  # e.g. one more reply code
    with pytest.raises(StatsLayoutError, match="fingerprint"):
        decode(bytes(data))


def test_a_reader_refuses_what_is_no_stats_block(tmp_path: Path) -> None:
    data = _block(tmp_path)
    with pytest.raises(StatsLayoutError, match="magic"):
        decode(b"SQLite format 3\x00" + data[16:])
    with pytest.raises(StatsLayoutError, match="shorter than the header"):
        decode(data[:HEADER_BYTES - 1])
    with pytest.raises(StatsLayoutError, match="size"):
        decode(data[:-8])
    path = tmp_path / "odd.stats"
    path.write_bytes(b"x" * SIZE)
    with pytest.raises(StatsLayoutError):
        StatsReader(str(path)).read()


def test_the_fingerprint_follows_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    before = shared._fingerprint()
    monkeypatch.setattr(shared, "REPLY_LABELS", (*shared.REPLY_LABELS, "new_code"))
    assert shared._fingerprint() != before


def test_the_cost_benchmark_runs() -> None:
    rows = cost.measure(number=200, repeat=1)
    assert rows[0][0].startswith("loop turn")
    assert all(hook > 0 and base > 0 for _, hook, base in rows)
