"""What a bare loop pays per script start, with and without what the service must add.

Usage: python -m bench.startcost [--count 2000] [--rounds 4]

Four loops, each in a fresh interpreter that imports only the standard library (as
`bench.spawnloop`), each starting `tests/scripts/ok` (`exit 0`) `count` times with
`subprocess.run` and the runner's options (argv [script, Command], stdin empty, stdout and
stderr captured, the scripts directory, a new session, umask 077), interleaved round by
round; as root:

- fork: as the script user (Popen's `user`, `group`, `extra_groups=[]`: Python then forks),
  the executions baseline of `bench.executions` and the suite;
- fork + commit: the same, after one durable SQLite commit per start (one row of 300 bytes,
  WAL, synchronous=FULL): what any runner that records each start before it makes it pays;
- vfork: already the script user's (what the spawner does: it becomes that user when it
  starts), so Python uses `vfork`;
- vfork + commit: the same after the commit.

Not as root, the user switch is left out and the two pairs measure the same start.
Prints the median of the rounds (starts per second) and each loop's ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import populate_scripts_dir, script_spawn_options

LOOP = r"""
import json, os, sqlite3, subprocess, sys, time
request = json.loads(sys.argv[1])
script, cwd, options = request["script"], request["cwd"], request["options"]
con = None
if request["commit"]:
    con = sqlite3.connect(request["db"], isolation_level=None)
    con.execute("pragma journal_mode=wal")
    con.execute("pragma synchronous=FULL")
    con.execute("create table if not exists t(id integer primary key, v blob)")
if request["become"]:
    os.setgroups([])
    os.setresgid(options["group"], options["group"], options["group"])
    os.setresuid(options["user"], options["user"], options["user"])
    options = {"umask": options["umask"]}
row = b"x" * 300
env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
begun = time.perf_counter()
for n in range(request["count"]):
    if con is not None:
        con.execute("begin")
        con.execute("insert into t(v) values (?)", (row,))
        con.execute("commit")
    subprocess.run([script, "command"], stdin=subprocess.DEVNULL, capture_output=True,
                   cwd=cwd, env=env, start_new_session=True, close_fds=True, check=True,
                   **options)
print(request["count"] / (time.perf_counter() - begun))
"""

LOOPS = {"fork": (False, False), "fork + commit": (False, True),
         "vfork": (True, False), "vfork + commit": (True, True)}


def run(name: str, count: int, scripts: Path, db: Path, options: dict[str, int]) -> float:
    become, commit = LOOPS[name]
    if become and not options:
        become = False  # not root: no switch to leave out
    for stale in db.parent.glob(db.name + "*"):
        stale.unlink()
    request = {"script": str(scripts / "ok"), "cwd": str(scripts), "count": count,
               "options": options or {"umask": 0o077}, "become": become, "commit": commit,
               "db": str(db)}
    done = subprocess.run([sys.executable, "-I", "-c", LOOP, json.dumps(request)],
                          capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the {name} loop failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    options = script_spawn_options()
    with tempfile.TemporaryDirectory(prefix="att-jm-startcost-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        scripts = root / "scripts"
        populate_scripts_dir(scripts)
        data = root / "data"
        data.mkdir()
        if options:
            os.chown(data, options["user"], options["group"])
        rates: dict[str, list[float]] = {name: [] for name in LOOPS}
        for _ in range(args.rounds):
            for name in LOOPS:
                rates[name].append(run(name, args.count, scripts, data / "starts.db", options))
    first = statistics.median(rates["fork"])
    print(f"script starts, {args.count:,} per loop, {args.rounds} rounds: median (min-max)"
          " starts/s, ratio to the first")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:<16} {median:7,.0f} ({min(values):,.0f}-{max(values):,.0f})"
              f"  {median / first:.2f}x")


if __name__ == "__main__":
    main()
