"""The archive file (`att_jm.log.archive`): written streaming, read back byte for byte, and
checked against its seals; a change, a truncation or a broken chain is named."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import zstandard

from att_jm.log.archive import ArchiveError, ArchiveReader, ArchiveWriter, Header
from att_jm.log.archive_check import check_archive
from att_jm.log.chain import SEALED_TOPIC, SealHasher
from att_jm.log.codec import encode_state
from att_jm.log.stored import Row

LEDGER = "9b11966ad13755e88b109ff18613f31d"


def rows(first: int, count: int) -> list[Row]:
    out = []
    for position in range(first, first + count):
        state = orjson.dumps({"timestamp": {"_type_": "datetime_iso",
                                            "_data_": "2026-03-02T08:00:01.000001+00:00"},
                              "n": position, "text": "x" * (position % 7)})
        # every other state in the compact form: archived as stored
        stored = encode_state(state) if position % 2 else state
        out.append(Row(position, f"{position:032x}", 1, "att_jm:Test.Happened", stored))
    return out


def seal_row(covered: list[Row], previous: str, at: int) -> tuple[Row, str]:
    hasher = SealHasher(previous)
    hasher.add_rows(covered)
    state = {"timestamp": {"_type_": "datetime_iso", "_data_": "2026-03-02T08:00:02+00:00"},
             "position": covered[-1].position, "previous": previous, "hash": hasher.hash,
             "count": hasher.count, "ranges": hasher.ranges, "digests": hasher.digests,
             "actor": "sealer"}
    return Row(at, LEDGER, at, SEALED_TOPIC, orjson.dumps(state)), hasher.hash


def write(path: Path, first: int = 1, count: int = 30, previous: str = "") -> list[Row]:
    """An archive of `count` rows from `first`, in seals of 10 rows."""
    data = rows(first, count)
    writer = ArchiveWriter(str(path), Header(first, first + count - 1, previous, 0))
    digest = previous
    for start in range(0, count, 10):
        seal, digest = seal_row(data[start : start + 10], digest, first + count + start)
        writer.add_seal(seal)
    writer.add_rows(data)
    size, sha = writer.finish()
    assert size == path.stat().st_size and len(sha) == 64
    assert not Path(str(path) + ".tmp").exists()
    return data


def test_rows_come_back_as_stored_and_the_archive_checks(tmp_path: Path) -> None:
    path = tmp_path / "a.arc"
    data = write(path)
    with ArchiveReader(str(path)) as reader:
        assert (reader.header.first, reader.header.last) == (1, 30)
        assert len(reader.seal_rows) == 3
        assert list(reader.rows()) == data
        assert reader.trailer is not None and reader.trailer["rows"] == 30
    check = check_archive(str(path))
    assert check.ok, check.problems
    assert (check.rows, len(check.seals)) == (30, 3)


def test_a_changed_row_is_named_by_its_position(tmp_path: Path) -> None:
    path = tmp_path / "a.arc"
    write(path)
    plain = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    changed = plain.replace(b'"n":12,', b'"n":13,', 1)
    assert changed != plain
    path.write_bytes(zstandard.ZstdCompressor().compress(changed))
    problems = check_archive(str(path)).problems
    assert ("modified", 12, "archive a.arc: position 12: the archived event was modified"
            ) in problems
    assert any("seal #2" in text for _, _, text in problems)
    assert any("SHA-256" in text for _, _, text in problems)


def test_a_truncated_file_or_a_broken_chain_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.arc"
    write(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    problems = check_archive(str(path)).problems
    assert problems and all("a.arc" in text for _, _, text in problems)
    other = tmp_path / "b.arc"  # its seal continues another hash than its header says
    header = Header(1, 30, "11" * 32, 0)
    data = rows(1, 30)
    writer = ArchiveWriter(str(other), header)
    seal, _ = seal_row(data, "00" * 32, 31)
    writer.add_seal(seal)
    writer.add_rows(data)
    writer.finish()
    assert any(kind == "chain" for kind, _, _ in check_archive(str(other)).problems)


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.arc"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"format": "other"}\n'))
    with pytest.raises(ArchiveError, match="not an att-jm archive"):
        ArchiveReader(str(path))
    path.write_bytes(b"plain text")
    with pytest.raises(ArchiveError):
        ArchiveReader(str(path))
