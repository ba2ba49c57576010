"""Deterministic aggregate ids: the same input always names the same aggregate."""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = UUID("6f1c7a52-52a4-4c1e-9d7e-0a7d3b1f2c11")

SCHEDULER_ID = uuid5(NAMESPACE, "scheduler")


def job_id(name: str) -> UUID:
    """The aggregate id of the job called `name`."""
    return uuid5(NAMESPACE, "job:" + name)


def notification_id(notification: str) -> UUID:
    """The aggregate id of the notification whose `id` field is `notification`."""
    return uuid5(NAMESPACE, "notification:" + notification)


def execution_id(notification: str, job: str) -> UUID:
    """The id of the execution that notification `notification` caused for `job`."""
    return uuid5(NAMESPACE, "execution:" + notification + "\x00" + job)


def command_id(actor: str, correlation_data: bytes) -> UUID:
    """The id of the record of a command, keyed by its actor and CorrelationData."""
    return uuid5(NAMESPACE, "command:" + actor + "\x00" + correlation_data.hex())
