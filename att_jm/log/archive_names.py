"""Archive file names: named by the range they hold, so a directory lists them in log order.

`att-jm-<first>-<last>_<from>_<to>.arc`: the first and last log position of the archived
range (12 digits, zero-padded, so that names sort as positions do) and the times of its first
and last row (UTC, to the second). An archival into a directory (`audit archive --output DIR/`,
the service's automatic archival) takes this name, which a re-run of an interrupted archival
of the same range finds again. Readers given a directory (`--archive DIR`) take its `*.arc`
files in name order: oldest first, as a chain of archives must be given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from att_jm.log.rows import AuditError

SUFFIX: Final = ".arc"
_DIGITS: Final = 12


def range_name(first: int, last: int, first_at: datetime, last_at: datetime) -> str:
    """The file name of an archive of positions [first, last], rows from `first_at` to
    `last_at`."""
    def stamp(at: datetime) -> str:
        return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    return f"att-jm-{first:0{_DIGITS}d}-{last:0{_DIGITS}d}_{stamp(first_at)}_{stamp(last_at)}" \
           f"{SUFFIX}"


def is_directory_target(output: str) -> bool:
    """Whether `--output` names a directory to name the archive in: an existing directory,
    or a path that ends with a separator (created then)."""
    return output.endswith((os.sep, "/")) or Path(output).is_dir()


def expand(paths: Iterable[str]) -> list[str]:
    """`--archive` arguments with each directory replaced by its archives in name order (an
    AuditError for a directory that holds none)."""
    files: list[str] = []
    for path in paths:
        if not Path(path).is_dir():
            files.append(path)
            continue
        found = sorted(str(child) for child in Path(path).glob(f"*{SUFFIX}") if child.is_file())
        if not found:
            raise AuditError(f"{path} holds no archive (*{SUFFIX} file)")
        files.extend(found)
    return files
