"""Runs one automation script (contract section 4) and turns what it did into a Result."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import pathlib
import pwd
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from att_jm import direct_start
from att_jm.direct_start import DirectScript
from att_jm.domain.runs import Outcome, Run
from att_jm.errors import AttJmError
from att_jm.spawner import SpawnedScript, Spawner, SpawnerGone, SpawnerLost
from att_jm.spawner import encode as spawner_encode
from att_jm.vocabulary import Result

SUCCEEDED = Result.SUCCEEDED
FAILED = Result.FAILED

#: PATH given to scripts: fixed, so nothing about the service's own environment leaks to them.
SCRIPT_PATH = "/usr/local/bin:/usr/bin:/bin"

_READ_CHUNK = 64 * 1024
_RESULT_KEY = b'"result"'
#: Once the script itself exited, how long its leftover children may keep the pipes open.
_DRAIN_AFTER_EXIT_SECONDS = 0.25
#: Exit polling period, used only where pidfd_open is missing (Linux < 5.3, other Unixes).
_EXIT_POLL_SECONDS = 0.01
_SHUTDOWN_FEEDBACK = "interrupted: the service is shutting down"
_PROC = pathlib.Path("/proc")

log = structlog.get_logger("att_jm")

#: The umask of scripts run as the script user: what they create is theirs alone.
SCRIPT_UMASK = 0o077
#: How long the sweep after a script's end may go on killing what it left (they may fork).
SWEEP_SECONDS = 2.0
#: util-linux's `setpriv` (Debian: essential), tried in this order; never looked up on PATH.
SETPRIV_PATHS = ("/usr/bin/setpriv", "/bin/setpriv")
_PR_SET_CHILD_SUBREAPER = 36
#: A started script: a Popen, or a script the spawner started (att_jm/spawner.py).
ScriptProcess = subprocess.Popen[bytes] | SpawnedScript | DirectScript
_PR_GET_CHILD_SUBREAPER = 37
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
#: At most this many problems are listed by `check_scripts_dir` (then a count of the rest).
_MAX_PROBLEMS = 20


class ScriptRefused(AttJmError):
    """The script name does not name an executable regular file inside the scripts directory."""


def resolve_script(scripts_dir: str | os.PathLike[str], name: str) -> pathlib.Path:
    """Return the absolute, symlink-free path of script `name`, or raise ScriptRefused."""
    return pathlib.Path(resolve_in(os.path.realpath(scripts_dir), name))


def resolve_in(base: str, name: str) -> str:
    """`resolve_script` in `base`, the scripts directory's own symlink-free path (its
    `os.path.realpath`): the script's symlink-free path, or ScriptRefused."""
    if not name:
        raise ScriptRefused("the script name is empty")
    if "\0" in name:
        raise ScriptRefused("the script name contains a NUL character")
    if os.path.isabs(name):
        raise ScriptRefused(f"{name!r} is an absolute path; name a file in the scripts directory")
    # os.path rather than pathlib: the same resolution at a quarter of the cost (it runs
    # before every start, on the queue's critical path).
    if "/" not in name and name not in (".", ".."):
        # A plain name in a symlink-free directory: the path is base/name unless that is a
        # symlink, which one lstat tells (realpath's walk of every component, saved).
        path = os.path.join(base, name)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise ScriptRefused(f"no script named {name!r} in the scripts directory") from None
        except OSError as exc:  # EACCES, ENAMETOOLONG
            raise ScriptRefused(f"{name!r} cannot be resolved: {exc}") from None
        if not stat.S_ISLNK(mode):
            return _executable(path, name, mode)
    path = os.path.realpath(os.path.join(base, name))
    if path == base or not path.startswith(base.rstrip("/") + "/"):
        raise ScriptRefused(f"{name!r} resolves outside the scripts directory")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ScriptRefused(f"no script named {name!r} in the scripts directory") from None
    except OSError as exc:  # ELOOP (a symlink loop realpath left unresolved), EACCES
        raise ScriptRefused(f"{name!r} cannot be resolved: {exc}") from None
    return _executable(path, name, mode)


def _executable(path: str, name: str, mode: int) -> str:
    """`path` if `mode` is a regular file's and this process may execute it."""
    if not stat.S_ISREG(mode):
        raise ScriptRefused(f"{name!r} is not a regular file")
    if not os.access(path, os.X_OK):
        raise ScriptRefused(f"{name!r} is not executable")
    return path


@dataclass(frozen=True)
class Verdict:
    """Result and Feedback, as decided by a Result line or by the exit code."""

    result: Result
    feedback: str | None


def format_seconds(seconds: float) -> str:
    """Write a duration without a trailing ".0": 300.0 -> "300", 0.5 -> "0.5"."""
    value = float(seconds)
    return str(int(value)) if value.is_integer() else repr(value)


def timeout_feedback(timeout_seconds: float) -> str:
    """Feedback of an execution killed by its timeout."""
    return f"timed out after {format_seconds(timeout_seconds)} s"


def signal_name(number: int) -> str:
    """SIGKILL for 9; the bare number for signals Python does not know."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def decode_tail(data: bytes, *, cut: bool) -> str:
    """Decode UTF-8 leniently; a `cut` head may start inside a character, whose rest is dropped."""
    if cut:
        skip = 0
        while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")


def exit_feedback(exit_code: int, stderr: bytes, stderr_cap: int = 1024) -> str:
    """ "exit code N" or "killed by signal NAME", then ": " and stderr's end (<= stderr_cap)."""
    if exit_code >= 0:
        head = f"exit code {exit_code}"
    else:
        head = f"killed by signal {signal_name(-exit_code)}"
    trimmed = stderr.rstrip()
    tail = decode_tail(trimmed[-stderr_cap:], cut=len(trimmed) > stderr_cap).strip()
    return f"{head}: {tail}" if tail else head


def _show(value: object) -> str:
    """A JSON value as the script wrote it, shortened for Feedback."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads deeper)
        return f"a JSON {_kind(value)} nested too deep to show"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str:
    return "array" if isinstance(value, list) else "object"


def _feedback_text(value: object) -> str:
    """A Feedback that is not a string, as `str(value)`; one nested too deep for that (a
    result line may nest 1,024 levels, Python's repr recurses for each) is described."""
    try:
        return str(value)
    except RecursionError:
        return f"(feedback: a JSON {_kind(value)} nested too deep to show)"


def verdict_from_result(document: dict[str, object]) -> Verdict:
    """Read a Result object; a result other than 2 or 3 makes it Failed, saying why.

    `feedback` may be a string, null or missing (None); any other JSON value is kept as str(value).
    """
    result = document["result"]
    if type(result) is not int or result not in (FAILED, SUCCEEDED):
        return Verdict(FAILED, f"invalid Result line: result must be 2 or 3, got {_show(result)}")
    feedback = document.get("feedback")
    if feedback is not None and not isinstance(feedback, str):
        feedback = _feedback_text(feedback)
    return Verdict(Result(result), feedback)


def parse_result_line(line: bytes) -> Verdict | None:
    """The Verdict of a stdout line that is a JSON object with a literal "result" key, else None."""
    text = line.strip()
    if not text.startswith(b"{") or _RESULT_KEY not in text:
        return None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or "result" not in document:
        return None
    return verdict_from_result(document)


def decide(verdict: Verdict | None, exit_code: int, stderr: bytes, stderr_cap: int) -> Verdict:
    """The last Result line decides; without one, exit code 0 succeeds and others fail."""
    if verdict is not None:
        return verdict
    if exit_code == 0:
        return Verdict(SUCCEEDED, None)
    return Verdict(FAILED, exit_feedback(exit_code, stderr, stderr_cap))


class OutputTail:
    """Keeps the last `cap` bytes of a stream, whatever its length."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._kept = bytearray()
        self.cut = False

    def feed(self, chunk: bytes) -> None:
        self._kept += chunk
        excess = len(self._kept) - self._cap
        if excess > 0:
            del self._kept[:excess]
            self.cut = True

    @property
    def data(self) -> bytes:
        return bytes(self._kept)

    def text(self) -> str:
        return decode_tail(self.data, cut=self.cut)


class ResultLineTracker:
    """Follows stdout chunk by chunk and remembers the Verdict of the last Result line.

    Only lines holding the literal bytes "result" are parsed, searched from the end of each chunk,
    so large outputs cost little. Lines longer than `max_line` bytes are never Result lines.
    """

    def __init__(self, max_line: int) -> None:
        self._max_line = max_line
        self._partial = bytearray()
        self._overlong = False
        self.verdict: Verdict | None = None

    def feed(self, chunk: bytes) -> None:
        last_newline = chunk.rfind(b"\n")
        if last_newline == -1:
            self._extend_partial(chunk)
            return
        complete = bytes(self._partial) + chunk[:last_newline]
        if self._overlong:
            first_newline = complete.find(b"\n")
            complete = complete[first_newline + 1 :] if first_newline != -1 else b""
        self._partial.clear()
        self._overlong = False
        self._scan(complete)
        self._extend_partial(chunk[last_newline + 1 :])

    def close(self) -> None:
        """The stream ended: its last line may lack a newline."""
        if not self._overlong:
            self._scan(bytes(self._partial))
        self._partial.clear()

    def _extend_partial(self, data: bytes) -> None:
        if self._overlong:
            return
        self._partial += data
        if len(self._partial) > self._max_line:
            self._partial.clear()
            self._overlong = True

    def _scan(self, lines: bytes) -> None:
        end = len(lines)
        while (hit := lines.rfind(_RESULT_KEY, 0, end)) != -1:
            start = lines.rfind(b"\n", 0, hit) + 1
            stop = lines.find(b"\n", hit)
            verdict = parse_result_line(lines[start : stop if stop != -1 else len(lines)])
            if verdict is not None:
                self.verdict = verdict
                return
            end = start


def script_environment(scripts_dir: str | os.PathLike[str], request: Run) -> dict[str, str]:
    """The whole environment of a script: fixed PATH, LANG and HOME plus the ATT_JM_* variables."""
    return {
        "PATH": SCRIPT_PATH,
        "LANG": "C.UTF-8",
        "HOME": os.fspath(scripts_dir),
        "ATT_JM_COMMAND": request.command,
        "ATT_JM_EXECUTION_ID": request.execution_id,
        "ATT_JM_JOB": request.job,
        "ATT_JM_TRIGGER": request.trigger,
        "ATT_JM_ATTEMPT": str(request.attempt),
    }


# Who scripts run as ----------------------------------------------------------------------


class ScriptUserError(AttJmError):
    """The script user does not exist and cannot be created."""


@dataclass(frozen=True)
class ScriptUser:
    """The unprivileged user scripts run as when the service runs as root."""

    name: str
    uid: int
    gid: int


def lookup_script_user(name: str) -> ScriptUser:
    """The user `name` (its uid and primary gid), or ScriptUserError."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ScriptUserError(f"no user named {name!r}") from None
    return ScriptUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def ensure_script_user(name: str) -> ScriptUser:
    """The user `name`, created first as a system user without home or shell if missing.

    Creating it needs root and useradd (Debian: package passwd); ScriptUserError otherwise.
    """
    with contextlib.suppress(ScriptUserError):
        return lookup_script_user(name)
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if useradd is None:
        raise ScriptUserError(f"no user named {name!r} and no useradd to create it")
    try:
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", name],
            stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ScriptUserError(f"could not create user {name!r}: {error}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise ScriptUserError(f"could not create user {name!r}: useradd: {why}")
    user = lookup_script_user(name)
    log.info("script_user.created", user=name, uid=user.uid, gid=user.gid)
    return user


def _writable_by(info: os.stat_result, uid: int, gid: int, *, sticky_ok: bool) -> str | None:
    """Why the file of `info` is writable by uid/gid (its owner can chmod it), or None.

    `sticky_ok`: a world-writable sticky directory (/tmp) above the scripts directory lets the
    user add entries but not rename or remove those of others, so it does not count.
    """
    mode = info.st_mode
    if info.st_uid == uid:
        return f"owned by uid {uid}"
    if mode & stat.S_IWGRP and info.st_gid == gid:
        return f"group-writable, group {gid}"
    if mode & stat.S_IWOTH and not (sticky_ok and mode & stat.S_ISVTX):
        return "world-writable"
    return None


def _allowed(info: os.stat_result, uid: int, gid: int, bits: int) -> bool:
    """Whether uid/gid (no supplementary groups) has every permission of `bits` (4 r, 2 w, 1 x)."""
    mode = info.st_mode
    if info.st_uid == uid:
        granted = mode >> 6
    elif info.st_gid == gid:
        granted = mode >> 3
    else:
        granted = mode
    return granted & bits == bits


def _is_interpreted(path: str) -> bool:
    """Whether the file starts with #! (the kernel then needs it readable, not only x)."""
    with contextlib.suppress(OSError), open(path, "rb") as file:
        return file.read(2) == b"#!"
    return False


def check_scripts_dir(path: str | os.PathLike[str], uid: int, gid: int) -> list[str]:
    """What is wrong with running the scripts of `path` as uid/gid (no supplementary groups).

    A problem: the directory, a directory or file in it, or a directory above it (up to /, of
    the path as given and once resolved) that the user could write to, so change a script
    (its owner is the user, or it is group-writable with `gid`, or world-writable; a sticky
    world-writable directory above, such as /tmp, does not count); the directory without r-x
    for the user, a directory above it without x, a script (a file with an x bit) without x
    (r-x for a #! script) or in a subdirectory without x. Permission bits only: ACLs are not
    read. Empty: nothing is wrong.
    """
    problems: list[str] = []
    if uid == 0:
        problems.append("the script user is root (uid 0): scripts would run as root")
    given = pathlib.Path(os.path.abspath(path))
    try:
        real = given.resolve(strict=True)
    except (OSError, RuntimeError) as error:
        return [*problems, f"{given}: cannot be resolved: {error}"]
    if not real.is_dir():
        return [*problems, f"{real}: not a directory"]
    for component in [*reversed(given.parents), given]:
        with contextlib.suppress(OSError):
            info = os.lstat(component)
            if stat.S_ISLNK(info.st_mode) and info.st_uid == uid:  # replaceable in a sticky dir
                problems.append(f"{component} (a symbolic link on the way to the scripts "
                                f"directory): owned by uid {uid}")
    for directory in dict.fromkeys([*reversed(given.parents), *reversed(real.parents)]):
        try:
            info = os.stat(directory)
        except OSError as error:
            problems.append(f"{directory}: cannot be read: {error}")
            continue
        if (why := _writable_by(info, uid, gid, sticky_ok=True)) is not None:
            problems.append(f"{directory} (above the scripts directory): writable by uid "
                            f"{uid} ({why})")
        if not _allowed(info, uid, gid, 1):
            problems.append(f"{directory} (above the scripts directory): uid {uid} cannot enter "
                            "it (needs x)")
    info = os.stat(real)
    if (why := _writable_by(info, uid, gid, sticky_ok=False)) is not None:
        problems.append(f"{real} (the scripts directory): writable by uid {uid} ({why})")
    if not _allowed(info, uid, gid, 5):
        problems.append(f"{real} (the scripts directory): uid {uid} cannot list and enter it "
                        "(needs r-x)")
    problems.extend(_check_inside(real, uid, gid))
    if len(problems) > _MAX_PROBLEMS:
        more = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"... and {more} more"]
    return problems


def _check_inside(real: pathlib.Path, uid: int, gid: int) -> Iterator[str]:
    """The problems of what is inside the scripts directory (see check_scripts_dir)."""
    errors: list[OSError] = []
    enterable = {str(real): True}
    for root, dirs, files in os.walk(real, onerror=errors.append):
        for name in sorted([*dirs, *files]):
            entry = os.path.join(root, name)
            try:
                info = os.lstat(entry)
            except OSError as error:
                yield f"{entry}: cannot be read: {error}"
                continue
            if stat.S_ISLNK(info.st_mode):
                continue  # a link is followed to a file inside, checked there, or refused
            if (why := _writable_by(info, uid, gid, sticky_ok=False)) is not None:
                yield f"{entry}: writable by uid {uid} ({why})"
            if stat.S_ISDIR(info.st_mode):
                enterable[entry] = enterable[root] and _allowed(info, uid, gid, 1)
            elif stat.S_ISREG(info.st_mode) and info.st_mode & 0o111:
                if not enterable[root]:
                    yield f"{entry}: uid {uid} cannot reach it (a directory above lacks x)"
                elif _is_interpreted(entry):
                    if not _allowed(info, uid, gid, 5):
                        yield f"{entry}: uid {uid} cannot run it (needs r-x: a #! script)"
                elif not _allowed(info, uid, gid, 1):
                    yield f"{entry}: uid {uid} cannot run it (needs x)"
    for failed in errors:
        yield f"{failed.filename}: cannot be read: {failed.strerror}"


def check_script_isolation(run_as: str | None, scripts_dir: str | os.PathLike[str]) -> list[str]:
    """At the service's start: why scripts could not run safely as `run_as`; empty: fine.

    When this process is root: the user `run_as` (created if missing, `ensure_script_user`)
    and `check_scripts_dir` for it. Not root: nothing to check (scripts run as this process's
    user). Root without `run_as`: nothing either, but scripts would run as root (logged).
    """
    if os.geteuid() != 0:
        return []
    if not run_as:
        log.warning("runner.scripts_run_as_root", reason="no script user is set")
        return []
    try:
        user = ensure_script_user(run_as)
    except ScriptUserError as error:
        return [str(error)]
    return check_scripts_dir(scripts_dir, user.uid, user.gid)


# The processes of a script -----------------------------------------------------------------


_prctl: Callable[..., int] | None = None


def _libc_prctl(option: int, arg: int) -> None:
    """prctl(option, arg, 0, 0, 0); OSError when it fails (AttributeError without prctl)."""
    global _prctl  # noqa: PLW0603 -- looked up once
    if _prctl is None:
        function = ctypes.CDLL(None, use_errno=True).prctl
        function.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
        function.restype = ctypes.c_int
        _prctl = function
    if _prctl(option, arg, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux prctl); whether it is.

    A process a script leaves behind (double fork, setsid) is then re-parented to this process
    instead of init, so the sweep at the script's end finds it among this process's descendants.
    """
    global _SUBREAPER  # noqa: PLW0603 -- the process that became one
    try:
        _libc_prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError) as error:  # AttributeError: no prctl (not Linux)
        log.warning("runner.subreaper_unavailable", error=repr(error))
        return False
    _SUBREAPER = os.getpid()
    return True


#: The pid of the process `become_subreaper` made a subreaper (only the process itself can
#: undo it, and a fork is none), so that the sweep after each script need not ask the kernel.
_SUBREAPER: int | None = None


def is_subreaper() -> bool:
    """Whether this process is a child subreaper (see become_subreaper)."""
    if os.getpid() == _SUBREAPER:
        return True
    value = ctypes.c_int(0)
    try:
        _libc_prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(value))
    except (OSError, AttributeError):
        return False
    return value.value != 0


def boot_ticks() -> int:
    """Now, in the clock ticks since boot of /proc/PID/stat's starttime (rounded down)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _TICK_NS


@dataclass(frozen=True)
class _Proc:
    state: bytes
    ppid: int
    starttime: int


def _read_proc(path: str) -> bytes | None:
    """A small /proc file's content (one read: the kernel builds it whole), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_stat(pid: int | str) -> _Proc | None:
    data = _read_proc(f"/proc/{pid}/stat")
    if data is None:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return _Proc(fields[0], int(fields[1]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _has_children_files() -> bool:
    pid = os.getpid()
    return os.path.exists(f"/proc/{pid}/task/{pid}/children")


_CHILDREN_FILES: bool | None = None


def _children(pid: int, *, every_thread: bool = True,
              threads: Iterable[int] | None = None) -> list[int]:
    """The children of `pid`, from /proc/PID/task/*/children (Linux with CONFIG_PROC_CHILDREN);
    without `every_thread`, those of its main thread only (enough for a process that is no
    subreaper and starts its children from that thread: the spawner); with `threads`, those
    of these threads of it."""
    found: list[int] = []
    if threads is not None:
        tids = [str(tid) for tid in threads]
    elif every_thread:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return found
    else:
        tids = [str(pid)]
    for tid in tids:
        data = _read_proc(f"/proc/{pid}/task/{tid}/children")
        if data is not None:
            found.extend(int(child) for child in data.split())
    return found


def _descendants(root: int, spare: Collection[int], since: int,
                 through: Collection[int] = (), ended: Collection[int] = ()) -> dict[int, _Proc]:
    """Every descendant of `root` (this process) started at or after `since` (boot ticks),
    except those in `spare` and theirs: the processes a script started since and left behind.
    The processes of `through` are walked through, never found themselves (the spawner: its
    children are scripts); those of `ended` are neither found nor walked (the script itself
    once every thread of it exited: it has no children left, they were re-parented as it
    exited, and it is nothing to kill or to reap here).

    Of `root` only two threads' children are read: its main thread's, which every orphan is
    re-parented to (a subreaper's first live thread: kernel/exit.c, `find_new_reaper`), and
    the calling thread's, which started the script and its spawner (the writer's loop runs on
    the main thread: one read). What the writer's other threads start is not a script's."""
    global _CHILDREN_FILES  # noqa: PLW0603 -- probed once
    if _CHILDREN_FILES is None:
        _CHILDREN_FILES = _has_children_files()
    if _CHILDREN_FILES:
        mine = sorted({root, threading.get_native_id()})

        def children(pid: int) -> Iterator[tuple[int, _Proc | None]]:
            if pid == root:
                return ((child, None) for child in _children(pid, threads=mine))
            return ((child, None) for child in _children(pid, every_thread=pid not in through))
    else:
        table: dict[int, list[tuple[int, _Proc | None]]] = {}
        with os.scandir("/proc") as entries:
            for entry in entries:
                if entry.name.isdigit() and (info := _read_stat(entry.name)) is not None:
                    table.setdefault(info.ppid, []).append((int(entry.name), info))

        def children(pid: int) -> Iterator[tuple[int, _Proc | None]]:
            return iter(table.get(pid, ()))
    found: dict[int, _Proc] = {}
    stack = [root]
    while stack:
        for child, known in children(stack.pop()):
            if child in spare or child in found or child in ended:
                continue
            if child in through:
                stack.append(child)
                continue
            info = known if known is not None else _read_stat(child)
            if info is not None and info.starttime >= since:
                found[child] = info
                stack.append(child)
    return found


def _marked(marker: bytes) -> dict[int, _Proc]:
    """Every process whose environment holds `marker` (NAME=value)."""
    found: dict[int, _Proc] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as file:
                    environ = file.read()
            except OSError:
                continue
            if marker in environ.split(b"\0") and (info := _read_stat(entry.name)) is not None:
                found[int(entry.name)] = info
    return found


def kill_descendants(
    since: int,
    *,
    spare: Iterable[int] = (),
    through: Iterable[int] = (),
    marker: str | None = None,
    leader: int | None = None,
    leader_exited: bool = False,
    give_up_after: float = SWEEP_SECONDS,
) -> list[int]:
    """SIGKILL what a script left behind, until nothing is left; the pids killed.

    Targets: every descendant of this process started at or after `since` (`boot_ticks()`
    taken before the script started), except the processes of `spare` and their descendants
    (the relay), walking through those of `through` (the spawner: its children are the
    scripts) without killing them, plus, when this process is not a child subreaper, every
    process whose environment holds `marker` (`ATT_JM_EXECUTION_ID=...`). Rounds repeat until
    a round finds none alive (they may fork while being killed) and every process killed is
    dead, for at most `give_up_after` seconds. Dead targets that are this process's children
    are reaped by pid, never with waitpid(-1), which would take the exit status of another
    child (the relay) from its Popen; `leader`, the script itself, is left for whoever
    started it to reap (its Popen, or the spawner); with `leader_exited` (its pidfd told that
    every thread of it exited) its children are not looked for: it has none left.
    """
    root = os.getpid()
    spared = frozenset(spare)
    walked = frozenset(through)
    ended = frozenset(() if leader is None or not leader_exited else (leader,))
    wanted = None if marker is None or is_subreaper() else marker.encode()
    deadline = time.monotonic() + give_up_after
    killed: dict[int, None] = {}
    pause = 0.0005
    while True:
        targets = _targets(root, spared, since, killed, wanted, walked, ended)
        alive = [pid for pid, info in targets.items() if info.state not in (b"Z", b"X")]
        for pid, info in targets.items():
            if info.state == b"Z" and info.ppid == root and pid != leader:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        if not alive or time.monotonic() >= deadline:
            if alive:
                log.error("runner.leftovers_survive", pids=alive, after_seconds=give_up_after)
            return [pid for pid in killed if pid != leader]
        fresh = False
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed[pid] = None
                fresh = True
        if not fresh:  # all of them were signalled already: let them die
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


def _targets(root: int, spared: frozenset[int], since: int, killed: Collection[int],
             wanted: bytes | None, through: frozenset[int] = frozenset(),
             ended: frozenset[int] = frozenset()) -> dict[int, _Proc]:
    """One round of `kill_descendants`: what it must kill (alive) or reap (zombies)."""
    targets = _descendants(root, spared, since, through, ended)
    for pid in killed:  # re-parented away (no subreaper) but maybe not dead yet
        if pid not in targets and (info := _read_stat(pid)) is not None \
                and info.starttime >= since:
            targets[pid] = info
    if wanted is not None:
        for pid, info in _marked(wanted).items():
            if pid not in spared and pid not in through and pid != root:
                targets.setdefault(pid, info)
    return targets


def _signal_group(pgid: int, signum: int) -> None:
    """Signal every process of a group; an empty group is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _await_exit(pid: int, timeout: float) -> None:
    """Wait until process `pid` (a child or not) has exited, without reaping it, for at most
    `timeout` seconds."""
    pidfd = _open_pidfd(pid)
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        return
    deadline = time.monotonic() + timeout
    while (info := _read_stat(pid)) is not None and info.state not in (b"Z", b"X") \
            and time.monotonic() < deadline:
        time.sleep(0.001)


def _leader_has_exited(pid: int) -> bool:
    """Whether the process exited, without reaping it (so its group id cannot be reused yet)."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, pid, flags) is not None


class _Supervisor:
    """Pumps one started script's pipes until it is over, enforcing its timeout.

    Event-driven: `fds()` are the descriptors to wait on and `wait_seconds()` how long at
    most; `step(ready)` handles those that became readable and the deadlines: the caller's
    loop (the writer's) drives it.
    """

    def __init__(
        self, proc: ScriptProcess, *, output_cap: int, kill_grace: float, deadline: float
    ) -> None:
        self.stdout = OutputTail(output_cap)
        self.stderr = OutputTail(output_cap)
        self.results = ResultLineTracker(output_cap)
        self.timed_out = False
        self._pid = proc.pid
        self._deadline = deadline
        self._kill_grace = kill_grace
        self._kill_at: float | None = None
        self._drain_until: float | None = None
        #: The script's own exit was seen (its pidfd, or waitid), not only told by the
        #: spawner's socket, which also wakes when the spawner is gone.
        self._exit_seen = False
        self._proc = proc
        #: Readable once the script exited: a pidfd (the spawner's scripts too: it need not
        #: be our child), else None.
        self._pidfd = _open_pidfd(proc.pid)
        #: The spawner's socket (not ours to close) for its scripts: readable once it
        #: reports the exit, or is gone (then the script is ended at once).
        self._spawner_fd = proc.exit_fd() if isinstance(proc, SpawnedScript) else None
        self._tails: dict[int, OutputTail] = {}
        for pipe, tail in ((proc.stdout, self.stdout), (proc.stderr, self.stderr)):
            if pipe is not None:
                os.set_blocking(pipe.fileno(), False)
                self._tails[pipe.fileno()] = tail
        self._closed = False

    def fds(self) -> list[int]:
        """The open pipes and, where the kernel offers one, a pidfd telling the script exited."""
        fds = list(self._tails)
        if self._drain_until is None:
            fds.extend(fd for fd in (self._pidfd, self._spawner_fd) if fd is not None)
        return fds

    @property
    def leader_exited(self) -> bool:
        """Whether the script's own process was seen to exit."""
        return self._exit_seen

    def over(self) -> bool:
        if self._drain_until is None:
            return False
        return not self._tails or time.monotonic() >= self._drain_until

    def step(self, ready: Collection[int]) -> None:
        """Handle the descriptors of `fds()` that are readable, then the deadlines."""
        for fd in list(self._tails):
            if fd in ready:
                self._read(fd)
        if self._drain_until is None:
            if (self._pidfd is not None and self._pidfd in ready) or (
                    self._pidfd is None and self._spawner_fd is None
                    and _leader_has_exited(self._pid)):
                self._exit_seen = True
                self._leader_exited()
            elif self._spawner_fd is not None and self._spawner_fd in ready:
                self._leader_exited()  # its report, or the spawner's end: finish waits for it
        self._enforce_deadlines()

    def wait_seconds(self) -> float | None:
        moments = [self._kill_at, self._drain_until]
        if not self.timed_out and self._drain_until is None:
            moments.append(self._deadline)
        wait = [moment - time.monotonic() for moment in moments if moment is not None]
        if self._pidfd is None and self._spawner_fd is None and self._drain_until is None:
            wait.append(_EXIT_POLL_SECONDS)
        return max(0.0, min(wait)) if wait else None

    def close(self) -> None:
        """Finish the output and release the pidfd (once)."""
        if self._closed:
            return
        self._closed = True
        self.results.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._spawner_fd = None

    def _leader_exited(self) -> None:
        self._drain_until = time.monotonic() + _DRAIN_AFTER_EXIT_SECONDS
        for fd in list(self._tails):  # what the script wrote before exiting is there now
            self._read(fd)

    def _read(self, fd: int) -> None:
        tail = self._tails[fd]
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                del self._tails[fd]
                return
            tail.feed(chunk)
            if tail is self.stdout:
                self.results.feed(chunk)
            if len(chunk) < _READ_CHUNK:
                return

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        if not self.timed_out and self._drain_until is None and now >= self._deadline:
            self.timed_out = True
            _signal_group(self._pid, signal.SIGTERM)
            self._kill_at = now + self._kill_grace
        if self._kill_at is not None and now >= self._kill_at:
            _signal_group(self._pid, signal.SIGKILL)
            self._kill_at = None


class RunningScript:
    """A started script followed by its caller's loop, without a thread: wait until one of
    `fds()` is readable, for at most `wait_seconds()`, then call `step(ready)`; it returns
    the outcome once the script is over (and its group killed and reaped)."""

    def __init__(self, runner: ScriptRunner, script: StartedScript) -> None:
        self._runner = runner
        self._script = script
        self._supervisor = _Supervisor(
            script.proc, output_cap=runner.output_cap, kill_grace=runner.kill_grace,
            deadline=script.started + script.request.timeout_seconds,
        )

    @property
    def pid(self) -> int:
        return self._script.proc.pid

    def fds(self) -> list[int]:
        return self._supervisor.fds()

    def wait_seconds(self) -> float | None:
        return self._supervisor.wait_seconds()

    def step(self, ready: Collection[int]) -> Outcome | None:
        supervisor = self._supervisor
        supervisor.step(ready)
        if not supervisor.over():
            return None
        return self.finish()

    def finish(self) -> Outcome:
        """End it now (its group killed), whatever it was doing; the outcome."""
        exited = self._supervisor.leader_exited
        self._supervisor.close()
        exit_code = self._runner.finish(self._script, leader_exited=exited)
        supervisor, script = self._supervisor, self._script
        if script.through_setpriv is not None and not supervisor.timed_out \
                and not supervisor.stderr.cut:
            error = setpriv_exec_error(script.through_setpriv, exit_code,
                                       supervisor.stderr.data, supervisor.stdout.data)
            if error is not None:  # as when Popen cannot execute it itself
                return _not_started(f"could not start script: {error}", script.started)
        return self._runner.outcome(script.request, supervisor, exit_code, script.started)


@dataclass(frozen=True)
class StartedScript:
    """A script `ScriptRunner.begin` started, for `ScriptRunner.watch`."""

    request: Run
    proc: ScriptProcess
    started: float  # time.monotonic() before it was started
    since: int  # boot_ticks() before it was started: its descendants started since
    #: The script's path when setpriv switched to the script user (and would report an
    #: exec failure on stderr), else None.
    through_setpriv: str | None = None


def find_setpriv(paths: Iterable[str] = SETPRIV_PATHS) -> str | None:
    """The first of `paths` that is an executable regular file owned by root, or None.

    Scripts switch to their user through it (see `ScriptRunner`): then Python starts them
    with `vfork`, whose cost does not grow with the service's memory, where a user switch of
    its own rules `vfork` out and every start is a `fork` that copies the page tables (fork
    from a 50 MiB process here: 194 starts/s against 355 through setpriv; bench/README.md).
    """
    for candidate in paths:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022 \
                and os.access(candidate, os.X_OK):
            return candidate
    return None


def setpriv_argv(setpriv: str, user: ScriptUser, argv: list[str]) -> list[str]:
    """`argv` run as `user` through `setpriv`: real, effective and saved uid and gid the
    user's, no supplementary groups (what `Popen(user=, group=, extra_groups=[])` sets)."""
    return [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--",
            *argv]


#: The first bytes of a file the kernel executes: a `#!` line, an ELF binary.
_EXECUTABLE_MAGIC = (b"#!", b"\x7fELF")


def _check_executable_format(path: str) -> None:
    """OSError ENOEXEC, as `execve` gives, for a file that is neither a `#!` script nor an
    ELF binary: setpriv execs with `execvp`, which would run such a file with /bin/sh. A file
    the service may execute but not read (a binary of mode 0711 owned by another user,
    under the unit's capabilities, which leave root no CAP_DAC_OVERRIDE) is not looked at:
    the kernel executes it or refuses it as it would without setpriv."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except PermissionError:
        return
    if not head.startswith(_EXECUTABLE_MAGIC):
        raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), str(path))


#: What setpriv prints, alone, when it cannot execute the script (exit code 126, or 127
#: for ENOENT): `setpriv: failed to execute PATH: STRERROR`.
_SETPRIV_FAILED = "setpriv: failed to execute "
_STRERRORS = {os.strerror(code): code for code in sorted(errno.errorcode, reverse=True)}


def setpriv_exec_error(path: str, exit_code: int, stderr: bytes, stdout: bytes) -> OSError | None:
    """The exec error setpriv reported for `path` (what `Popen` raises when it cannot execute
    a script itself), or None when the script ran."""
    if exit_code not in (126, 127) or stdout or not stderr.endswith(b"\n"):
        return None
    line = stderr[:-1].decode("utf-8", "replace")
    prefix = f"{_SETPRIV_FAILED}{path}: "
    if "\n" in line or not line.startswith(prefix):
        return None
    code = _STRERRORS.get(line[len(prefix):])
    if code is None or (exit_code == 127) != (code == errno.ENOENT):
        return None
    return OSError(code, os.strerror(code), path)


def spawner_dumps(message: dict[str, Any]) -> bytes:
    """A request to the spawner in JSON (orjson: a twentieth of the standard library's time);
    a string orjson refuses (a lone surrogate: a path's undecodable byte) is written as the
    standard library writes it."""
    try:
        return orjson.dumps(message)
    except orjson.JSONEncodeError:
        return spawner_encode(message)


def spawner_loads(body: bytes | bytearray) -> Any:
    """An answer of the spawner (the standard library's JSON): orjson, or the standard
    library for what orjson refuses (an escaped lone surrogate, in an error's file name)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _popen(argv: list[str], cwd: str, request: Run, user: ScriptUser | None,
           umask: int) -> subprocess.Popen[bytes]:
    """Start `argv` as the script's process (as `user` when given: Popen switches)."""
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=cwd, env=script_environment(cwd, request), start_new_session=True,
        close_fds=True, user=None if user is None else user.uid,
        group=None if user is None else user.gid,
        extra_groups=None if user is None else [], umask=umask,
    )


def _meanwhile(work: Callable[[], None] | None) -> None:
    """The caller's `meanwhile` work (see `ScriptRunner`), done while a script starts or
    runs: the writer's time that would otherwise go to waiting. A failure is logged; the
    start goes on."""
    if work is None:
        return
    try:
        work()
    except Exception as error:  # noqa: BLE001 -- the start is under way: log, go on
        log.warning("runner.meanwhile_failed", error=repr(error))


def _log_start_way(user: ScriptUser | None, direct: bool, spawner: Spawner | None,
                   setpriv: str | None) -> None:
    """One line at start: how scripts become the script user (docs/operations.md), and a
    warning when the C part that starts them fastest was not built."""
    if user is None:
        return
    way = ("direct" if direct else "spawner" if spawner is not None
           else "setpriv" if setpriv is not None else "popen")
    log.info("runner.start_way", way=way, user=user.name, uid=user.uid)
    if not direct_start.built():
        log.warning("runner.direct_start_unbuilt", way=way,
                    consequence="att_jm._start was not built (no C compiler or Python headers "
                                "at install): scripts start the slower way")


def _not_started(feedback: str, started: float) -> Outcome:
    return Outcome.failed(feedback, time.monotonic() - started)


class ScriptRunner:
    """Runs scripts of one directory, one at a time; the only place that starts processes.

    Each script runs without a shell as `[script, Command]`, stdin empty, cwd the scripts
    directory, in a new session (so it leads its own process group), with only the environment
    of `script_environment`: PATH is fixed to SCRIPT_PATH, not taken from the service.
    On timeout its group gets SIGTERM, then SIGKILL after `kill_grace_seconds`. When the script
    exits, whatever is left of its group is killed with SIGKILL (after at most a short moment in
    which leftovers may still write to the pipes), then every process it left anywhere else
    (`kill_descendants`: those that left the group with setsid too, found among this process's
    descendants once it is a child subreaper, see `become_subreaper`), except the processes
    `spare()` names (the relay) and theirs.

    `run_as`: when this process runs as root (euid 0), scripts run as that user (its uid and
    primary group, no supplementary groups, umask 077); it must exist (`ensure_script_user`).
    Ignored, with one log line, when this process is not root: scripts run as its own user.
    The switch is made in this process's own `vfork` child by the C part `att_jm._start`
    (att_jm/direct_start.py; this process stays the script's parent); where that is not built
    (or `use_direct=False`, or ATT_JM_DIRECT_START=0), by the spawner (att_jm/spawner.py: a
    small process, the script user's from its start, that starts the script with Popen's
    `vfork`); where the spawner cannot start (or `use_spawner=False`), by util-linux's
    `setpriv` (`find_setpriv`), exec'd in the script's process right before the script, so
    that Python can start it with `vfork`; without setpriv (or `use_setpriv=False`) by
    `Popen` itself, which needs a `fork`.
    """

    def __init__(
        self,
        scripts_dir: str | os.PathLike[str],
        *,
        output_cap: int = 64 * 1024,
        feedback_stderr_cap: int = 1024,
        kill_grace_seconds: float = 2.0,
        run_as: str | None = None,
        spare: Callable[[], Iterable[int]] | None = None,
        use_setpriv: bool = True,
        use_spawner: bool = True,
        use_direct: bool = True,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        self._scripts_dir = scripts_dir
        #: The caller's own work done while a script starts or runs (see `_meanwhile`).
        self._meanwhile_work = meanwhile
        self.output_cap = output_cap
        self._feedback_stderr_cap = feedback_stderr_cap
        self.kill_grace = kill_grace_seconds
        self._spare = spare
        self._lock = threading.Lock()
        self._running: ScriptProcess | None = None
        self._interrupted = False
        #: Who scripts run as; None: this process's own user.
        self.user: ScriptUser | None = None
        if run_as:
            if os.geteuid() == 0:
                self.user = lookup_script_user(run_as)
            else:
                log.info("runner.run_as_ignored", run_as=run_as, uid=os.geteuid(),
                         reason="the service is not root: scripts run as its own user")
        #: setpriv's path when it switches to the script user, else None.
        self.setpriv = find_setpriv() if self.user is not None and use_setpriv else None
        if self.user is not None and use_setpriv and self.setpriv is None:
            log.warning("runner.setpriv_missing", paths=list(SETPRIV_PATHS),
                        consequence="scripts start with fork, slower as the service grows")
        #: Scripts start as the script user from this process with a vfork (att_jm._start).
        self.direct = self.user is not None and use_direct and direct_start.available()
        #: The spawner that starts scripts as the script user (started at the first start).
        self.spawner = None if self.user is None or not use_spawner or self.direct else Spawner(
            self.user.uid, self.user.gid, SCRIPT_UMASK, dumps=spawner_dumps,
            loads=spawner_loads)
        _log_start_way(self.user, self.direct, self.spawner, self.setpriv)

    def prepare(self) -> None:
        """Start the spawner now, if there is one (else the first script's start would wait
        for a Python interpreter to start); a failure is logged, and retried at that start."""
        if self.spawner is not None and self.spawner.pid is None:
            try:
                self.spawner.start()
            except OSError as error:
                log.error("runner.spawner_failed", error=str(error))

    def close(self) -> None:
        """Stop the spawner, if one runs (a later start starts it again)."""
        if self.spawner is not None:
            self.spawner.close()

    def settle(self) -> None:
        """No start follows now: the scripts that ended are reaped (the next start's request
        carries them otherwise)."""
        if self.spawner is not None:
            self.spawner.reap_now()

    def spawners(self) -> list[int]:
        """The spawner's pid, if it runs: the sweep after a script walks through it (its
        children are scripts) and never kills it."""
        pid = None if self.spawner is None else self.spawner.pid
        return [] if pid is None else [pid]

    def begin(self, request: Run) -> StartedScript | Outcome:
        """Start the script; a Failed outcome if it cannot start. The caller follows it with
        `watch` from its own loop (the writer: right after the Started event is stored)."""
        started = time.monotonic()
        base = os.path.realpath(self._scripts_dir)
        try:
            path = resolve_in(base, request.script)
        except ScriptRefused as exc:
            return _not_started(f"script refused: {exc}", started)
        since = boot_ticks()
        try:
            proc, through_setpriv = self._start(path, request, base)
        except SpawnerLost as error:  # the script may run: never start it again
            return self._lost_start(request, since, started, error)
        except (OSError, ValueError) as exc:  # ValueError: NUL byte in the Command
            return _not_started(f"could not start script: {exc}", started)
        return StartedScript(request, proc, started, since, path if through_setpriv else None)

    def watch(self, script: StartedScript) -> RunningScript:
        """Follow a started script from the caller's own loop (see `RunningScript`)."""
        return RunningScript(self, script)

    def kill_running(self) -> None:
        """Kill the running script's whole process group with SIGKILL, if a script is running."""
        with self._lock:
            if self._running is not None:
                self._interrupted = True
                _signal_group(self._running.pid, signal.SIGKILL)

    def _lost_start(self, request: Run, since: int, started: float,
                    error: SpawnerLost) -> Outcome:
        """The spawner was lost before it said whether the script started (it was stopped
        by then, and reaped): whatever it started is killed (re-parented to this subreaper,
        or marked), and the execution fails; it is not started again, which could run it
        twice."""
        kill_descendants(
            since, spare=() if self._spare is None else self._spare(),
            marker=f"ATT_JM_EXECUTION_ID={request.execution_id}",
        )
        return Outcome.failed(f"runner error: {error}; whatever it started was killed",
                              duration_seconds=time.monotonic() - started)

    def _spawner_failed(self, error: SpawnerGone) -> None:
        """This start goes the other way; the next one starts a new spawner."""
        log.error("runner.spawner_failed", error=str(error))
        if self.spawner is not None:
            self.spawner.close()

    def _start(self, path: str, request: Run, base: str) -> tuple[ScriptProcess, bool]:
        """Start the script: through the spawner, else through setpriv, else Popen switching
        the user itself (as root), else as this process's user; the process, and whether it
        went through setpriv. SpawnerLost when the spawner was lost after it was asked.
        `base`: the scripts directory's realpath (`begin` resolved the script in it), the
        script's working directory. (Strings, not paths: this runs before every start.)"""
        cwd = base
        user = self.user
        argv = [path, request.command]
        if self.direct and user is not None:
            with self._lock:
                direct = direct_start.start(argv, script_environment(cwd, request), cwd,
                                            user.uid, user.gid, SCRIPT_UMASK)
                self._running = direct
                self._interrupted = False
            _meanwhile(self._meanwhile_work)  # while the script runs
            return direct, False
        if self.spawner is not None:
            with self._lock:
                try:
                    spawned = self.spawner.spawn(
                        argv, script_environment(cwd, request), cwd,
                        meanwhile=None if self._meanwhile_work is None
                        else lambda: _meanwhile(self._meanwhile_work))
                except SpawnerLost as error:
                    self._spawner_failed(error)
                    raise
                except SpawnerGone as error:  # it started nothing: this start goes the
                    self._spawner_failed(error)  # other way; the next one tries it again
                else:
                    self._running = spawned
                    self._interrupted = False
                    return spawned, False
        switch = user is not None and self.setpriv is None  # Popen switches (fork)
        if user is not None and self.setpriv is not None:
            _check_executable_format(path)
            argv = setpriv_argv(self.setpriv, user, argv)
        with self._lock:
            try:
                proc = _popen(argv, cwd, request, user if switch else None,
                              SCRIPT_UMASK if user is not None else -1)
            except OSError as error:  # setpriv's exec failed: name the script, as without it
                if argv[0] == path or error.errno is None:
                    raise
                raise OSError(error.errno, error.strerror, path) from None
            self._running = proc
            self._interrupted = False
        return proc, argv[0] != path

    def finish(self, script: StartedScript, *, leader_exited: bool = False) -> int:
        """Kill leftovers of the group (its leader is not reaped yet) and every other process
        the script left (`kill_descendants`), close the pipes, reap; the exit code.

        Unless `leader_exited`, the script's own process is waited for first (for at most
        the kill grace): while it lives, a child it started in another session is its child,
        and is re-parented to this subreaper as it dies, possibly between two reads of the
        sweep, which would then miss it."""
        proc = script.proc
        with self._lock:
            self._running = None
            _signal_group(proc.pid, signal.SIGKILL)
        if not leader_exited:
            _await_exit(proc.pid, self.kill_grace)
        kill_descendants(
            script.since, spare=() if self._spare is None else self._spare(),
            through=self.spawners(),
            marker=f"ATT_JM_EXECUTION_ID={script.request.execution_id}", leader=proc.pid,
            leader_exited=leader_exited,
        )
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return proc.wait()

    def outcome(
        self, request: Run, supervisor: _Supervisor, exit_code: int, started: float
    ) -> Outcome:
        """What the script did, once `finish` reaped it."""
        if supervisor.timed_out:
            verdict = Verdict(FAILED, timeout_feedback(request.timeout_seconds))
        elif self._interrupted:
            verdict = Verdict(FAILED, _SHUTDOWN_FEEDBACK)
        else:
            verdict = decide(
                supervisor.results.verdict,
                exit_code,
                supervisor.stderr.data,
                self._feedback_stderr_cap,
            )
        return Outcome(
            result=verdict.result,
            feedback=verdict.feedback,
            exit_code=None if supervisor.timed_out else exit_code,
            timed_out=supervisor.timed_out,
            duration_seconds=time.monotonic() - started,
            stdout_tail=supervisor.stdout.text(),
            stderr_tail=supervisor.stderr.text(),
        )


def kill_leftovers(execution_ids: Collection[str], proc: pathlib.Path = _PROC) -> list[int]:
    """SIGKILL the process groups of scripts still running for `execution_ids`; their pids.

    After the service itself was killed, the script it ran lives on in its own
    session. It is found by the `ATT_JM_EXECUTION_ID` its environment carries
    (inherited by its children), which also rules out an unrelated process that
    reused the pid.
    """
    wanted = {f"ATT_JM_EXECUTION_ID={execution_id}".encode() for execution_id in execution_ids}
    if not wanted:
        return []
    killed: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if environ & wanted:
            pid = int(entry.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            killed.append(pid)
    return killed
