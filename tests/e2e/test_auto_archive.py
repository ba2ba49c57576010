"""Automatic archival (the setting `archive`) against the real `att-jm serve` and mosquitto:
the service starts `att-jm audit archive` by itself when due, the archive verifies, and the
service keeps running jobs; off (the default), no archive appears."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS, POSTGRESQL
from helpers.service import Service, ServiceFactory

from att_jm.log.backend import is_postgres
from att_jm.log.rows import StoreReader
from att_jm.metrics.shared import StatsReader
from projections.anchor import anchor_of

from .conftest import Operator

FAST_SEALS = ("--seal-every-events", "5", "--seal-every-seconds", "0.3")


def att_jm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "att_jm", *args], capture_output=True,
                          text=True, check=False, timeout=120)


def anchor_position(store: str) -> int | None:
    reader = StoreReader(store)
    try:
        anchor = anchor_of(reader)
    finally:
        reader.close()
    return None if anchor is None else anchor.position


def run_jobs(operator: Operator, prefix: str, count: int) -> None:
    for n in range(count):
        operator.notify("channel-up", {"id": f"{prefix}-{n}", "channel": f"{prefix}{n}"})
    operator.wait_view("executed", lambda v: bool(v["rows"]) and v["rows"][0]["command"]
                       == f"channel={prefix}{count - 1}", timeout=60)
    operator.wait_view("queue", lambda v: v["total"] == 0, timeout=30)


def archiving_service(service_factory: ServiceFactory, mqtt: TestClient, archives: Path
                      ) -> tuple[Service, Operator]:
    """A service archiving into `archives` (not yet on), seals every 0.3 s, no interval,
    Executed cleaned to 2 rows every second, and a job that runs for `run_jobs`."""
    service = service_factory(extra_args=(*FAST_SEALS, "--archive-dir", str(archives)))
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"interval_seconds": 0,
                                 "executed_cleanup": {"max_rows": 2, "every_seconds": 1}})
    operator.add_job("ipx", "ipx-update", "channel-up", command="channel={channel}")
    return service, operator


@BOTH_BACKENDS
def test_the_service_archives_by_itself_when_the_setting_is_on(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    archives = tmp_path / "archives"
    service, operator = archiving_service(service_factory, mqtt, archives)
    run_jobs(operator, "old", 20)
    settings = operator.ok("settings.set", {"archive": {"max_age_days": 2 / 86400,
                                                        "every_seconds": 1}})
    assert settings["archive"] == {"max_age_days": 2 / 86400, "every_seconds": 1.0}
    assert operator.view("settings")["settings"]["archive"] == settings["archive"]

    deadline = time.monotonic() + 60
    files: list[Path] = []
    # Until a run archived the 20 jobs' rows (a first run may come before they are 2 s old).
    while time.monotonic() < deadline:
        files = sorted(archives.glob("*.arc")) if archives.exists() else []
        if files and (anchor_position(str(service.store)) or 0) > 20 \
                and "archive.done" in service.log_text():
            break
        time.sleep(0.5)
    assert files, service.log_text()[-4000:]
    position = anchor_position(str(service.store))
    assert position is not None and position > 20
    assert "archive.failed" not in service.log_text()
    if not is_postgres(str(service.store)):  # a stats block lives next to an SQLite store
        reader = StatsReader(str(service.store) + ".stats")  # what the metrics exporter reads
        stats = reader.read()
        reader.close()
        assert stats is not None and stats.archives["done"] >= 1
        assert stats.archives["failed"] == 0

    # The service keeps running jobs (and archiving) meanwhile.
    run_jobs(operator, "new", 5)
    assert service.running

    operator.ok("settings.set", {"archive": {"max_age_days": None}})  # off again
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the last run (if one was under way) has ended
        text = service.log_text()
        if text.count('"archive.started"') == sum(
                text.count(f'"archive.{end}"') for end in ("done", "nothing", "failed")):
            break
        time.sleep(0.2)
    done = sorted(archives.glob("*.arc"))  # by name: by time, oldest first
    checked = att_jm("audit", "verify", "--store", str(service.store), "--json",
                     *[arg for f in done for arg in ("--archive", str(f))])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert orjson.loads(checked.stdout)["ok"] is True
    assert service.stop() == 0


def archival_pids(text: str) -> list[int]:
    """The pids of the archival children the service's log says it started, in order."""
    pids = []
    for line in text.splitlines():
        if '"archive.started"' in line:
            pids.append(int(orjson.loads(line[line.index("{"):])["pid"]))
    return pids


def process_state(pid: int) -> str | None:
    """The state letter of process `pid` (`T` stopped, `Z` exited, not reaped), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat[stat.rindex(")") + 2]


def test_a_stop_in_the_middle_of_an_archival_is_finished_after_the_restart(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    """The service is stopped while its archival child is between writing the archive and
    its last deletion (the child paused right after the file is in place, so that it cannot
    finish first): the stop is clean and ends the child; after the restart the next run
    finishes the job, and the archives plus the store verify as one chain with the views
    as they were."""
    archives = tmp_path / "archives"
    service, operator = archiving_service(service_factory, mqtt, archives)
    paused = None
    for attempt in range(5):  # until a run is caught in its middle (it may finish first)
        run_jobs(operator, f"r{attempt}", 60)
        known = set(archives.glob("*.arc")) if archives.exists() else set()
        started = len(archival_pids(service.log_text()))
        if attempt == 0:
            operator.ok("settings.set", {"archive": {"max_age_days": 2 / 86400,
                                                     "every_seconds": 1}})
        deadline = time.monotonic() + 30
        while len(archival_pids(service.log_text())) <= started:
            assert time.monotonic() < deadline, service.log_text()[-4000:]
            time.sleep(0.01)
        pid = archival_pids(service.log_text())[started]
        while process_state(pid) not in (None, "Z"):  # step a done: the file is in place
            if archives.exists() and set(archives.glob("*.arc")) - known:
                os.kill(pid, signal.SIGSTOP)
                deadline = time.monotonic() + 5
                while process_state(pid) not in (None, "Z", "T"):  # the stop takes a moment
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
                break
            time.sleep(0.001)
        if process_state(pid) == "T":
            paused = pid
            break
    assert paused is not None, "no archival was caught before its end in 5 runs"
    executed = operator.wait_view("executed", lambda v: v["total"] <= 2)["rows"]  # cleaned up
    jobs = operator.view("jobs")["rows"]
    assert service.stop(timeout=40) == 0  # clean, however long the paused child holds on
    assert '"archive.stopped"' in service.log_text()
    assert process_state(paused) is None  # ended and reaped by the service
    assert att_jm("audit", "verify", "--store", str(service.store)).returncode == 0

    done = service.log_text().count('"archive.done"')
    service.start()
    deadline = time.monotonic() + 60
    while service.log_text().count('"archive.done"') == done:
        assert time.monotonic() < deadline, service.log_text()[-4000:]
        time.sleep(0.2)
    assert anchor_position(str(service.store)) is not None
    checked = att_jm("audit", "verify", "--store", str(service.store), "--json",
                     "--archive", str(archives))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert orjson.loads(checked.stdout)["ok"] is True
    assert not list(archives.glob("*.tmp"))
    assert operator.view("executed")["rows"] == executed
    assert operator.view("jobs")["rows"] == jobs
    run_jobs(operator, "after", 3)  # and it goes on
    assert service.stop() == 0


def test_no_archive_appears_with_the_setting_off(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    service = service_factory(extra_args=FAST_SEALS)
    online = time.monotonic()  # the archival's period counts from before this
    operator = Operator(service, mqtt)
    assert operator.view("settings")["settings"]["archive"] == {"max_age_days": None,
                                                                "every_seconds": 3600.0}
    # Still off, with a period of 1 s: were it on, a run would be due 1 s after the start
    # (with the default period, only after an hour: nothing this test could see).
    settings = operator.ok("settings.set", {"interval_seconds": 0,
                                            "archive": {"every_seconds": 1}})
    assert settings["archive"] == {"max_age_days": None, "every_seconds": 1.0}
    operator.add_job("ipx", "ipx-update", "channel-up", command="channel={channel}")
    run_jobs(operator, "n", 10)
    time.sleep(max(0.0, online + 1.0 - time.monotonic()))  # the period has passed
    # Each turn of the writer's timers decides on the archival, then seals (Writer.tick): a
    # seal of a position written from now on comes from a turn that took that decision after
    # the period (a notification that runs nothing writes that position).
    received = mqtt.subscribe(service.topic("job-manager/events/notification.received"))
    seals = mqtt.subscribe(service.topic("job-manager/seals"))
    operator.notify("nothing-listens", {"id": "after-the-period"})
    position = received.wait_for(
        lambda m: m.json()["data"]["notification_id"] == "after-the-period",
        timeout=30).json()["position"]
    seals.wait_for(lambda m: m.json()["position"] >= position, timeout=30)
    archives = Path(service.store).parent / "archives"
    assert not archives.exists() or not list(archives.iterdir())
    assert anchor_position(str(service.store)) is None
    assert "archive." not in service.log_text()


@pytest.mark.parametrize("store_backend", [POSTGRESQL], indirect=True)
def test_a_postgres_store_without_archive_dir_refuses_automatic_archival(
    service_factory: ServiceFactory, mqtt: TestClient, store_location: str,
) -> None:
    assert is_postgres(store_location)  # an SQLite store has a default archive_dir
    service = service_factory(extra_args=FAST_SEALS)
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"archive": {"max_age_days": 1, "every_seconds": 1}})
    deadline = time.monotonic() + 20
    while "archive.refused" not in service.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "archive.refused" in service.log_text()
    assert "archive.started" not in service.log_text()
    assert operator.view("settings")["settings"]["archive"]["max_age_days"] == 1.0
