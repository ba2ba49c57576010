"""What the benchmarks share: a real mosquitto and the real `att-jm serve` (test helpers)."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.broker import Broker  # noqa: E402 -- needs the tests folder on sys.path
from helpers.mqtt import TestClient  # noqa: E402 -- idem
from helpers.service import (  # noqa: E402 -- idem
    Service,
    populate_scripts_dir,
    reachable,
)

__all__ = [
    "Broker", "Service", "TestClient", "broker_and_service", "populate_scripts_dir",
    "script_spawn_options", "shared_file", "summary",
]


#: Settings the service of a benchmark takes from the benchmark's environment: the writer's and
#: the relay's marks (bench/timeline.py, att_jm/timeline.py), the relay's niceness (A/B runs).
PASSED_ON = ("ATT_JM_TIMELINE", "ATT_JM_RELAY_NICE", "ATT_JM_DIRECT_START")


@contextmanager
def broker_and_service(
    extra_args: Sequence[str] = (), store: str | None = None,
) -> Iterator[tuple[Broker, Service]]:
    """A fresh broker and a started service on a fresh store, both stopped afterwards
    (`store`: a given empty one, e.g. a PostgreSQL URL; None: an SQLite file of the round)."""
    with tempfile.TemporaryDirectory(prefix="att-jm-bench-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker").start()
        service = Service(
            broker, store=store or root / "store" / "att-jm.db",
            scripts_dir=populate_scripts_dir(root / "scripts"), log_path=root / "att-jm.log",
            extra_args=extra_args,
            # The benchmarks send thousands of commands as one actor, back to back: the limiter
            # still runs (its cost is measured), it never refuses.
            env={"ATT_JM_COMMAND_RATE": "100000", "ATT_JM_COMMAND_BURST": "1000000",
                 **{k: v for k, v in os.environ.items() if k in PASSED_ON}},
        )
        try:
            service.start(timeout=60)
            yield broker, service
        finally:
            if service.running:
                service.stop()
            broker.stop()


def summary(values: Sequence[float]) -> str:
    """`median (min-max)` of `values`."""
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def script_spawn_options() -> dict[str, Any]:
    """What the service adds to a script's start (runner.ScriptRunner): as root, the script
    user's uid and gid, no other groups, umask 077. The bare-loop baselines start their
    scripts the same way, so they measure what any runner of this service must pay."""
    if os.geteuid() != 0:
        return {}
    from att_jm.config import Settings  # noqa: PLC0415 -- the default script user
    from att_jm.runner import ensure_script_user  # noqa: PLC0415

    user = ensure_script_user(Settings().script_user)
    return {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o077}


def shared_file(path: Path) -> Path:
    """An empty file at `path` that a script running as the script user may append to."""
    reachable(path.parent)
    path.touch()
    path.chmod(0o666)
    return path
