"""An instance's retained status among several on one PostgreSQL store: standby or active.

Published on `P/job-manager/instances/{instance}/status` by the instance's own connection
(`att_jm.mqtt.instances.InstanceConnection`, client `{client_id}.{instance}`) from its start
to its stop:

    {"instance": "jm-b", "state": "standby", "active": "jm-a", "epoch": 7,
     "pid": 4242, "version": "1.0.0", "started_at": ..., "since": ..., "at": ...,
     "takeover_seconds": 10.0}

`state` is `standby` (waiting for the lease; `active` names the holder, null when none),
`active` (this instance holds the lease, `epoch`), or `offline` (stopped; its Last Will says
`"reason": "lost"`). The service's own status (`P/job-manager/status`) stays the active
instance's, on the shared client id, with `instance` and `epoch` added. The same connection
answers the read commands sent to the instance (att_jm/service/instance_reads.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from att_jm import __version__
from att_jm.config import Settings
from att_jm.domain.times import iso
from att_jm.mqtt.instances import InstanceConnection
from att_jm.service.instance_reads import InstanceReads
from att_jm.topics import Topics

log = structlog.get_logger("att_jm")


class Presence:
    """What this instance says of itself, and the connection that says it."""

    def __init__(self, settings: Settings, instance: str, clock: Callable[[], datetime],
                 reads: InstanceReads | None = None) -> None:
        self.instance = instance
        self.clock = clock
        self.takeover_seconds = settings.takeover_seconds
        self.started_at = clock()
        self.state = "standby"
        self.active: str | None = None
        self.epoch: int | None = None
        self.since = self.started_at
        self.connection = InstanceConnection(
            settings.mqtt, client_id=f"{settings.client_id}.{instance}",
            topic=Topics(settings.topic_prefix).instance_status(instance), body=self.body,
            requests=None if reads is None else reads.requests,
            answer=None if reads is None else reads.answer,
        )

    def body(self) -> dict[str, Any]:
        return {
            "instance": self.instance, "state": self.state, "active": self.active,
            "epoch": self.epoch, "pid": os.getpid(), "version": __version__,
            "started_at": iso(self.started_at), "since": iso(self.since),
            "at": iso(self.clock()), "takeover_seconds": self.takeover_seconds,
        }

    def start(self) -> None:
        self.connection.start({"instance": self.instance, "state": "offline", "reason": "lost",
                               "pid": os.getpid(), "started_at": iso(self.started_at)})

    def set(self, state: str, *, active: str | None, epoch: int | None) -> None:
        """Say `state` (and who is active), retained, when it changed."""
        if (state, active, epoch) == (self.state, self.active, self.epoch):
            return
        self.state, self.active, self.epoch = state, active, epoch
        self.since = self.clock()
        log.info("instance.state", instance=self.instance, state=state, active=active,
                 epoch=epoch)
        self.connection.publish()

    def stop(self) -> None:
        """Say `offline`, retained, and disconnect."""
        self.state, self.active, self.epoch = "offline", None, None
        self.since = self.clock()
        self.connection.stop(self.body())
