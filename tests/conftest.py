"""Fixtures shared by every test: real brokers, MQTT test clients and the real service process.

- `broker`: a fresh mosquitto (shipped config, free loopback port), killed at teardown.
- `broker_factory(allow_anonymous=..., password_file=..., acl_file=..., extra_config=...)`.
- `mqtt`: a connected `TestClient` on `broker`.
- `scripts_dir`: a temp copy of `scripts/` and `tests/scripts/`, executable.
- `service_factory(prefix=..., client_id=..., store=..., extra_args=..., start=True)`: the real
  `python -m att_jm serve` on `broker`; every one still running is stopped at teardown, and a
  non-zero exit code on that SIGTERM fails the test. Its store is `store_location`.
- The store's engine: `store_backend` ("sqlite" unless a test or module is parametrized with
  `BOTH_BACKENDS` from helpers.postgres), `store_location` (an SQLite path in the test's
  folder, or a fresh PostgreSQL schema's URL), `postgres` (the session's server:
  helpers/postgres.py). A test marked `sqlite_only` (it works on the SQLite file itself) has
  no PostgreSQL variant.

What runs on both engines: the store-level integration tests (the JobManager over the store,
retries, the write index, the views and their payloads, rebuild, the writer's batches, the
store's caps, seals, verify and its tampering, log, replay, trace, backtest, export/import and
the audit verbs in-process; a module whose store is built once per module parametrizes that
fixture with BACKENDS), the relay's main paths (test_relay), and of the end-to-end scenarios
the ones where the store matters: the service end to end (test_jobs_run: two jobs, a failure
re-executed, execute-now and queue.remove), retries and the relay's events stream
(test_retries_and_events), Auto Cleanup and idempotency (test_cleanup_and_idempotency),
SIGKILL mid-burst, restart and rebuild (test_restart_and_recovery), every audit verb against
the running service (test_audit), and trace.get (test_trace_get); views.get is in all of them.
The rest (the broker, security, scripts, the console, the CLI, metrics, hypothesis runs, the
SQLite file's own checkpoints) does not depend on the engine, or works on the SQLite file
itself, and runs on SQLite only, which keeps the suite's time reasonable. Fail-over and the
forced race run on PostgreSQL only (they need the lease).

Without mosquitto, tests that need it are skipped, except under CI=true where they fail; the
same for PostgreSQL (the tests start a cluster of their own when none is reachable).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from helpers.broker import Broker, BrokerFactory
from helpers.mqtt import TestClient
from helpers.postgres import BACKENDS, POSTGRESQL, NoPostgres, PostgresServer
from helpers.service import Service, ServiceFactory, populate_scripts_dir
from helpers.site import SecureSite
from helpers.store import store_for

from att_jm import config
from att_jm.config import Settings

TESTS_DIR = Path(__file__).resolve().parent
# No test reads the settings of a site this checkout may run (`var/att-jm.toml`): every
# process a test starts gets exactly the settings the test gives it.
os.environ["ATT_JM_CONFIG"] = "none"


@pytest.fixture(autouse=True, scope="session")
def _script_user() -> None:
    """Tests as root (CI) run scripts as the service does: as its unprivileged script user,
    which `att-jm serve` creates at start; in-process writers need it to exist already."""
    if os.geteuid() == 0:
        from att_jm.runner import ensure_script_user  # noqa: PLC0415 -- root only

        ensure_script_user(Settings().script_user)


@pytest.fixture(autouse=True)
def _no_site_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_settings` with an environment of a test's own never finds the site's file."""
    monkeypatch.setattr(config, "SITE_CONFIG", Path("var") / "no-site-settings-in-tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: works on the SQLite store file itself (no PostgreSQL variant)")
    config.addinivalue_line(
        "markers", "both_backends: runs on an SQLite and on a PostgreSQL store (when the test "
        "uses the store: the store_backend fixture)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A `both_backends` test that uses the store runs once per engine."""
    if ("store_backend" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("both_backends") is not None):
        metafunc.parametrize("store_backend", BACKENDS, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/e2e/ carry the `e2e` marker (`pytest -m "not e2e"` for a quick run);
    the PostgreSQL variant of a `sqlite_only` test is deselected."""
    e2e_dir = TESTS_DIR / "e2e"
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if e2e_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and POSTGRESQL in callspec.params.values()
        if on_postgres and item.get_closest_marker("sqlite_only") is not None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (helpers/postgres.py); skipped without one, except
    under CI=true."""
    try:
        server = PostgresServer.find()
    except NoPostgres as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {error}")
        pytest.skip(str(error))
    yield server
    server.close()


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """"sqlite", or what the test is parametrized with (`BOTH_BACKENDS`)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_location(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The test's store: `<tmp>/store/att-jm.db`, or a fresh PostgreSQL schema's URL."""
    return store_for(request, store_backend, tmp_path / "store")


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    brokers: list[Broker] = []

    def make(
        *,
        allow_anonymous: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        extra_config: Iterable[str] = (),
        start: bool = True,
    ) -> Broker:
        broker = Broker(
            tmp_path / f"broker-{len(brokers) + 1}",
            allow_anonymous=allow_anonymous,
            password_file=password_file,
            acl_file=acl_file,
            extra_config=extra_config,
        )
        brokers.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in brokers:
        broker.kill()  # its directory is thrown away; SIGTERM would cost ~0.1 s per broker


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> Broker:
    return broker_factory()


@pytest.fixture
def mqtt(broker: Broker) -> Iterator[TestClient]:
    with TestClient(broker.url) as client:
        yield client


@pytest.fixture
def scripts_dir(tmp_path: Path) -> Path:
    return populate_scripts_dir(tmp_path / "scripts")


@pytest.fixture
def service_factory(broker: Broker, scripts_dir: Path, tmp_path: Path,
                    store_location: str) -> Iterator[ServiceFactory]:
    default_broker, default_scripts_dir = broker, scripts_dir
    services: list[Service] = []

    def make(
        *,
        broker: Broker | None = None,
        prefix: str = "att",
        client_id: str = "att-job-manager",
        store: Path | str | None = None,
        scripts_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        mqtt_url: str | None = None,
        start: bool = True,
    ) -> Service:
        number = len(services) + 1
        directory = tmp_path / f"service-{number}"
        directory.mkdir()
        service = Service(
            broker or default_broker,
            store=store or store_location,
            scripts_dir=scripts_dir or default_scripts_dir,
            log_path=directory / "att-jm.log",
            prefix=prefix,
            client_id=client_id,
            extra_args=extra_args,
            env=env,
            cwd=directory,
            mqtt_url=mqtt_url,
        )
        services.append(service)
        return service.start() if start else service

    yield make
    _stop_all(services)


def _stop_all(services: list[Service]) -> None:
    """Stop every running service; report the first unclean stop after all are down."""
    failures: list[BaseException] = []
    for service in services:
        if not service.running:
            continue
        try:
            service.stop()
        except (AssertionError, OSError, RuntimeError, pytest.fail.Exception) as error:
            failures.append(error)
            service.kill()
    if failures:
        raise failures[0]


@pytest.fixture
def secure_site(tmp_path: Path, scripts_dir: Path) -> Iterator[SecureSite]:
    """A site made by `att-jm setup` with its broker running, as `./run.sh` starts them."""
    site = SecureSite(tmp_path / "site", scripts_dir)
    site.broker.start()
    yield site
    site.broker.kill()


@pytest.fixture
def secure_service(
    secure_site: SecureSite, scripts_dir: Path, tmp_path: Path
) -> Iterator[Service]:
    """The real service on the secure site, started with the site's settings file
    (credentials, TLS CA, roles) as `./run.sh` runs it; the test watches its status as the
    auditor."""
    directory = tmp_path / "secure-service"
    directory.mkdir()
    service = Service(
        secure_site.broker, store=secure_site.directory / "store" / "att-jm.db",
        scripts_dir=scripts_dir, log_path=directory / "att-jm.log", cwd=directory,
        mqtt_url=secure_site.url(), watch_url=secure_site.url("auditor"),
        extra_args=["--config", str(secure_site.config)],
    )
    yield service.start()
    _stop_all([service])
