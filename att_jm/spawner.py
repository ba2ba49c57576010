"""The script spawner: a small process that starts the scripts as the script user.

Where the package's C part is built, the writer starts scripts itself (att_jm/direct_start.py,
ADR 0003); the spawner is the way where it is not, or with ATT_JM_DIRECT_START=0.

As root, a script must start as the script user. Python's `subprocess` can switch the user
itself only with a `fork` (it rules `vfork` out whenever it changes the user), and a fork
copies the caller's page tables, slower as the caller grows; util-linux's `setpriv` keeps
`vfork` but costs a second `exec` per script, on these machines the largest part of a
trivial script's start (bench/README.md). Here a process that imports only the standard
library (`python -m att_jm.spawner`, started by the service as root, stopped with it,
killed if it dies) becomes the script user itself as it starts (real, effective and saved
ids, no other group, no capability) and starts each script with the `Popen` call the
service would make without the switch (through that call itself, `fork_exec`, on Python
3.11: `FORK_EXEC_START`): a `vfork`, the script exec'd with the credentials it would have
been given. The service still follows the script's pipes, sees its exit
through a pidfd and kills what it leaves; only the start and the exit status travel over
the socket.

What the script user's processes (the scripts) can do to it: not trace it, read its memory
or open its descriptors (it is not dumpable, so its /proc entries are root's); signal it,
or change its limits, priority, CPU affinity, scheduling policy or I/O priority (the calls
a process of the same user may make on another), which its children would inherit. So
before each start the spawner compares those with what they were when it started, and a
changed spawner answers `{"tampered": what}` and exits: that start goes through the
service's other switch and the next one gets a new spawner. A spawner that is killed fails
the execution that ran (as a spawner dying of anything else); one that is stopped, at most
that execution, after `ANSWER_SECONDS` (it is then killed). A script never starts from a
changed spawner.

Protocol, over a Unix stream socket pair: every message is a 4-byte big-endian length and a
JSON object; file descriptors ride on a message's first byte.

- service -> spawner: `{"op": "spawn", "argv": [...], "env": {...}, "cwd": "...", "reap":
  [N, ...]}` with the write ends of the script's stdout and stderr pipes (`reap`: scripts
  reported before, reaped once this start is answered, off the service's way to the start);
  `{"op": "reap", "pids": [N, ...]}` (when no start follows).
- spawner -> service, for each spawn: `{"pid": N}` once the script is exec'd, or `{"error":
  [errno, strerror, filename]}` when Popen raised an OSError (the script could not be
  executed), `{"refused": message}` when it raised a ValueError (an argument no process can
  be given), `{"tampered": message}` (see above); then
  `{"pid": N, "status": S}` once it exited (S as `Popen.returncode`: the exit code, or minus
  the signal). The script is left a zombie until its `reap`, so that its process group id
  cannot be reused while the service still kills what is left of it.

Usage (by `Spawner`): python -m att_jm.spawner FD UID GID UMASK [PARENT]
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import functools
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

try:
    from _posixsubprocess import fork_exec as _posix_fork_exec

    _fork_exec: Callable[..., int] | None = _posix_fork_exec
except ImportError:  # not CPython on a POSIX system
    _fork_exec = None

_HEADER = struct.Struct(">I")
#: The largest message taken (a Command is bounded far below: argv and environment together
#: cannot pass the kernel's ARG_MAX of a few MiB).
MAX_MESSAGE = 64 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
#: ioprio_get(2) by machine (no Python binding); elsewhere the I/O priority is not compared.
_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}
_IOPRIO_WHO_PROCESS = 1
_MACHINE = os.uname().machine
#: Every resource limit this Python knows.
_RLIMITS = tuple(sorted(getattr(resource, name) for name in dir(resource)
                        if name.startswith("RLIMIT_")))
#: How long the service waits for an answer of the spawner before it gives up on it.
ANSWER_SECONDS = 10.0


class SpawnerGone(OSError):
    """The spawner exited, or did not answer."""


class SpawnerLost(SpawnerGone):
    """The spawner was lost after a start was asked of it and before it answered: the script
    may have started (its Popen may have returned), so the start must not be made again."""


def encode(message: dict[str, Any]) -> bytes:
    """A message's JSON (the standard library's: the spawner imports nothing else; the
    service's side may give `Spawner` a faster encoder of the same JSON)."""
    return json.dumps(message, separators=(",", ":")).encode()


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = (),
         dumps: Callable[[dict[str, Any]], bytes] = encode) -> None:
    """One message, with `fds` on its first byte."""
    body = dumps(message)
    data = _HEADER.pack(len(body)) + body
    sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  struct.pack(f"{len(fds)}i", *fds))] if fds else [])
    if sent < len(data):
        sock.sendall(data[sent:])


def receive(
    sock: socket.socket, loads: Callable[[bytes | bytearray], Any] = json.loads,
) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the descriptors that came with it; (None, []) at the end."""
    head, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 4, socket.MSG_WAITALL)
    if len(head) < _HEADER.size:
        for fd in fds:
            os.close(fd)
        return None, []
    (size,) = _HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes")
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            return None, fds
        body += chunk
    message = loads(body)
    if not isinstance(message, dict):
        raise ValueError("a message that is not an object")
    return message, fds


# --- the spawner process ---------------------------------------------------------------


def _returncode(info: os.waitid_result) -> int:
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _start(message: dict[str, Any], fds: list[int],
           umask: int) -> subprocess.Popen[bytes] | int:
    """The script, as the runner's Popen path starts it; this process already runs as the
    script user, so Popen switches no user and uses `vfork`. Started through Popen's own
    call (its pid) where `FORK_EXEC_START` holds and argv[0] is a path, else by Popen itself
    (the `Popen`)."""
    if FORK_EXEC_START and os.path.dirname(message["argv"][0]):
        return _start_by_fork_exec(message["argv"], message["env"], message["cwd"], fds, umask)
    return subprocess.Popen(
        message["argv"], stdin=subprocess.DEVNULL, stdout=fds[0], stderr=fds[1],
        cwd=message["cwd"], env=message["env"], start_new_session=True, close_fds=True,
        umask=umask,
    )


#: Scripts start through `_posixsubprocess.fork_exec` itself, the call `Popen` makes, with
#: the arguments `Popen` gives it for the same start, without `Popen`'s own work around it
#: (half of a start's time in this process: bench/README.md, session 18). The call is
#: CPython's private one and its arguments change between releases: only on the release it
#: is written for and tested with (tests/integration/test_script_isolation.py compares the
#: processes both ways start, and their errors), and not with ATT_JM_SPAWN_WITH_POPEN=1 in
#: the service's environment (the switch back to `Popen`, should a release break it).
POPEN_ENV = "ATT_JM_SPAWN_WITH_POPEN"
FORK_EXEC_START = (_fork_exec is not None and sys.version_info[:2] == (3, 11)
                and os.environ.get(POPEN_ENV, "") != "1")


def _start_by_fork_exec(argv: list[str], env: dict[str, str], cwd: str, fds: list[int],
                    umask: int) -> int:
    """`Popen(argv, stdin=DEVNULL, stdout=fds[0], stderr=fds[1], cwd=cwd, env=env,
    start_new_session=True, close_fds=True, umask=umask)` as Python 3.11's makes it (a
    `vfork`, no user switch): the same call and arguments, the same exceptions (OSError with
    the errno, message and file the child reported; ValueError for what no process can be
    given); the pid, the script left for this process to reap."""
    fork_exec = _fork_exec
    if fork_exec is None:
        raise RuntimeError("no _posixsubprocess.fork_exec: FORK_EXEC_START is false here")
    args, env_list = exec_arguments(argv, env)
    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        errpipe_read, errpipe_write = os.pipe()  # non-inheritable: closed by the exec
        try:
            pid = fork_exec(
                args, (args[0],), True, (errpipe_write,), cwd, env_list,
                stdin, -1, -1, fds[0], -1, fds[1], errpipe_read, errpipe_write,
                True, True, -1, None, None, None, umask, None, True)
        except BaseException:
            os.close(errpipe_read)
            raise
        finally:
            os.close(errpipe_write)
    finally:
        os.close(stdin)
    try:
        report = bytearray()
        while True:  # empty at the exec; what the child failed at, before it
            part = os.read(errpipe_read, 50000)
            report += part
            if not part or len(report) > 50000:
                break
    finally:
        os.close(errpipe_read)
    if report:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise _child_error(bytes(report), argv[0], cwd)
    return pid


def exec_arguments(argv: list[str], env: dict[str, str]) -> tuple[list[bytes], list[bytes]]:
    """argv and the environment as `execve` takes them (as `Popen` encodes them); ValueError
    for a `=` in a variable's name."""
    env_list = []
    for key, value in env.items():
        name = os.fsencode(key)
        if b"=" in name:
            raise ValueError("illegal environment variable name")
        env_list.append(name + b"=" + os.fsencode(value))
    return [os.fsencode(arg) for arg in argv], env_list


def _child_error(report: bytes, executable: str, cwd: str) -> Exception:
    """The exception Python 3.11's `Popen` raises for what its child reported before the
    exec (`subprocess.Popen._execute_child`)."""
    try:
        name, hex_errno, text = report.split(b":", 2)
        message = text.decode()
    except ValueError:
        name, hex_errno = b"SubprocessError", b"0"
        message = f"Bad exception data from child: {report!r}"
    kind = getattr(builtins, name.decode("ascii"), subprocess.SubprocessError)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        kind = subprocess.SubprocessError
    if issubclass(kind, OSError) and hex_errno:
        number = int(hex_errno, 16)
        filename = executable
        if message == "noexec":  # the exec never called: the chdir failed (3.11's reading)
            message, filename = "", cwd
        if number != 0:
            message = os.strerror(number)
        return kind(number, message, filename)
    return kind(message)


def _become(uid: int, gid: int) -> None:
    """Switch to the script user for good: no other group, real, effective and saved ids
    (so no way back to root, and no capability left), and not dumpable (no process of that
    user may trace this one or open its /proc entries)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0)")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _ioprio() -> int | None:
    number = _IOPRIO_GET.get(_MACHINE)
    if number is None:
        return None
    return int(_libc().syscall(number, _IOPRIO_WHO_PROCESS, 0))


def inherited() -> dict[str, Any]:
    """What a script inherits from this process that another process of the same user may
    change: resource limits, nice value, CPU affinity, scheduling policy, I/O priority."""
    return {
        "limits": [resource.getrlimit(limit) for limit in _RLIMITS],
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
        "policy": os.sched_getscheduler(0),
        "ioprio": _ioprio(),
    }


def changed(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The names of what differs between two `inherited()`."""
    return [name for name in before if before[name] != now[name]]


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


#: A started script: its `Popen`, or its pid when started through `fork_exec`.
Started = subprocess.Popen[bytes] | int


def _pid(started: Started) -> int:
    return started if isinstance(started, int) else started.pid


def _wait(started: Started) -> None:
    """Reap a started script (blocking)."""
    if isinstance(started, int):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(started, 0)
    else:
        started.wait()


def _spawn(conn: socket.socket, message: dict[str, Any], fds: list[int],
           umask: int) -> Started | None:
    """Start one script and answer its pid, or answer why it did not start (None)."""
    try:
        if len(fds) != 2:
            raise ValueError(f"{len(fds)} descriptors with a spawn")
        process = _start(message, fds, umask)
    except OSError as error:  # as Popen raises it in the service: errno and file
        send(conn, {"error": [error.errno or 0, error.strerror or str(error), error.filename]})
        return None
    except ValueError as error:  # what Popen refuses before it starts anything
        send(conn, {"refused": str(error)})
        return None
    finally:
        for fd in fds:
            os.close(fd)
    send(conn, {"pid": _pid(process)})
    return process


def serve(conn: socket.socket, umask: int) -> None:
    """Answer the service's requests until its end of the socket closes, or until another
    process changed what a script would inherit from this one (then it answers `tampered`)."""
    before = inherited()
    exited: dict[int, Started] = {}  # reported, not reaped yet
    try:
        while True:
            message, fds = receive(conn)
            if message is None:
                return
            if message.get("op") == "reap":
                _reap(exited, message.get("pids"))
                continue
            differs = changed(before, inherited())
            if differs:
                for fd in fds:
                    os.close(fd)
                send(conn, {"tampered": "changed by another process: " + ", ".join(differs)})
                return
            process = _spawn(conn, message, fds, umask)
            _reap(exited, message.get("reap"))  # answered first: the service goes on
            if process is None:
                continue
            pid = _pid(process)
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            exited[pid] = process
            status = -signal.SIGKILL if info is None else _returncode(info)
            send(conn, {"pid": pid, "status": status})
    finally:
        for process in exited.values():
            _wait(process)


def _reap(exited: dict[int, Started], pids: object) -> None:
    """Reap the reported scripts among `pids` (a list from the service)."""
    for pid in pids if isinstance(pids, list) else ():
        process = exited.pop(pid, None) if isinstance(pid, int) else None
        if process is not None:
            _wait(process)


def main(argv: list[str]) -> None:
    fd, uid, gid, umask = (int(value) for value in argv[1:5])
    for standard in (0, 1, 2):  # open, so that no socket or pipe of ours takes their numbers
        try:
            os.fstat(standard)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), standard)
    parent = int(argv[5]) if len(argv) > 5 else os.getppid()
    _become(uid, gid)
    _die_with_parent(parent)  # after the switch, which clears the parent-death signal
    with socket.socket(fileno=fd) as conn:
        serve(conn, umask)


# --- the service's side ----------------------------------------------------------------


class SpawnedScript:
    """A script the spawner started: what the runner needs of a `Popen`."""

    def __init__(self, spawner: Spawner, pid: int, stdout: int, stderr: int) -> None:
        self._spawner = spawner
        self.pid = pid
        self.stdout = open(stdout, "rb", buffering=0)  # noqa: SIM115 -- closed by the runner
        self.stderr = open(stderr, "rb", buffering=0)  # noqa: SIM115 -- idem
        self.returncode: int | None = None

    def exit_fd(self) -> int:
        """Readable once the spawner reports the script's exit, or is gone (the service
        also sees the exit itself, through a pidfd, sooner)."""
        return self._spawner.fileno()

    def wait(self) -> int:
        """The exit status (the spawner's report; the script then reaped)."""
        if self.returncode is not None:
            return self.returncode
        try:
            report = self._spawner.report(self.pid)
        except SpawnerGone:
            self._reap_orphan()
            raise
        self.returncode = int(report["status"])
        return self.returncode


    def _reap_orphan(self) -> None:
        """After the spawner's end the script (killed by then) is re-parented to the service,
        a child subreaper: reap it, so that no zombie is left."""
        for _ in range(100):
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                pass  # not re-parented yet, or to another process
            time.sleep(0.001)


class Spawner:
    """The service's handle on its spawner process (started at the first spawn, again after
    it exited)."""

    def __init__(
        self, uid: int, gid: int, umask: int, *, python: str = sys.executable,
        dumps: Callable[[dict[str, Any]], bytes] = encode,
        loads: Callable[[bytes | bytearray], Any] = json.loads, with_popen: bool = False,
    ) -> None:
        self._args = [str(uid), str(gid), str(umask)]
        #: The spawner starts its scripts by `Popen` rather than by its call (`FORK_EXEC_START`),
        #: as it also does with ATT_JM_SPAWN_WITH_POPEN=1 in this process's environment.
        self.with_popen = with_popen
        self._python = python
        #: How this side encodes its requests and decodes the answers (the same JSON).
        self._dumps = dumps
        self._loads = loads
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        #: Scripts reported and swept, not reaped yet: with the next spawn, or `reap_now`.
        self._unreaped: list[int] = []

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def fileno(self) -> int:
        if self._sock is None:
            raise SpawnerGone("the script spawner is not running")
        return self._sock.fileno()

    def start(self) -> None:
        """Start the spawner process (OSError when it cannot be)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = subprocess.Popen(
                [self._python, "-m", "att_jm.spawner", str(theirs.fileno()), *self._args,
                 str(os.getpid())],
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), process_group=0,
                env=os.environ | {POPEN_ENV: "1"} if self.with_popen else None,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock = mine

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str,
              meanwhile: Callable[[], None] | None = None) -> SpawnedScript:
        """Start `argv` (argv[0] a path) with exactly `env`, in `cwd`, as the script user, in
        a session of its own, stdin /dev/null; OSError as Popen raises it when the script
        cannot be executed, SpawnerGone (an OSError too) when the spawner is gone and
        started nothing, SpawnerLost when it was lost after it was asked (the script may
        run). `meanwhile` runs once the request is sent, before the answer is read: work
        of the caller's that fills the spawner's start instead of following it (what it
        raises is dropped; it must not start anything)."""
        for text in (*argv, *env, *env.values(), cwd):
            if "\0" in text:
                raise ValueError("embedded null byte")
        if self._sock is None or self._process is None or self._process.poll() is not None:
            self.close()
            try:
                self.start()
            except OSError as error:
                raise SpawnerGone(f"the script spawner could not start: {error}") from error
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            try:
                send(self._socket(), {"op": "spawn", "argv": argv, "env": env, "cwd": cwd,
                                      "reap": self._unreaped}, (out_w, err_w), self._dumps)
            except OSError as error:  # it is gone: the request never reached it whole
                self.close(timeout=0.0)
                raise SpawnerGone(f"the script spawner could not be asked: {error!r}") from error
            finally:
                os.close(out_w)
                os.close(err_w)
            self._unreaped = []  # the spawner reaps them (or, gone, its end did)
            if meanwhile is not None:
                with contextlib.suppress(Exception):  # the start is under way whatever it does
                    meanwhile()
            try:
                answer = self.answer()
            except SpawnerGone as error:
                raise SpawnerLost(str(error)) from error
            if "error" in answer:  # raised as Popen raises it
                code, strerror, filename = answer["error"]
                raise OSError(code or None, strerror, filename)
            if "refused" in answer:
                raise ValueError(answer["refused"])
            if "tampered" in answer:  # it exits, having started nothing: this start goes
                self.close()          # the other way
                raise SpawnerGone(f"the script spawner was {answer['tampered']}")
            return SpawnedScript(self, int(answer["pid"]), out_r, err_r)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise

    def report(self, pid: int) -> dict[str, Any]:
        """The exit report of script `pid` (blocking); the script is reaped after it."""
        try:
            answer = self.answer()
        except SpawnerGone:
            self.close()
            raise
        if answer.get("pid") != pid or "status" not in answer:
            self.close()
            raise SpawnerGone(f"the script spawner answered {answer!r}")
        # Reaped once the next start is answered (a message and a wake-up of the spawner less
        # on the way to that start; its pid stays taken meanwhile), or by `reap_now`.
        self._unreaped.append(pid)
        return answer

    def reap_now(self) -> None:
        """Have the spawner reap the scripts it reported (when no start follows)."""
        if self._unreaped and self._sock is not None:
            pids, self._unreaped = self._unreaped, []
            try:
                send(self._sock, {"op": "reap", "pids": pids}, (), self._dumps)
            except OSError:  # gone: its end reaped them
                self.close(timeout=0.0)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise SpawnerGone("the script spawner is not running")
        return self._sock

    def answer(self) -> dict[str, Any]:
        """The next answer of the spawner (SpawnerGone when there is none in time)."""
        sock = self._socket()
        readable, _, _ = select.select([sock], [], [], ANSWER_SECONDS)
        if not readable:  # stopped, or stuck: it is killed
            self.close(timeout=0.0)
            raise SpawnerGone(f"the script spawner did not answer within {ANSWER_SECONDS} s")
        try:
            message, fds = receive(sock, self._loads)
        except (OSError, ValueError) as error:
            raise SpawnerGone(f"the script spawner's answer: {error!r}") from error
        for fd in fds:
            os.close(fd)
        if message is None:
            raise SpawnerGone("the script spawner exited")
        return message

    def close(self, timeout: float = 5.0) -> None:
        """Stop the spawner (the end of its socket), and reap it (it reaps its scripts as it
        exits; a spawner killed did not, and those it had not reaped yet, re-parented to the
        service, a child subreaper, are reaped here)."""
        unreaped, self._unreaped = self._unreaped, []
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()  # as root; SIGKILL ends a stopped process too
                process.wait()
            if process.returncode != 0:  # killed (or failed): its zombies are ours now
                for pid in unreaped:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)


if __name__ == "__main__":
    main(sys.argv)
