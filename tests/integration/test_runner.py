"""The script runner against real processes and real files."""

import json
import os
import pathlib
import threading
import time

import pytest
from helpers.runs import run_script

from att_jm.domain.runs import Outcome, Run
from att_jm.runner import ScriptRefused, ScriptRunner, resolve_script

REPO = pathlib.Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "scripts"
EXAMPLES = REPO / "scripts"
KIB = 1024


def request(script: str, command: str = "", timeout: float = 5.0) -> Run:
    return Run("exec-1", "job-a", "channel-up", 1, script, command, timeout)


def write_script(directory: pathlib.Path, name: str, body: str, mode: int = 0o755) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)


def is_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an unreaped zombie is dead)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def dies_soon(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def child_pid(outcome: Outcome) -> int:
    return int(outcome.stdout_tail.split("child=", 1)[1].split()[0])


@pytest.fixture
def runner(tmp_path: pathlib.Path) -> ScriptRunner:
    return ScriptRunner(tmp_path, kill_grace_seconds=0.2)


@pytest.fixture
def helpers() -> ScriptRunner:
    return ScriptRunner(HELPERS, kill_grace_seconds=0.2)


def test_a_script_exiting_0_without_a_result_line_succeeds(
    tmp_path: pathlib.Path, runner: ScriptRunner
) -> None:
    write_script(tmp_path, "ok", "echo just some output\n")
    outcome = run_script(runner, request("ok"))
    assert (outcome.result, outcome.feedback, outcome.exit_code) == (3, None, 0)
    assert outcome.stdout_tail == "just some output\n"
    assert not outcome.timed_out


def test_a_result_line_decides_even_against_the_exit_code(
    tmp_path: pathlib.Path, runner: ScriptRunner
) -> None:
    write_script(tmp_path, "says-ok", 'echo \'{"result": 3, "feedback": "done"}\'\nexit 1\n')
    write_script(tmp_path, "says-no", 'echo \'{"result": 2, "feedback": "bad channel"}\'\n')
    accepted = run_script(runner, request("says-ok"))
    assert (accepted.result, accepted.feedback, accepted.exit_code) == (3, "done", 1)
    refused = run_script(runner, request("says-no"))
    assert (refused.result, refused.feedback, refused.exit_code) == (2, "bad channel", 0)


def test_the_last_result_line_wins(tmp_path: pathlib.Path, runner: ScriptRunner) -> None:
    write_script(
        tmp_path,
        "changes-mind",
        'echo \'{"result": 3, "feedback": "first"}\'\n'
        "echo progress\n"
        'echo \'{"result": 2, "feedback": "second"}\'\n'
        'echo \'{"note": "not a result"}\'\n',
    )
    outcome = run_script(runner, request("changes-mind"))
    assert (outcome.result, outcome.feedback) == (2, "second")


def test_an_invalid_result_value_fails_saying_why(
    tmp_path: pathlib.Path, runner: ScriptRunner
) -> None:
    write_script(tmp_path, "seven", 'echo \'{"result": 7, "feedback": "lucky"}\'\n')
    outcome = run_script(runner, request("seven"))
    assert (outcome.result, outcome.feedback) == (
        2,
        "invalid Result line: result must be 2 or 3, got 7",
    )


def test_a_result_line_followed_by_megabytes_of_output_is_still_found(
    helpers: ScriptRunner,
) -> None:
    outcome = run_script(helpers, request("noisy", "result-first"))
    assert (outcome.result, outcome.feedback) == (3, "noisy done")
    assert '"result"' not in outcome.stdout_tail


def test_megabytes_on_both_streams_are_read_without_deadlock_and_tails_are_capped(
    helpers: ScriptRunner,
) -> None:
    outcome = run_script(helpers, request("noisy", "result-last"))
    assert (outcome.result, outcome.feedback, outcome.exit_code) == (3, "noisy done", 0)
    assert len(outcome.stdout_tail.encode()) == 64 * KIB
    assert len(outcome.stderr_tail.encode()) == 64 * KIB
    assert outcome.stdout_tail.endswith('stdout end\n{"result": 3, "feedback": "noisy done"}\n')
    assert outcome.stderr_tail.endswith("x\nstderr end\n")


def test_the_output_cap_is_configurable(tmp_path: pathlib.Path) -> None:
    write_script(tmp_path, "chatty", "seq 1 10000\nseq 1 10000 >&2\n")
    outcome = run_script(ScriptRunner(tmp_path, output_cap=100), request("chatty"))
    assert len(outcome.stdout_tail) == len(outcome.stderr_tail) == 100
    assert outcome.stdout_tail.endswith("9999\n10000\n")


def test_a_nonzero_exit_fails_with_the_exit_code_and_stderr(helpers: ScriptRunner) -> None:
    outcome = run_script(helpers, request("exit-code", "3"))
    assert (outcome.result, outcome.exit_code) == (2, 3)
    assert outcome.feedback == "exit code 3: exit-code: about to exit with 3"


def test_feedback_quotes_at_most_the_last_kib_of_stderr(
    tmp_path: pathlib.Path, runner: ScriptRunner
) -> None:
    write_script(tmp_path, "verbose", "seq 1 3000 >&2\necho THE-END >&2\nexit 4\n")
    outcome = run_script(runner, request("verbose"))
    assert outcome.feedback is not None
    quoted = outcome.feedback.removeprefix("exit code 4: ")
    assert quoted.endswith("2999\n3000\nTHE-END")
    assert len(quoted.encode()) <= KIB
    assert len(outcome.stderr_tail) > KIB


def test_a_script_killed_by_a_signal_fails_naming_the_signal(helpers: ScriptRunner) -> None:
    outcome = run_script(helpers, request("kill-self"))
    assert (outcome.result, outcome.exit_code) == (2, -9)
    assert outcome.feedback == "killed by signal SIGKILL: kill-self: goodbye"


def test_a_script_running_past_its_timeout_is_killed_and_fails(helpers: ScriptRunner) -> None:
    outcome = run_script(helpers, request("sleep-then-ok", "30", timeout=0.5))
    assert (outcome.result, outcome.feedback) == (2, "timed out after 0.5 s")
    assert outcome.timed_out
    assert outcome.exit_code is None
    assert 0.5 <= outcome.duration_seconds < 2.0


def test_a_timeout_kills_children_that_ignore_sigterm(helpers: ScriptRunner) -> None:
    outcome = run_script(helpers, request("spawn-child-and-hang", "hang", timeout=0.5))
    assert (outcome.result, outcome.feedback) == (2, "timed out after 0.5 s")
    assert dies_soon(child_pid(outcome))
    assert outcome.duration_seconds < 2.0


def test_a_leader_ignoring_sigterm_is_killed_after_the_grace_period(
    helpers: ScriptRunner,
) -> None:
    outcome = run_script(helpers, request("spawn-child-and-hang", "stubborn", timeout=0.5))
    assert (outcome.result, outcome.feedback, outcome.timed_out) == (
        2,
        "timed out after 0.5 s",
        True,
    )
    assert 0.7 <= outcome.duration_seconds < 2.0
    assert dies_soon(child_pid(outcome))


def test_children_left_behind_by_a_finished_script_are_killed_without_delaying_it(
    helpers: ScriptRunner,
) -> None:
    outcome = run_script(helpers, request("spawn-child-and-hang", "exit", timeout=30))
    assert (outcome.result, outcome.feedback, outcome.exit_code) == (3, "parent done", 0)
    assert outcome.duration_seconds < 1.5
    assert dies_soon(child_pid(outcome))


def test_the_environment_is_minimal_and_carries_the_att_jm_variables(
    helpers: ScriptRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATT_JM_MQTT_URL", "mqtt://user:secret@broker:1883")
    monkeypatch.setenv("SOME_TOKEN", "secret")
    outcome = run_script(helpers, Run("exec-9", "job-b", "channel-down", 4, "echo-env", "cmd", 5))
    assert outcome.result == 3
    assert outcome.feedback is not None
    seen = json.loads(outcome.feedback)
    assert seen["att_jm"] == {
        "ATT_JM_COMMAND": "cmd",
        "ATT_JM_EXECUTION_ID": "exec-9",
        "ATT_JM_JOB": "job-b",
        "ATT_JM_TRIGGER": "channel-down",
        "ATT_JM_ATTEMPT": "4",
    }
    assert set(seen["keys"]) == {"PATH", "LANG", "HOME", *seen["att_jm"]}
    assert seen["env"]["HOME"] == str(HELPERS)
    assert "secret" not in outcome.feedback


def test_the_command_is_argv1_verbatim_and_cwd_is_the_scripts_directory(
    helpers: ScriptRunner,
) -> None:
    command = '{"id": "n1", "text": "a b; rm -rf / $HOME `x` \'q\' \\"dq\\""}'
    outcome = run_script(helpers, request("echo-env", command))
    assert outcome.feedback is not None
    seen = json.loads(outcome.feedback)
    assert seen["argv"] == [command]
    assert seen["att_jm"]["ATT_JM_COMMAND"] == command
    assert seen["cwd"] == str(HELPERS)


def test_stdin_is_empty(tmp_path: pathlib.Path, runner: ScriptRunner) -> None:
    write_script(
        tmp_path, "reads", 'n=$(wc -c)\necho "{\\"result\\": 3, \\"feedback\\": \\"$n\\"}"\n'
    )
    outcome = run_script(runner, request("reads"))
    assert (outcome.result, outcome.feedback) == (3, "0")


def test_on_started_receives_the_pid_of_the_script(
    tmp_path: pathlib.Path, runner: ScriptRunner
) -> None:
    write_script(tmp_path, "pid", "echo $$\n")
    pids: list[int] = []
    outcome = run_script(runner, request("pid"), on_started=pids.append)
    assert pids == [int(outcome.stdout_tail)]


def test_kill_running_stops_the_script_from_another_thread(helpers: ScriptRunner) -> None:
    started = threading.Event()
    outcomes: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(
            run_script(helpers, request("sleep-then-ok", "30", timeout=30),
                       lambda _pid: started.set())
        )
    )
    worker.start()
    assert started.wait(5)
    helpers.kill_running()
    worker.join(5)
    assert not worker.is_alive()
    (outcome,) = outcomes
    assert (outcome.result, outcome.feedback, outcome.exit_code) == (
        2,
        "interrupted: the service is shutting down",
        -9,
    )
    assert outcome.duration_seconds < 2.0


def test_kill_running_without_a_running_script_does_nothing(helpers: ScriptRunner) -> None:
    helpers.kill_running()
    assert run_script(helpers, request("sleep-then-ok", "0")).result == 3


@pytest.fixture
def scripts_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    write_script(scripts, "good", "exit 0\n")
    write_script(scripts, "not-executable", "exit 0\n", mode=0o644)
    (scripts / "subdir").mkdir()
    write_script(scripts / "subdir", "nested", "exit 0\n")
    write_script(tmp_path, "outside", "exit 0\n")
    (scripts / "link-outside").symlink_to(tmp_path / "outside")
    (scripts / "link-inside").symlink_to(scripts / "good")
    (scripts / "loop").symlink_to(scripts / "loop")
    return scripts


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "the script name is empty"),
        ("nul\0byte", "the script name contains a NUL character"),
        ("/bin/true", "'/bin/true' is an absolute path; name a file in the scripts directory"),
        ("../outside", "'../outside' resolves outside the scripts directory"),
        ("subdir/../../outside", "'subdir/../../outside' resolves outside the scripts directory"),
        ("link-outside", "'link-outside' resolves outside the scripts directory"),
        (".", "'.' resolves outside the scripts directory"),
        ("subdir", "'subdir' is not a regular file"),
        ("not-executable", "'not-executable' is not executable"),
        ("missing", "no script named 'missing' in the scripts directory"),
    ],
)
def test_names_that_are_not_executable_files_inside_the_directory_are_refused(
    scripts_dir: pathlib.Path, name: str, reason: str
) -> None:
    with pytest.raises(ScriptRefused) as refused:
        resolve_script(scripts_dir, name)
    assert str(refused.value) == reason
    outcome = run_script(ScriptRunner(scripts_dir), request(name))
    assert (outcome.result, outcome.feedback) == (2, f"script refused: {reason}")
    assert outcome.exit_code is None


def test_a_symlink_loop_is_refused(scripts_dir: pathlib.Path) -> None:
    with pytest.raises(ScriptRefused, match="'loop'"):
        resolve_script(scripts_dir, "loop")


def test_a_name_longer_than_a_file_name_may_be_is_refused(scripts_dir: pathlib.Path) -> None:
    """The plain-name path (one lstat) refuses it as the full resolution would."""
    name = "x" * 300
    with pytest.raises(ScriptRefused, match=r"cannot be resolved: \[Errno 36\]"):
        resolve_script(scripts_dir, name)
    with pytest.raises(ScriptRefused, match=r"cannot be resolved: \[Errno 36\]"):
        resolve_script(scripts_dir, f"subdir/{name}")


def test_a_scripts_directory_reached_through_a_symlink_resolves_to_its_real_path(
    scripts_dir: pathlib.Path,
) -> None:
    """The directory's own symlinks are resolved, whichever path the name takes."""
    linked = scripts_dir.parent / "linked-scripts"
    linked.symlink_to(scripts_dir)
    real = scripts_dir.resolve()
    assert resolve_script(linked, "good") == real / "good"
    assert resolve_script(linked, "link-inside") == real / "good"
    assert resolve_script(linked, "subdir/nested") == real / "subdir" / "nested"
    with pytest.raises(ScriptRefused, match="resolves outside"):
        resolve_script(linked, "link-outside")


@pytest.mark.parametrize(
    ("name", "target"),
    [("good", "good"), ("subdir/nested", "subdir/nested"), ("link-inside", "good")],
)
def test_files_inside_the_directory_resolve_to_their_real_path(
    scripts_dir: pathlib.Path, name: str, target: str
) -> None:
    assert resolve_script(os.fspath(scripts_dir), name) == scripts_dir.resolve() / target


def test_a_command_with_a_nul_byte_fails_without_raising(helpers: ScriptRunner) -> None:
    outcome = run_script(helpers, request("echo-env", "a\0b"))
    assert outcome.result == 2
    assert outcome.feedback is not None
    assert outcome.feedback.startswith("could not start script: ")


def test_a_command_too_long_for_exec_fails_without_raising(helpers: ScriptRunner) -> None:
    outcome = run_script(helpers, request("echo-env", "x" * 200 * KIB))
    assert outcome.result == 2
    assert outcome.feedback == "could not start script: [Errno 7] Argument list too long: " + repr(
        str(HELPERS / "echo-env")
    )


def test_a_script_whose_interpreter_is_missing_fails_without_raising(
    tmp_path: pathlib.Path, runner: ScriptRunner
) -> None:
    (tmp_path / "orphan").write_text("#!/no/such/interpreter\n")
    (tmp_path / "orphan").chmod(0o755)
    outcome = run_script(runner, request("orphan"))
    assert outcome.result == 2
    assert outcome.feedback is not None
    assert outcome.feedback.startswith("could not start script: [Errno 2]")


@pytest.mark.parametrize(
    ("command", "result", "feedback"),
    [
        ('{"id":"n1","channel":"BBC One"}', 3, "IPX updated for channel BBC One"),
        ("channel=BBC One", 3, "IPX updated for channel BBC One"),
        ("", 2, "no Command given"),
        ("hello", 2, "Command is not a JSON object nor channel=NAME"),
        ("[1, 2]", 2, "Command is not a JSON object nor channel=NAME"),
        ('{"id":"n1"}', 2, "channel missing from the Command"),
        ('{"id":"n1","channel":7}', 2, "channel must be a string"),
        ('{"id":"n1","channel":" "}', 2, "channel is empty"),
        ("channel=", 2, "channel is empty"),
    ],
)
def test_the_ipx_update_example_needs_a_channel(command: str, result: int, feedback: str) -> None:
    outcome = run_script(ScriptRunner(EXAMPLES), request("ipx-update", command))
    assert (outcome.result, outcome.feedback, outcome.exit_code) == (result, feedback, 0)
    assert outcome.stdout_tail.startswith("ipx-update: execution exec-1: ")


def test_the_always_fail_example_always_fails_quoting_its_command() -> None:
    outcome = run_script(ScriptRunner(EXAMPLES), request("always-fail", "channel=one"))
    assert (outcome.result, outcome.feedback) == (
        2,
        "always-fail: this script always fails (Command was: channel=one)",
    )
    assert outcome.stderr_tail == "always-fail: failing on purpose\n"


def test_the_always_fail_example_shortens_a_long_command() -> None:
    outcome = run_script(ScriptRunner(EXAMPLES), request("always-fail", "y" * 5000))
    assert outcome.feedback is not None
    assert outcome.feedback.endswith("...)")
    assert len(outcome.feedback) < 300
