"""Finding live processes by what they carry (for checks that scripts are really gone)."""

from __future__ import annotations

from pathlib import Path


def pids_with_env(entry: str) -> list[int]:
    """Live (not zombie) processes whose environment holds `entry` (`NAME=value`)."""
    found = []
    wanted = entry.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if wanted in environ and state != "Z":
            found.append(int(proc.name))
    return found
