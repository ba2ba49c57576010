"""A stand-in for the writer, run as its own process by test_script_isolation.py.

It makes itself a child subreaper as the writer does, runs one script through the writer's
event-driven path (`begin`, `watch`, `step` in a select loop), with a relay-like sibling
process started after the script (so only `spare` keeps it alive), and prints one JSON line:
the outcome, what was left alive of the script at the moment its outcome came back, and what
became of the sibling. Argument: a JSON object (see `main`).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from att_jm import runner
from att_jm.domain.runs import Outcome, Run
from att_jm.runner import ScriptRunner


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def marked(execution_id: str) -> list[int]:
    """Live processes whose environment holds this execution's marker."""
    wanted = f"ATT_JM_EXECUTION_ID={execution_id}".encode()
    return [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if alive(pid) and wanted in _environ(pid)]


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def zombie_children(skip: int) -> list[int]:
    """This process's children that are dead and not reaped, except `skip`."""
    me, found = os.getpid(), []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] == "Z" and int(stat[1]) == me and int(name) != skip:
            found.append(int(name))
    return found


def follow(scripts: ScriptRunner, request: Run, sibling_argv: list[str],
           stop_at: str | None = None) -> tuple[Outcome, subprocess.Popen[bytes] | None]:
    begun = scripts.begin(request)
    assert not isinstance(begun, Outcome), begun
    if stop_at is not None:  # a stop while the script runs, as ScriptSlot.stop does it
        deadline = time.monotonic() + 20
        while not os.path.exists(stop_at):
            assert time.monotonic() < deadline, f"{stop_at} never appeared"
            time.sleep(0.01)
        scripts.kill_running()
        return scripts.watch(begun).finish(), None
    sibling = None
    if sibling_argv:  # started after the script: its start time alone does not spare it
        sibling = subprocess.Popen(sibling_argv, process_group=0)
        spared.append(sibling.pid)
    running = scripts.watch(begun)
    with selectors.DefaultSelector() as selector:
        while True:
            fds = running.fds()
            for fd in fds:
                selector.register(fd, selectors.EVENT_READ)
            ready = {key.fd for key, _ in selector.select(running.wait_seconds())}
            for fd in fds:
                selector.unregister(fd)
            outcome = running.step(ready)
            if outcome is not None:
                return outcome, sibling


spared: list[int] = []


def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: scripts, script, command, timeout, execution_id; run_as (a user or null);
    subreaper (bool); children_files (false: read all of /proc as without CONFIG_PROC_CHILDREN);
    sibling (an argv, or empty for none); switch (direct, spawner, spawner-popen, setpriv or
    popen: how the script user is switched to); stop_at (a path: stop the script once it
    exists); kill_spawner (SIGKILL the spawner once the outcome came back, then close the
    runner)."""
    if spec.get("subreaper", True):
        assert runner.become_subreaper()
    if spec.get("children_files") is False:
        runner._CHILDREN_FILES = False  # the fallback, as without CONFIG_PROC_CHILDREN
    switch = spec.get("switch", "spawner")
    scripts = ScriptRunner(spec["scripts"], kill_grace_seconds=0.2, run_as=spec.get("run_as"),
                           spare=lambda: spared, use_spawner=switch.startswith("spawner"),
                           use_setpriv=switch != "popen", use_direct=switch == "direct")
    if scripts.spawner is not None:
        scripts.spawner.with_popen = switch == "spawner-popen"
    request = Run(spec["execution_id"], "job", "trigger", 1, spec["script"],
                         spec.get("command", ""), spec.get("timeout", 10.0))
    outcome, sibling = follow(scripts, request, spec.get("sibling", []), spec.get("stop_at"))
    if spec.get("kill_spawner"):  # between two scripts, the last one not reaped yet
        assert scripts.spawner is not None and scripts.spawner.pid is not None
        os.kill(scripts.spawner.pid, 9)
        scripts.close()
    report: dict[str, Any] = {
        "result": outcome.result, "feedback": outcome.feedback, "exit_code": outcome.exit_code,
        "timed_out": outcome.timed_out, "duration": outcome.duration_seconds,
        "stdout": outcome.stdout_tail, "stderr": outcome.stderr_tail,
        "marked": marked(request.execution_id),  # at once: nothing left, no grace period
        "zombies": zombie_children(sibling.pid if sibling else -1),
        "children_files": runner._CHILDREN_FILES,
    }
    if sibling is not None:
        report["sibling_pid"] = sibling.pid
        report["sibling_alive"] = sibling.poll() is None
        if report["sibling_alive"]:
            sibling.kill()
        report["sibling_returncode"] = sibling.wait(5)  # its status, not stolen by the sweep
    return report


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
