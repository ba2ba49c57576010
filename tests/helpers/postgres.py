"""A PostgreSQL server for the tests, and a fresh store (a schema of its own) per test.

`PostgresServer.find()` takes, in order: the server named by `ATT_JM_TEST_POSTGRES` (a URL
of a role that may create databases, e.g. `postgresql://postgres@127.0.0.1:5432/postgres`;
the word `own`: a cluster of the tests' own even when another server answers), the one on
127.0.0.1:5432 (user postgres, trust), else a cluster of its own: `initdb` into a
temporary folder, `pg_ctl start` on a free loopback port (Debian's
/usr/lib/postgresql/*/bin, installed by `./test.sh` when missing: tools/setup.sh
`ensure_postgres`; as root the cluster runs as the `postgres` user), stopped and removed at
the end of the session. Either way the session works in a database of its own
(`att_jm_tests_<pid>`), dropped at its end; each test's store is a schema of it
(`new_store()`: the URL `...?schema=t<n>`; its views live in `t<n>_views`), dropped after
the test.

Without any of those the PostgreSQL variants of the tests are skipped, except under CI=true
where that is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)
#: Run a test (or a module: `pytestmark = BOTH_BACKENDS`) on each engine, when it uses the
#: store (the `store_backend` fixture, or `store_location` and the fixtures built on it);
#: tests/conftest.py `pytest_generate_tests` parametrizes them.
BOTH_BACKENDS = pytest.mark.both_backends
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENV_URL = "ATT_JM_TEST_POSTGRES"
OWN = "own"  # ATT_JM_TEST_POSTGRES=own: a cluster of the tests' own, whatever else answers


class NoPostgres(Exception):
    """No server reachable and none can be started here."""


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as db:
            db.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binaries() -> Path | None:
    """The folder of Debian's (newest) initdb and pg_ctl, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return None if initdb is None else Path(initdb).parent


@dataclass
class Cluster:
    """A cluster of the tests' own: initdb'd in `directory`, listening on `port`."""

    bin: Path
    directory: Path
    port: int
    user: str | None  # the system user it runs as (None: the tests' own)

    def _run(self, *argv: str, timeout: float = 60) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs["user"] = self.user
        # in the cluster's folder: a checkout under /root is no working directory for postgres
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=timeout,
                           cwd=self.directory, **kwargs)
        except subprocess.CalledProcessError as error:
            log = self.directory / "server.log"
            raise NoPostgres(
                f"{Path(argv[0]).name} failed (exit {error.returncode}): "
                f"{error.stderr.decode(errors='replace').strip()}"
                + (f"; server log: {log.read_text(errors='replace')[-2000:]}"
                   if log.exists() else "")) from None

    @classmethod
    def start(cls) -> Cluster:
        binaries = _binaries()
        if binaries is None:
            raise NoPostgres("no PostgreSQL server reachable and no initdb to start one "
                             "(Debian: apt-get install postgresql; ./test.sh does it)")
        user = None
        directory = Path(tempfile.mkdtemp(prefix="att-jm-pg-"))
        if os.geteuid() == 0:  # initdb refuses root: the cluster runs as postgres
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise NoPostgres("running as root without a postgres user to run a "
                                 "cluster as") from None
            user = "postgres"
            os.chown(directory, account.pw_uid, account.pw_gid)
        cluster = cls(binaries, directory, _free_port(), user)
        data = directory / "data"
        options = (f"-p {cluster.port} -k {directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=300")
        try:
            cluster._run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
                         "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
            cluster._run(str(binaries / "pg_ctl"), "-D", str(data), "-l",
                         str(directory / "server.log"), "-o", options, "-w", "-t", "60",
                         "start")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError, NoPostgres):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m",
                      "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PostgresServer:
    """The tests' server: a database for the session, a schema (a store) per test."""

    admin_url: str  # a database of the server to create the session's database from
    cluster: Cluster | None = None
    database: str = field(default_factory=lambda: f"att_jm_tests_{os.getpid()}")
    _count: int = 0

    @classmethod
    def find(cls) -> PostgresServer:
        named = os.environ.get(ENV_URL)
        if named and named != OWN:
            if not _reachable(named):
                raise NoPostgres(f"{ENV_URL} names a server that cannot be reached")
            server = cls(named)
        elif named != OWN and _reachable(DEFAULT_URL):
            server = cls(DEFAULT_URL)
        else:
            cluster = Cluster.start()
            server = cls(cluster.url, cluster)
        server._create_database()
        return server

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True)

    def _create_database(self) -> None:
        with self._admin() as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.database)))
            db.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(self.database)))
            # The tests prove behaviour, not durability: commits do not wait for the disk
            # (a server crash is no scenario of theirs; bench/ measures with the defaults).
            db.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                sql.Identifier(self.database)))

    @property
    def url(self) -> str:
        """The session's database (without a schema)."""
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{self.database}"

    def new_store(self) -> str:
        """The URL of a fresh store: a schema of the session's database nobody used yet."""
        self._count += 1
        return f"{self.url}?schema=t{os.getpid()}_{self._count}"

    def connect(self) -> psycopg.Connection[Any]:
        """A connection (autocommit) to the session's database."""
        return psycopg.connect(self.url, autocommit=True)

    def drop_store(self, url: str) -> None:
        """Drop a test's store and its views (what holds a lock on them is cut off)."""
        schema = url.rsplit("schema=", 1)[1]
        with self.connect() as db:
            db.execute("SET lock_timeout = '3s'")
            for name in (schema, f"{schema}_views"):
                for _ in range(3):
                    try:
                        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                            sql.Identifier(name)))
                        break
                    except psycopg.errors.LockNotAvailable:
                        self.terminate_others()
                        time.sleep(0.1)

    def terminate_others(self) -> None:
        """End every other session on the session's database (a process a test left)."""
        with self.connect() as db:
            db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error), self._admin() as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.database)))
        if self.cluster is not None:
            self.cluster.stop()


@contextlib.contextmanager
def session_server() -> Iterator[PostgresServer]:
    server = PostgresServer.find()
    try:
        yield server
    finally:
        server.close()
