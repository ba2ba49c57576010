"""The bare-loop baselines' script starts, run in a fresh interpreter.

`bench.executions` and `bench.latency` compare the service's script starts with a bare
`subprocess.run` loop. Run inside the benchmark's own process, that loop's cost depends on
what ran before it: as root the scripts start as the script user (`user`, `group`,
`extra_groups`), which keeps Python's `subprocess` from using `vfork`, and a `fork` copies the
parent's page tables, so the loop slows down as the benchmark process grows (measured: 431
starts/s from a fresh interpreter, 102/s from one of 464 MiB; bench/README.md). Here the
loop runs in a new interpreter that imports nothing but the standard library, so the baseline
is what any runner must pay, whatever the suite measured first.

Usage (by `run_loop`): python -m bench.spawnloop '<JSON request>' -> one JSON line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TIMEOUT = 60.0


def _loop(request: dict[str, Any]) -> dict[str, Any]:
    """Start `script` `count` times; `mode` "rate": starts per second, and the CPU seconds
    of the loop itself and of the scripts (user + system); "stamps": the time_ns just
    before each start, by execution id (`prefix` + n)."""
    script, argv, count = request["script"], request["args"], request["count"]
    env_base, options = request["env"], request["options"]
    started: dict[str, int] = {}
    own, scripts = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                       resource.RUSAGE_CHILDREN))
    begun = time.perf_counter()
    for n in range(count):
        execution_id = f"{request['prefix']}{n}"
        env = dict(env_base, ATT_JM_EXECUTION_ID=execution_id)
        args = [script, *(arg.replace("{n}", str(n)) for arg in argv)]
        started[execution_id] = time.time_ns()
        subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                       cwd=request["cwd"], env=env, start_new_session=True, close_fds=True,
                       check=True, timeout=TIMEOUT, **options)
    seconds = time.perf_counter() - begun
    if request["mode"] == "rate":
        return {"rate": count / seconds, "seconds": seconds,
                "cpu": {"loop": _cpu(resource.RUSAGE_SELF) - own.ru_utime - own.ru_stime,
                        "scripts": _cpu(resource.RUSAGE_CHILDREN) - scripts.ru_utime
                        - scripts.ru_stime}}
    return {"started": started}


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_loop(*, mode: str, script: Path, args: list[str], count: int, cwd: Path,
             env: dict[str, str], options: dict[str, Any], prefix: str = "x-") -> dict[str, Any]:
    """Run `_loop` in a fresh interpreter (see the module docstring); its answer."""
    request = {"mode": mode, "script": str(script), "args": args, "count": count,
               "cwd": str(cwd), "env": env, "options": options, "prefix": prefix}
    done = subprocess.run(
        [sys.executable, "-m", "bench.spawnloop", json.dumps(request)],
        capture_output=True, text=True, check=False, timeout=TIMEOUT + count * 2.0,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the baseline loop failed: {done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


if __name__ == "__main__":
    print(json.dumps(_loop(json.loads(sys.argv[1]))))
