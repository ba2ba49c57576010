"""The read commands (`views.get`, `trace.get`): their replies, from the views and the log.

The writer answers them once the batch that carried them is committed (att_jm/service/
replies.py); on a PostgreSQL store every instance also answers them on its own topic
(att_jm/service/instance_reads.py), from the same views and log.
"""

from __future__ import annotations

from typing import Any

import orjson

from att_jm.application import error_reply
from att_jm.domain import limits as lim
from att_jm.domain.commands import ReadCommand, TraceGet, ViewsGet
from att_jm.errors import AttJmError, NotFound, TooLarge
from att_jm.log.lineage import trace
from att_jm.log.rows import AuditError, StoreReader
from projections.reader import ViewReader

Reply = dict[str, Any]


class Reads:
    """Answers read commands from `views` and `log` (None: traces cannot be read)."""

    def __init__(self, *, views: ViewReader, log: StoreReader | None, view_rows: int,
                 view_max_bytes: int) -> None:
        self.views = views
        #: The log, read-only, for `trace.get`.
        self.log = log
        self.view_rows = view_rows
        self.view_max_bytes = view_max_bytes

    def read(self, read: ReadCommand) -> Reply:
        """The reply to a read command."""
        if isinstance(read, TraceGet):
            return self.trace(read)
        return self.view(read)

    def trace(self, get: TraceGet) -> Reply:
        """The reply to `trace.get`: the execution's lineage from the log (`att-jm audit
        trace`'s JSON), at most `view_max_bytes` long."""
        if self.log is None:
            return error_reply(AttJmError("this store cannot be read for traces"))
        try:
            found = trace(self.log, get.id)
        except AuditError as error:
            return error_reply(NotFound(lim.cut(str(error), lim.MAX_REASON_CHARS)))
        body = orjson.dumps(found.to_json())
        if len(body) > self.view_max_bytes:
            return error_reply(TooLarge(
                f"the trace of {lim.shown(get.id)} is {len(body)} bytes, over the "
                f"{self.view_max_bytes} of a reply: `att-jm audit trace` shows it whole"))
        return {"ok": True, "result": orjson.Fragment(body)}

    def view(self, get: ViewsGet) -> Reply:
        """The reply to `views.get`: the view message as published (from the views' cache of
        encoded rows), a page of it, or one row in full."""
        rows, max_bytes = self.view_rows, self.view_max_bytes
        if get.id is not None:
            row = self.views.row_json(get.view, get.id)
            if row is None:
                what = "job named" if get.view == "jobs" else f"{get.view} entry"
                return error_reply(NotFound(f"no {what} {lim.shown(get.id)}"))
            return {"ok": True, "result": orjson.Fragment(row)}
        if get.offset is None and get.limit is None:
            payload = self.views.payload_json(get.view, rows, max_bytes=max_bytes)
        else:
            limit = rows if get.limit is None else min(get.limit, rows)
            payload = self.views.payload_json(get.view, limit, offset=get.offset or 0,
                                              max_bytes=max_bytes)
        return {"ok": True, "result": orjson.Fragment(payload)}
