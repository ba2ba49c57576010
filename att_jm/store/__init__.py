"""The event store: the eventsourcing Application over an SQLite file or a PostgreSQL
database, the writer's own connection for appends (`WriterLog`), log reading, and what the
writer needs to know of the store's faults.

- `app`: `JobManagerApp`, `open_store(store)` (a path or a `postgresql://` URL:
  `att_jm.log.backend`), `read_log`, `log_position`, `open_log`/`read_rows` (the log
  reader, `att_jm.log.rows.StoreReader`, on the application's store);
- `writer`: `WriterLog`, the writer's appends (with its index's changes in the same
  transaction) and existence checks, one per engine: `sqlite.SqliteWriterLog`,
  `postgres.PgWriterLog` (`open_writer_log`);
- `faults`: `is_transient`, `StoreConflict`.
"""

from att_jm.log.backend import is_postgres
from att_jm.store.app import (
    JobManagerApp,
    log_position,
    open_log,
    read_log,
    read_rows,
)
from att_jm.store.faults import StoreConflict, is_transient
from att_jm.store.writer import WriterLog


def open_store(store: str, *, readonly: bool = False, compact: bool = False) -> JobManagerApp:
    """The application over the store `store`: an SQLite file's path (created with its folder
    when missing, unless `readonly`) or a PostgreSQL URL (its schema and tables created when
    missing, unless `readonly`). `compact`: events and snapshots it stores are stored compact
    (setting `compact_states`, `att_jm.log.codec`), else as their JSON; either way it reads
    rows of both forms."""
    if is_postgres(store):
        from att_jm.store.postgres import open_postgres  # noqa: PLC0415 -- psycopg on demand

        app = open_postgres(store, readonly=readonly, compact=compact)
    else:
        from att_jm.store.sqlite import sqlite_env  # noqa: PLC0415 -- small

        app = JobManagerApp(env=sqlite_env(store, readonly=readonly), compact=compact)
    app.location = store
    app.readonly = readonly
    return app


def open_writer_log(app: JobManagerApp) -> WriterLog:
    """The writer's connection to the store of `app`."""
    if is_postgres(app.location):
        from att_jm.store.postgres import PgWriterLog  # noqa: PLC0415 -- psycopg on demand

        return PgWriterLog(app)
    from att_jm.store.sqlite import SqliteWriterLog  # noqa: PLC0415 -- small

    return SqliteWriterLog(app)


__all__ = ["JobManagerApp", "StoreConflict", "WriterLog", "is_transient", "log_position",
           "open_log", "open_store", "open_writer_log", "read_log", "read_rows"]
