"""The writer's unit of work: the application's, plus what the writer does once it is
stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from att_jm.application import UnitOfWork


@dataclass
class WriterUnit(UnitOfWork):
    """A unit of work with what the writer does once it is stored."""

    #: Run once stored, in order (the replies, with the acknowledgements of their batch).
    after_store: list[Callable[[], object]] = field(default_factory=list)
    #: Run once the relay is woken for the events stored (the acknowledgements of a batch
    #: without replies: nobody waits for those, the subscribers wait for the events).
    after_wake: list[Callable[[], object]] = field(default_factory=list)
    #: Starts the script dispatched, once stored.
    start: Callable[[], object] | None = None
    #: The batch ended a script: the next one starts before all else.
    handover: bool = False
    #: The batch holds MQTT messages (notifications, commands): their events are awaited.
    messages: bool = False
    #: The batch holds commands only, each answered: the relay's wake-up and the views wait
    #: a moment after the replies (att_jm.service.aftercommit).
    commands_only: bool = False
    #: What the commit left until all of the above is done (the scheduler's snapshot, every
    #: 500 of its versions: a second commit, which its batch's replies no longer wait for).
    later: list[Callable[[], None]] | None = field(default_factory=list)
