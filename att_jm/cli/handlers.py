"""The `att-jm` command line: `serve`, `rebuild` and the operator verbs (MQTT requests).

Exit codes: 0 ok; 1 the service answered with an error; 2 bad usage or settings (checked
before anything is sent: unknown flags, malformed entry ids and job names, ...); 3 no answer
(broker unreachable or refusing, timeout, or the service's retained status says it is offline
or there is none). With `--json` every failure is also JSON, on stdout:
`{"ok": false, "error": {"code", "message"}}`, the code of an error reply as the service gave
it, else `usage`, `no_answer` or `offline`.

Building a request from argv (`parse_argv`, `parse_request`) and rendering a result (`render`)
are pure functions; only `main` and the `run_*` handlers do I/O. Heavy modules (paho, the
service) are imported inside the handlers so the command starts fast. Each verb group has its
own `add_*_commands(subparsers)` function; new groups (e.g. `audit`) are added the same way.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import orjson

from att_jm.cli.common import (
    DEFAULT_TIMEOUT,
    EXIT_ERROR_REPLY,
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_USAGE,
    Failure,
    Request,
    UsageError,
    usage_failure,
    wants_json,
)
from att_jm.cli.parser import build_parser, parse_argv
from att_jm.cli.render import offline_message, render
from att_jm.cli.requests import combine_match, merge_settings
from att_jm.cli.site import run_setup, run_users
from att_jm.config import SETTING_NAMES, ConfigError, MqttEndpoint, Settings, load_settings
from att_jm.output import as_mapping, cell, error_json
from att_jm.topics import Topics

# Handlers (I/O) --------------------------------------------------------------------------


def settings_flags(ns: argparse.Namespace) -> dict[str, object]:
    return {name: getattr(ns, name, None) for name in SETTING_NAMES}


def run_service(ns: argparse.Namespace) -> int:
    settings = load_settings(settings_flags(ns), os.environ, ns.config)
    from att_jm import service  # noqa: PLC0415 -- lazy: the CLI starts fast without the store

    return service.serve(settings) if ns.handler == "serve" else service.rebuild(settings)


def resolve_actor(given: str | None, environ: Mapping[str, str], endpoint: MqttEndpoint) -> str:
    """--actor, else ATT_JM_ACTOR, else the MQTT user name, else the login name."""
    actor = given or environ.get("ATT_JM_ACTOR") or endpoint.username
    if not actor:
        try:
            actor = getpass.getuser()
        except (KeyError, OSError):
            raise UsageError("cannot tell who you are: pass --actor or set ATT_JM_ACTOR") from None
    if any(c in actor for c in "/+#\x00"):
        raise UsageError(f"actor {actor!r} must be one topic level: no / + # or NUL")
    return actor


def run_operator(ns: argparse.Namespace, request: Request) -> int:
    flags = {"mqtt_url": getattr(ns, "mqtt_url", None),
             "topic_prefix": getattr(ns, "topic_prefix", None)}
    settings = load_settings(flags, os.environ, getattr(ns, "config", None))
    endpoint = settings.endpoint_for(cli_user(getattr(ns, "user", None), os.environ, settings))
    actor = resolve_actor(getattr(ns, "actor", None), os.environ, endpoint)
    timeout = float(getattr(ns, "timeout", DEFAULT_TIMEOUT))
    reply = exchange(settings, endpoint, actor, request, timeout)
    if reply.get("ok") is not True:
        error = as_mapping(reply.get("error"))
        code, message = cell(error.get("code", "internal")), cell(error.get("message", ""))
        raise Failure(code, message, EXIT_ERROR_REPLY, f"error: {code}: {message}")
    result = reply.get("result")
    if getattr(ns, "json", False):
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(request, result))
    return EXIT_OK


def cli_user(given: str | None, environ: Mapping[str, str], settings: Settings) -> str | None:
    """Who the CLI acts as: --user, else ATT_JM_USER, else `operator` when the site's secrets
    hold its password, else nobody (the URL's user, or anonymous)."""
    user = given or environ.get("ATT_JM_USER")
    if user:
        return user
    if settings.secrets_dir is not None and settings.password_of("operator") is not None:
        return "operator"
    return None


def exchange(
    settings: Settings, endpoint: MqttEndpoint, actor: str, request: Request, timeout: float
) -> dict[str, object]:
    """The service's reply to `request` (settings.set merged first); Failure (exit 3) when
    none comes, at once when the service's retained status says it is offline."""
    from att_jm.mqtt.requester import (  # noqa: PLC0415 -- lazy: paho only when talking MQTT
        Requester,
        RequesterError,
        RequestTimeout,
        ServiceOffline,
    )

    status_topic = Topics(settings.topic_prefix).status
    try:
        with Requester(endpoint, actor=actor, topic_prefix=settings.topic_prefix,
                       connect_timeout=timeout, max_payload_bytes=settings.max_payload_bytes,
                       status_topic=status_topic) as requester:
            args = request.args
            if request.command == "settings.set":
                current = requester.request("views.get", {"view": "settings"}, timeout)
                if current.get("ok") is not True:
                    return current
                now = as_mapping(as_mapping(current.get("result")).get("settings"))
                args = merge_settings(now, args)
            return requester.request(request.command, args, timeout)
    except ServiceOffline as offline:
        message = offline_message(offline.topic, offline.status, sent=offline.sent)
        raise Failure("offline", message, EXIT_NO_ANSWER) from None
    except RequesterError as error:
        hint = " (is att-jm serve running?)" if isinstance(error, RequestTimeout) else ""
        raise Failure("no_answer", f"no answer from the job manager: {error}{hint}",
                      EXIT_NO_ANSWER) from None


def run_audit(ns: argparse.Namespace) -> int:
    """An `audit` verb against the store of --store / ATT_JM_STORE / the config file."""
    if ns.audit_verb == "import" and not ns.store:
        raise UsageError("audit import needs --store FILE: the new, empty store to fill")
    settings = load_settings({"store": ns.store}, os.environ, ns.config)
    match = None
    if ns.audit_verb == "backtest":
        match = combine_match(ns.match, ns.match_json)
    from att_jm.audit import commands  # noqa: PLC0415 -- lazy: the CLI starts fast

    return commands.run(ns, settings.store, settings.view_rows, match,
                        view_max_bytes=settings.view_max_bytes,
                        compact=settings.compact_states, views_path=settings.views_path())


def report(failure: Failure, as_json: bool) -> int:
    """Print `failure` (JSON on stdout with --json, else its line on stderr); its exit code."""
    if as_json:
        print(error_json(failure.code, failure.message), flush=True)
    else:
        print(failure.shown, file=sys.stderr)
    return failure.exit_code


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 -- one exit per outcome
    """Run `att-jm` with `argv` (default: the process arguments); the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["metrics"]:  # the exporter's own options, --help included
        from att_jm.metrics.exporter import main as metrics  # noqa: PLC0415 -- lazy

        return metrics(args[1:], prog="att-jm metrics")
    as_json = wants_json(args)
    try:
        ns = parse_argv(args)
        if getattr(ns, "handler", None) is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        if ns.handler == "operator":
            return run_operator(ns, Request(ns.request_command, ns.build(ns)))
        handlers: dict[str, Callable[[argparse.Namespace], int]] = {
            "audit": run_audit, "setup": run_setup, "users": run_users,
        }
        return handlers.get(ns.handler, run_service)(ns)
    except SystemExit as done:  # argparse's --help (0)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    except Failure as failure:
        return report(failure, as_json)
    except (ConfigError, UsageError) as error:
        return report(usage_failure(error), as_json)
