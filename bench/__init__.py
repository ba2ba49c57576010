"""Benchmarks: each prints figures with the baseline measured in the same run.

Every benchmark needs the project's packages (paho-mqtt, eventsourcing, zstandard, ...). Run
by an interpreter without them (`python3 -m bench.suite` from a fresh shell), the package
starts the same command again with the checkout's `.venv/bin/python` when there is one, and
otherwise stops at once with what to do, instead of a table of import errors.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

#: What any benchmark imports (the project's runtime dependencies), by module name.
REQUIRED = ("paho", "eventsourcing", "orjson", "structlog", "zstandard")
#: Set in the environment of the command started again: it is never started a third time.
AGAIN = "ATT_JM_BENCH_AGAIN"


def project_python() -> Path | None:
    """The checkout's virtualenv interpreter, when it exists."""
    candidate = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    return candidate if candidate.exists() else None


def ensure_project_python(
    argv: Sequence[str], required: Sequence[str] = REQUIRED, venv: Path | None = None,
) -> None:
    """When `argv` (`sys.orig_argv`) runs a benchmark (`python -m bench...`) with an
    interpreter that lacks one of `required`: run it again with `venv` (the checkout's
    .venv), or exit with what to do."""
    missing = [name for name in required if importlib.util.find_spec(name) is None]
    if not missing or list(argv[1:2]) != ["-m"]:  # imported, not run: nothing to redo
        return
    if venv is not None and not os.environ.get(AGAIN):
        print(f"bench: {sys.executable} lacks {', '.join(missing)}; running with {venv}",
              file=sys.stderr, flush=True)
        os.environ[AGAIN] = "1"
        os.execv(venv, [str(venv), *argv[1:]])  # noqa: S606 -- the same command, no shell
    sys.exit(f"bench: {sys.executable} cannot import {', '.join(missing)}: run ./test.sh (or "
             "./run.sh) once, which makes .venv with the project's packages, then "
             "`.venv/bin/python -m bench.suite`")


ensure_project_python(sys.orig_argv, venv=project_python())
