"""Archival in tests: a busy history to archive, the audit verbs in-process."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from att_jm.application.index import TOPICS as INDEX_TOPICS
from att_jm.application.index import MemoryIndexStore, WriteIndex
from att_jm.audit import commands
from att_jm.cli.parser import parse_argv
from att_jm.cli.requests import combine_match
from att_jm.log.backend import dialect_of
from att_jm.log.rows import StoreReader
from helpers.audit_run import ScriptedRun
from projections.anchor import anchor_of


def audit(store: str, *argv: str, views_path: str | None = None) -> tuple[int, str]:
    """`att-jm audit ARGV --store STORE` in-process; (exit code, stdout)."""
    ns = parse_argv(["audit", *argv, "--store", store, "--no-progress"])
    match = combine_match(ns.match, ns.match_json) if ns.audit_verb == "backtest" else None
    out = io.StringIO()
    code = commands.run(ns, store, 1000, match, out, views_path=views_path)
    return code, out.getvalue()


def busy_history(run: ScriptedRun, notifications: int = 60) -> None:
    """Jobs, notifications that run (one job matching a few of them), an operator's job
    update, Auto Cleanup keeping 3 executed rows: the oldest executions are gone."""
    run.ok("settings.set", {"interval_seconds": 0, "executed_cleanup": {"max_rows": 3}})
    run.ok("job.add", {"name": "ipx", "script": "ipx-update", "trigger": "channel-up",
                       "command": "channel={channel}"})
    run.ok("job.add", {"name": "paris", "script": "p", "trigger": "channel-up",
                       "match": {"site": "paris"}}, actor="bob")
    for n in range(notifications):
        run.notify("channel-up", {"id": f"n{n}", "channel": f"C{n}",
                                  "site": "paris" if n % 7 == 0 else "lyon"})
        while run.run_next() is not None:
            pass
        if n % 10 == 9:
            run.cleanup("executed")
        if n == notifications // 3:
            failed = run.views.rows("failed", 100)
            for row in failed:
                run.ok("failed.delete", {"id": row["id"]}, actor="carol")
            run.ok("job.update", {"name": "ipx", "command": "ch={channel}"})


def stored_rows(store: str) -> int:
    reader = StoreReader(store)
    try:
        return reader.count()
    finally:
        reader.close()


class _ReadOnlyIndex:
    """The store's own write index, read through the reader's connection."""

    def __init__(self, reader: StoreReader) -> None:
        self.dialect = dialect_of(reader.path)
        self.connection = reader.connection

    def create(self, script: str) -> None:
        pass


def index_from_anchor(store: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the write index built from the store's anchor and the rows after it, the store's
    own write index): their rows."""
    reader = StoreReader(store)
    memory = MemoryIndexStore()
    try:
        anchor = anchor_of(reader)
        assert anchor is not None
        rebuilt = WriteIndex(memory)
        rebuilt.load(anchor.state()["index"], anchor.position)
        rebuilt.catch_up(reader.keyed_pages(anchor.position, None, INDEX_TOPICS),
                         reader.max_position())
        return rebuilt.state(), WriteIndex(_ReadOnlyIndex(reader)).state()
    finally:
        memory.close()
        reader.close()


class Crash(Exception):
    """Raised by `crash_after`'s hook: an archival that stops between two steps."""


def crash_after(step: str) -> Callable[[str], None]:
    """An archival crash hook that raises Crash after `step` ("a", "b", "c" or "d")."""
    def hook(at: str) -> None:
        if at == step:
            raise Crash(step)
    return hook
