"""The read commands an instance answers itself, on its own topic (a PostgreSQL store).

    P/job-manager/instances/{instance}/commands/{actor}/views.get   (and trace.get)

Why a topic of its own, and not the contract's `P/job-manager/commands/{actor}/views.get`
answered by the standbys: every command on the contract's topic reaches the active
instance's persistent session (`commands/+/+`; MQTT has no filter that leaves one command
out), which records the refused ones (forbidden, rate-limited, invalid, a CorrelationData
reused) and answers each once. Had the standbys answered the same requests through a shared
subscription, a request would have two possible responders deciding apart (two replies, or
a refusal nobody records). So the contract's topic keeps one responder, the active instance,
exactly as with one instance; and any instance, standby or active, answers reads sent to its
own topic, from the same views and log in PostgreSQL: the reads of consoles and dashboards
can be moved off the writer, and they are answered during a fail-over too.

On that topic a refused read is answered (the same error codes) but not recorded in the log:
only the active instance writes the log. The rate limit is per instance.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog

from att_jm.application import error_reply
from att_jm.application.rejections import check_depth
from att_jm.config import Settings
from att_jm.domain import limits as lim
from att_jm.domain.commands import TraceGet, ViewsGet, parse_command
from att_jm.domain.ratelimit import TokenBuckets
from att_jm.errors import (
    AttJmError,
    Forbidden,
    InvalidInput,
    RateLimited,
    TooLarge,
    UnknownCommand,
)
from att_jm.log.rows import StoreReader
from att_jm.service.reads import Reads
from att_jm.site.users import RoleBook
from att_jm.topics import Topics
from projections.reader import open_reader

log = structlog.get_logger("att_jm")

Reply = dict[str, Any]
READS = ("views.get", "trace.get")


class InstanceReads:
    """Answers the read commands sent to one instance (see the module). Called on the
    instance connection's own thread only."""

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.instance = instance
        self.topics = Topics(settings.topic_prefix)
        self.roles = None if settings.users_file is None else RoleBook(settings.users_file)
        self.rate = TokenBuckets(settings.command_rate, settings.command_burst)
        self._reads: Reads | None = None

    @property
    def requests(self) -> str:
        """The filter of the requests this instance answers."""
        return self.topics.instance_commands_filter(self.instance)

    def answer(self, topic: str, payload: bytes, response_topic: str | None,
               correlation: bytes | None) -> Reply | None:
        """The reply to a request on `topic` (None: no reply can be sent)."""
        parsed = self.topics.parse_instance_command(topic)
        actor = "" if parsed is None else parsed[1].actor
        if response_topic is None or not self.topics.is_reply(response_topic, actor):
            log.info("instance.read_without_reply_topic", topic=topic[:200],
                     response_topic=None if response_topic is None else response_topic[:200])
            return None
        try:
            return self._answer(topic, payload, correlation)
        except AttJmError as error:
            return error_reply(error)
        except Exception as error:  # noqa: BLE001 -- e.g. the store unreachable: said, retried
            log.warning("instance.read_failed", error=repr(error))
            self.close()
            return error_reply(AttJmError(lim.cut(
                f"internal error: {type(error).__name__}: {error}", lim.MAX_REASON_CHARS)))

    def _answer(self, topic: str, payload: bytes, correlation: bytes | None) -> Reply:
        parsed = self.topics.parse_instance_command(topic)
        if parsed is None or parsed[0] != self.instance:
            raise InvalidInput(f"not a read command of instance {self.instance}")
        actor, name = parsed[1].actor, parsed[1].name
        if correlation is not None and len(correlation) > lim.MAX_CORRELATION_BYTES:
            raise InvalidInput(f"CorrelationData must be at most {lim.MAX_CORRELATION_BYTES} "
                               f"bytes, not {len(correlation)}")
        if name not in READS:
            raise UnknownCommand(f"an instance answers {' and '.join(READS)} only, not "
                                 f"{lim.shown(name)}")
        if self.roles is not None and not self.roles.may_send(actor, name):
            raise Forbidden(f"user {lim.shown(actor)} may not send {lim.shown(name)}: its "
                            "role does not allow it")
        if not self.rate.take(actor, time.monotonic()):
            raise RateLimited(f"more than {lim.plain(self.rate.rate)} commands a second "
                              f"(bursts of {self.rate.burst}) from {lim.shown(actor)} to "
                              f"instance {self.instance}: try again later")
        if len(payload) > self.settings.max_payload_bytes:
            raise TooLarge(f"payload of {len(payload)} bytes exceeds "
                           f"{self.settings.max_payload_bytes}")
        try:
            args = orjson.loads(payload) if payload.strip() else {}
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"the arguments are not JSON: {error}") from None
        check_depth(args, text=payload)
        command = parse_command(name, args)
        if not isinstance(command, ViewsGet | TraceGet):  # pragma: no cover -- READS only
            raise UnknownCommand(f"not a read command: {lim.shown(name)}")
        return self._open().read(command)

    def _open(self) -> Reads:
        if self._reads is None:
            try:
                trace_log: StoreReader | None = StoreReader(self.settings.store)
            except Exception as error:  # noqa: BLE001 -- traces unavailable, views still read
                log.warning("trace.unavailable", error=repr(error))
                trace_log = None
            self._reads = Reads(views=open_reader(self.settings.views_path()), log=trace_log,
                                view_rows=self.settings.view_rows,
                                view_max_bytes=self.settings.view_max_bytes)
        return self._reads

    def close(self) -> None:
        reads, self._reads = self._reads, None
        if reads is not None:
            for closer in (reads.views.close, *(() if reads.log is None
                                                   else (reads.log.close,))):
                try:
                    closer()
                except Exception as error:  # noqa: BLE001 -- a broken connection: dropped
                    log.debug("instance.read_close_failed", error=repr(error))
