"""Scripts started as the script user straight from the service's process, with `vfork`.

As root, a script must start as the script user. Python's `subprocess` switches the user only
after a `fork` (slow from a large process), so the service has had two other ways: a small
spawner process of the script user's (att_jm/spawner.py: two hand-overs between processes
per script, the start's request and the exit's report) and util-linux's `setpriv` (a second
`exec` per script). The C module `att_jm._start` (att_jm/_start.c, built with the package)
makes the switch itself in a `vfork` child with the kernel's own calls, so the service starts
the script with a `vfork` and stays its parent: it sees the exit status itself, with no
process in between. The script's process is the one `Popen` would start with `user`,
`group` and `extra_groups=[]` (tests/integration/test_script_isolation.py compares them).

Where the module was not built (no C compiler or no Python headers at install), or with
ATT_JM_DIRECT_START=0 in the service's environment, scripts start the other ways.
"""

from __future__ import annotations

import os
from typing import Final

from att_jm.spawner import exec_arguments

try:
    from att_jm import _start  # type: ignore[attr-defined]
except ImportError:  # not built
    _start = None

DIRECT_START_ENV: Final = "ATT_JM_DIRECT_START"


def built() -> bool:
    """Whether the C part was built with the package."""
    return _start is not None


def available() -> bool:
    """Whether scripts can start this way here (built, not switched off, Linux)."""
    return built() and os.environ.get(DIRECT_START_ENV, "1") != "0"


class DirectScript:
    """A script started by `start`: what the runner needs of a `Popen` (this process is its
    parent and reaps it)."""

    def __init__(self, pid: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.stdout = open(stdout, "rb", buffering=0)  # noqa: SIM115 -- closed by the runner
        self.stderr = open(stderr, "rb", buffering=0)  # noqa: SIM115 -- idem
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: as Popen
                pid, status = self.pid, 0
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        """Reap it: its exit code, or minus the signal that ended it (as `Popen.wait`)."""
        if self.returncode is None:
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                except ChildProcessError:  # reaped elsewhere: as Popen
                    status = 0
                except InterruptedError:  # pragma: no cover -- PEP 475 retries
                    continue
                break
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def start(argv: list[str], env: dict[str, str], cwd: str, uid: int, gid: int,
          umask: int) -> DirectScript:
    """`Popen(argv, stdin=DEVNULL, stdout=PIPE, stderr=PIPE, cwd=cwd, env=env,
    start_new_session=True, close_fds=True, umask=umask, user=uid, group=gid,
    extra_groups=[])`, with a `vfork`: argv[0] a path. OSError as Popen raises it when the
    script cannot be executed (errno, message, the script's path, or `cwd` when it cannot be
    entered); ValueError for what no process can be given (a NUL byte, a `=` in a name)."""
    if _start is None:
        raise OSError("att_jm._start is not built")
    if not (0 <= uid < 2**32 - 1 and 0 <= gid < 2**32 - 1):
        raise ValueError(f"no such user or group id: {uid}, {gid}")
    args, env_list = exec_arguments(argv, env)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid = _start.start(args[0], args, env_list, os.fsencode(cwd), stdin, out_w, err_w,
                               uid, gid, umask)
        finally:
            os.close(stdin)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return DirectScript(pid, out_r, err_r)

