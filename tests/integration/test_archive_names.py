"""Archives named by their range: an archival into a directory names its file by the
positions and times it holds, so the directory lists a chain oldest first and `--archive DIR`
reads it; an interrupted run's file is found again by a re-run of the same range, or set
aside (`.interrupted`) when the range moved on, so the directory stays one chain."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from helpers.archive import Crash, audit, busy_history, crash_after, stored_rows
from helpers.audit_run import ScriptedRun
from helpers.store import store_for

from att_jm.audit.archiving import archive
from att_jm.log.archive import ArchiveReader
from att_jm.log.archive_check import check_archive
from att_jm.log.archive_names import expand, range_name
from att_jm.log.records import decode
from att_jm.log.rows import AuditError

NAME = re.compile(r"^att-jm-(\d{12})-(\d{12})_(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)\.arc$")


@dataclass(frozen=True)
class Log:
    """A closed store with a sealed history: its path, its views' path and its end."""

    store: str
    views_path: str
    end: int


@pytest.fixture
def run(tmp_path: Path, request: pytest.FixtureRequest) -> Log:
    scripted = ScriptedRun(tmp_path, seal_every=20, store=store_for(request, "sqlite", tmp_path),
                           marks=True)
    busy_history(scripted, 60)
    scripted.seal()
    log = Log(scripted.store, scripted.views_path, scripted.position)
    scripted.close()
    return log


def verify_dir(store: str, directory: Path) -> tuple[int, dict[str, object]]:
    code, out = audit(store, "verify", "--json", "--archive", str(directory))
    return code, orjson.loads(out)


def test_the_range_name_sorts_as_positions_and_reads_as_times() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    name = range_name(1, 52_340, at, datetime(2026, 2, 1, tzinfo=UTC))
    assert name == "att-jm-000000000001-000000052340_20260102T030405Z_20260201T000000Z.arc"
    names = [range_name(first, last, at, at) for first, last in
             [(9_001, 100_000), (1, 9_000), (100_001, 1_000_000)]]
    assert sorted(names) == [names[1], names[0], names[2]]


def test_an_archival_into_a_directory_is_named_by_its_range(run: Log,
                                                            tmp_path: Path) -> None:
    end = run.end
    directory = tmp_path / "archives"  # created: the path ends with a separator
    first = archive(run.store, f"{directory}/", upto=end // 3, views_path=run.views_path)
    second = archive(run.store, str(directory), upto=end // 2, views_path=run.views_path)
    files = sorted(directory.glob("*.arc"))
    assert [str(f) for f in files] == [first.archive, second.archive]
    for path in files:
        match = NAME.match(path.name)
        assert match, path.name
        with ArchiveReader(str(path)) as reader:
            rows = list(reader.rows())
            header = reader.header
        assert (int(match[1]), int(match[2])) == (header.first, header.last)
        assert match[3] == decode(rows[0]).at.strftime("%Y%m%dT%H%M%SZ")
        assert match[4] == decode(rows[-1]).at.strftime("%Y%m%dT%H%M%SZ")
        assert rows[0].position == header.first and rows[-1].position == header.last
    assert files[0].name < files[1].name
    code, result = verify_dir(run.store, directory)  # the directory read as the chain
    assert code == 0 and result["ok"] is True, result
    assert result["archived"]["archives"] == [f.name for f in files]  # type: ignore[index]


def interrupted(run: Log, directory: Path, upto: int) -> Path:
    """The file an archival into `directory` up to `upto` leaves when it crashes after
    writing it (step a)."""
    with pytest.raises(Crash):
        archive(run.store, f"{directory}/", upto=upto, views_path=run.views_path,
                crash=crash_after("a"))
    (left,) = directory.glob("*.arc")
    return left


def test_a_re_run_of_the_same_range_takes_the_interrupted_file_again(
        run: Log, tmp_path: Path) -> None:
    end = run.end
    directory = tmp_path / "archives"
    left = interrupted(run, directory, upto=end // 3)
    result = archive(run.store, f"{directory}/", upto=end // 3, views_path=run.views_path)
    assert result.archive == str(left) and result.set_aside == []
    assert sorted(directory.iterdir()) == [left]
    assert verify_dir(run.store, directory)[0] == 0


def test_an_interrupted_file_of_another_range_is_set_aside_not_deleted(
        run: Log, tmp_path: Path) -> None:
    end = run.end
    directory = tmp_path / "archives"
    left = interrupted(run, directory, upto=end // 3)
    # Left as it is, the interrupted file and the next archive both start at position 1.
    result = archive(run.store, f"{directory}/", upto=end // 2, views_path=run.views_path)
    assert result.archive != str(left)
    aside = left.with_name(left.name + ".interrupted")
    assert result.set_aside == [str(aside)]
    assert aside.is_file() and not left.exists()
    assert [f.name for f in directory.glob("*.arc")] == [Path(result.archive).name]
    code, found = verify_dir(run.store, directory)
    assert code == 0 and found["ok"] is True, found
    assert check_archive(str(aside)).ok  # still a whole archive of its range


def test_a_directory_without_archives_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditError, match="holds no archive"):
        expand([str(tmp_path / "empty")])
    assert expand([str(tmp_path / "x.arc")]) == [str(tmp_path / "x.arc")]


def test_an_interrupted_file_that_cannot_be_set_aside_stops_the_run_before_the_store(
        run: Log, tmp_path: Path) -> None:
    directory = tmp_path / "archives"
    left = interrupted(run, directory, upto=run.end // 3)
    blocker = left.with_name(left.name + ".interrupted")  # a directory there: no rename
    blocker.mkdir()
    (blocker / "kept").write_text("an operator's")
    rows = stored_rows(run.store)
    with pytest.raises(AuditError, match="cannot set aside"):
        archive(run.store, f"{directory}/", upto=run.end // 2, views_path=run.views_path)
    assert stored_rows(run.store) == rows  # nothing of the store changed
    assert left.is_file()
    (blocker / "kept").unlink()
    blocker.rmdir()
    result = archive(run.store, f"{directory}/", upto=run.end // 2, views_path=run.views_path)
    assert result.set_aside == [str(blocker)]  # the next run sets it aside and goes on
    assert verify_dir(run.store, directory)[0] == 0


def test_an_archive_of_another_store_in_the_directory_is_left_as_it_is(
        run: Log, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    directory = tmp_path / "archives"
    other = ScriptedRun(tmp_path / "other", seal_every=20,
                        store=store_for(request, "sqlite", tmp_path / "other"), marks=True)
    busy_history(other, 20)
    other.seal()
    end = other.position
    other.close()
    foreign = archive(other.store, f"{directory}/", upto=end, views_path=other.views_path)
    result = archive(run.store, f"{directory}/", upto=run.end // 3, views_path=run.views_path)
    assert result.set_aside == []  # it also starts at position 1, but holds another log
    assert Path(foreign.archive).is_file()
