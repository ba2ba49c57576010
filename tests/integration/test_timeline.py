"""bench/timeline.py cuts a batch into its steps from the writer's and the relay's marks."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers.broker import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # bench/ lives at the repository root, beside tests/

from bench.timeline import Marks, commits, steps

MS = 1_000_000  # nanoseconds


def test_each_step_of_a_batch_from_the_marks_of_both_processes(tmp_path: Path) -> None:
    # The writer: a batch drained at 0, committed 1 -> 3 ms (rows 5-8), the relay woken at 4.
    (tmp_path / "1.txt").write_text(
        f"drain 1 {0}\ncommit 5 8 {1 * MS} {3 * MS}\nwake 8 {4 * MS}\n"
        f"drain 1 {20 * MS}\n")  # a later batch that stored nothing: no commit mark
    # The relay: a turn that knew only row 4, then the one that saw row 8 at 6 ms; rows 5-8
    # read 7 -> 8 ms, published at 10 ms.
    (tmp_path / "2.txt").write_text(
        f"turn 4 {int(4.5 * MS)}\nturn 8 {6 * MS}\nread 5 4 {7 * MS} {8 * MS}\n"
        f"published 5 8 {10 * MS}\n")
    found = steps(Marks.read(tmp_path))
    assert list(found) == [4]
    assert dict(found[4]) == {
        "handle": [1.0], "commit": [2.0], "to relay": [1.0], "relay turn": [2.0], "read": [1.0],
        "publish": [2.0], "drain -> first published": [10.0],
    }


def test_a_commit_the_relay_never_published_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "1.txt").write_text(f"drain 1 0\ncommit 1 2 {MS} {2 * MS}\nwake 2 {3 * MS}\n")
    assert steps(Marks.read(tmp_path)) == {}


def test_commits_are_grouped_by_the_checkpoint_beside_them_and_cut_in_sql_and_commit(
    tmp_path: Path,
) -> None:
    # Checkpoints (label, frames, copied, begun, time): the store's 10 -> 12 ms, the views
    # file's 30 -> 31 ms.
    (tmp_path / "1.txt").write_text(
        f"checkpoint 0 50 50 {10 * MS} {12 * MS}\ncheckpoint 1 9 9 {30 * MS} {31 * MS}\n")
    # Commits (first, last, begun, time): one before any checkpoint, one across the store's,
    # the first after it, the next one, one across the views file's.
    (tmp_path / "2.txt").write_text(
        f"commit 1 4 {1 * MS} {2 * MS}\ncommit 5 8 {11 * MS} {14 * MS}\n"
        f"commit 9 12 {20 * MS} {21 * MS}\ncommit 13 14 {24 * MS} {25 * MS}\n"
        f"commit 15 16 {int(30.5 * MS)} {int(32.5 * MS)}\n"
        f"append {20 * MS} {int(20.25 * MS)} {21 * MS}\n")
    assert commits(Marks.read(tmp_path)) == {
        "no checkpoint running": [1.0, 1.0],
        "a store checkpoint running": [3.0],
        "first after a store one": [1.0],
        "a views checkpoint running": [2.0],
        "part: the SQL": [0.25],
        "part: the COMMIT": [0.75],
    }
