"""Where the store is, an SQLite file or a PostgreSQL database, and the SQL that differs.

`ATT_JM_STORE` (`Settings.store`) is a path (SQLite, the default) or a URL
`postgresql://user[:password]@host[:port]/dbname[?schema=NAME]` (`postgres://` too). On
PostgreSQL every table of the Job Manager lives in one schema (default `att_jm`): the
library's `jobmanager_events` and `jobmanager_snapshots`, the write index (`jm_*`) and the
relay's position (`jm_positions`); the views live in the schema `<schema>_views` (what the
views file is on SQLite). The password may be in the URL, in `PGPASSWORD`, or in libpq's
password file; libpq's other environment variables (`PGSSLMODE`, `PGSSLROOTCERT`,
`PGCONNECT_TIMEOUT`, ...) apply to every connection. A URL is never shown with its password
(`redact`).

`Dialect` is the small seam between the two engines: placeholders (`?` / `%s`), the upsert
(`INSERT OR REPLACE` / `INSERT ... ON CONFLICT DO UPDATE`), how a write transaction and a
consistent read begin, the column types of a `CREATE TABLE`. Code that writes SQL once for
both builds its statements through it when it is constructed, so the SQLite path runs the
very strings it ran before. psycopg is imported only when a PostgreSQL store is opened.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from att_jm.errors import AttJmError

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

SCHEMES: Final = ("postgresql", "postgres")
DEFAULT_SCHEMA: Final = "att_jm"
VIEWS_SUFFIX: Final = "_views"
#: eventsourcing's table names for an application named "JobManager" (lower-cased name + _).
PG_EVENTS: Final = "jobmanager_events"
PG_SNAPSHOTS: Final = "jobmanager_snapshots"
#: A schema name: plain lower-case letters, digits and _, room left for VIEWS_SUFFIX.
_SCHEMA_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,56}")
DEFAULT_PORT: Final = 5432
APPLICATION_NAME: Final = "att-jm"


class StoreUrlError(AttJmError, ValueError):
    """`ATT_JM_STORE` looks like a PostgreSQL URL but is not a usable one (the message never
    holds its password)."""


def is_postgres(store: str) -> bool:
    """Whether `store` names a PostgreSQL database (else: an SQLite file)."""
    scheme, sep, _ = store.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def redact(store: str) -> str:
    """`store` safe to show: a URL's password replaced by `***` (a path as it is)."""
    scheme, sep, rest = store.partition("://")
    if not sep:
        return store
    netloc, slash, tail = rest.partition("/")
    if "@" not in netloc:
        return store
    userinfo, _, hostpart = netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if has_password else ''}@{hostpart}{slash}{tail}"


@dataclass(frozen=True)
class PgLocation:
    """A PostgreSQL store: how to connect, and the schema that holds its tables."""

    host: str
    port: int
    user: str
    password: str | None
    dbname: str
    schema: str

    @property
    def views_schema(self) -> str:
        return self.schema + VIEWS_SUFFIX

    def url(self, schema: str | None = None) -> str:
        """The URL of this location (of `schema` instead of its own, when given)."""
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = urlencode({"schema": schema or self.schema})
        return f"postgresql://{auth}@{host}:{self.port}/{quote(self.dbname, safe='')}?{query}"

    @property
    def shown(self) -> str:
        return redact(self.url())

    def views(self) -> PgLocation:
        """Where the views of this store live: the same database, schema `<schema>_views`."""
        return replace(self, schema=self.views_schema)

    def connect_kwargs(self, *, readonly: bool = False) -> dict[str, Any]:
        """psycopg.connect() keyword arguments: the schema first on the search path;
        read-only transactions only, when `readonly`."""
        options = f"-c search_path={self.schema}"
        if readonly:
            options += " -c default_transaction_read_only=on"
        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
            # PGAPPNAME (`att-jm serve` names its sessions with it) wins over this name.
            "options": options, "fallback_application_name": APPLICATION_NAME,
            # A peer gone silent (a cut network) is noticed in seconds, not hours.
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        if not os.environ.get("PGCONNECT_TIMEOUT"):
            kwargs["connect_timeout"] = 10
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs


def parse_postgres(url: str) -> PgLocation:
    """The location a `postgresql://` URL names; StoreUrlError (password hidden) when bad."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise StoreUrlError(f"store {shown!r} is not a valid URL: {error}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise StoreUrlError(f"store {shown!r} must start with postgresql://")
    if not parts.hostname:
        raise StoreUrlError(f"store {shown!r} has no host (postgresql://user@host/dbname)")
    if port == 0:
        raise StoreUrlError(f"store {shown!r}: port must be 1..65535")
    user = unquote(parts.username or "")
    if not user:
        raise StoreUrlError(f"store {shown!r} has no user (postgresql://user@host/dbname)")
    dbname = unquote(parts.path.removeprefix("/"))
    if not dbname or "/" in dbname:
        raise StoreUrlError(f"store {shown!r} must name one database: postgresql://user@host/dbname")
    if parts.fragment:
        raise StoreUrlError(f"store {shown!r} must not have a fragment")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - {"schema"})
    if unknown:
        raise StoreUrlError(
            f"store {shown!r}: unknown parameter {unknown[0]!r} (only schema=NAME; libpq's "
            "environment variables such as PGSSLMODE set the rest)")
    schema = query.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_RE.fullmatch(schema):
        raise StoreUrlError(
            f"store {shown!r}: schema {schema!r} must be 1-57 of a-z, 0-9 and _ "
            "(not starting with a digit)")
    password = None if parts.password is None else unquote(parts.password)
    return PgLocation(host=parts.hostname, port=port or DEFAULT_PORT, user=user,
                      password=password, dbname=dbname, schema=schema)


def views_location(store: str) -> str:
    """The views of the store `store` when no views location is set: the SQLite file next to
    it (`<store without suffix>.views.db`), or the PostgreSQL schema `<schema>_views`."""
    if is_postgres(store):
        location = parse_postgres(store)
        return location.url(location.views_schema)
    root, _ = os.path.splitext(store)
    return root + ".views.db"


def pg_connect(location: PgLocation, *, readonly: bool = False,
               autocommit: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
    """A new connection to `location` (its schema on the search path)."""
    import psycopg  # noqa: PLC0415 -- only for a PostgreSQL store

    return psycopg.connect(autocommit=autocommit, **location.connect_kwargs(readonly=readonly))


class LiveConnection:
    """A PostgreSQL connection that is opened again, at its next use, once it was lost (the
    server restarted, the network dropped it): the statement that found it lost raised, so a
    transaction in progress never silently goes on in the new one. `configure` runs on
    every new connection."""

    def __init__(self, location: PgLocation, *, readonly: bool = False,
                 configure: Callable[[Any], None] | None = None) -> None:
        self._location = location
        self._readonly = readonly
        self._configure = configure
        self._db: Any = None
        self.live()

    def live(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, a new one when the last was lost."""
        db = self._db
        if db is None or db.closed or db.broken:
            db = pg_connect(self._location, readonly=self._readonly)
            if self._configure is not None:
                self._configure(db)
            self._db = db
        return db  # type: ignore[no-any-return]  # psycopg's

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor[tuple[Any, ...]]:
        return self.live().execute(query, params)

    def cursor(self, name: str = "") -> Any:
        return self.live().cursor(name) if name else self.live().cursor()

    def pipeline(self) -> Any:
        return self.live().pipeline()

    @property
    def closed(self) -> bool:
        return self._db is None or bool(self._db.closed)

    @property
    def info(self) -> Any:
        return self.live().info

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# The SQL that differs ---------------------------------------------------------------------

_DDL_TYPES: Final = ((re.compile(r"\bINTEGER\b"), "BIGINT"),
                     (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
                     (re.compile(r"\bBLOB\b"), "BYTEA"),
                     (re.compile(r"\s*\bWITHOUT ROWID\b"), ""))


class Dialect:
    """What differs between the engines in the SQL this project writes (SQLite's, as is)."""

    name: str = "sqlite"
    #: Begins a transaction that writes (SQLite takes the write lock at once).
    begin_write: str = "BEGIN IMMEDIATE"
    #: Begins a read transaction in which every query sees one state of the database.
    begin_snapshot: str = "BEGIN"

    def errors(self) -> tuple[type[BaseException], ...]:
        """What the driver raises for a fault of the database (a views file unreadable)."""
        return (sqlite3.Error,)

    def q(self, sql: str) -> str:
        """`sql`, written with `?` placeholders, as this engine takes it."""
        return sql

    def upsert(self, table: str, columns: tuple[str, ...], key: str,
               source: str | None = None) -> str:
        """Insert a row of `columns` into `table`, replacing the row with the same `key`:
        from `VALUES (?, ...)`, or from `source` (a SELECT giving every column)."""
        values = source or f"VALUES ({','.join('?' * len(columns))})"
        return self.q(f"INSERT OR REPLACE INTO {table} {values}")

    def ddl(self, script: str) -> list[str]:
        """The statements of `script` (SQLite's CREATE TABLE/INDEX ... IF NOT EXISTS)."""
        return [s.strip() for s in script.split(";") if s.strip()]

    def in_transaction(self, db: Any) -> bool:
        return bool(db.in_transaction)


class PostgresDialect(Dialect):
    """PostgreSQL's: `%s`, ON CONFLICT, BIGINT and DOUBLE PRECISION columns, snapshots in
    REPEATABLE READ."""

    name = "postgresql"
    begin_write = "BEGIN"
    begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self) -> None:
        self._translated: dict[str, str] = {}

    def errors(self) -> tuple[type[BaseException], ...]:
        import psycopg  # noqa: PLC0415 -- only for a PostgreSQL store

        return (psycopg.Error,)

    def q(self, sql: str) -> str:
        found = self._translated.get(sql)
        if found is None:
            found = sql.replace("%", "%%").replace("?", "%s")
            self._translated[sql] = found
        return found

    def upsert(self, table: str, columns: tuple[str, ...], key: str,
               source: str | None = None) -> str:
        values = source or f"VALUES ({','.join('?' * len(columns))})"
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        return self.q(f"INSERT INTO {table} ({', '.join(columns)}) {values} "
                      f"ON CONFLICT ({key}) {action}")

    def ddl(self, script: str) -> list[str]:
        statements = []
        for statement in super().ddl(script):
            for pattern, replacement in _DDL_TYPES:
                statement = pattern.sub(replacement, statement)  # noqa: PLW2901 -- adapted in place
            statements.append(statement)
        return statements

    def in_transaction(self, db: Any) -> bool:
        from psycopg.pq import TransactionStatus  # noqa: PLC0415 -- idem

        return bool(db.info.transaction_status != TransactionStatus.IDLE)


SQLITE: Final = Dialect()
POSTGRES: Final = PostgresDialect()


def dialect_of(store: str) -> Dialect:
    """The dialect of the store (or views location) `store`."""
    return POSTGRES if is_postgres(store) else SQLITE


def psycopg_loaded() -> Any:
    """The psycopg module when something imported it already (else None): for code that
    classifies errors without importing the driver."""
    return sys.modules.get("psycopg")
