"""argv -> the service request (pure)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from att_jm.cli.common import CLEANUP_TABLES, UsageError
from att_jm.vocabulary import CLEANUP_FIELDS

# Requests (pure) -------------------------------------------------------------------------


def combine_match(
    pairs: Sequence[tuple[str, object]] | None, base: Mapping[str, object] | None
) -> dict[str, object] | None:
    """--match-json then each --match; None when neither was given; a field twice is an error."""
    if pairs is None and base is None:
        return None
    match = dict(base or {})
    for field, value in pairs or ():
        if field in match:
            raise UsageError(f"match field {field!r} is given twice")
        match[field] = value
    return match


def job_add_args(ns: argparse.Namespace) -> dict[str, object]:
    args: dict[str, object] = {"name": ns.name, "script": ns.script, "trigger": ns.trigger}
    match = combine_match(ns.match, ns.match_json)
    if match is not None:
        args["match"] = match
    if ns.command is not None:
        args["command"] = ns.command
    if ns.timeout_seconds is not None:
        args["timeout_seconds"] = ns.timeout_seconds
    if ns.disabled:
        args["enabled"] = False
    retry = retry_args(ns)
    if retry is not None:
        args["retry"] = retry
    return args


def retry_args(ns: argparse.Namespace) -> dict[str, object] | None:
    """The `retry` object of --retry-max-attempts / --retry-delay-seconds / --retry-backoff
    (None when none is given)."""
    given = {field: getattr(ns, f"retry_{field}", None)
             for field in ("max_attempts", "delay_seconds", "backoff")}
    given = {field: value for field, value in given.items() if value is not None}
    return given or None


def job_update_args(ns: argparse.Namespace) -> dict[str, object]:
    args: dict[str, object] = {"name": ns.name}
    for field in ("script", "trigger", "command", "timeout_seconds", "enabled"):
        if getattr(ns, field) is not None:
            args[field] = getattr(ns, field)
    match = combine_match(ns.match, ns.match_json)
    if ns.no_match and match is not None:
        raise UsageError("--no-match cannot be combined with --match or --match-json")
    if ns.no_match:
        args["match"] = None
    elif match is not None:
        args["match"] = match
    if ns.no_command:
        args["command"] = None
    retry = retry_args(ns)
    if ns.no_retry and retry is not None:
        raise UsageError("--no-retry cannot be combined with --retry-* options")
    if ns.no_retry:
        args["retry"] = None
    elif retry is not None:
        args["retry"] = retry
    if len(args) == 1:
        raise UsageError("job update needs at least one change, e.g. --trigger or --disable")
    return args


def settings_changes(ns: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line; cleanup objects partial (see merge_settings)."""
    changes: dict[str, object] = {}
    if hasattr(ns, "interval_seconds"):
        changes["interval_seconds"] = ns.interval_seconds
    for table in CLEANUP_TABLES:
        given = {f: getattr(ns, f"{table}_{f}") for f in CLEANUP_FIELDS
                 if hasattr(ns, f"{table}_{f}")}
        if given:
            changes[f"{table}_cleanup"] = given
    archive = {f: getattr(ns, f"archive_{f}") for f in ("max_age_days", "every_seconds")
               if hasattr(ns, f"archive_{f}")}
    if archive:
        changes["archive"] = archive
    if not changes:
        raise UsageError("settings set needs at least one setting, e.g. --interval-seconds 10")
    return changes


def merge_settings(
    current: Mapping[str, object], changes: Mapping[str, object]
) -> dict[str, object]:
    """`changes` with each cleanup object completed from `current`, so it is sent whole."""
    merged: dict[str, object] = {}
    for key, value in changes.items():
        existing = current.get(key)
        if isinstance(value, Mapping) and isinstance(existing, Mapping):
            whole = {f: existing[f] for f in CLEANUP_FIELDS if f in existing}
            merged[key] = whole | dict(value)
        else:
            merged[key] = value
    return merged


