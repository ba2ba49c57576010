"""`python3 -m bench.<figure>` with an interpreter that lacks the project's packages runs the
same command with the checkout's .venv, or stops with what to do (bench/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=60, check=False)


def test_a_command_missing_a_package_runs_again_with_the_venv(tmp_path: Path) -> None:
    seen = tmp_path / "argv.txt"
    venv = tmp_path / "python"
    venv.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" "$ATT_JM_BENCH_AGAIN" > {seen}\n')
    venv.chmod(0o755)
    done = _run("import bench; from pathlib import Path; bench.ensure_project_python("
                "['python3', '-m', 'bench.suite', '--quick'], ('no_such_module_xyz',), "
                f"Path({str(venv)!r}))")
    assert done.returncode == 0, done.stderr
    assert seen.read_text().splitlines() == ["-m", "bench.suite", "--quick", "1"]
    assert "lacks no_such_module_xyz" in done.stderr


def test_without_a_venv_or_a_second_time_it_stops_with_what_to_do(tmp_path: Path) -> None:
    call = ("import bench; from pathlib import Path; bench.ensure_project_python("
            "['python3', '-m', 'bench.suite'], ('no_such_module_xyz',), {venv})")
    for venv, env in (("None", {}), (repr("/bin/true"), {"ATT_JM_BENCH_AGAIN": "1"})):
        done = _run(call.format(venv=venv if venv == "None" else f"Path({venv})"), env)
        assert done.returncode == 1
        assert "cannot import no_such_module_xyz: run ./test.sh" in done.stderr


def test_imported_or_complete_it_does_nothing() -> None:
    done = _run("import bench; bench.ensure_project_python(['python3', '-c', 'x'], "
                "('no_such_module_xyz',), None); bench.ensure_project_python("
                "['python3', '-m', 'bench.suite'], ('os',), None); print('went on')")
    assert done.returncode == 0 and done.stdout.strip() == "went on", done.stderr
