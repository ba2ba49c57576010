"""The service's retained status (`P/job-manager/status`) and the fault it reports."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from att_jm import __version__
from att_jm.domain.limits import cut
from att_jm.domain.times import iso
from att_jm.log.tail import Tail
from att_jm.metrics.shared import WriterStats
from att_jm.mqtt.adapter import ServiceConnection

#: At most this many unloadable jobs are named in the status (all are counted and logged).
UNLOADABLE_SHOWN: Final = 20
#: How much of each one's error the status shows.
UNLOADABLE_ERROR_CHARS: Final = 300


class Status:
    """What the retained status says: online or offline, since when, and any fault
    (`store`: commits refused; `views`: the views lag the log) until it ends; jobs the
    service could not load from the store (`unloadable_jobs`: left out, not run)."""

    def __init__(
        self, connection: ServiceConnection, *, client_id: str, clock: Callable[[], datetime],
        tail: Tail | None, stats: WriterStats, instance: str | None = None,
        epoch: int | None = None, unloadable: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.connection = connection
        self.client_id = client_id
        #: On a PostgreSQL store: which instance this is, and the lease's epoch it holds.
        self.instance = instance
        self.epoch = epoch
        self.clock = clock
        self.tail = tail
        self.stats = stats
        self.unloadable = unloadable
        self.started_at = clock()
        self.fault: dict[str, Any] | None = None

    @property
    def fault_kind(self) -> str | None:
        return None if self.fault is None else str(self.fault["kind"])

    def body(self, state: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "state": state, "pid": os.getpid(), "client_id": self.client_id,
            "version": __version__, "started_at": iso(self.started_at), "at": iso(self.clock()),
        }
        if self.instance is not None:
            body |= {"instance": self.instance, "epoch": self.epoch}
        if self.fault is not None:
            body["fault"] = self.fault
        flag = None if self.tail is None else self.tail.flag()
        if flag is not None:
            body["log_appended"] = flag
        warnings = self.connection.broker_warnings()
        if warnings:
            body["broker_warnings"] = warnings
        unloadable = self.unloadable()
        if unloadable:
            body["unloadable_jobs"] = {
                "count": len(unloadable),
                "jobs": [{"job": name, "error": cut(error, UNLOADABLE_ERROR_CHARS)}
                         for name, error in sorted(unloadable.items())[:UNLOADABLE_SHOWN]],
            }
        return body

    def last_will(self) -> dict[str, Any]:
        """The status the broker publishes if the connection is lost."""
        will = {"state": "offline", "reason": "lost", "pid": os.getpid(),
                "client_id": self.client_id, "started_at": iso(self.started_at)}
        if self.instance is not None:
            will |= {"instance": self.instance, "epoch": self.epoch}
        return will

    def paused(self) -> dict[str, Any]:
        """The status while the service stopped receiving (until a commit works again)."""
        body = self.body("online")
        body["fault"] = {**(self.fault or {}), "paused": True}
        return body

    def set_fault(self, kind: str | None, error: BaseException | None = None) -> None:
        """Report a fault (or its end, `kind` None) in the retained status."""
        self.fault = None if kind is None else {
            "kind": kind, "message": repr(error), "since": iso(self.clock()),
        }
        self.stats.fault(kind)
        self.connection.publish(
            self.connection.status_topic, orjson.dumps(self.body("online")), retain=True
        )
