"""The real service as root: scripts run as the script user, leave nothing behind, and an
unsafe scripts directory stops the service from starting (ATT_JM_SCRIPT_USER)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.mqtt import TestClient
from helpers.processes import pids_with_env
from helpers.service import ServiceFactory, populate_scripts_dir

from att_jm.runner import ScriptUser, ensure_script_user

from .conftest import Operator, new_id

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="needs root (another user, useradd); CI runs it as root",
)


@pytest.fixture(scope="module")
def script_user() -> Iterator[ScriptUser]:
    name = f"att-jm-e{uuid.uuid4().hex[:8]}"
    user = ensure_script_user(name)
    yield user
    for pid in filter(str.isdigit, os.listdir("/proc")):  # only these tests ran as it
        try:
            if os.stat(f"/proc/{pid}").st_uid == user.uid:
                os.kill(int(pid), 9)
        except OSError:
            continue
    subprocess.run(["userdel", user.name], check=False, capture_output=True)


@pytest.fixture
def open_scripts() -> Iterator[Path]:
    """A copy of the test scripts the script user can reach (pytest's tmp_path is 0700)."""
    top = Path(tempfile.mkdtemp(prefix="att-jm-e2e-", dir="/tmp"))
    top.chmod(0o755)
    scripts = populate_scripts_dir(top / "scripts")
    scripts.chmod(0o755)
    yield scripts
    shutil.rmtree(top, ignore_errors=True)


def spawners_of(pid: int) -> list[int]:
    """The script spawner processes among `pid`'s children."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"att_jm.spawner" in argv:
            found.append(int(child))
    return found


@pytest.mark.parametrize("way", ["direct", "spawner"])
def test_scripts_run_as_the_script_user_and_leave_nothing_behind(
    service_factory: ServiceFactory, mqtt: TestClient, open_scripts: Path,
    script_user: ScriptUser, way: str,
) -> None:
    """Either way a script starts as root: from the writer's own vfork (the C part, the
    default) or through the spawner (ATT_JM_DIRECT_START=0, and where the C part is not
    built)."""
    env = {"ATT_JM_SCRIPT_USER": script_user.name}
    if way == "spawner":
        env["ATT_JM_DIRECT_START"] = "0"
    service = service_factory(scripts_dir=open_scripts, env=env)
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("who", "whoami", "t")
    operator.add_job("daemon", "leave-daemon", "t", command="spawner")
    operator.notify("t", {"id": new_id()})
    executed = operator.wait_view("executed", lambda v: v["total"] == 2)
    rows = {row["job"]: row for row in executed["rows"]}
    assert rows["who"]["feedback"] == (
        f"uid={script_user.uid} user={script_user.name} gid={script_user.gid} "
        f"groups={script_user.gid} umask=0077"
    )
    assert rows["daemon"]["feedback"] == "left a daemon"
    assert pids_with_env(f"ATT_JM_EXECUTION_ID={rows['daemon']['id']}") == []
    # The first start loaded the second entry while the script started.
    assert "runner.meanwhile_failed" not in service.log_text()
    assert service.pid is not None
    assert bool(spawners_of(service.pid)) is (way == "spawner")
    lines = [json.loads(line) for line in service.log_text().splitlines() if line.startswith("{")]
    assert [line["way"] for line in lines if line["event"] == "runner.start_way"] == [way]
    assert not [line for line in lines if line["event"] == "runner.direct_start_unbuilt"]
    service.stop()  # the relay was spared: it stops cleanly (a non-zero exit would fail here)


def test_a_scripts_directory_the_script_user_could_change_stops_the_start(
    service_factory: ServiceFactory, open_scripts: Path, script_user: ScriptUser,
) -> None:
    (open_scripts / "ok").chmod(0o777)
    service = service_factory(scripts_dir=open_scripts, start=False,
                              env={"ATT_JM_SCRIPT_USER": script_user.name})
    with pytest.raises(pytest.fail.Exception, match="exited with code 1 before online"):
        service.start(timeout=10)
    assert service.returncode == 1
    assert f"{open_scripts}/ok: writable by uid {script_user.uid} (world-writable)" in (
        service.log_text())
