"""The composition root: the writer built from its parts, for a site's settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import structlog

from att_jm.application import JobManager
from att_jm.application.sealer import Sealer
from att_jm.checkpoints import Checkpointer
from att_jm.config import Settings
from att_jm.domain.ratelimit import TokenBuckets
from att_jm.log.backend import redact
from att_jm.log.rows import AuditError, StoreReader
from att_jm.log.tail import Tail
from att_jm.metrics.shared import open_writer_stats
from att_jm.mqtt.adapter import ServiceConnection
from att_jm.mqtt.common import inbound_packet_limit
from att_jm.mqtt.instances import GuardedConnection
from att_jm.relay.handle import EventsRelay
from att_jm.runner import resolve_script
from att_jm.service.aftercommit import AfterCommit
from att_jm.service.archival import AutoArchive, child_environment
from att_jm.service.batches import Batches
from att_jm.service.dispatch import Dispatcher
from att_jm.service.held import HeldStart
from att_jm.service.inbox import Inbox, Stopping, utcnow
from att_jm.service.replies import Replies
from att_jm.service.routing import Router
from att_jm.service.scripts import ScriptSlot
from att_jm.service.sealing import LogSeals
from att_jm.service.status import Status
from att_jm.service.units import Units
from att_jm.service.writer import Parts, Writer
from att_jm.site.users import RoleBook
from att_jm.store import JobManagerApp, log_position, open_store
from att_jm.topics import Topics
from projections.rebuild import catch_up
from projections.views import Views

if TYPE_CHECKING:  # psycopg is imported on a PostgreSQL store only
    from att_jm.service.lease import Lease

log = structlog.get_logger("att_jm")


def bootstrap(
    settings: Settings, clock: Callable[[], datetime] = utcnow, *, lease: Lease | None = None,
) -> Writer:
    """Open the store and the views, catch the views up, and build the writer; with a
    `lease` (a PostgreSQL store shared by several instances, held by this one), a writer
    that runs while it holds it: the session connects, scripts start and commits succeed
    only while the lease is trusted (att_jm/service/lease.py)."""
    topics = Topics(settings.topic_prefix)
    inbox = Inbox()
    stopping = Stopping()
    app = open_store(settings.store, compact=settings.compact_states)
    if lease is not None:  # before the first write: only this instance's sessions append
        lease.install_fence()
    stats = open_writer_stats(settings.store)  # `<store>.stats`, read by att_jm.metrics
    # Where the relay begins when it has no position file of its own (a first start):
    # before this start's own writes, so every event is published (position 1 too).
    first_unpublished = log_position(app)
    sealer = Sealer(app, settings.store, every_events=settings.seal_every_events,
                    every_seconds=settings.seal_every_seconds)
    tail = open_log(sealer, clock)
    views = Views(settings.views_path())
    closers: list[Callable[[], object]] = []
    if settings.views_path() != ":memory:":
        closers.append(Checkpointer(settings.views_path(), views=True).close)
    views_behind = False
    try:
        caught = catch_up(app, views)
    except Exception as error:  # noqa: BLE001 -- e.g. a full disk: run on, catch up later
        caught, views_behind = 0, True
        log.error("views.apply_failed", error=repr(error))
    manager = job_manager(settings, app, clock)
    # WAL checkpoints on threads of their own, before a commit passes 1,000 pages.
    if not manager.log.db_name.startswith("file:"):  # not an in-memory store
        closers.append(Checkpointer(manager.log.db_name).close)
    closers.extend((views.close, stats.close))
    session: Callable[..., ServiceConnection] = (
        ServiceConnection if lease is None
        else partial(GuardedConnection, may_connect=lease.valid))  # connects while it holds
    connection = session(
        settings.mqtt, client_id=settings.client_id, prefix=settings.topic_prefix,
        session_expiry_seconds=settings.session_expiry_seconds,
        max_packet=inbound_packet_limit(settings.max_payload_bytes), deliver=inbox.put_local,
        fast_paths=settings.mqtt_fast_paths,
    )
    relay = EventsRelay(settings)
    # Scripts run as settings.script_user when the service is root; when one ends, all it
    # left behind is killed (the service is their subreaper), the relay spared. While the
    # spawner starts one, the writer loads the entry that runs next (else it would wait for
    # the answer, then load it while the script runs, and meet the script's end late);
    # not under a lease, whose thread may need the runner while a start is under way.
    slot = ScriptSlot(settings.scripts, inbox.put_local, run_as=settings.script_user,
                      spare=lambda: () if relay.pid is None else (relay.pid,),
                      may_start=None if lease is None else lease.valid,
                      meanwhile=manager.preload_next if lease is None else None)
    status = Status(connection, client_id=settings.client_id, clock=clock, tail=tail,
                    stats=stats, instance=None if lease is None else lease.instance,
                    epoch=None if lease is None else lease.epoch,
                    unloadable=lambda: manager.model.unloadable)
    held = HeldStart(relay, inbox)
    after = AfterCommit(app=app, manager=manager, views=views, relay=relay, held=held,
                        sealer=sealer, status=status, connection=connection,
                        views_behind=views_behind,
                        defer_views=lambda: slot.busy or held.pending or not inbox.empty())
    units = Units(manager=manager, after=after, status=status, connection=connection,
                  inbox=inbox, slot=slot, held=held, stopping=stopping, stats=stats,
                  guard=None if lease is None else lease.check)
    dispatcher = Dispatcher(manager, slot)
    log_reader = open_reader(settings.store)
    if log_reader is not None:
        closers.append(log_reader.close)
    replies = Replies(connection=connection, topics=topics, inbox=inbox, views=views,
                      view_rows=settings.view_rows, view_max_bytes=settings.view_max_bytes,
                      stats=stats, log=log_reader)
    batches = Batches(manager=manager, units=units, router=Router(topics, manager),
                      replies=replies, dispatcher=dispatcher, topics=topics, stopping=stopping,
                      max_payload_bytes=settings.max_payload_bytes)
    seals = LogSeals(sealer=sealer, after=after, connection=connection, topics=topics,
                     status=status, clock=clock)
    log.info("store.opened", store=settings.store_shown, position=log_position(app),
             views_caught_up=caught)
    return Writer(Parts(
        manager=manager, views=views, inbox=inbox, stopping=stopping, connection=connection,
        status=status, relay=relay, slot=slot, held=held, after=after, units=units, batches=batches,
        dispatcher=dispatcher, seals=seals, clock=clock, max_batch=settings.max_batch,
        first_unpublished=first_unpublished, closers=tuple(closers),
        position=partial(log_position, app), stats=stats, lease=lease,
        archival=AutoArchive(
            policy=lambda: manager.scheduler.archive_policy(),  # noqa: PLW0108 -- read now
            directory=settings.archive_directory(),
            env=child_environment(settings.store, settings.views_path(),
                                  settings.compact_states),
            clock=clock, counted=stats.archived,
        ),
    ))


def open_reader(store: str) -> StoreReader | None:
    """The log, read-only, for `trace.get` (None, logged, when it cannot be read so)."""
    try:
        return StoreReader(store)
    except AuditError as error:
        log.warning("trace.unavailable", store=redact(store), error=str(error))
        return None


def open_log(sealer: Sealer, clock: Callable[[], datetime]) -> Tail | None:
    """The first write of a start: what the end of the log says of the last stop (rows
    appended while the service was stopped are reported, loudly, and in the status)."""
    try:
        tail = sealer.open_log(clock())
    except Exception as error:  # noqa: BLE001 -- a store fault at start: reported, not fatal
        log.error("log.open_check_failed", error=repr(error))
        return None
    if tail.appended:
        log.error("log.appended_outside", message=tail.message(), **tail.to_json())
    elif tail.ledger and not tail.clean:
        log.warning("log.unclean_stop", message=tail.message(), **tail.to_json())
    return tail


def job_manager(settings: Settings, app: JobManagerApp,
                clock: Callable[[], datetime]) -> JobManager:
    """The application, with the site's roles and rate limits."""
    roles = None if settings.users_file is None else RoleBook(settings.users_file)
    if roles is not None and roles.error is not None:
        log.error("users.unreadable", users_file=settings.users_file, error=roles.error)
    return JobManager(
        app, check_script=lambda name: resolve_script(settings.scripts, name),
        clock=clock, max_payload_bytes=settings.max_payload_bytes,
        may_send=None if roles is None else roles.may_send,
        rate=TokenBuckets(settings.command_rate, settings.command_burst),
    )
