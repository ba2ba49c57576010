"""Settings of the service: defaults < TOML file < environment (ATT_JM_*) < command-line flags.

Decisions where the contract is silent:
- An environment variable set to the empty string counts as not set (`ATT_JM_STORE=` in a
  compose file does not blank the store path).
- `log_format` also accepts `auto` (= None: console on a terminal, JSON otherwise).
- The topic prefix must not start with `$` (brokers reserve those topics) nor contain empty levels.
- Every number has a range (see `RANGES` and docs/operations.md, "Ranges and caps"): a value
  outside it is refused at start with the range in the message. `session_expiry_seconds`
  fits MQTT's 4 bytes; `max_payload_bytes` stays well under the 2 MiB cap of one stored event.
- Error messages never repeat a password from `mqtt_url` or `store`.
- `store` is a path (SQLite) or `postgresql://user[:password]@host[:port]/dbname[?schema=NAME]`
  (`att_jm.log.backend`), validated here; `store_shown` is it without its password.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import SplitResult, unquote, urlsplit

from att_jm.errors import AttJmError
from att_jm.log.backend import (
    StoreUrlError,
    is_postgres,
    parse_postgres,
    redact,
    views_location,
)

ENV_PREFIX: Final = "ATT_JM_"
CONFIG_ENV: Final = "ATT_JM_CONFIG"
DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}
LOG_FORMATS: Final = ("json", "console")
MAX_MQTT_PACKET: Final = 268_435_455  # the largest packet MQTT can describe
MAX_FOUR_BYTE: Final = 0xFFFF_FFFF
#: setting -> (minimum, maximum); the numbers a deployment could want.
RANGES: Final[dict[str, tuple[float, float]]] = {
    "max_payload_bytes": (1024, 1024 * 1024),
    "view_rows": (1, 10_000),
    "view_max_bytes": (64 * 1024, 16 * 1024 * 1024),
    "session_expiry_seconds": (1, MAX_FOUR_BYTE),
    "seal_every_events": (1, 10_000),
    "seal_every_seconds": (0.1, 86_400),
    "max_batch": (1, 10_000),
    "command_rate": (0.1, 100_000),
    "command_burst": (1, 1_000_000),
    "takeover_seconds": (2, 3600),
    "relay_nice": (0, 19),
}


class ConfigError(AttJmError):
    """A setting is missing, malformed or out of range; the message says which and why."""


@dataclass(frozen=True)
class MqttEndpoint:
    """Where and how to reach the broker."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    tls_ca: str | None = None  # the CA that signed the broker's certificate (None: system's)
    tls_cert: str | None = None  # a client certificate and its key, when the broker wants one
    tls_key: str | None = None


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, safe to show in messages and logs."""
    return redact(url)


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """`mqtt://[user[:password]@]host[:port]` (`mqtts://` = TLS); ports default to 1883 / 8883."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"mqtt_url {shown!r} is not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"mqtt_url {shown!r} must start with mqtt:// or mqtts:// (TLS), "
            "e.g. mqtt://127.0.0.1:1883"
        )
    _check_url_rest(parts, shown)
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    if username == "":
        raise ConfigError(f"mqtt_url {shown!r} has an empty user name")
    return MqttEndpoint(
        host=str(parts.hostname),
        port=DEFAULT_PORTS[scheme] if port is None else port,
        username=username,
        password=password,
        tls=scheme == "mqtts",
    )


def _check_url_rest(parts: SplitResult, shown: str) -> None:
    if not parts.hostname:
        raise ConfigError(f"mqtt_url {shown!r} has no host")
    if parts.port == 0:
        raise ConfigError(f"mqtt_url {shown!r}: port must be 1..65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"mqtt_url {shown!r} must not have a path, query or fragment")


@dataclass(frozen=True)
class Settings:
    """The service's settings, validated on construction (ConfigError)."""

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    store: str = "./var/att-jm.db"
    scripts: str = "./scripts"
    topic_prefix: str = "att"
    client_id: str = "att-job-manager"
    log_format: str | None = None
    max_payload_bytes: int = 256 * 1024
    view_rows: int = 1000
    view_max_bytes: int = 1024 * 1024  # largest view message (and views.get page), in bytes
    session_expiry_seconds: int = 7 * 24 * 3600
    views_db: str | None = None
    seal_every_events: int = 1000
    seal_every_seconds: float = 60.0
    max_batch: int = 5000  # most inbound messages committed in one transaction (1 = no batching)
    mqtt_username: str | None = None  # when mqtt_url has none
    mqtt_password_file: str | None = None  # a file holding the password (else secrets_dir)
    secrets_dir: str | None = None  # NAME.password per user (att-jm setup makes them)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    users_file: str | None = None  # user -> role: the service refuses commands a role may not send
    script_user: str = "att-jm-script"  # who scripts run as when the service runs as root
    command_rate: float = 50.0  # commands per second per actor, steady
    command_burst: int = 200  # commands an actor may send at once above the steady rate
    #: false: paho's documented paths only (slower, for a paho release that breaks the fast
    #: paths; see att_jm/mqtt/fast_paths.py, which also refuses them by itself when it must)
    mqtt_fast_paths: bool = True
    #: This instance's name among several on one PostgreSQL store (its status topic and
    #: client id); None: the host's name (att_jm/service/lease.py, docs/deployment.md).
    instance: str | None = None
    #: PostgreSQL stores: the bound on a fail-over to a standby instance (the lease lasts 70%).
    takeover_seconds: float = 10.0
    #: true: the writer stores event and snapshot states compact (`att_jm.log.codec`, about
    #: half the bytes, for a few microseconds per event); false: plain JSON, as before. Every
    #: reader reads both forms, so a store may be switched either way (ADR 0002).
    compact_states: bool = False
    #: The relay's niceness during a burst (nice(2): 0 = the writer's priority, 19 = the
    #: lowest). When the cores are all busy, the writer (commit, then acknowledge) goes first
    #: and the events and views it stored are published once a core is free: still all of
    #: them, in order (19 rather than 10: bench/README.md, session 7).
    relay_nice: int = 19
    #: Where automatic archival (the `archive` setting, set over MQTT) writes its archive
    #: files; None: `archives/` next to an SQLite store file. Never settable over MQTT. A
    #: PostgreSQL store needs it set, else automatic archival is refused (a warning).
    archive_dir: str | None = None

    def __post_init__(self) -> None:
        for name in SETTING_NAMES:
            _VALIDATORS[name](name, getattr(self, name))

    @property
    def mqtt(self) -> MqttEndpoint:
        """The broker endpoint: the URL, with the user and password it lacks taken from
        `mqtt_username` and `mqtt_password_file` (or `secrets_dir/USER.password`)."""
        return self.endpoint_for(self.mqtt_username)

    def endpoint_for(self, username: str | None) -> MqttEndpoint:
        """The broker endpoint as user `username` (None: the URL's own user, if any)."""
        endpoint = parse_mqtt_url(self.mqtt_url)
        user = endpoint.username or username
        password = endpoint.password
        if user is not None and password is None:
            password = self.password_of(user)
        return replace(endpoint, username=user, password=password, tls_ca=self.tls_ca_file,
                       tls_cert=self.tls_cert_file, tls_key=self.tls_key_file)

    def password_of(self, user: str) -> str | None:
        """The password of `user`: `mqtt_password_file` for the service's own user, else
        `secrets_dir/USER.password`; None when there is no such file."""
        candidates = []
        if self.mqtt_password_file is not None and user == self.mqtt_username:
            candidates.append(Path(self.mqtt_password_file))
        if self.secrets_dir is not None:
            candidates.append(Path(self.secrets_dir) / f"{user}.password")
        for path in candidates:
            try:
                return path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                continue
            except OSError as error:
                raise ConfigError(f"cannot read the password file {path}: {error.strerror}") \
                    from None
        if self.mqtt_password_file is not None and user == self.mqtt_username:
            raise ConfigError(f"mqtt_password_file {self.mqtt_password_file} does not exist")
        return None

    def views_path(self) -> str:
        """The projections database: `views_db`, else the store path with suffix `.views.db`
        (a PostgreSQL store: its schema `<schema>_views`, as a URL)."""
        if self.views_db is not None:
            return self.views_db
        return views_location(self.store)

    def archive_directory(self) -> str | None:
        """Where automatic archival writes: `archive_dir`, else `archives/` next to an SQLite
        store file; None on a PostgreSQL store without `archive_dir` (refused)."""
        if self.archive_dir is not None:
            return self.archive_dir
        if self.postgres:
            return None
        return str(Path(self.store).parent / "archives")

    @property
    def store_shown(self) -> str:
        """The store as logs and messages may show it (a URL without its password)."""
        return redact(self.store)

    @property
    def postgres(self) -> bool:
        """Whether the store is a PostgreSQL database (else an SQLite file)."""
        return is_postgres(self.store)


SETTING_NAMES: Final[tuple[str, ...]] = tuple(field.name for field in fields(Settings))


# Validation ------------------------------------------------------------------------------


def _check_url(name: str, value: Any) -> None:
    _check_text(name, value)
    parse_mqtt_url(value)


def _check_store(name: str, value: Any) -> None:
    """A path, or a PostgreSQL URL that parses (the message never shows its password)."""
    if isinstance(value, str) and "://" in value:
        if not is_postgres(value):
            raise ConfigError(f"{name} {redact(value)!r} must be a file path or a "
                              "postgresql:// URL")
        if "\x00" in value or len(value) > 4096:
            raise ConfigError(f"{name} must be at most 4096 characters, without NUL")
        try:
            parse_postgres(value)
        except StoreUrlError as error:
            raise ConfigError(str(error)) from None
        return
    _check_text(name, value)


def _check_views(name: str, value: Any) -> None:
    if value is not None:
        _check_store(name, value)


#: Longest text settings, in characters (paths and URLs: PATH_MAX).
_TEXT_MAX: Final = {"client_id": 128, "topic_prefix": 128}


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string")
    if "\x00" in value:
        raise ConfigError(f"{name} must not contain NUL")
    limit = _TEXT_MAX.get(name, 4096)
    if len(value) > limit:
        raise ConfigError(f"{name} must be at most {limit} characters, not {len(value)}")


def _check_optional_text(name: str, value: Any) -> None:
    if value is not None:
        _check_text(name, value)


def _check_prefix(name: str, value: Any) -> None:
    _check_text(name, value)
    if any(c in value for c in "+#"):
        raise ConfigError(f"{name} {value!r} must not contain the wildcards '+' or '#'")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ConfigError(f"{name} {value!r} must not start or end with '/' nor have empty levels")
    if value.startswith("$"):
        raise ConfigError(f"{name} {value!r} must not start with '$' (reserved by brokers)")


_INSTANCE_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _check_instance(name: str, value: Any) -> None:
    """A topic level and the end of a client id: 1-64 of A-Z, a-z, 0-9, `_`, `.`, `-`."""
    if value is None:
        return
    if not isinstance(value, str) or not _INSTANCE_RE.fullmatch(value):
        raise ConfigError(f"{name} must be 1 to 64 of A-Z, a-z, 0-9, '_', '.', '-', "
                          f"not {value!r}")


def _check_log_format(name: str, value: Any) -> None:
    if value is not None and value not in LOG_FORMATS:
        allowed = ", ".join(LOG_FORMATS)
        raise ConfigError(f"{name} must be one of {allowed} (or auto), not {value!r}")


def _check_int(name: str, value: Any) -> None:
    low, high = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {int(low)} to {int(high)}, "
                          f"not {value!r}")


def _check_number(name: str, value: Any) -> None:
    low, high = RANGES[name]
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not low <= value <= high):  # NaN fails both comparisons
        raise ConfigError(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r}")


_VALIDATORS: Final[dict[str, Callable[[str, Any], None]]] = {
    "mqtt_url": _check_url,
    "store": _check_store,
    "scripts": _check_text,
    "topic_prefix": _check_prefix,
    "client_id": _check_text,
    "log_format": _check_log_format,
    "max_payload_bytes": _check_int,
    "view_rows": _check_int,
    "view_max_bytes": _check_int,
    "session_expiry_seconds": _check_int,
    "views_db": _check_views,
    "seal_every_events": _check_int,
    "seal_every_seconds": _check_number,
    "max_batch": _check_int,
    "mqtt_username": _check_optional_text,
    "mqtt_password_file": _check_optional_text,
    "secrets_dir": _check_optional_text,
    "tls_ca_file": _check_optional_text,
    "tls_cert_file": _check_optional_text,
    "tls_key_file": _check_optional_text,
    "users_file": _check_optional_text,
    "script_user": _check_text,
    "command_rate": _check_number,
    "command_burst": _check_int,
    "mqtt_fast_paths": _check_bool,
    "instance": _check_instance,
    "takeover_seconds": _check_number,
    "compact_states": _check_bool,
    "relay_nice": _check_int,
    "archive_dir": _check_optional_text,
}


# Conversion ------------------------------------------------------------------------------

_INTS: Final = frozenset({"max_payload_bytes", "view_rows", "view_max_bytes",
                          "session_expiry_seconds", "seal_every_events", "max_batch",
                          "command_burst", "relay_nice"})
_FLOATS: Final = frozenset({"seal_every_seconds", "command_rate", "takeover_seconds"})
_BOOLS: Final = frozenset({"mqtt_fast_paths", "compact_states"})
TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})
_OPTIONAL: Final = frozenset({"log_format", "views_db", "mqtt_username", "mqtt_password_file",
                              "secrets_dir", "tls_ca_file", "tls_cert_file", "tls_key_file",
                              "users_file", "instance", "archive_dir"})


def convert_text(name: str, text: str) -> object:
    """The typed value of setting `name` given as text (environment, flag)."""
    value = text.strip()
    if name in _INTS:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, not {text!r}") from None
    if name in _FLOATS:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {text!r}") from None
    if name == "log_format":
        return None if value.lower() == "auto" else value.lower()
    if name in _BOOLS:
        word = value.lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ConfigError(f"{name} must be true or false (also 1/0, yes/no, on/off), "
                          f"not {text!r}")
    return text


def _convert_toml(name: str, value: object) -> object:
    if isinstance(value, str):
        return convert_text(name, value)
    if name in _FLOATS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# Sources ---------------------------------------------------------------------------------


def env_name(name: str) -> str:
    """The environment variable of setting `name`, e.g. ATT_JM_MQTT_URL."""
    return ENV_PREFIX + name.upper()


def from_environ(environ: Mapping[str, str]) -> dict[str, object]:
    """The settings given in the environment (empty values count as unset)."""
    found: dict[str, object] = {}
    for name in SETTING_NAMES:
        text = environ.get(env_name(name), "")
        if text != "":
            found[name] = convert_text(name, text)
    return found


def from_toml(path: str) -> dict[str, object]:
    """The settings in TOML file `path`; keys are `mqtt_url` or `ATT_JM_MQTT_URL` style."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except OSError as error:
        raise ConfigError(f"config file {path!r} cannot be read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path!r} is not valid TOML: {error}") from None
    return _toml_settings(document, path)


def _toml_settings(document: Mapping[str, Any], path: str) -> dict[str, object]:
    by_key = {name: name for name in SETTING_NAMES} | {env_name(n): n for n in SETTING_NAMES}
    found: dict[str, object] = {}
    for key, value in document.items():
        name = by_key.get(key)
        if name is None:
            raise ConfigError(
                f"config file {path!r}: unknown key {key!r}; known keys: {', '.join(SETTING_NAMES)}"
            )
        if name in found:
            raise ConfigError(f"config file {path!r}: {name} is given twice")
        found[name] = _convert_toml(name, value)
    return found


def from_flags(flags: Mapping[str, object]) -> dict[str, object]:
    """The settings given as flags: keys are setting names, None means not given."""
    found: dict[str, object] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key not in SETTING_NAMES:
            raise ConfigError(f"unknown setting {key!r}")
        found[key] = convert_text(key, value) if isinstance(value, str) else value
    return found


#: Where `att-jm setup` writes the site's settings, relative to the checkout.
SITE_CONFIG: Final = Path("var") / "att-jm.toml"
#: The checkout this package runs from (an editable install: `pip install -e .`).
CHECKOUT: Final = Path(__file__).resolve().parents[1]


def find_config(environ: Mapping[str, str], cwd: Path | None = None) -> str | None:
    """The settings file to read when none is named: ATT_JM_CONFIG (`none`: no file at all),
    else `var/att-jm.toml` in the working directory or the nearest parent that has one, else
    the one of the checkout this package runs from (so every verb finds the site's settings
    from anywhere). None when there is none."""
    named = environ.get(CONFIG_ENV, "")
    if named:
        return None if named.lower() == "none" else named
    start = (cwd or Path.cwd()).resolve()
    for directory in (start, *start.parents, CHECKOUT):
        candidate = directory / SITE_CONFIG
        if candidate.is_file():
            return str(candidate)
    return None


def load_settings(
    flags: Mapping[str, object], environ: Mapping[str, str], config_file: str | None
) -> Settings:
    """Settings from flags > environment > TOML file > defaults. The file is `config_file`,
    else what `find_config` finds (ATT_JM_CONFIG, the site's `var/att-jm.toml`)."""
    path = config_file or find_config(environ)
    merged = from_toml(path) if path else {}
    merged |= from_environ(environ)
    merged |= from_flags(flags)
    return Settings(**merged)  # type: ignore[arg-type]  # values are checked in __post_init__
