"""The automatic archival child (att_jm/service/archival.py) with real processes: when it is
due, a failure logged with its exit code and stderr and retried at the next period, a stop
that terminates it, the refusal without an archive directory, and nothing when off."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from att_jm.domain.cleanup import ArchivePolicy
from att_jm.service.archival import LOCK_NAME, STOP_SECONDS, AutoArchive, child_environment

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def runner(tmp_path: Path, policy: ArchivePolicy, clock: Clock,
           directory: str | None = "archives", counted: list[str] | None = None
           ) -> AutoArchive:
    store = str(tmp_path / "missing.db")  # no store: the verb fails (exit 2)
    return AutoArchive(policy=lambda: policy,
                       directory=None if directory is None else str(tmp_path / directory),
                       env=child_environment(store, store + ".views.db", compact=False),
                       clock=clock, counted=(counted if counted is not None else []).append)


def wait_done(archive: AutoArchive) -> None:
    deadline = time.monotonic() + 60
    while archive.running and time.monotonic() < deadline:
        time.sleep(0.1)
        archive.step()
    assert not archive.running


def test_off_by_default_nothing_runs(tmp_path: Path) -> None:
    clock = Clock()
    archive = runner(tmp_path, ArchivePolicy(), clock)
    assert archive.due(clock.now) is None
    assert archive.wait_seconds() is None
    archive.step()
    assert not archive.running
    assert not (tmp_path / "archives").exists()


def test_a_failure_is_logged_and_retried_at_the_next_period(tmp_path: Path) -> None:
    clock = Clock()
    counted: list[str] = []
    archive = runner(tmp_path, ArchivePolicy(max_age_days=1.0, every_seconds=60), clock,
                     counted=counted)
    with structlog.testing.capture_logs() as logs:
        archive.step()
        assert not archive.running  # the first run is one period after the start
        assert archive.wait_seconds() == 60.0
        clock.now += timedelta(seconds=60)
        archive.step()
        assert archive.running
        archive.step()  # still one at most
        wait_done(archive)
        archive.step()  # not due again before the period
        assert not archive.running
        assert archive.wait_seconds() == 60.0
        clock.now += timedelta(seconds=60)
        archive.step()
        assert archive.running
        wait_done(archive)
    failed = [e for e in logs if e["event"] == "archive.failed"]
    assert len(failed) == 2
    assert counted == ["failed", "failed"]
    assert failed[0]["exit_code"] == 2
    assert "missing.db" in failed[0]["stderr"] or "missing.db" in failed[0]["stdout"]
    assert len(failed[0]["stderr"]) <= 2000
    started = [e for e in logs if e["event"] == "archive.started"]
    assert started[0]["before"] == (T0 + timedelta(seconds=60) - timedelta(days=1)).isoformat()
    assert started[0]["directory"] == started[1]["directory"] == str(tmp_path / "archives")


def running(tmp_path: Path) -> AutoArchive:
    """A runner whose child was started (due one period after its start)."""
    clock = Clock()
    archive = runner(tmp_path, ArchivePolicy(max_age_days=1.0, every_seconds=60), clock)
    clock.now += timedelta(seconds=60)
    archive.step()
    assert archive.running
    return archive


def test_a_stop_terminates_the_running_child(tmp_path: Path) -> None:
    archive = running(tmp_path)
    with structlog.testing.capture_logs() as logs:
        archive.stop()
    assert not archive.running
    assert [e["event"] for e in logs] == ["archive.stopped"]
    archive.stop()  # nothing left to stop


def test_a_stop_ends_a_paused_child_at_once(tmp_path: Path) -> None:
    archive = running(tmp_path)
    assert archive.pid is not None
    os.kill(archive.pid, signal.SIGSTOP)
    began = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        archive.stop()
    assert time.monotonic() - began < STOP_SECONDS  # continued to end, not killed late
    assert [(e["event"], e["exit_code"]) for e in logs] == [("archive.stopped", -signal.SIGTERM)]


def test_without_a_directory_it_is_refused_once(tmp_path: Path) -> None:
    clock = Clock()
    archive = runner(tmp_path, ArchivePolicy(max_age_days=1.0, every_seconds=1), clock,
                     directory=None)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            archive.step()
            clock.now += timedelta(seconds=1)
    assert not archive.running
    assert [e["event"] for e in logs] == ["archive.refused"]
    assert logs[0]["log_level"] == "warning"


def test_a_second_archival_waits_while_another_holds_the_lock(tmp_path: Path) -> None:
    # e.g. the child of a service that was killed, still running when the next one is due
    clock = Clock()
    archive = runner(tmp_path, ArchivePolicy(max_age_days=1.0, every_seconds=60), clock)
    (tmp_path / "archives").mkdir()
    held = os.open(tmp_path / "archives" / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    with structlog.testing.capture_logs() as logs:
        clock.now += timedelta(seconds=60)
        archive.step()
        assert not archive.running
        os.close(held)
        clock.now += timedelta(seconds=60)
        archive.step()  # the next period
        assert archive.running
        wait_done(archive)
    events = [e["event"] for e in logs]
    assert events == ["archive.busy", "archive.started", "archive.failed"]
