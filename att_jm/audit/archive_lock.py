"""One archival of a store at a time, wherever it runs.

`att-jm audit archive` (by an operator, a cron job, or the service's automatic archival)
holds this lock for its whole run. On PostgreSQL it is a session-level advisory lock on a
connection of its own (keyed by the store's schema: two stores in one database do not
block each other), so it holds across hosts and ends with the process, however it ends; on
SQLite an exclusive `flock` of `<store>.archive-lock` beside the store file (one host by
construction). A second archival that finds it held is refused at once (ArchivalBusy) and
changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from att_jm.log.backend import is_postgres, parse_postgres, pg_connect
from att_jm.log.rows import AuditError

#: The advisory lock's first key (the second is the schema's hash).
LOCK_NAMESPACE = "att_jm_archive"


class ArchivalBusy(AuditError):
    """Another archival of the same store holds the lock."""


@contextlib.contextmanager
def archival_lock(store: str) -> Iterator[None]:
    """Hold the store's archival lock for the `with` block; ArchivalBusy when held."""
    if is_postgres(store):
        location = parse_postgres(store)
        with pg_connect(location) as db:
            taken = db.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))",
                               (LOCK_NAMESPACE, location.schema)).fetchone()
            if not (taken and taken[0]):
                raise ArchivalBusy(f"another archival of {location.shown} is running "
                                   "(its advisory lock is held); try again once it ended")
            yield  # closing the connection releases the lock
        return
    path = store.removeprefix("file:").split("?", 1)[0]
    if store.startswith("file:") and "mode=memory" in store:
        yield  # an in-memory store: no other process can reach it
        return
    fd = os.open(f"{path}.archive-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchivalBusy(f"another archival of {path} is running (it holds "
                               f"{path}.archive-lock); try again once it ended") from None
        yield
    finally:
        os.close(fd)
