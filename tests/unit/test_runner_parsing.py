"""Pure parts of the script runner: Result lines, Feedback, output tails, the environment."""

import json
import os
import pathlib
import stat
import subprocess
from typing import Any

import pytest

from att_jm import runner
from att_jm.domain.runs import Run
from att_jm.runner import (
    SCRIPT_PATH,
    OutputTail,
    ResultLineTracker,
    Verdict,
    decide,
    decode_tail,
    exit_feedback,
    format_seconds,
    parse_result_line,
    script_environment,
    signal_name,
    spawner_dumps,
    spawner_loads,
    timeout_feedback,
)
from att_jm.spawner import encode as spawner_encode
from att_jm.vocabulary import Result


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "300"), (300.0, "300"), (0.5, "0.5"), (0.1, "0.1"), (1.25, "1.25"), (0, "0")],
)
def test_durations_are_written_without_a_trailing_point_zero(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "feedback"),
    [(300, "timed out after 300 s"), (0.5, "timed out after 0.5 s"), (2.0, "timed out after 2 s")],
)
def test_timeout_feedback_names_the_timeout(seconds: float, feedback: str) -> None:
    assert timeout_feedback(seconds) == feedback


@pytest.mark.parametrize(("number", "name"), [(9, "SIGKILL"), (15, "SIGTERM"), (200, "200")])
def test_signals_are_named_when_python_knows_them(number: int, name: str) -> None:
    assert signal_name(number) == name


INVALID = "invalid Result line: result must be 2 or 3, got "


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        (b'{"result": 3, "feedback": "ok"}', Verdict(Result.SUCCEEDED, "ok")),
        (b'{"result": 2, "feedback": "bad input"}', Verdict(Result.FAILED, "bad input")),
        (b'{"result": 3}', Verdict(Result.SUCCEEDED, None)),
        (b'{"result": 2, "feedback": null}', Verdict(Result.FAILED, None)),
        (b'  {"result": 3, "feedback": "padded"}\r', Verdict(Result.SUCCEEDED, "padded")),
        (b'{"feedback": "first", "result": 3, "extra": [1]}', Verdict(Result.SUCCEEDED, "first")),
        (b'{"result": 3, "feedback": 42}', Verdict(Result.SUCCEEDED, "42")),
        (b'{"result": 3, "feedback": [1, 2]}', Verdict(Result.SUCCEEDED, "[1, 2]")),
        (b'{"result": 3, "feedback": "caf\xc3\xa9"}', Verdict(Result.SUCCEEDED, "caf\u00e9")),
        (b'{"result": 7}', Verdict(Result.FAILED, INVALID + "7")),
        (b'{"result": "3"}', Verdict(Result.FAILED, INVALID + '"3"')),
        (b'{"result": 3.0}', Verdict(Result.FAILED, INVALID + "3.0")),
        (b'{"result": true}', Verdict(Result.FAILED, INVALID + "true")),
        (b'{"result": null, "feedback": "x"}', Verdict(Result.FAILED, INVALID + "null")),
    ],
)
def test_a_json_object_with_a_result_key_is_a_result_line(line: bytes, verdict: Verdict) -> None:
    assert parse_result_line(line) == verdict


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"hello result",
        b'{"results": 3}',
        b'{"feedback": "result"}',
        b'{"nested": {"result": 3}}',
        b'[{"result": 3}]',
        b'{"result": 3',
        b'{"result": 3} trailing',
        b'{"result": 3, "feedback": "\xff"}',
        b'"result"',
    ],
)
def test_other_lines_are_not_result_lines(line: bytes) -> None:
    assert parse_result_line(line) is None


def test_an_invalid_result_value_is_shown_shortened() -> None:
    verdict = parse_result_line(b'{"result": "' + b"y" * 500 + b'"}')
    assert verdict is not None
    assert verdict.result == 2
    assert verdict.feedback is not None
    assert verdict.feedback.startswith(INVALID + '"yyy')
    assert len(verdict.feedback) < len(INVALID) + 70


def test_a_feedback_or_result_nested_as_deep_as_json_allows_is_described() -> None:
    deep = b"[" * 1000 + b"]" * 1000  # orjson reads 1,024 levels, writes 254
    verdict = parse_result_line(b'{"result": 3, "feedback": ' + deep + b"}")
    assert verdict == Verdict(Result(3), "(feedback: a JSON array nested too deep to show)")
    objects = b'{"a":' * 300 + b"1" + b"}" * 300
    verdict = parse_result_line(b'{"result": ' + objects + b"}")
    assert verdict is not None and verdict.result == 2
    assert verdict.feedback == INVALID + "a JSON object nested too deep to show"
    shallow = parse_result_line(b'{"result": 3, "feedback": {"a": [1, 2]}}')
    assert shallow == Verdict(Result(3), "{'a': [1, 2]}")  # str(value), as before


@pytest.mark.parametrize(
    ("exit_code", "stderr", "feedback"),
    [
        (1, b"", "exit code 1"),
        (2, b"boom\n", "exit code 2: boom"),
        (4, b"\n  \n", "exit code 4"),
        (3, b"line one\nline two\n\n", "exit code 3: line one\nline two"),
        (-9, b"", "killed by signal SIGKILL"),
        (-15, b"bye\n", "killed by signal SIGTERM: bye"),
    ],
)
def test_exit_feedback_names_the_exit_and_quotes_stderr(
    exit_code: int, stderr: bytes, feedback: str
) -> None:
    assert exit_feedback(exit_code, stderr) == feedback


def test_exit_feedback_keeps_only_the_last_kib_of_stderr() -> None:
    stderr = b"a" * 5000 + b"THE END\n\n"
    feedback = exit_feedback(1, stderr)
    assert feedback.endswith("THE END")
    assert len(feedback.removeprefix("exit code 1: ").encode()) == 1024


def test_exit_feedback_does_not_start_with_half_a_character() -> None:
    feedback = exit_feedback(1, "\u00e9".encode() * 600, stderr_cap=1023)
    assert feedback == "exit code 1: " + "\u00e9" * 511


@pytest.mark.parametrize(
    ("data", "cut", "text"),
    [
        (b"\xa9abc", True, "abc"),
        (b"\x80\x80\x80\x80abc", True, "\ufffdabc"),
        (b"\xa9abc", False, "\ufffdabc"),
        (b"caf\xc3\xa9", False, "caf\u00e9"),
        (b"", True, ""),
    ],
)
def test_tails_are_decoded_leniently(data: bytes, cut: bool, text: str) -> None:
    assert decode_tail(data, cut=cut) == text


@pytest.mark.parametrize(
    ("verdict", "exit_code", "expected"),
    [
        (Verdict(Result.SUCCEEDED, "ok"), 1, Verdict(Result.SUCCEEDED, "ok")),
        (Verdict(Result.FAILED, "no"), 0, Verdict(Result.FAILED, "no")),
        (None, 0, Verdict(Result.SUCCEEDED, None)),
        (None, 5, Verdict(Result.FAILED, "exit code 5: oops")),
        (None, -6, Verdict(Result.FAILED, "killed by signal SIGABRT: oops")),
    ],
)
def test_a_result_line_decides_before_the_exit_code(
    verdict: Verdict | None, exit_code: int, expected: Verdict
) -> None:
    assert decide(verdict, exit_code, b"oops\n", 1024) == expected


def test_an_output_tail_keeps_only_the_last_bytes() -> None:
    tail = OutputTail(10)
    tail.feed(b"0123")
    assert (tail.data, tail.cut) == (b"0123", False)
    tail.feed(b"456789AB")
    assert (tail.data, tail.cut) == (b"23456789AB", True)
    tail.feed(b"x" * 1000 + b"last")
    assert tail.data == b"xxxxxxlast"


def test_an_output_tail_stays_bounded_whatever_is_fed() -> None:
    tail = OutputTail(64 * 1024)
    for _ in range(200):
        tail.feed(b"z" * 10_000)
        assert len(tail.data) <= 64 * 1024
    assert len(tail.text()) == 64 * 1024


def _track(chunks: list[bytes], max_line: int = 1024) -> Verdict | None:
    tracker = ResultLineTracker(max_line)
    for chunk in chunks:
        tracker.feed(chunk)
    tracker.close()
    return tracker.verdict


@pytest.mark.parametrize(
    ("chunks", "verdict"),
    [
        ([b"hello\nworld\n"], None),
        ([b'{"result": 3, "feedback": "a"}\n'], Verdict(Result.SUCCEEDED, "a")),
        ([b'{"result": 3, "feedback": "no newline"}'], Verdict(Result.SUCCEEDED, "no newline")),
        ([b'{"resu', b'lt": 2, "feed', b'back": "split"}\nmore\n'],
         Verdict(Result.FAILED, "split")),
        (
            [b'{"result": 3, "feedback": "first"}\n{"result": 2, "feedback": "last"}\n'],
            Verdict(Result.FAILED, "last"),
        ),
        (
            [b'{"result": 2, "feedback": "first"}\n', b'x\n{"result": 3, "feedback": "last"}\n'],
            Verdict(Result.SUCCEEDED, "last"),
        ),
        (
            [b'{"result": 3, "feedback": "kept"}\n{"feedback": "result"}\n{"result": 3\n'],
            Verdict(Result.SUCCEEDED, "kept"),
        ),
        ([b'{"result": 3}\n', b'{"result": 9}\n'], Verdict(Result.FAILED, INVALID + "9")),
        (
            [b'{"result": 3, "feedback": "early"}\n'] + [b"noise " * 1000 + b"\n"] * 100,
            Verdict(Result.SUCCEEDED, "early"),
        ),
        (
            [b'{"result": 3, "feedback": "a"}\r\n{"result": 2, "feedback": "b"}\r\n'],
            Verdict(Result.FAILED, "b"),
        ),
    ],
)
def test_the_tracker_remembers_the_last_result_line(
    chunks: list[bytes], verdict: Verdict | None
) -> None:
    assert _track(chunks) == verdict


def test_lines_longer_than_the_limit_are_never_result_lines() -> None:
    overlong = b'{"result": 2, "feedback": "' + b"y" * 100 + b'"}'
    chunks = [b'{"result": 3, "feedback": "short"}\n', overlong[:40], overlong[40:], b"\n"]
    assert _track(chunks, max_line=64) == Verdict(Result.SUCCEEDED, "short")


def test_the_line_after_an_overlong_line_is_read_again() -> None:
    chunks = [b"z" * 100, b"z" * 100 + b'\n{"result": 2, "feedback": "after"}\n']
    assert _track(chunks, max_line=64) == Verdict(Result.FAILED, "after")


def test_an_overlong_last_line_without_newline_is_ignored() -> None:
    chunks = [b'{"result": 3}\n', b'{"result": 2, "feedback": "' + b"y" * 100 + b'"}']
    assert _track(chunks, max_line=64) == Verdict(Result.SUCCEEDED, None)


def test_the_environment_holds_only_the_fixed_and_att_jm_variables() -> None:
    request = Run("exec-1", "job-a", "channel-up", 2, "ipx-update", "channel=one", 30)
    environment = script_environment(pathlib.Path("/srv/scripts"), request)
    assert environment == {
        "PATH": SCRIPT_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/srv/scripts",
        "ATT_JM_COMMAND": "channel=one",
        "ATT_JM_EXECUTION_ID": "exec-1",
        "ATT_JM_JOB": "job-a",
        "ATT_JM_TRIGGER": "channel-up",
        "ATT_JM_ATTEMPT": "2",
    }


UID, GID = 64999, 64998


def stat_of(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "sticky_ok", "why"),
    [
        (stat.S_IFDIR | 0o755, 0, 0, False, None),
        (stat.S_IFDIR | 0o555, UID, 0, False, f"owned by uid {UID}"),  # its owner may chmod it
        (stat.S_IFREG | 0o664, 0, GID, False, f"group-writable, group {GID}"),
        (stat.S_IFREG | 0o664, 0, GID + 1, False, None),  # not its group
        (stat.S_IFREG | 0o646, 0, 0, False, "world-writable"),
        (stat.S_IFDIR | 0o1777, 0, 0, True, None),  # /tmp above the scripts directory
        (stat.S_IFDIR | 0o1777, 0, 0, False, "world-writable"),  # the scripts directory itself
        (stat.S_IFDIR | 0o1775, 0, GID, True, f"group-writable, group {GID}"),
    ],
)
def test_what_makes_a_file_writable_by_the_script_user(
    mode: int, uid: int, gid: int, sticky_ok: bool, why: str | None
) -> None:
    info = stat_of(mode, uid, gid)
    assert runner._writable_by(info, UID, GID, sticky_ok=sticky_ok) == why


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "bits", "allowed"),
    [
        (0o077, UID, GID, 1, False),  # the owner's bits decide for the owner, even if fewer
        (0o077, 0, GID, 5, True),
        (0o705, 0, GID, 5, False),  # the group's bits decide for a member, even if fewer
        (0o705, 0, 0, 5, True),
        (0o711, 0, 0, 5, False),
        (0o711, 0, 0, 1, True),
    ],
)
def test_permissions_are_those_of_the_owner_or_the_group_or_others(
    mode: int, uid: int, gid: int, bits: int, allowed: bool
) -> None:
    assert runner._allowed(stat_of(stat.S_IFREG | mode, uid, gid), UID, GID, bits) is allowed


def test_boot_ticks_count_like_the_start_time_of_processes() -> None:
    before = runner.boot_ticks()
    process = subprocess.Popen(["sleep", "5"])
    try:
        fields = pathlib.Path(f"/proc/{process.pid}/stat").read_bytes().rsplit(b")", 1)[1]
        after = runner.boot_ticks()
    finally:
        process.kill()
        process.wait()
    assert before <= int(fields.split()[19]) <= after


@pytest.mark.parametrize(
    "message",
    [
        {"op": "spawn", "argv": ["/srv/scripts/ok", "a b\n'c' \"d\" é ☃ 𝄞"],
         "env": {"ATT_JM_COMMAND": "\u0001\u007f\u2028"}, "cwd": "/srv/scripts", "reap": [1, 2]},
        {"op": "spawn", "argv": ["/srv/scr\udcffipts/ok", ""], "cwd": "/srv/scr\udcffipts"},
    ],
    ids=["unicode", "lone-surrogate"],
)
def test_the_spawner_reads_the_services_requests_as_its_own_json(message: dict[str, Any]) -> None:
    """The service writes its requests with orjson (the standard library's JSON for a string
    orjson refuses: a path's undecodable byte); the spawner reads them with the standard
    library: the same message either way."""
    assert json.loads(spawner_dumps(message)) == message
    assert json.loads(spawner_encode(message)) == message


@pytest.mark.parametrize(
    "answer",
    [{"pid": 12345}, {"pid": 12345, "status": -9},
     {"error": [2, "No such file or directory", "/srv/scr\udcffipts/ok"]}],
    ids=["started", "exited", "error-with-undecodable-path"],
)
def test_the_service_reads_the_spawners_answers(answer: dict[str, Any]) -> None:
    """The spawner answers with the standard library's JSON, which escapes a lone surrogate
    that orjson refuses to read: the service reads every answer as it was meant."""
    assert spawner_loads(spawner_encode(answer)) == answer
