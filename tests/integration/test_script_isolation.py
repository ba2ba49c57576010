"""Scripts never run as root, and nothing a script starts outlives it (real processes).

Running scripts as another user, creating that user and following orphans as a child
subreaper need root: those tests are skipped when not root, except under CI=true (CI runs as
root) where they run and fail. The subreaper tests run a stand-in for the writer in a process
of its own (isolation_driver.py), so the test process itself never becomes a subreaper.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from helpers.processes import pids_with_env
from helpers.runs import run_script

from att_jm import direct_start
from att_jm import runner as runner_module
from att_jm import spawner as spawner_module
from att_jm.domain.runs import Outcome, Run
from att_jm.runner import (
    ScriptRunner,
    ScriptUser,
    ScriptUserError,
    check_script_isolation,
    check_scripts_dir,
    ensure_script_user,
    kill_descendants,
    lookup_script_user,
)
from att_jm.service.inbox import Item, RunFinished
from att_jm.service.scripts import ScriptSlot
from att_jm.spawner import SpawnedScript, Spawner

REPO = pathlib.Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "scripts"
DRIVER = pathlib.Path(__file__).with_name("isolation_driver.py")
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT and os.environ.get("CI") != "true",
    reason="needs root (another user, useradd); CI runs it as root",
)
#: Ids of no one in particular, for the permission checks (no user needs to exist).
UID, GID = 64999, 64998


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def children_of(parent: int) -> list[int]:
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            fields = pathlib.Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(name))
    return found


@pytest.fixture
def open_dir() -> Iterator[pathlib.Path]:
    """A fresh directory any user can enter (0755, in /tmp): not under pytest's 0700 tmp."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="att-jm-isolation-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scripts(open_dir: pathlib.Path) -> pathlib.Path:
    """A scripts directory (root-owned when root, 0755) holding copies of tests/scripts."""
    target = open_dir / "scripts"
    target.mkdir(mode=0o755)
    for source in HELPERS.iterdir():
        if source.is_file():
            shutil.copy(source, target / source.name)
            (target / source.name).chmod(0o755)
    return target


@pytest.fixture(scope="module")
def script_user() -> Iterator[ScriptUser]:
    """A system user made for these tests by ensure_script_user, deleted afterwards."""
    name = f"att-jm-t{uuid.uuid4().hex[:8]}"
    user = ensure_script_user(name)
    yield user
    delete_user(user)


def delete_user(user: ScriptUser) -> None:
    """userdel, once whatever still runs as the user (only these tests did) is killed."""
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{name}").st_uid == user.uid:
                os.kill(int(name), 9)
    subprocess.run(["userdel", user.name], check=False, capture_output=True)


def drive(scripts: pathlib.Path, **spec: Any) -> dict[str, Any]:
    """Run one script in a writer-like subreaper process (isolation_driver.py); its report."""
    spec.setdefault("execution_id", f"exec-{uuid.uuid4().hex}")
    done = subprocess.run([sys.executable, str(DRIVER), json.dumps({"scripts": str(scripts),
                          **spec})], capture_output=True, check=False, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr.decode()
    report: dict[str, Any] = json.loads(done.stdout.decode().splitlines()[-1])
    report["execution_id"] = spec["execution_id"]
    return report


def daemon_pid(report: dict[str, Any]) -> int:
    return int(report["stdout"].split("daemon=", 1)[1].split()[0])


# Who scripts run as ----------------------------------------------------------------------


@needs_root
def test_the_script_user_is_created_once_as_a_system_user_without_a_shell(
    script_user: ScriptUser,
) -> None:
    assert ensure_script_user(script_user.name) == script_user  # already there: unchanged
    assert lookup_script_user(script_user.name) == script_user
    entry = subprocess.run(["getent", "passwd", script_user.name], capture_output=True,
                           check=True, text=True).stdout.strip().split(":")
    assert entry[5:] == ["/nonexistent", "/usr/sbin/nologin"]
    assert 0 < script_user.uid < 1000  # a system user (Debian: SYS_UID_MAX 999)
    assert not pathlib.Path("/nonexistent").exists()


def test_an_unknown_script_user_is_an_error() -> None:
    with pytest.raises(ScriptUserError, match="no user named 'att-jm-no-such-user'"):
        lookup_script_user("att-jm-no-such-user")


@needs_root
def test_as_root_a_missing_run_as_user_stops_the_runner_being_made(
    scripts: pathlib.Path,
) -> None:
    with pytest.raises(ScriptUserError, match="no user named 'att-jm-no-such-user'"):
        ScriptRunner(scripts, run_as="att-jm-no-such-user")


def test_not_as_root_run_as_is_ignored_with_one_log_line(
    scripts: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with structlog.testing.capture_logs() as logs:
        scripts_runner = ScriptRunner(scripts, run_as="att-jm-no-such-user")
    assert scripts_runner.user is None
    assert [line["event"] for line in logs] == ["runner.run_as_ignored"]
    assert logs[0]["run_as"] == "att-jm-no-such-user"


@needs_root
def test_as_root_a_script_runs_as_the_script_user_without_other_groups(
    scripts: pathlib.Path, script_user: ScriptUser
) -> None:
    outcome = run_script(ScriptRunner(scripts, run_as=script_user.name),
        Run("exec-who", "job", "trigger", 1, "whoami", "", 10)
    )
    assert (outcome.result, outcome.feedback) == (3, (
        f"uid={script_user.uid} user={script_user.name} gid={script_user.gid} "
        f"groups={script_user.gid} umask=0077"
    ))


def step_until(slot: ScriptSlot, finished: list[Item], count: int, deadline: float) -> None:
    """Drive `slot` as the writer's loop does until `count` executions have ended."""
    while len(finished) < count:
        assert time.monotonic() < deadline, f"execution {count} never ended"
        ready, _, _ = select.select(slot.fds(), [], [], slot.wait_seconds())
        slot.step(ready)


#: The three ways a script switches to the script user: the spawner (the default), setpriv
#: (where the spawner cannot start), Popen itself (without setpriv either).
@pytest.fixture
def spawner_not_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's script slot starts its scripts through the spawner (its tests)."""
    monkeypatch.setenv(direct_start.DIRECT_START_ENV, "0")


#: The service's own vfork (att_jm._start), the spawner (starting its scripts directly, and
#: by Popen: its switch back), setpriv, Popen's own switch.
SWITCHES = ("direct", "spawner", "spawner-popen", "setpriv", "popen")


def switched_runner(scripts: pathlib.Path, user: ScriptUser, switch: str) -> ScriptRunner:
    spawned = switch.startswith("spawner")
    runner = ScriptRunner(scripts, run_as=user.name, use_spawner=spawned,
                          use_setpriv=switch != "popen", use_direct=switch == "direct")
    assert runner.direct is (switch == "direct")
    assert (runner.spawner is not None) is spawned
    if runner.spawner is not None:
        runner.spawner.with_popen = switch == "spawner-popen"
    assert (runner.setpriv is not None) is (switch != "popen")  # Debian's util-linux has it
    return runner


@needs_root
@pytest.mark.parametrize("switch", SWITCHES)
def test_every_user_switch_gives_the_script_the_same_credentials(
    scripts: pathlib.Path, script_user: ScriptUser, switch: str,
) -> None:
    """Through the spawner, setpriv (vfork) and Popen itself (fork): real, effective, saved
    and file uid and gid the user's, no supplementary group, no capability, umask 077; the
    script's own process (the one the runner follows)."""
    (scripts / "status").write_text(
        "#!/bin/sh\necho pid=$$ umask=$(umask)\n"
        "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapAmb|SigIgn):' "
        "/proc/$$/status\n")
    (scripts / "status").chmod(0o755)
    runner = switched_runner(scripts, script_user, switch)
    started = runner.begin(Run("exec-st", "job", "t", 1, "status", "", 10))
    assert not isinstance(started, Outcome)
    assert isinstance(started.proc, SpawnedScript) is switch.startswith("spawner")
    outcome = runner.watch(started)
    result = None
    while result is None:
        result = outcome.step(outcome.fds())
    lines = dict(line.split(":", 1) for line in result.stdout_tail.splitlines()[1:])
    first = result.stdout_tail.splitlines()[0]
    assert first == f"pid={started.proc.pid} umask=0077"
    ids = (script_user.uid,) * 4, (script_user.gid,) * 4
    assert tuple(int(v) for v in lines["Uid"].split()) == ids[0]
    assert tuple(int(v) for v in lines["Gid"].split()) == ids[1]
    assert lines["Groups"].split() == []
    assert {lines[cap].strip() for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == {
        "0000000000000000"}
    assert lines["SigIgn"].strip() == "0000000000000000"  # (dash blocks all while it waits)
    runner.close()


def process_report(runner: ScriptRunner, command: str) -> dict[str, Any]:
    """What the `process` script reports of its own process, pid-dependent parts replaced."""
    started = runner.begin(Run("exec-p", "job", "t", 1, "process", command, 10))
    assert not isinstance(started, Outcome)
    outcome = runner.watch(started)
    result = None
    while result is None:
        result = outcome.step(outcome.fds())
    assert result.result == 3, result
    report: dict[str, Any] = json.loads(result.stdout_tail)
    assert report.pop("pid") == started.proc.pid
    return report


@needs_root
def test_every_user_switch_starts_the_same_process(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """The spawner's script is the one Popen would start: the same credentials, session and
    group of its own, signals (none blocked; Python ignores two itself), limits, environment,
    working directory, open descriptors (0-2 only: stdin /dev/null, two pipes), no new
    privileges, and the Command as its argument."""
    (scripts / "process").write_text(PROCESS_REPORT)
    (scripts / "process").chmod(0o755)
    reports = {switch: process_report(switched_runner(scripts, script_user, switch),
                                      "a b\n$(id) -- 'c'")
               for switch in SWITCHES}
    assert (reports["direct"] == reports["spawner"] == reports["spawner-popen"]
            == reports["popen"] == reports["setpriv"])
    spawned = reports["spawner"]
    assert spawned["argv"] == [str(scripts / "process"), "a b\n$(id) -- 'c'"]
    assert spawned["session_leader"] is True and spawned["group_leader"] is True
    assert spawned["fds"] == {"0": "/dev/null", "1": "pipe", "2": "pipe"}
    assert spawned["status"]["SigBlk"] == "0000000000000000"
    assert spawned["cwd"] == str(scripts)


#: The Debian Python a script user can run (the venv's lies under /root, mode 0700).
SYSTEM_PYTHON = "/usr/bin/python3"
#: A Python script printing what its process is (stdlib only, run by the system Python).
PROCESS_REPORT = f"""#!{SYSTEM_PYTHON}
import json, os, resource, sys
pid = os.getpid()
status = dict(line.split(":", 1) for line in open(f"/proc/{{pid}}/status"))
keep = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd", "SigIgn",
        "SigBlk", "SigCgt", "NoNewPrivs", "Seccomp")
fds = {{}}
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{{fd}}")
    except OSError:  # the directory listing's own descriptor, closed since
        continue
    fds[fd] = "pipe" if target.startswith("pipe:") else target
limits = {{name: resource.getrlimit(getattr(resource, name))
          for name in dir(resource) if name.startswith("RLIMIT_")}}
print(json.dumps({{
    "pid": pid, "argv": sys.argv, "status": {{k: status[k].strip() for k in keep}},
    "session_leader": os.getsid(0) == pid, "group_leader": os.getpgid(0) == pid,
    "umask": oct(os.umask(0o077)), "cwd": os.getcwd(), "env": dict(os.environ),
    "fds": fds, "limits": limits, "nice": os.nice(0),
}}))
"""


@needs_root
@pytest.mark.parametrize(
    ("content", "error"),
    [("#!/no/such/interpreter\n", "[Errno 2] No such file or directory"),
     ("echo run by sh\n", "[Errno 8] Exec format error")],
    ids=["missing-interpreter", "no-shebang"],
)
def test_a_script_that_cannot_be_executed_fails_alike_through_either_switch(
    scripts: pathlib.Path, script_user: ScriptUser, content: str, error: str,
) -> None:
    """setpriv reports an exec failure on stderr (and would run a file without `#!` with
    /bin/sh): the outcome is the one Popen gives when it cannot execute the script."""
    (scripts / "broken").write_text(content)
    (scripts / "broken").chmod(0o755)
    outcomes = [run_script(switched_runner(scripts, script_user, switch),
                           Run("exec-b", "job", "t", 1, "broken", "", 10))
                for switch in SWITCHES]
    expected = f"could not start script: {error}: {str(scripts / 'broken')!r}"
    for outcome in outcomes:
        assert (outcome.result, outcome.feedback, outcome.exit_code) == (2, expected, None)
        assert outcome.stdout_tail == outcome.stderr_tail == ""


@needs_root
@pytest.mark.parametrize(
    ("command", "feedback"),
    [("a\0b", "could not start script: embedded null byte"),
     ("x" * 200 * 1024, "could not start script: [Errno 7] Argument list too long: {path!r}")],
    ids=["nul-byte", "too-long"],
)
def test_a_command_exec_refuses_fails_alike_through_every_switch(
    scripts: pathlib.Path, script_user: ScriptUser, command: str, feedback: str,
) -> None:
    for switch in SWITCHES:
        outcome = run_script(switched_runner(scripts, script_user, switch),
                             Run("exec-c", "job", "t", 1, "ok", command, 10))
        expected = feedback.format(path=str(scripts / "ok"))
        assert (outcome.result, outcome.feedback, outcome.exit_code) == (2, expected, None), switch


def status_of(pid: int) -> dict[str, str]:
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@needs_root
def test_the_spawner_is_the_script_user_s_untraceable_and_holds_only_its_socket(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """Between scripts the spawner has no child; it runs as the script user (real, effective,
    saved and file ids, no other group, no capability: no way back to root), is not
    dumpable (a process of that user cannot open its /proc entries, so cannot read its
    memory, environment or descriptors), in a process group of its own, and holds nothing of
    the service but its socket (beside the standard streams); close() stops it."""
    runner = switched_runner(scripts, script_user, "spawner")
    assert run_script(runner, Run("exec-w", "job", "t", 1, "ok", "", 10)).result == 3
    assert runner.spawner is not None
    spawner = runner.spawner.pid
    assert spawner is not None
    # The ended script stays the spawner's zombie (its pid taken) until a start carries its
    # reap, or the service's loop, starting nothing, settles.
    assert len(children_of(spawner)) == 1
    runner.settle()
    deadline = time.monotonic() + 10  # the script reaped once the spawner read the `reap`
    while children_of(spawner):
        assert time.monotonic() < deadline, children_of(spawner)
        time.sleep(0.01)
    status = status_of(spawner)
    assert status["Uid"].split() == [str(script_user.uid)] * 4
    assert status["Gid"].split() == [str(script_user.gid)] * 4
    assert status["Groups"] == ""
    assert int(status["CapPrm"], 16) == int(status["CapEff"], 16) == 0
    assert os.stat(f"/proc/{spawner}/environ").st_uid == 0  # not dumpable
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", f"""
import os
for path in ("/proc/{spawner}/environ", "/proc/{spawner}/mem"):
    try:
        open(path, "rb").read(1)
        print("read", path)
    except PermissionError:
        pass
try:
    print("listed", os.listdir("/proc/{spawner}/fd"))
except PermissionError:
    pass
"""], user=script_user.uid, group=script_user.gid, extra_groups=[], capture_output=True,
        text=True, check=True, timeout=30)
    assert probe.stdout == "", probe.stdout
    assert os.getpgid(spawner) == spawner
    fds = {fd.name: os.readlink(fd) for fd in pathlib.Path(f"/proc/{spawner}/fd").iterdir()}
    assert fds["0"] == "/dev/null"
    others = [target for fd, target in fds.items() if fd not in ("0", "1", "2")]
    assert len(others) == 1 and others[0].startswith("socket:"), fds
    runner.close()
    assert not alive(spawner)


@needs_root
def test_each_start_has_the_spawner_reap_the_script_before_it_so_no_zombie_piles_up(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    runner = switched_runner(scripts, script_user, "spawner")
    seen: list[list[int]] = []
    for n in range(4):
        assert run_script(runner, Run(f"reap-{n}", "job", "t", 1, "ok", "", 10)).result == 3
        assert runner.spawner is not None
        spawner = runner.spawner.pid
        assert spawner is not None
        seen.append(children_of(spawner))
    # Only the last one waits (a zombie: its pid taken until it is reaped), each time another.
    assert [len(children) for children in seen] == [1, 1, 1, 1]
    assert len({children[0] for children in seen}) == 4
    assert spawner is not None
    runner.settle()
    deadline = time.monotonic() + 10
    while children_of(spawner):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    runner.close()


@needs_root
def test_a_spawner_killed_between_two_scripts_leaves_no_zombie_in_the_service(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """The last script is reaped with the next start; a spawner killed before that leaves it
    to the service (its subreaper), which reaps it as it closes the spawner."""
    report = drive(scripts, script="ok", run_as=script_user.name, kill_spawner=True)
    assert report["result"] == 3
    assert report["zombies"] == []


#: What a script inherits from its spawner that a process of the script user may change in
#: it (the script's parent), as the changing script changes it, and as a script reports it.
INHERITED_REPORT = f"""#!{SYSTEM_PYTHON}
import ctypes, json, os, resource
number = {{"x86_64": 252, "aarch64": 31}}.get(os.uname().machine)
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({{
    "limits": [resource.getrlimit(getattr(resource, name)) for name in sorted(dir(resource))
               if name.startswith("RLIMIT_")],
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "affinity": sorted(os.sched_getaffinity(0)),
    "policy": os.sched_getscheduler(0),
    "ioprio": None if number is None else libc.syscall(number, 1, 0),
}}))
"""
CHANGES = {
    "limits": "resource.prlimit(parent, resource.RLIMIT_NOFILE, (16, 16))",
    "nice": "os.setpriority(os.PRIO_PROCESS, parent, 10)",
    "affinity": "os.sched_setaffinity(parent, {min(os.sched_getaffinity(parent))})",
    "policy": "os.sched_setscheduler(parent, os.SCHED_IDLE, os.sched_param(0))",
    "ioprio": "libc.syscall({'x86_64': 251, 'aarch64': 30}[os.uname().machine], 1, parent,"
              " 3 << 13)",  # ioprio_set(IOPRIO_WHO_PROCESS, parent, IOPRIO_CLASS_IDLE)
}


@needs_root
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_script_that_changes_its_spawner_changes_no_later_script(
    scripts: pathlib.Path, script_user: ScriptUser, change: str,
) -> None:
    """A script may change what its parent, the spawner (the script user's), would pass on
    to later scripts; the spawner sees it before the next start and answers `tampered`: that
    start goes through setpriv, the one after through a new spawner, and every script
    inherits what the first one did."""
    if change == "affinity" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: no affinity to change")
    (scripts / "report").write_text(INHERITED_REPORT)
    (scripts / "report").chmod(0o755)
    (scripts / "change").write_text(f"""#!{SYSTEM_PYTHON}
import ctypes, os, resource
libc = ctypes.CDLL(None, use_errno=True)
parent = os.getppid()
{CHANGES[change]}
""")
    (scripts / "change").chmod(0o755)
    runner = switched_runner(scripts, script_user, "spawner")
    assert runner.spawner is not None
    with structlog.testing.capture_logs() as logs:
        first = run_script(runner, Run("exec-1", "job", "t", 1, "report", "", 10))
        spawner = runner.spawner.pid
        changed = run_script(runner, Run("exec-2", "job", "t", 1, "change", "", 10))
        assert changed.result == 3, changed.feedback
        after = run_script(runner, Run("exec-3", "job", "t", 1, "report", "", 10))
        fresh = run_script(runner, Run("exec-4", "job", "t", 1, "report", "", 10))
    assert first.result == after.result == fresh.result == 3
    assert json.loads(after.stdout_tail) == json.loads(first.stdout_tail)
    assert json.loads(fresh.stdout_tail) == json.loads(first.stdout_tail)
    [failed] = [line for line in logs if line["event"] == "runner.spawner_failed"]
    assert f"changed by another process: {change}" in failed["error"]
    assert runner.spawner.pid not in (None, spawner)
    assert spawner is not None and not alive(spawner)
    runner.close()


@needs_root
@pytest.mark.usefixtures("spawner_not_direct")
def test_a_script_that_stops_its_spawner_fails_only_its_own_execution(
    scripts: pathlib.Path, script_user: ScriptUser, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGSTOP to the spawner from the script: its exit status never comes (or, when the
    script stops it before it answered the start, not even that answer), so after the
    spawner's answer time that execution fails naming the spawner, which is killed; the
    next script runs with a new spawner."""
    monkeypatch.setattr(spawner_module, "ANSWER_SECONDS", 1.0)
    (scripts / "stop-parent").write_text(
        "#!/bin/sh\nkill -STOP $PPID\necho '{\"Result\": 3, \"Feedback\": \"stopped\"}'\n")
    (scripts / "stop-parent").chmod(0o755)
    finished: list[Item] = []
    slot = ScriptSlot(str(scripts), finished.append, run_as=script_user.name)
    runner = slot.scripts
    assert runner.spawner is not None
    slot.prepare()  # the spawner started: its pid before the script can stop it
    first = runner.spawner.pid
    assert first is not None
    slot.start(Run("exec-s", "job", "t", 1, "stop-parent", "", 60))
    deadline = time.monotonic() + 20
    step_until(slot, finished, 1, deadline)
    [ended] = finished
    assert isinstance(ended, RunFinished) and ended.outcome.result == 2
    assert ended.outcome.feedback is not None and "spawner" in ended.outcome.feedback
    assert not alive(first)
    slot.start(Run("exec-n", "job", "t", 1, "ok", "", 10))
    step_until(slot, finished, 2, deadline)
    assert isinstance(finished[1], RunFinished) and finished[1].outcome.result == 3
    assert runner.spawner.pid not in (None, first)
    slot.stop()


@needs_root
@pytest.mark.usefixtures("spawner_not_direct")
def test_a_script_that_kills_its_spawner_while_it_runs_leaves_nothing(
    scripts: pathlib.Path, script_user: ScriptUser, open_dir: pathlib.Path,
) -> None:
    """Its spawner's end ends the execution (failed, naming the spawner); the script, and a
    child it started in a session of its own, are killed: the sweep first waits for the
    script to exit, whose end the spawner's socket did not tell."""
    ready = open_dir / "child.pid"
    write_session_child(scripts / "kill-parent-late", ready, f"""
while not os.path.exists({str(ready)!r}):
    time.sleep(0.01)
os.kill(os.getppid(), signal.SIGKILL)
time.sleep(60)
""")
    open_dir.chmod(0o777)
    finished: list[Item] = []
    slot = ScriptSlot(str(scripts), finished.append, run_as=script_user.name)
    slot.start(Run("exec-l", "job", "t", 1, "kill-parent-late", "", 60))
    step_until(slot, finished, 1, time.monotonic() + 30)
    [ended] = finished
    assert isinstance(ended, RunFinished) and ended.outcome.result == 2
    assert ended.outcome.feedback is not None and "spawner" in ended.outcome.feedback
    assert pids_with_env("ATT_JM_EXECUTION_ID=exec-l") == []
    assert not alive(int(ready.read_text()))
    slot.stop()


#: A spawner that answers a start's pid only after 0.5 s (its `send` delayed): what a busy
#: machine may do, made certain. Used as the spawner's "python": `-m att_jm.spawner ARGS`.
SLOW_SPAWNER = f"""#!/bin/sh
shift 2
exec {sys.executable} -c '
import sys, time
from att_jm import spawner
send = spawner.send
def slow(conn, message, fds=()):
    if "pid" in message and "status" not in message:
        time.sleep(0.5)
    send(conn, message, fds)
spawner.send = slow
spawner.main(["spawner", *sys.argv[1:]])
' "$@"
"""


@needs_root
@pytest.mark.usefixtures("spawner_not_direct")
def test_a_script_that_kills_its_spawner_before_it_answers_runs_once(
    scripts: pathlib.Path, script_user: ScriptUser, open_dir: pathlib.Path,
) -> None:
    """The spawner may die before it says the script started (here the script kills it
    while it waits to answer): the start is then not made again another way, which would run
    the script twice; whatever it started is killed, the execution fails naming the
    spawner, and the next start runs with a new spawner."""
    runs = open_dir / "runs"
    runs.touch()
    runs.chmod(0o666)
    (scripts / "kill-parent").write_text(
        f"#!/bin/sh\necho run >> {runs}\nkill -KILL $PPID\nsleep 30\n")
    (scripts / "kill-parent").chmod(0o755)
    wrapper = open_dir / "slow-spawner"
    wrapper.write_text(SLOW_SPAWNER)
    wrapper.chmod(0o755)
    finished: list[Item] = []
    slot = ScriptSlot(str(scripts), finished.append, run_as=script_user.name)
    runner = slot.scripts
    runner.spawner = Spawner(script_user.uid, script_user.gid, 0o077, python=str(wrapper))
    deadline = time.monotonic() + 30
    with structlog.testing.capture_logs() as logs:
        slot.start(Run("exec-k", "job", "t", 1, "kill-parent", "", 60))
        step_until(slot, finished, 1, deadline)
    [ended] = finished
    assert isinstance(ended, RunFinished) and ended.outcome.result == 2
    assert ended.outcome.feedback is not None and "spawner" in ended.outcome.feedback
    assert "whatever it started was killed" in ended.outcome.feedback
    assert pids_with_env("ATT_JM_EXECUTION_ID=exec-k") == []
    assert runs.read_text() == "run\n"  # once: not started again through setpriv
    assert [line["event"] for line in logs if line["event"].startswith("runner.")] == [
        "runner.spawner_failed"]
    slot.start(Run("exec-n", "job", "t", 1, "ok", "", 10))
    step_until(slot, finished, 2, deadline)
    assert isinstance(finished[1], RunFinished) and finished[1].outcome.result == 3
    slot.stop()


@needs_root
def test_what_popen_refuses_in_the_spawner_is_refused_alike_and_the_spawner_goes_on(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """An argument Popen cannot encode (a lone surrogate: no Command from the broker or the
    log carries one, orjson refuses them) is a ValueError in the service, as without the
    spawner, and the same spawner starts the next script."""
    spawner = Spawner(script_user.uid, script_user.gid, 0o077)
    spawner.start()
    pid = spawner.pid
    assert pid is not None
    with pytest.raises(ValueError, match="surrogate"):
        spawner.spawn([str(scripts / "ok"), "\ud800"], {"PATH": "/usr/bin:/bin"}, str(scripts))
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        spawner.spawn([str(scripts / "none")], {}, str(scripts))
    spawned = spawner.spawn([str(scripts / "ok"), "x"], {}, str(scripts))
    assert spawned.wait() == 0 and spawner.pid == pid
    spawned.stdout.close()
    spawned.stderr.close()
    spawner.close()
    assert not alive(pid)


@needs_root
def test_the_writer_s_meanwhile_work_runs_while_the_spawner_starts_the_script(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """`meanwhile` runs once, after the request reached the spawner and before its answer
    is read (here it waits until that answer is on the socket: the script was exec'd
    while it ran); what it raises does not stop the start."""
    spawner = Spawner(script_user.uid, script_user.gid, 0o077)
    spawner.start()
    seen: list[bool] = []

    def work() -> None:
        answered, _, _ = select.select([spawner.fileno()], [], [], 10.0)
        seen.append(bool(answered))

    spawned = spawner.spawn([str(scripts / "ok"), "x"], {}, str(scripts), meanwhile=work)
    assert seen == [True]
    assert spawned.wait() == 0

    def broken() -> None:
        raise RuntimeError("the store is away")

    again = spawner.spawn([str(scripts / "ok"), "y"], {}, str(scripts), meanwhile=broken)
    assert again.wait() == 0 and again.pid != spawned.pid
    for script in (spawned, again):
        script.stdout.close()
        script.stderr.close()
    spawner.close()


@needs_root
def test_a_runner_s_failing_meanwhile_work_is_logged_and_the_script_still_runs(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """The writer's work during a start (loading the next entry) failing is one log line;
    the script it overlapped runs and succeeds, and the next start calls it again."""
    calls: list[int] = []

    def preload() -> None:
        calls.append(1)
        raise OSError("disk I/O error")

    finished: list[Item] = []
    slot = ScriptSlot(str(scripts), finished.append, run_as=script_user.name,
                      meanwhile=preload)
    deadline = time.monotonic() + 30
    with structlog.testing.capture_logs() as logs:
        slot.start(Run("exec-m1", "job", "t", 1, "ok", "", 10))
        step_until(slot, finished, 1, deadline)
        slot.start(Run("exec-m2", "job", "t", 1, "ok", "", 10))
        step_until(slot, finished, 2, deadline)
    assert [item.outcome.result for item in finished if isinstance(item, RunFinished)] == [3, 3]
    assert calls == [1, 1]
    failures = [line for line in logs if line["event"] == "runner.meanwhile_failed"]
    assert len(failures) == 2 and "disk I/O error" in failures[0]["error"]
    slot.stop()


@needs_root
def test_a_spawner_that_cannot_start_leaves_the_start_to_setpriv(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """The script still runs as the script user (through setpriv), `runner.spawner_failed`
    is logged, and the next start tries the spawner again."""
    runner = switched_runner(scripts, script_user, "spawner")
    runner.spawner = Spawner(script_user.uid, script_user.gid, 0o077,
                             python="/nonexistent/python3")
    with structlog.testing.capture_logs() as logs:
        runner.prepare()
        first = run_script(runner, Run("exec-f", "job", "t", 1, "whoami", "", 10))
        second = run_script(runner, Run("exec-g", "job", "t", 1, "whoami", "", 10))
    for outcome in (first, second):
        assert outcome.result == 3 and outcome.feedback is not None
        assert outcome.feedback.startswith(f"uid={script_user.uid} user={script_user.name} ")
    assert [line["event"] for line in logs] == ["runner.spawner_failed"] * 3
    assert "/nonexistent/python3" in logs[1]["error"]


def write_session_child(path: pathlib.Path, ready: pathlib.Path, then: str) -> None:
    """A script that forks a child into a session of its own (which writes its pid to
    `ready` and sleeps a minute), then runs `then` (Python)."""
    path.write_text(f"""#!{SYSTEM_PYTHON}
import os, signal, time
if os.fork() == 0:
    os.setsid()
    with open({str(ready)!r} + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.rename({str(ready)!r} + ".tmp", {str(ready)!r})
    time.sleep(60)
    os._exit(0)
{then}""")
    path.chmod(0o755)


@needs_root
@pytest.mark.parametrize("switch", SWITCHES)
def test_a_stop_kills_what_a_running_script_started_in_another_session(
    scripts: pathlib.Path, script_user: ScriptUser, open_dir: pathlib.Path, switch: str,
) -> None:
    """At a stop the script is killed while it still runs: a child it started in a session
    of its own (out of its group's reach, still its child, so not yet re-parented to the
    subreaper) is found through the script, whoever started it (the spawner too)."""
    ready = open_dir / "child.pid"
    write_session_child(scripts / "session-child", ready, "time.sleep(60)\n")
    open_dir.chmod(0o777)
    report = drive(scripts, script="session-child", run_as=script_user.name, switch=switch,
                   stop_at=str(ready), timeout=60)
    assert report["marked"] == [], report  # nothing of it is left, at once
    assert not alive(int(ready.read_text()))


@needs_root
@pytest.mark.usefixtures("spawner_not_direct")
def test_a_spawner_that_dies_under_a_script_fails_that_execution_only(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """As the writer runs it (ScriptSlot): the script is killed, its execution fails with a
    runner error naming the spawner, no process of it is left, and the next start runs with
    a new spawner."""
    finished: list[Item] = []
    slot = ScriptSlot(str(scripts), finished.append, run_as=script_user.name)
    slot.start(Run("exec-d", "job", "t", 1, "sleep-then-ok", "30", 60))
    runner = slot.scripts
    assert runner.spawner is not None and runner.spawner.pid is not None
    first = runner.spawner.pid
    script = children_of(first)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 20
    step_until(slot, finished, 1, deadline)
    [ended] = finished
    assert isinstance(ended, RunFinished) and ended.execution_id == "exec-d"
    assert ended.outcome.result == 2
    assert ended.outcome.feedback is not None and "spawner" in ended.outcome.feedback
    assert script and not any(alive(pid) for pid in script)
    slot.start(Run("exec-n", "job", "t", 1, "ok", "", 10))
    step_until(slot, finished, 2, deadline)
    assert isinstance(finished[1], RunFinished) and finished[1].outcome.result == 3
    assert runner.spawner.pid not in (None, first)
    slot.stop()


@needs_root
def test_a_binary_the_service_may_run_but_not_read_still_runs_through_setpriv(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """Under the systemd unit's capabilities root has no CAP_DAC_OVERRIDE: a binary of mode
    0711 owned by another user cannot be read for the `#!`/ELF check, and runs as it would
    without setpriv (the service here: a Python with those capabilities out of its bounding
    set)."""
    shutil.copy("/bin/true", scripts / "sealed")
    os.chown(scripts / "sealed", UID, -1)
    (scripts / "sealed").chmod(0o711)
    code = ("import json, sys; from att_jm.runner import ScriptRunner; "
            "from att_jm.domain.runs import Run; "
            "sys.path.insert(0, 'tests'); from helpers.runs import run_script; "
            f"o = run_script(ScriptRunner({str(scripts)!r}, run_as={script_user.name!r}), "
            "Run('exec-s', 'job', 't', 1, 'sealed', '', 10)); "
            "print(json.dumps([o.result, o.feedback, o.exit_code]))")
    done = subprocess.run(
        ["/usr/bin/setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
         sys.executable, "-c", code],
        capture_output=True, text=True, check=False, timeout=60, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [3, None, 0]


@needs_root
def test_a_script_that_prints_what_setpriv_would_still_ran(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """Through setpriv, only setpriv's message alone, with its exit code, for this very path,
    means it did not run; the same words from a script that then exits 0, or with more
    output, are its own. Through the spawner (no setpriv involved) they always are."""
    path = scripts / "liar"
    for switch, code, extra, ran in (
            ("setpriv", 0, "", True), ("setpriv", 127, "echo more >&2\n", True),
            ("setpriv", 127, "", False), ("spawner", 127, "", True)):
        path.write_text(f"#!/bin/sh\necho 'setpriv: failed to execute {path}: "
                        f"No such file or directory' >&2\n{extra}exit {code}\n")
        path.chmod(0o755)
        runner = switched_runner(scripts, script_user, switch)
        outcome = run_script(runner, Run("exec-l", "job", "t", 1, "liar", "", 10))
        runner.close()
        assert (outcome.exit_code is not None) is ran, (switch, outcome)


def test_setpriv_is_taken_only_as_a_root_owned_file_nobody_else_can_write(
    tmp_path: pathlib.Path,
) -> None:
    tool = tmp_path / "setpriv"
    shutil.copy("/bin/true", tool)
    tool.chmod(0o755)
    if not IS_ROOT:
        assert runner_module.find_setpriv([str(tool)]) is None  # the test user's own file
        return
    assert runner_module.find_setpriv([str(tmp_path / "none"), str(tool)]) == str(tool)
    tool.chmod(0o775)
    assert runner_module.find_setpriv([str(tool)]) is None
    tool.chmod(0o755)
    os.chown(tool, UID, -1)
    assert runner_module.find_setpriv([str(tool)]) is None
    assert runner_module.find_setpriv([str(tmp_path)]) is None  # a directory


@needs_root
def test_as_root_without_run_as_a_script_runs_as_root(scripts: pathlib.Path) -> None:
    outcome = run_script(ScriptRunner(scripts), Run("exec-r", "job", "t", 1, "whoami", "", 10))
    assert outcome.feedback is not None
    assert outcome.feedback.startswith("uid=0 user=root ")


@needs_root
def test_the_script_user_can_change_neither_its_script_nor_the_directory(
    scripts: pathlib.Path, script_user: ScriptUser
) -> None:
    assert check_scripts_dir(scripts, script_user.uid, script_user.gid) == []
    before = (scripts / "try-write").read_bytes()
    outcome = run_script(ScriptRunner(scripts, run_as=script_user.name),
        Run("exec-w", "job", "trigger", 1, "try-write", "", 10)
    )
    assert (outcome.result, outcome.feedback) == (3, "self=denied new=denied")
    assert (scripts / "try-write").read_bytes() == before
    assert not (scripts / "try-write-was-here").exists()


@needs_root
def test_a_script_user_may_still_write_where_the_check_says_so(
    scripts: pathlib.Path, script_user: ScriptUser
) -> None:
    """The other side of the test above: what the check reports is really writable."""
    os.chown(scripts, script_user.uid, -1)
    assert check_scripts_dir(scripts, script_user.uid, script_user.gid) == [
        f"{scripts} (the scripts directory): writable by uid {script_user.uid} "
        f"(owned by uid {script_user.uid})"
    ]
    outcome = run_script(ScriptRunner(scripts, run_as=script_user.name),
        Run("exec-w2", "job", "trigger", 1, "try-write", "", 10)
    )
    assert outcome.feedback == "self=denied new=ok"


# The scripts directory check --------------------------------------------------------------


def test_a_directory_only_root_can_write_is_fine(scripts: pathlib.Path) -> None:
    if not IS_ROOT:
        pytest.skip("the files are the test user's own")
    assert check_scripts_dir(scripts, UID, GID) == []


@pytest.mark.parametrize(
    ("mode", "gid", "why"),
    [(0o775, GID, f"group-writable, group {GID}"), (0o757, 0, "world-writable"),
     (0o1777, 0, "world-writable")],
)
def test_a_scripts_directory_the_user_can_write_to_is_reported(
    scripts: pathlib.Path, mode: int, gid: int, why: str
) -> None:
    if IS_ROOT:
        os.chown(scripts, 0, gid)
    else:
        pytest.skip("needs root to give the directory to another group")
    scripts.chmod(mode)
    assert check_scripts_dir(scripts, UID, GID) == [
        f"{scripts} (the scripts directory): writable by uid {UID} ({why})"
    ]


@needs_root
def test_scripts_and_subdirectories_the_user_can_write_to_are_reported(
    scripts: pathlib.Path,
) -> None:
    os.chown(scripts / "whoami", UID, 0)
    (scripts / "ok").chmod(0o777)
    (scripts / "sub").mkdir(mode=0o755)
    os.chown(scripts / "sub", 0, GID)
    (scripts / "sub").chmod(0o775)
    (scripts / "sub" / "data").write_text("not a script\n")
    (scripts / "sub" / "data").chmod(0o666)
    assert check_scripts_dir(scripts, UID, GID) == [
        f"{scripts}/ok: writable by uid {UID} (world-writable)",
        f"{scripts}/sub: writable by uid {UID} (group-writable, group {GID})",
        f"{scripts}/whoami: writable by uid {UID} (owned by uid {UID})",
        f"{scripts}/sub/data: writable by uid {UID} (world-writable)",
    ]


@needs_root
def test_a_directory_above_that_the_user_can_write_to_is_reported(
    open_dir: pathlib.Path, scripts: pathlib.Path
) -> None:
    open_dir.chmod(0o777)  # the user could move the scripts directory away and put its own
    assert check_scripts_dir(scripts, UID, GID) == [
        f"{open_dir} (above the scripts directory): writable by uid {UID} (world-writable)"
    ]
    open_dir.chmod(0o1777)  # sticky, as /tmp: only its own entries, not the scripts directory
    assert check_scripts_dir(scripts, UID, GID) == []
    link = open_dir / "link"
    link.symlink_to(scripts)
    assert check_scripts_dir(link, UID, GID) == []
    os.chown(link, UID, GID, follow_symlinks=False)  # in a sticky directory: it may replace it
    assert check_scripts_dir(link, UID, GID) == [
        f"{link} (a symbolic link on the way to the scripts directory): owned by uid {UID}"
    ]


@needs_root
def test_directories_the_user_cannot_enter_are_reported(
    open_dir: pathlib.Path, scripts: pathlib.Path
) -> None:
    open_dir.chmod(0o700)
    scripts.chmod(0o711)
    assert check_scripts_dir(scripts, UID, GID) == [
        f"{open_dir} (above the scripts directory): uid {UID} cannot enter it (needs x)",
        f"{scripts} (the scripts directory): uid {UID} cannot list and enter it (needs r-x)",
    ]


@needs_root
def test_scripts_the_user_cannot_run_are_reported(scripts: pathlib.Path) -> None:
    (scripts / "ok").chmod(0o710)  # a #! script: the group may not read it, others nothing
    (scripts / "whoami").chmod(0o711)  # x without r: not enough for a #! script
    (scripts / "binary").write_bytes(b"\x7fELF")
    (scripts / "binary").chmod(0o711)  # a binary needs x only
    (scripts / "sub").mkdir(mode=0o700)
    shutil.copy(scripts / "echo-env", scripts / "sub" / "nested")
    (scripts / "sub" / "nested").chmod(0o755)
    (scripts / "notes").write_text("no x bit: not a script\n")
    (scripts / "notes").chmod(0o600)
    assert check_scripts_dir(scripts, UID, GID) == [
        f"{scripts}/ok: uid {UID} cannot run it (needs r-x: a #! script)",
        f"{scripts}/whoami: uid {UID} cannot run it (needs r-x: a #! script)",
        f"{scripts}/sub/nested: uid {UID} cannot reach it (a directory above lacks x)",
    ]


def test_root_as_the_script_user_and_a_missing_directory_are_reported(
    open_dir: pathlib.Path,
) -> None:
    missing = open_dir / "missing"
    problems = check_scripts_dir(missing, 0, 0)
    assert problems[0] == "the script user is root (uid 0): scripts would run as root"
    assert problems[1].startswith(f"{missing}: cannot be resolved: ")
    (open_dir / "file").write_text("")
    assert check_scripts_dir(open_dir / "file", UID, GID) == [f"{open_dir}/file: not a directory"]


@needs_root
def test_the_start_up_check_creates_the_user_and_checks_the_directory_for_it(
    scripts: pathlib.Path, script_user: ScriptUser
) -> None:
    assert check_script_isolation(script_user.name, scripts) == []
    (scripts / "ok").chmod(0o777)
    assert check_script_isolation(script_user.name, scripts) == [
        f"{scripts}/ok: writable by uid {script_user.uid} (world-writable)"
    ]
    name = f"att-jm-t{uuid.uuid4().hex[:8]}"
    try:
        assert check_script_isolation(name, scripts) == [
            f"{scripts}/ok: writable by uid {lookup_script_user(name).uid} (world-writable)"
        ]
    finally:
        with contextlib.suppress(ScriptUserError):
            delete_user(lookup_script_user(name))


@needs_root
def test_the_start_up_check_as_root_without_a_script_user_logs_a_warning(
    scripts: pathlib.Path,
) -> None:
    with structlog.testing.capture_logs() as logs:
        assert check_script_isolation("", scripts) == []
    assert [line["event"] for line in logs] == ["runner.scripts_run_as_root"]


def test_the_start_up_check_when_not_root_has_nothing_to_check(
    scripts: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    scripts.chmod(0o777)
    assert check_script_isolation("att-jm-no-such-user", scripts) == []


# Nothing a script starts outlives it -------------------------------------------------------


def children_file_modes() -> list[bool]:
    """The /proc/PID/task/TID/children walk where the kernel has it; always the full scan."""
    pid = os.getpid()
    return [False, True] if os.path.exists(f"/proc/{pid}/task/{pid}/children") else [False]


@needs_root
@pytest.mark.parametrize("children_files", children_file_modes())
@pytest.mark.parametrize("command", ["exit", "clean-env", "spawner"])
def test_a_daemon_left_by_a_script_is_killed_when_it_ends(
    scripts: pathlib.Path, script_user: ScriptUser, command: str, children_files: bool
) -> None:
    """Double fork + setsid (no marker in "clean-env"; forking on in "spawner"): killed."""
    report = drive(scripts, script="leave-daemon", command=command, run_as=script_user.name,
                   children_files=children_files, sibling=["sleep", "60"])
    assert (report["result"], report["feedback"]) == (3, "left a daemon")
    assert report["children_files"] is children_files
    assert report["marked"] == []  # at the moment the outcome came back
    assert report["zombies"] == []  # the killed were reaped
    assert not alive(daemon_pid(report))
    assert pids_with_env(f"ATT_JM_EXECUTION_ID={report['execution_id']}") == []
    assert report["duration"] < 2.0
    assert report["sibling_alive"]  # spared, though it started after the script
    assert report["sibling_returncode"] == -9  # its status was left to its Popen


@needs_root
@pytest.mark.parametrize("children_files", children_file_modes())
def test_a_daemon_left_by_a_script_that_times_out_is_killed(
    scripts: pathlib.Path, script_user: ScriptUser, children_files: bool
) -> None:
    report = drive(scripts, script="leave-daemon", command="hang", timeout=0.5,
                   run_as=script_user.name, children_files=children_files,
                   sibling=["sh", "-c", "exit 7"])
    assert (report["result"], report["feedback"], report["timed_out"]) == (
        2, "timed out after 0.5 s", True)
    assert report["marked"] == []
    assert report["zombies"] == []
    assert not alive(daemon_pid(report))
    # The sibling ended during the script: its exit status was not taken by the sweep.
    assert (report["sibling_alive"], report["sibling_returncode"]) == (False, 7)


@needs_root
def test_as_root_without_a_script_user_daemons_are_killed_too(scripts: pathlib.Path) -> None:
    report = drive(scripts, script="leave-daemon", command="spawner", sibling=["sleep", "60"])
    assert report["marked"] == []
    assert report["zombies"] == []
    assert report["sibling_alive"]


def test_without_subreaper_a_daemon_is_still_found_by_its_marker(
    tmp_path: pathlib.Path,
) -> None:
    """The test process is no subreaper: the daemon goes to init, found by its environment."""
    outcome = run_script(ScriptRunner(HELPERS), Run("exec-marked-" + uuid.uuid4().hex, "job",
                                                   "trigger", 1, "leave-daemon", "exit", 10))
    assert outcome.result == 3
    daemon = int(outcome.stdout_tail.split("daemon=", 1)[1].split()[0])
    assert not alive(daemon)


def test_the_sweep_spares_what_started_before_the_script_and_what_it_is_told_to() -> None:
    """In this process, no subreaper: a script's tree, while its leader still runs."""
    before = subprocess.Popen(["sleep", "60"])
    time.sleep(0.02)  # at least one clock tick (10 ms) later
    since = runner_module.boot_ticks()
    spared = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    doomed = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])  # as a script's leader
    spared_grandchild = None
    try:
        time.sleep(0.1)  # each sh has started its background sleep
        (grandchild,) = children_of(doomed.pid)
        (spared_grandchild,) = children_of(spared.pid)
        assert kill_descendants(since, spare=[spared.pid], leader=doomed.pid) == [grandchild]
        assert not alive(grandchild)
        assert before.poll() is None
        assert spared.poll() is None
        assert alive(spared_grandchild)
        assert doomed.wait(5) == -9  # reaping the leader is left to its Popen
    finally:
        if spared_grandchild is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spared_grandchild, 9)
        for process in (before, spared, doomed):
            process.kill()
            process.wait()


def test_the_sweep_walks_the_thread_that_started_the_script_not_the_writer_s_others() -> None:
    """The sweep reads this process's main thread's children (where orphans go) and the
    calling thread's (which started the script): a script's tree started and swept from a
    worker thread is found; a process another thread started meanwhile (not a script's) is
    left alone."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        pytest.skip("no /proc/PID/task/TID/children here: the sweep scans all of /proc")
    time.sleep(0.02)  # at least one clock tick (10 ms) after what ran before
    since = runner_module.boot_ticks()
    other: list[subprocess.Popen[bytes]] = []
    started = threading.Event()
    release = threading.Event()

    def other_thread() -> None:  # e.g. a helper the writer starts from another thread
        other.append(subprocess.Popen(["sleep", "60"]))
        started.set()
        release.wait(10)

    result: dict[str, Any] = {}

    def loop_thread() -> None:  # the writer's loop, here on a thread of its own
        doomed = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
        try:
            time.sleep(0.1)  # its background sleep has started
            (grandchild,) = children_of(doomed.pid)
            result["grandchild"] = grandchild
            result["killed"] = kill_descendants(since, leader=doomed.pid)
        finally:
            doomed.kill()
            result["leader"] = doomed.wait(5)

    helper = threading.Thread(target=other_thread)
    helper.start()
    assert started.wait(10)
    try:
        loop = threading.Thread(target=loop_thread)
        loop.start()
        loop.join(20)
        assert result["killed"] == [result["grandchild"]]
        assert not alive(result["grandchild"])
        assert result["leader"] == -9
        assert other[0].poll() is None  # started after `since`, by a thread that is not the
    finally:                            # caller's: not a script's
        release.set()
        helper.join(10)
        for process in other:
            process.kill()
            process.wait()


def test_a_script_dir_check_lists_at_most_twenty_problems(open_dir: pathlib.Path) -> None:
    scripts = open_dir / "many"
    scripts.mkdir(mode=0o755)
    for number in range(30):
        path = scripts / f"s{number:02}"
        path.write_text("#!/bin/sh\n")
        path.chmod(0o777)
    problems = check_scripts_dir(scripts, UID, GID)
    assert len(problems) == 21
    assert problems[-1].startswith("... and ")



# The service's own vfork (att_jm._start, att_jm/direct_start.py) -------------------------


def test_the_c_part_is_built_under_ci() -> None:
    """The test command builds att_jm._start (tools/setup.sh: a compiler and the Python
    headers before the package); without it the service falls back to the spawner."""
    if os.environ.get("CI") != "true" and not direct_start.available():
        pytest.skip("att_jm._start is not built here (no compiler or Python headers)")
    assert direct_start.available()


@needs_root
def test_as_root_the_runner_starts_scripts_itself_with_the_c_part(
    scripts: pathlib.Path, script_user: ScriptUser, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By default (root, a script user, the C part built) scripts start from the runner's
    own process, which is their parent: no spawner; ATT_JM_DIRECT_START=0 brings it back."""
    runner = ScriptRunner(scripts, run_as=script_user.name)
    assert runner.direct and runner.spawner is None
    started = runner.begin(Run("exec-dp", "job", "t", 1, "ok", "", 10))
    assert not isinstance(started, Outcome)
    assert isinstance(started.proc, direct_start.DirectScript)
    assert os.getpid() == int(pathlib.Path(f"/proc/{started.proc.pid}/stat").read_text()
                              .rsplit(")", 1)[1].split()[1])
    outcome = runner.watch(started)
    result = None
    while result is None:
        result = outcome.step(outcome.fds())
    assert (result.result, result.exit_code) == (3, 0)
    monkeypatch.setenv(direct_start.DIRECT_START_ENV, "0")
    assert not ScriptRunner(scripts, run_as=script_user.name).direct


@needs_root
@pytest.mark.parametrize(("body", "code"), [("exit 7", 7), ("kill -TERM $$", -15),
                                            ("kill -KILL $$", -9), ("exit 0", 0)])
def test_a_direct_script_s_exit_status_is_popen_s(
    scripts: pathlib.Path, script_user: ScriptUser, body: str, code: int,
) -> None:
    (scripts / "ends").write_text(f"#!/bin/sh\n{body}\n")
    (scripts / "ends").chmod(0o755)
    script = direct_start.start([str(scripts / "ends")], {"PATH": "/usr/bin:/bin"},
                                str(scripts), script_user.uid, script_user.gid, 0o077)
    assert script.wait() == code and script.poll() == code
    script.stdout.close()
    script.stderr.close()


@needs_root
def test_what_no_direct_start_can_make_fails_as_popen_fails(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """A working directory that is gone names it; a `=` in a variable's name and ids out of
    range are refused before anything starts; the signal mask of the caller is left as it
    was, and nothing is left open."""
    ok = str(scripts / "ok")
    env = {"PATH": "/usr/bin:/bin"}
    user = (script_user.uid, script_user.gid, 0o077)
    fds_before = sorted(os.listdir("/proc/self/fd"))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with pytest.raises(FileNotFoundError) as gone:
        direct_start.start([ok], env, str(scripts / "gone"), *user)
    with pytest.raises(FileNotFoundError) as popen_gone:
        subprocess.Popen([ok], cwd=str(scripts / "gone"), env=env, user=script_user.uid,
                         group=script_user.gid, extra_groups=[], umask=0o077)
    assert (gone.value.errno, gone.value.strerror, gone.value.filename) == (
        popen_gone.value.errno, popen_gone.value.strerror, popen_gone.value.filename)
    with pytest.raises(ValueError, match="illegal environment variable name"):
        direct_start.start([ok], {"A=B": "c"}, str(scripts), *user)
    with pytest.raises(ValueError, match="no such user or group id"):
        direct_start.start([ok], env, str(scripts), -1, script_user.gid, 0o077)
    with pytest.raises(ValueError, match="embedded null byte"):
        direct_start.start([ok], env, str(scripts) + "\0x", *user)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    assert not children_of(os.getpid())  # each failed child reaped


@needs_root
def test_direct_starts_while_signals_arrive_leave_the_caller_whole(
    scripts: pathlib.Path, script_user: ScriptUser,
) -> None:
    """Starts made while another thread keeps signalling this process (a handler installed):
    every script runs and exits 0 as the script user, the handler ran (in this process: no
    more often than signals were sent, fewer where two met while one was pending or blocked
    for a start), and this process keeps its own credentials."""
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
    sent = 0
    stop = threading.Event()

    def pester() -> None:
        nonlocal sent
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)
            sent += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=pester)
    thread.start()
    try:
        (scripts / "who").write_text("#!/bin/sh\n[ \"$(id -u)\" = \"$1\" ]\n")
        (scripts / "who").chmod(0o755)
        for _ in range(200):
            script = direct_start.start([str(scripts / "who"), str(script_user.uid)],
                                        {"PATH": "/usr/bin:/bin"}, str(scripts),
                                        script_user.uid, script_user.gid, 0o077)
            assert script.wait() == 0
            script.stdout.close()
            script.stderr.close()
    finally:
        stop.set()
        thread.join()
        time.sleep(0.05)
        signal.signal(signal.SIGUSR1, previous)
    assert os.getresuid() == (0, 0, 0) and os.getresgid() == (0, 0, 0)
    assert 0 < len(seen) <= sent
