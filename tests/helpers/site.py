"""A site made by `att-jm setup` and its broker, started exactly as `./run.sh` starts them:
the same Python set-up code writes `var/` (users, secrets, ACL, plugin, TLS, broker config,
att-jm.toml) and mosquitto runs from `var/broker/mosquitto.conf` unchanged."""

from __future__ import annotations

from pathlib import Path

from att_jm.site.local import (
    SetupResult,
    Site,
    read_settings,
    reload_broker,
    setup,
    sync_broker_files,
)
from helpers.broker import Broker, free_port


class SecureSite:
    """`var/` under `directory`, on free loopback ports, and its broker (not started)."""

    def __init__(self, directory: Path, scripts: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls_port = free_port()
        while self.tls_port == self.port:
            self.tls_port = free_port()
        self.result: SetupResult = setup(
            directory / "var", port=self.port, tls_port=self.tls_port, scripts=scripts,
            store=directory / "store" / "att-jm.db",
        )
        self.site: Site = self.result.site
        self.broker = Broker(directory / "broker-run", port=self.port,
                             config=self.site.broker_conf,
                             log_path=self.site.broker / "mosquitto.log")

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
