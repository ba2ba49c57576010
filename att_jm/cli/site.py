"""`att-jm setup` and `att-jm users`: the local site's set-up and its users (no MQTT).

Passwords are printed once, when made (a new site's users, `users add`, `users passwd`), on
stdout only; they are kept in `var/secrets/NAME.password` (0600) for the verbs that need them,
and never logged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from att_jm.config import CHECKOUT, SITE_CONFIG, find_config

DEFAULT_VAR: Final = CHECKOUT / "var"


def add_site_commands(subparsers: Any) -> None:
    setup = subparsers.add_parser(
        "setup", help="make or refresh the local site: users, secrets, TLS, broker config",
        description="Make (first run) or refresh the site under var/: one user per role with a "
        "random password (shown once), the broker's password file, ACL, client-id plugin, "
        "TLS certificates and config, and var/att-jm.toml. Safe to run again.")
    setup.add_argument("--var", type=Path, help="the site's folder (default: the checkout's var/)")
    setup.add_argument("--port", type=int, default=1883, help="the broker's MQTT port (1883)")
    setup.add_argument("--tls-port", type=int, default=8883,
                       help="the broker's MQTT over TLS port (8883)")
    setup.add_argument("--host", default="127.0.0.1",
                       help="the address the broker listens on (127.0.0.1)")
    setup.add_argument("--store", type=Path, help="the event store (default: var/att-jm.db)")
    setup.add_argument("--scripts", type=Path, help="the scripts directory")
    setup.add_argument("--topic-prefix", default="att", help="the topic prefix (att)")
    setup.add_argument("--ws-port", type=int, default=None,
                       help="the broker's loopback WebSocket listener for the browser console "
                       "(0: none; default: ATT_JM_BROKER_WS_PORT, else the site's last choice)")
    setup.set_defaults(handler="setup")

    users = subparsers.add_parser(
        "users", help="list, add, remove users, or give one a new password",
        description="The site's users and their roles (channel-manager, operator, auditor, "
        "service). Changes reach the running broker at once (it is told to reload).")
    users.add_argument("--var", type=Path, help="the site's folder (default: the checkout's var/)")
    verbs = users.add_subparsers(dest="users_verb", required=True,
                                 metavar="{list,add,remove,passwd}", help="the sub-verb")
    verbs.add_parser("list", help="every user and its role")
    add = verbs.add_parser("add", help="add a user with a role and a random password")
    add.add_argument("name", help="user name: letters, digits, '_' and '-' (no '.')")
    add.add_argument("--role", required=True,
                     choices=("channel-manager", "operator", "auditor", "service"),
                     help="what the user may do")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from stdin instead of making a random one")
    remove = verbs.add_parser("remove", help="remove a user")
    remove.add_argument("name", help="the user to remove")
    passwd = verbs.add_parser("passwd", help="give a user a new password (random unless read)")
    passwd.add_argument("name", help="the user")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from stdin instead of making a random one")
    users.set_defaults(handler="users")


def site_var(given: Path | None) -> Path:
    """The site's folder: --var, else the one whose att-jm.toml the settings come from, else
    the checkout's var/."""
    if given is not None:
        return given
    found = find_config({})
    if found is not None and Path(found).name == SITE_CONFIG.name:
        return Path(found).parent
    return DEFAULT_VAR


def _credentials(title: str, users: dict[str, tuple[str, str]]) -> None:
    width = max(len(name) for name in users)
    print(title)
    for name, (role, password) in users.items():
        print(f"  {name:<{width}}  {role:<15}  {password}")


def run_setup(ns: argparse.Namespace) -> int:
    from att_jm.cli.common import EXIT_ERROR_REPLY, Failure  # noqa: PLC0415 -- lazy
    from att_jm.site.broker import BrokerSetupError  # noqa: PLC0415 -- lazy: the CLI starts fast
    from att_jm.site.local import setup  # noqa: PLC0415
    from att_jm.site.tls import TlsError  # noqa: PLC0415

    try:
        result = setup(site_var(ns.var), port=ns.port, tls_port=ns.tls_port, host=ns.host,
                       prefix=ns.topic_prefix, store=ns.store, scripts=ns.scripts,
                       ws_port=ns.ws_port)
    except (BrokerSetupError, TlsError) as error:
        raise Failure("setup_failed", str(error), EXIT_ERROR_REPLY) from None
    site = result.site
    print(f"site      {site.var}")
    print(f"settings  {site.config}")
    print(f"broker    mqtt://{ns.host}:{ns.port}  mqtts://{ns.host}:{ns.tls_port} "
          f"(CA {site.tls.ca})" + ("" if result.ws_port is None
                                   else f"  ws://127.0.0.1:{result.ws_port}"))
    if result.new_users:
        _credentials("new users (passwords shown once; kept 0600 in "
                     f"{site.secrets}/NAME.password):", result.new_users)
    return 0


def _password(ns: argparse.Namespace) -> str | None:
    if not ns.password_stdin:
        return None
    return sys.stdin.readline().rstrip("\n")


def run_users(ns: argparse.Namespace) -> int:
    from att_jm.cli.common import UsageError  # noqa: PLC0415 -- lazy
    from att_jm.site.users import UsersError  # noqa: PLC0415 -- lazy: the CLI starts fast

    try:
        return _change_users(ns)
    except UsersError as error:  # e.g. no user 'x', a bad name: nothing was changed
        raise UsageError(str(error)) from None


def _change_users(ns: argparse.Namespace) -> int:
    from att_jm.site.local import Site, read_settings, reload_broker, sync_broker_files  # noqa: PLC0415

    site = Site(site_var(ns.var).resolve())
    registry = site.registry()
    prefix = str(read_settings(site).get("topic_prefix", "att"))
    if ns.users_verb == "list":
        for name, role in sorted(registry.roles.items()):
            print(f"{name:<24} {role}")
        return 0
    if ns.users_verb == "add":
        password = registry.add(ns.name, ns.role, _password(ns))
        shown = {ns.name: (ns.role, password)}
    elif ns.users_verb == "passwd":
        password = registry.set_password(ns.name, _password(ns))
        shown = {ns.name: (registry.roles[ns.name], password)}
    else:
        registry.remove(ns.name)
        shown = {}
    registry.save()
    sync_broker_files(site, prefix)
    reloaded = reload_broker(site)
    if shown and not ns.password_stdin:
        _credentials("password (shown once; kept 0600 in "
                     f"{site.secrets}/NAME.password):", shown)
    elif ns.users_verb == "remove":
        print(f"removed {ns.name}")
    else:
        print(f"password of {ns.name} set")
    print("the broker reloaded its users" if reloaded else
          "no broker running: it reads the users when it starts")
    return 0
