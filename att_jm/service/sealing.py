"""The writer's seals: appended when due, published retained on `P/job-manager/seals`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import structlog

from att_jm.application.sealer import Sealer
from att_jm.log.chain import Seal
from att_jm.mqtt.adapter import ServiceConnection
from att_jm.service.aftercommit import AfterCommit
from att_jm.service.status import Status
from att_jm.topics import Topics

log = structlog.get_logger("att_jm")


class LogSeals:
    """Seals the log when due, and closes it at a clean stop."""

    def __init__(
        self, *, sealer: Sealer, after: AfterCommit, connection: ServiceConnection,
        topics: Topics, status: Status, clock: Callable[[], datetime],
    ) -> None:
        self.sealer = sealer
        self.after = after
        self.connection = connection
        self.topics = topics
        self.status = status
        self.clock = clock

    def wait_seconds(self) -> float | None:
        return self.sealer.wait_seconds()

    def seal(self) -> None:
        """Append a seal when due, then publish it retained."""
        try:
            if not self.sealer.due():
                return
            stored, seals = self.sealer.seal(self.clock())
        except Exception as error:  # noqa: BLE001 -- a store fault: the sealer retries later
            log.error("log.seal_failed", error=repr(error))
            return
        self._publish(stored, seals)

    def prepare(self, least: int = 1) -> None:
        """While idle: digest rows for the next seal, a few at a time, once `least` wait."""
        with contextlib.suppress(Exception):  # a read fault: the seal reads them
            self.sealer.prepare(least=least)

    def close(self) -> None:
        """At a clean stop: seal everything and record `Ledger.Closed` (a row found after it
        at the next start was written outside the service). Not during a store fault: the
        next start then reports an unclean stop."""
        try:
            if self.status.fault is None:
                try:
                    stored, seals = self.sealer.close_log(self.clock())
                except Exception as error:  # noqa: BLE001 -- the next start reports it unclean
                    log.error("log.close_failed", error=repr(error))
                else:
                    self._publish(stored, seals)
        finally:  # also when the lease was lost meanwhile (LeaseLost)
            self.sealer.close()

    def _publish(self, stored: list[tuple[int, Any]], seals: list[Seal]) -> None:
        self.after.stored(stored)
        for seal in seals:
            self.connection.publish(self.topics.seals, orjson.dumps(seal.message()), retain=True)
        if seals:
            log.info("log.sealed", position=seals[-1].position, seals=len(seals),
                     hash=seals[-1].hash)
