"""A site made by `att-jm setup` and its broker, started exactly as `./run.sh` starts them:
the same Python set-up code writes `var/` (users, secrets, ACL, plugin, TLS, broker config,
att-jm.toml) and mosquitto runs from `var/broker/mosquitto.conf` unchanged."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from att_jm.site.broker import WS_PORT_VARIABLE
from att_jm.site.local import (
    SetupResult,
    Site,
    read_settings,
    reload_broker,
    setup,
    sync_broker_files,
)
from helpers.broker import Broker, free_port


@contextmanager
def _ws_port_variable(port: int | None) -> Iterator[None]:
    """ATT_JM_BROKER_WS_PORT as `./run.sh` sets it for `att-jm setup` (unset for None), and
    as it was afterwards."""
    before = os.environ.pop(WS_PORT_VARIABLE, None)
    if port is not None:
        os.environ[WS_PORT_VARIABLE] = str(port)
    try:
        yield
    finally:
        os.environ.pop(WS_PORT_VARIABLE, None)
        if before is not None:
            os.environ[WS_PORT_VARIABLE] = before


class SecureSite:
    """`var/` under `directory`, on free loopback ports, and its broker (not started).

    `websocket=True`: the broker also has the browser console's WebSocket listener, on
    `ws_port` (made as `./run.sh` has `att-jm setup` make it)."""

    def __init__(self, directory: Path, scripts: Path, *, websocket: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls_port = free_port()
        while self.tls_port == self.port:
            self.tls_port = free_port()
        self.ws_port: int | None = None
        if websocket:
            self.ws_port = free_port()
            while self.ws_port in (self.port, self.tls_port):
                self.ws_port = free_port()
        with _ws_port_variable(self.ws_port):
            self.result: SetupResult = setup(
                directory / "var", port=self.port, tls_port=self.tls_port, scripts=scripts,
                store=directory / "store" / "att-jm.db",
            )
        self.site: Site = self.result.site
        self.broker = Broker(directory / "broker-run", port=self.port,
                             config=self.site.broker_conf,
                             log_path=self.site.broker / "mosquitto.log")

    @property
    def ws_url(self) -> str:
        """The WebSocket listener's URL (a site made with `websocket=True`)."""
        if self.ws_port is None:
            raise ValueError("this site's broker has no WebSocket listener")
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def config(self) -> Path:
        return self.site.config

    def password(self, user: str) -> str:
        return self.site.registry().password(user)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """`mqtt://user:password@127.0.0.1:port` (the user's own password unless given)."""
        if user is None:
            return f"mqtt://127.0.0.1:{self.port}"
        secret = self.password(user) if password is None else password
        return f"mqtt://{user}:{secret}@127.0.0.1:{self.port}"

    def add_user(self, name: str, role: str) -> str:
        """Add a site user as `att-jm users add` does: the registry (`var/users.json`, the
        roles the service reads), the broker's password file and ACL made again, and a
        running broker told to read them (SIGHUP). The new user's password."""
        registry = self.site.registry()
        password = registry.add(name, role)
        registry.save()
        sync_broker_files(self.site, str(read_settings(self.site).get("topic_prefix", "att")))
        if self.broker.running:
            reload_broker(self.site)
        return password
