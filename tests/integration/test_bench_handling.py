"""`bench.handling` measures real work: its messages enqueue entries and change the settings
in a real store."""

from __future__ import annotations

from pathlib import Path

from att_jm.application import UnitOfWork
from bench import handling


def test_its_notifications_enqueue_and_its_commands_change_the_settings(tmp_path: Path) -> None:
    manager = handling._manager(tmp_path)
    try:
        uow = UnitOfWork()
        handling._notifications(manager, uow, 0, 3)
        uow.collect()
        assert len(uow.enqueued) == 3
        manager.encode(uow)
        assert len(manager.commit(uow)) == 6  # each: received, enqueued
        uow = UnitOfWork()
        handling._settings_set(manager, uow, 0, 2)  # raises unless each reply is ok
        uow.collect()
        manager.encode(uow)
        stored = manager.commit(uow)
        assert [type(event).__name__ for _, event in stored].count("SettingsChanged") == 2
    finally:
        manager.close()


def test_a_series_gives_the_cpu_of_each_message() -> None:
    assert handling.cpu_per_message(handling._notifications, 10, 20) > 0
    assert handling.cpu_per_message(handling._settings_set, 1, 5) > 0
