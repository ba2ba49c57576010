"""Users and roles: the registry (`var/users.json`), passwords, and what each role may do.

Roles (enforced by the broker's ACL, and again by the service for commands):
- `channel-manager`: publishes `P/channel-manager/notifications/#` only;
- `operator`: publishes `P/job-manager/commands/{own name}/#`; reads the views, events,
  status, seals and its own replies `P/job-manager/replies/{own name}/#`;
- `auditor`: reads the views, events, seals and status; may send `views.get` and `trace.get`
  only;
- `service`: the Job Manager itself (the writer and its relay): the only writer of views,
  events, status, seals and replies, and of each instance's status
  (`P/job-manager/instances/{instance}/status`, which operators and auditors read too);
  operators and auditors may send `views.get` and `trace.get` to any instance
  (`P/job-manager/instances/+/commands/{own name}/...`).

A user name is `[A-Za-z0-9_-]{1,64}`: no `.`, because a client id is its user's name or the
name, a `.` and anything (the broker's client-id rule, `att_jm/site/clientid.c`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import orjson

from att_jm.errors import AttJmError
from att_jm.topics import Topics

ROLES: Final = ("channel-manager", "operator", "auditor", "service")
USER_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The users a new site gets, one per role (the service's name is its MQTT client id).
DEFAULT_USERS: Final = {
    "att-job-manager": "service",
    "channel-manager": "channel-manager",
    "operator": "operator",
    "auditor": "auditor",
}
#: The commands each role may send (None: every command).
ROLE_COMMANDS: Final[dict[str, frozenset[str] | None]] = {
    "operator": None,
    "auditor": frozenset({"views.get", "trace.get"}),
    "channel-manager": frozenset(),
    "service": frozenset(),
}
PBKDF2_ITERATIONS: Final = 101  # mosquitto_passwd's default for its `$7$` (PBKDF2-SHA512)


class UsersError(AttJmError):
    """A user or role that cannot be: the message says why."""


def check_name(name: str) -> str:
    if not USER_RE.fullmatch(name):
        raise UsersError(f"user name {name!r} must match [A-Za-z0-9_-]{{1,64}}")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsersError(f"role {role!r} must be one of {', '.join(ROLES)}")
    return role


def may_send(role: str | None, command: str) -> bool:
    """Whether a user of `role` may send `command` (an unknown user may send nothing)."""
    if role is None:
        return False
    allowed = ROLE_COMMANDS.get(role, frozenset())
    return allowed is None or command in allowed


def new_password() -> str:
    """A random password: 128 bits, URL-safe text."""
    return secrets.token_urlsafe(16)


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """`password` as mosquitto's password file stores it: `$7$101$<salt>$<PBKDF2-SHA512>`."""
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return (f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


@contextmanager
def private_umask() -> Iterator[None]:
    """Files made inside are readable by their owner only."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, mode 0600, atomically (a temp file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    with private_umask():
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


class Registry:
    """`var/users.json`: user name -> role; the passwords live in `secrets/NAME.password`."""

    def __init__(self, path: Path, secrets_dir: Path) -> None:
        self.path = path
        self.secrets_dir = secrets_dir
        self.roles: dict[str, str] = {}
        if path.exists():
            loaded = orjson.loads(path.read_bytes())
            users = loaded.get("users", {}) if isinstance(loaded, dict) else {}
            self.roles = {str(name): str(entry.get("role")) for name, entry in users.items()
                          if isinstance(entry, dict)}

    def save(self) -> None:
        body = {"users": {name: {"role": role} for name, role in sorted(self.roles.items())}}
        write_private(self.path, orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")

    def secret_path(self, name: str) -> Path:
        return self.secrets_dir / f"{check_name(name)}.password"

    def password(self, name: str) -> str:
        return self.secret_path(name).read_text(encoding="utf-8").strip()

    def add(self, name: str, role: str, password: str | None = None) -> str:
        """Add user `name` with `role` and a password (random unless given); the password."""
        check_name(name)
        check_role(role)
        if name in self.roles:
            raise UsersError(f"user {name!r} exists already (role {self.roles[name]})")
        self.roles[name] = role
        return self.set_password(name, password)

    def set_password(self, name: str, password: str | None = None) -> str:
        if name not in self.roles:
            raise UsersError(f"no user {name!r}")
        password = new_password() if password is None else password
        if not password or "\n" in password or ":" in password:
            raise UsersError("a password must be one line without ':'")
        write_private(self.secret_path(name), password + "\n")
        return password

    def remove(self, name: str) -> None:
        if name not in self.roles:
            raise UsersError(f"no user {name!r}")
        del self.roles[name]
        self.secret_path(name).unlink(missing_ok=True)

    def password_file(self) -> str:
        """mosquitto's password file for every user."""
        return "".join(f"{name}:{mosquitto_hash(self.password(name))}\n"
                       for name in sorted(self.roles))

    def acl(self, prefix: str) -> str:
        """mosquitto's ACL file: each user's rights by role (everything else is denied)."""
        return acl_text(self.roles, prefix)


def acl_text(roles: Mapping[str, str], prefix: str) -> str:
    """The ACL of `roles` (user -> role) for topic prefix `prefix`."""
    lines = [
        "# Generated by att-jm from var/users.json: edit users with `att-jm users`, not here.",
        "# Everything not granted below is denied.",
    ]
    for name, role in sorted(roles.items()):
        lines += ["", f"# {role}", f"user {name}"]
        lines += _rights(Topics(prefix), role, name)
    return "\n".join(lines) + "\n"


def _rights(t: Topics, role: str, user: str) -> list[str]:
    """The ACL lines of `user` with `role` (none for a role not known)."""
    readable = [f"topic read {t.views_all}", f"topic read {t.events_all}",
                f"topic read {t.status}", f"topic read {t.seals}", f"topic read {t.instances_all}"]
    # The read commands every instance answers itself (several instances on PostgreSQL).
    instance_reads = [f"topic write {t.instance_command('+', user, name)}"
                      for name in ("views.get", "trace.get")]
    rules: dict[str, list[str]] = {
        "channel-manager": [f"topic write {t.notifications_all}"],
        "operator": [f"topic write {t.commands_all(user)}", *instance_reads,
                     f"topic read {t.replies_all(user)}", *readable],
        "auditor": [f"topic write {t.command(user, 'views.get')}",
                    f"topic write {t.command(user, 'trace.get')}", *instance_reads,
                    f"topic read {t.replies_all(user)}", *readable],
        "service": [f"topic read {t.notifications_all}",
                    f"topic read {t.commands_all()}", f"topic write {t.replies_all()}",
                    f"topic write {t.events_all}", f"topic readwrite {t.views_all}",
                    f"topic readwrite {t.status}", f"topic readwrite {t.seals}",
                    f"topic readwrite {t.instances_all}"],
    }
    return rules.get(role, [])


def load_roles(path: str | os.PathLike[str]) -> dict[str, str]:
    """user -> role of the registry at `path` (for the service's own check)."""
    loaded = orjson.loads(Path(path).read_bytes())
    users = loaded.get("users", {}) if isinstance(loaded, dict) else {}
    return {str(name): str(entry.get("role")) for name, entry in users.items()
            if isinstance(entry, dict)}


class RoleBook:
    """The roles of `var/users.json` for the service's own check, read again when the file
    changes (looked at most once a second). A file that cannot be read keeps the last roles
    read; with none read yet, nobody may send anything (fail closed)."""

    def __init__(self, path: str | os.PathLike[str], *, recheck_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self._recheck = recheck_seconds
        self._roles: dict[str, str] = {}
        self._mtime: float | None = None
        self._checked = -1e18
        self.error: str | None = None
        self._load()

    def _load(self) -> None:
        import time  # noqa: PLC0415 -- one stat a second at most

        now = time.monotonic()
        if now - self._checked < self._recheck:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                self._roles = load_roles(self.path)
                self._mtime = mtime
            self.error = None
        except (OSError, ValueError) as error:  # orjson's decode error is a ValueError
            self.error = f"{type(error).__name__}: {error}"

    def role(self, user: str) -> str | None:
        self._load()
        return self._roles.get(user)

    def may_send(self, user: str, command: str) -> bool:
        return may_send(self.role(user), command)
