"""bench/timeline.py cuts a batch into its steps from the writer's and the relay's marks."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers.broker import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # bench/ lives at the repository root, beside tests/

from bench.timeline import Marks, steps

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
