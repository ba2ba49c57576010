"""The spawner's start through `_posixsubprocess.fork_exec` (as `Popen` calls it) against
`Popen` itself: the same process started, the same exceptions for what cannot start.

No root needed: both run in this process, as whatever user runs the tests (the spawner runs
them as the script user; tests/integration/test_script_isolation.py compares the two there).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from att_jm import spawner

ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ODD": "a b\n$(id)"}

Start = Callable[[list[str], dict[str, str], str, list[int]], int]


def by_popen(argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> int:
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fds[0], stderr=fds[1],
                               cwd=cwd, env=env, start_new_session=True, close_fds=True,
                               umask=0o077)
    process.wait()
    return process.pid


def by_fork_exec(argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> int:
    pid = spawner._start_by_fork_exec(argv, env, cwd, fds, 0o077)
    os.waitpid(pid, 0)
    return pid


STARTS: dict[str, Start] = {"popen": by_popen, "fork_exec": by_fork_exec}


@pytest.fixture
def pipes() -> Iterator[tuple[list[int], list[int]]]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    yield [out_r, err_r], [out_w, err_w]
    for fd in (out_r, err_r, out_w, err_w):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def test_the_fork_exec_start_is_on_for_the_python_it_is_written_for() -> None:
    assert spawner.FORK_EXEC_START is (sys.version_info[:2] == (3, 11)
                                    and os.environ.get(spawner.POPEN_ENV) != "1")


def report(start: Start, tmp_path: pathlib.Path) -> dict[str, str]:
    """What a script sees of its own process, started by `start` (nothing pid-dependent)."""
    script = tmp_path / "report"
    # The signal mask first, by the shell's builtins, as the start left it: read later by a
    # command of the shell's (grep), it could catch the shell waiting for that command with
    # every signal blocked (dash blocks them while it waits): a flaky SigBlk of all ones.
    script.write_text(
        "#!/bin/sh\nwhile read -r key value; do case $key in SigIgn:|SigBlk:|NoNewPrivs:) "
        "echo \"$key$value\";; esac; done < /proc/$$/status\n"
        "echo \"argv=$0|$1|$#\"\necho umask=$(umask)\necho cwd=$(pwd)\n"
        "ls -l /proc/$$/fd | awk 'NR>1 {print \"fd\" $9 \"=\" $11}'\n"
        "env | sort\necho err >&2\n")
    script.chmod(0o755)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start([str(script), "a b\n$(id) -- 'c'"], ENV, str(tmp_path), [out_w, err_w])
    os.close(out_w)
    os.close(err_w)
    with open(out_r, "rb") as out, open(err_r, "rb") as err:
        lines = out.read().decode().splitlines()
        assert err.read() == b"err\n"
    seen = {}
    for line in lines:
        key, _, value = line.partition("=") if "=" in line else line.partition(":")
        seen[key] = "pipe" if value.startswith("pipe:") else value.strip()
    return seen


def test_the_fork_exec_start_starts_the_process_popen_starts(tmp_path: pathlib.Path) -> None:
    started, popen = report(by_fork_exec, tmp_path), report(by_popen, tmp_path)
    assert started == popen
    assert started["argv"] == f"{tmp_path / 'report'}|a b"  # $1 up to its newline
    assert started["umask"] == "0077" and started["cwd"] == str(tmp_path)
    assert started["ODD"] == "a b" and started["LANG"] == "C.UTF-8"
    assert started["fd0"] == "/dev/null" and started["fd1"] == started["fd2"] == "pipe"
    assert "fd3" not in started  # nothing else open (ls's own directory descriptor aside)
    assert started["SigBlk"] == "0000000000000000"


def test_the_fork_exec_start_leads_a_session_of_its_own(
    tmp_path: pathlib.Path, pipes: tuple[list[int], list[int]],
) -> None:
    script = tmp_path / "sid"
    script.write_text("#!/bin/sh\nps -o pid=,sid=,pgid= $$\n")
    script.chmod(0o755)
    reads, writes = pipes
    pid = spawner._start_by_fork_exec([str(script)], ENV, str(tmp_path), writes, 0o077)
    os.waitpid(pid, 0)
    for fd in writes:
        os.close(fd)
    writes.clear()
    assert os.read(reads[0], 1000).split() == [str(pid).encode()] * 3


def failure(start: Start, argv: list[str], env: dict[str, str], cwd: str) -> tuple[object, ...]:
    out_r, out_w = os.pipe()
    try:
        start(argv, env, cwd, [out_w, out_w])
    except Exception as error:  # noqa: BLE001 -- compared, whatever it is
        return (type(error), error.args, getattr(error, "filename", None), str(error))
    finally:
        os.close(out_r)
        os.close(out_w)
    raise AssertionError(f"{argv} started")


@pytest.mark.parametrize("case", ["missing", "not-executable", "no-shebang", "bad-interpreter",
                                  "missing-cwd", "cwd-not-a-directory", "equals-in-name",
                                  "nul-in-argv", "nul-in-env", "too-long", "directory"])
def test_what_cannot_start_fails_as_popen_fails(tmp_path: pathlib.Path, case: str) -> None:
    ok = tmp_path / "ok"
    ok.write_text("#!/bin/sh\nexit 0\n")
    ok.chmod(0o755)
    argv, env, cwd = [str(ok), "x"], dict(ENV), str(tmp_path)
    if case == "missing":
        argv[0] = str(tmp_path / "none")
    elif case == "not-executable":
        ok.chmod(0o644)
    elif case == "no-shebang":
        ok.write_text("exit 0\n")
    elif case == "bad-interpreter":
        ok.write_text("#!/no/such/interpreter\n")
    elif case == "missing-cwd":
        cwd = str(tmp_path / "gone")
    elif case == "cwd-not-a-directory":
        cwd = str(ok)
    elif case == "equals-in-name":
        env["A=B"] = "c"
    elif case == "nul-in-argv":
        argv[1] = "a\0b"
    elif case == "nul-in-env":
        env["A"] = "b\0c"
    elif case == "too-long":
        argv[1] = "x" * 200 * 1024
    elif case == "directory":
        argv[0] = str(tmp_path)
    assert failure(by_fork_exec, argv, env, cwd) == failure(by_popen, argv, env, cwd)
