"""The script spawner: a small process that starts the scripts as the script user.

As root, a script must start as the script user. Python's `subprocess` can switch the user
itself only with a `fork` (it rules `vfork` out), and a fork of the service copies its page
tables, slower as the service grows; util-linux's `setpriv` keeps `vfork` but costs a second
`exec` per script, on these machines the largest part of a trivial script's start
(bench/README.md). Here a process that imports only the standard library (`python -m
att_jm.spawner`, started by the service as root, stopped with it, killed if it dies) starts
each script with the very `Popen` call the service would make, user switch included: a fork
of a small process. The service still follows the script's pipes and kills what it leaves;
only the start and the exit status travel over the socket.

Protocol, over a Unix stream socket pair: every message is a 4-byte big-endian length and a
JSON object; file descriptors ride on a message's first byte.

- service -> spawner: `{"op": "spawn", "argv": [...], "env": {...}, "cwd": "..."}` with the
  write ends of the script's stdout and stderr pipes; `{"op": "reap", "pid": N}`.
- spawner -> service, for each spawn: `{"pid": N}` once the script is exec'd, or `{"error":
  [errno, strerror, filename]}` when Popen raised an OSError (the script could not be
  executed), `{"refused": message}` when it raised a ValueError (an argument no process can
  be given); then
  `{"pid": N, "status": S}` once it exited (S as `Popen.returncode`: the exit code, or minus
  the signal). The script is left a zombie until its `reap`, so that its process group id
  cannot be reused while the service still kills what is left of it.

Usage (by `Spawner`): python -m att_jm.spawner FD UID GID UMASK [PARENT]
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

_HEADER = struct.Struct(">I")
#: The largest message taken (a Command is bounded far below: argv and environment together
#: cannot pass the kernel's ARG_MAX of a few MiB).
MAX_MESSAGE = 64 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
#: How long the service waits for an answer of the spawner before it gives up on it.
ANSWER_SECONDS = 10.0


class SpawnerGone(OSError):
    """The spawner exited, or did not answer."""


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One message, with `fds` on its first byte."""
    body = json.dumps(message, separators=(",", ":")).encode()
    data = _HEADER.pack(len(body)) + body
    sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  struct.pack(f"{len(fds)}i", *fds))] if fds else [])
    if sent < len(data):
        sock.sendall(data[sent:])


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
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
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a message that is not an object")
    return message, fds


# --- the spawner process ---------------------------------------------------------------


def _returncode(info: os.waitid_result) -> int:
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _start(message: dict[str, Any], fds: list[int], uid: int, gid: int,
           umask: int) -> subprocess.Popen[bytes]:
    """The script, as the runner's Popen path starts it, with the user switch (a fork of
    this small process: its cost does not grow with the service)."""
    return subprocess.Popen(
        message["argv"], stdin=subprocess.DEVNULL, stdout=fds[0], stderr=fds[1],
        cwd=message["cwd"], env=message["env"], start_new_session=True, close_fds=True,
        user=uid, group=gid, extra_groups=[], umask=umask,
    )


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def serve(conn: socket.socket, uid: int, gid: int, umask: int) -> None:
    """Answer the service's requests until its end of the socket closes."""
    exited: dict[int, subprocess.Popen[bytes]] = {}  # reported, not reaped yet
    try:
        while True:
            message, fds = receive(conn)
            if message is None:
                return
            if message.get("op") == "reap":
                process = exited.pop(int(message["pid"]), None)
                if process is not None:
                    process.wait()
                continue
            try:
                if len(fds) != 2:
                    raise ValueError(f"{len(fds)} descriptors with a spawn")
                process = _start(message, fds, uid, gid, umask)
            except OSError as error:  # as Popen raises it in the service: errno and file
                send(conn, {"error": [error.errno or 0, error.strerror or str(error),
                                      error.filename]})
                continue
            except ValueError as error:  # what Popen refuses before it starts anything
                send(conn, {"refused": str(error)})
                continue
            finally:
                for fd in fds:
                    os.close(fd)
            send(conn, {"pid": process.pid})
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
            exited[process.pid] = process
            status = -signal.SIGKILL if info is None else _returncode(info)
            send(conn, {"pid": process.pid, "status": status})
    finally:
        for process in exited.values():
            process.wait()


def main(argv: list[str]) -> None:
    fd, uid, gid, umask = (int(value) for value in argv[1:5])
    for standard in (0, 1, 2):  # open, so that no socket or pipe of ours takes their numbers
        try:
            os.fstat(standard)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), standard)
    parent = int(argv[5]) if len(argv) > 5 else os.getppid()
    _die_with_parent(parent)
    with socket.socket(fileno=fd) as conn:
        serve(conn, uid, gid, umask)


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
        """Readable once the spawner reports the script's exit."""
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

    def __init__(self, uid: int, gid: int, umask: int, *, python: str = sys.executable) -> None:
        self._args = [str(uid), str(gid), str(umask)]
        self._python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

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
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock = mine

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> SpawnedScript:
        """Start `argv` (argv[0] a path) with exactly `env`, in `cwd`, as the script user, in
        a session of its own, stdin /dev/null; OSError as Popen raises it when the script
        cannot be executed, SpawnerGone (an OSError too) when the spawner is gone."""
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
                send(self._socket(), {"op": "spawn", "argv": argv, "env": env, "cwd": cwd},
                     (out_w, err_w))
            finally:
                os.close(out_w)
                os.close(err_w)
            answer = self._answer()
            if "error" in answer:  # raised as Popen raises it
                code, strerror, filename = answer["error"]
                raise OSError(code or None, strerror, filename)
            if "refused" in answer:
                raise ValueError(answer["refused"])
            return SpawnedScript(self, int(answer["pid"]), out_r, err_r)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise

    def report(self, pid: int) -> dict[str, Any]:
        """The exit report of script `pid` (blocking); the script is reaped after it."""
        try:
            answer = self._answer()
        except SpawnerGone:
            self.close()
            raise
        if answer.get("pid") != pid or "status" not in answer:
            self.close()
            raise SpawnerGone(f"the script spawner answered {answer!r}")
        send(self._socket(), {"op": "reap", "pid": pid})
        return answer

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise SpawnerGone("the script spawner is not running")
        return self._sock

    def _answer(self) -> dict[str, Any]:
        sock = self._socket()
        readable, _, _ = select.select([sock], [], [], ANSWER_SECONDS)
        if not readable:
            raise SpawnerGone(f"the script spawner did not answer within {ANSWER_SECONDS} s")
        try:
            message, fds = receive(sock)
        except (OSError, ValueError) as error:
            raise SpawnerGone(f"the script spawner's answer: {error!r}") from error
        for fd in fds:
            os.close(fd)
        if message is None:
            raise SpawnerGone("the script spawner exited")
        return message

    def close(self, timeout: float = 5.0) -> None:
        """Stop the spawner (the end of its socket), and reap it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main(sys.argv)
