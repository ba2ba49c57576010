"""`att-jm setup`: make (or bring up to date) the site under `var/`, idempotently.

On the first run it creates one user per role with a random password (`var/secrets/`, 0600)
and returns those passwords so the caller can show them once; later runs keep every user and
password and only rewrite what derives from them (the broker's password file and ACL, its
config, the settings file). `att-jm users` changes users and reloads the broker (SIGHUP).
"""

from __future__ import annotations

import os
import signal
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from att_jm.site.broker import (
    BrokerConfig,
    BrokerSetupError,
    broker_user,
    build_plugin,
    share_with_broker,
    ws_port_from_environment,
)
from att_jm.site.tls import TlsFiles, make_certificates
from att_jm.site.users import DEFAULT_USERS, Registry, write_private

SERVICE_USER: Final = "att-job-manager"
DEFAULT_PORT: Final = 1883
DEFAULT_TLS_PORT: Final = 8883


@dataclass(frozen=True)
class Site:
    """The paths of a site rooted at `var`."""

    var: Path

    @property
    def config(self) -> Path:
        return self.var / "att-jm.toml"

    @property
    def users(self) -> Path:
        return self.var / "users.json"

    @property
    def secrets(self) -> Path:
        return self.var / "secrets"

    @property
    def broker(self) -> Path:
        return self.var / "broker"

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles.under(self.var / "tls")

    @property
    def broker_conf(self) -> Path:
        return self.broker / "mosquitto.conf"

    @property
    def ws_port_file(self) -> Path:
        """The WebSocket listener's port the last set-up chose (absent: none)."""
        return self.broker / "websockets.port"

    @property
    def password_file(self) -> Path:
        return self.broker / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.broker / "acl"

    @property
    def plugin(self) -> Path:
        return self.broker / "att_jm_clientid.so"

    def registry(self) -> Registry:
        return Registry(self.users, self.secrets)


@dataclass
class SetupResult:
    """What `setup` made: the settings file, the broker's config, new users' passwords."""

    site: Site
    port: int
    tls_port: int
    new_users: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (role, pw)
    ws_port: int | None = None  # the broker's WebSocket listener (None: none)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_settings(site: Site, values: dict[str, object]) -> None:
    """`var/att-jm.toml`: the settings every verb run from the checkout reads (0600: it names
    the secrets' folder)."""
    lines = ["# Written by `att-jm setup` (./run.sh) on every start; settings given here are",
             "# overridden by ATT_JM_* variables and flags. See docs/operations.md, Settings."]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()
              if value is not None]
    write_private(site.config, "\n".join(lines) + "\n")


def read_settings(site: Site) -> dict[str, object]:
    if not site.config.exists():
        return {}
    with site.config.open("rb") as handle:
        return dict(tomllib.load(handle))


def sync_broker_files(site: Site, prefix: str) -> None:
    """The broker's password file and ACL, made again from the users' registry, readable by
    the broker's user only (it owns its folder: see `broker_user`)."""
    registry = site.registry()
    site.broker.mkdir(parents=True, exist_ok=True)
    write_private(site.password_file, registry.password_file())
    write_private(site.acl_file, registry.acl(prefix))
    owner = site.broker.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        for path in (site.password_file, site.acl_file):
            os.chown(path, owner.st_uid, owner.st_gid)


def setup(
    var: Path, *, port: int = DEFAULT_PORT, tls_port: int = DEFAULT_TLS_PORT,
    prefix: str = "att", store: Path | None = None, scripts: Path | None = None,
    host: str = "127.0.0.1", ws_port: int | None = None,
) -> SetupResult:
    """Make or refresh the site under `var`; the new users' passwords, to show once.

    `ws_port`: the broker's WebSocket listener (for the browser console): a port, 0 for none,
    None for ATT_JM_BROKER_WS_PORT when set, else what the site's last set-up chose."""
    site = Site(var.resolve())
    for directory, mode in ((site.var, 0o755), (site.secrets, 0o700), (site.broker, 0o700),
                            (site.var / "tls", 0o755)):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(mode)
    result = SetupResult(site, port, tls_port)
    registry = site.registry()
    if not registry.roles:  # a new site: one user per role
        for name, role in DEFAULT_USERS.items():
            result.new_users[name] = (role, registry.add(name, role))
    for name in list(registry.roles):  # a secret lost: a new password (the old one is gone)
        if not registry.secret_path(name).exists():
            result.new_users[name] = (registry.roles[name], registry.set_password(name))
    registry.save()
    sync_broker_files(site, prefix)
    tls = make_certificates(site.var / "tls", addresses=(host,) if host != "127.0.0.1"
                            else ("127.0.0.1",))
    build_plugin(site.plugin)
    run_as = broker_user(site.broker)
    share_with_broker([site.password_file, site.acl_file, tls.key], run_as)
    websockets = choose_ws_port(site, ws_port)
    config = BrokerConfig(
        directory=site.broker, port=port, host=host, password_file=site.password_file,
        acl_file=site.acl_file, plugin=site.plugin, tls_port=tls_port, tls_ca=tls.ca,
        tls_cert=tls.cert, tls_key=tls.key, run_as=run_as, ws_port=websockets,
    )
    if websockets is None:
        site.ws_port_file.unlink(missing_ok=True)
    else:
        site.ws_port_file.write_text(f"{websockets}\n", encoding="utf-8")
    result.ws_port = websockets
    site.broker_conf.write_text(config.text(), encoding="utf-8")
    previous = read_settings(site)
    write_settings(site, {
        "mqtt_url": f"mqtt://{host}:{port}",
        "mqtt_username": SERVICE_USER,
        "secrets_dir": str(site.secrets),
        "tls_ca_file": str(tls.ca),
        "users_file": str(site.users),
        "topic_prefix": prefix,
        "store": str(store.resolve()) if store else previous.get("store",
                                                                  str(site.var / "att-jm.db")),
        "scripts": str(scripts.resolve()) if scripts else previous.get("scripts"),
    })
    return result


def choose_ws_port(site: Site, given: int | None) -> int | None:
    """The WebSocket listener's port: `given` (0: none), else ATT_JM_BROKER_WS_PORT, else the
    site's last choice (a set-up run by hand keeps the listener `./run.sh` asked for)."""
    if given is not None:
        if not 0 <= given <= 65535:
            raise BrokerSetupError(f"the WebSocket port must be 0 (none) to 65535, not {given}")
        return given or None
    from_environment = ws_port_from_environment()
    if from_environment is not None:
        return from_environment
    try:
        text = site.ws_port_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def reload_broker(site: Site) -> bool:
    """Ask the running broker to read its password file and ACL again (SIGHUP); False when
    none runs."""
    try:
        pid = int(site.broker.joinpath("mosquitto.pid").read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True
