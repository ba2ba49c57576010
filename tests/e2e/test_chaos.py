"""The chaos harness (bench/chaos.py), scaled down: every scenario, so CI guards each promise.

Each scenario sets up its own site as `./run.sh` does (`att-jm setup`: users and roles, the
ACL, the client-id plugin, TLS), runs its mosquitto from the generated config and its own
`att-jm serve` with the site's settings, injects its faults, then audits the store: no id
lost or logged twice, no execution started twice or left running, no script run twice, every
bad message answered and recorded, or refused by the broker when its actor level is not its
sender's. `python -m bench.chaos` runs the same code at full size.
"""

from __future__ import annotations

import sys

import pytest
from helpers.broker import REPO_ROOT, require_mosquitto

sys.path.insert(0, str(REPO_ROOT))  # bench/ lives at the repository root, beside tests/

from bench.chaos import SCENARIOS, Config, run_scenario


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chaos_scenario_quick(scenario: str) -> None:
    require_mosquitto()
    figures = run_scenario(scenario, Config(quick=True, seed=20261122, count=None, kills=None,
                                            workdir=None))
    assert figures.ok, f"{figures.line()}\n" + "\n".join(figures.problems)
