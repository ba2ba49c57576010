"""argparse `type=` functions: text -> value, or ArgumentTypeError."""

from __future__ import annotations

import argparse
import math
from uuid import UUID

import orjson

from att_jm.cli.common import JOB_NAME

# Value parsers (argparse `type=` functions) ----------------------------------------------


def parse_json_value(text: str) -> object:
    """`text` as JSON when it is valid JSON (3, true, null, "x"), else the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_match(text: str) -> tuple[str, object]:
    """`FIELD=VALUE` -> (FIELD, VALUE as JSON or string); dotted FIELD names stay as given."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return field, parse_json_value(value)


def parse_json_object(text: str) -> dict[str, object]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"site\": \"paris\"}'")
    return value


def parse_number(text: str) -> int | float:
    """An integer when `text` is one, else a finite float."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_number(text: str) -> int | float:
    value = parse_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def non_negative_number(text: str) -> int | float:
    value = parse_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def positive_int(text: str) -> int:
    value = parse_number(text)
    if not isinstance(value, int) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be an integer > 0, not {text}")
    return value


def optional_max_rows(text: str) -> int | None:
    if text.lower() == "none":
        return None
    value = positive_int(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"must be 1..10000 or none, not {text}")
    return value


def optional_positive(text: str) -> int | float | None:
    return None if text.lower() == "none" else positive_number(text)


def entry_id(text: str) -> str:
    """An entry (execution) id: a UUID, in any form UUID() reads, as the views show it."""
    try:
        return str(UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an entry id (a UUID like 6f1c7a52-52a4-4c1e-9d7e-0a7d3b1f2c11): {text!r}"
        ) from None


def job_name(text: str) -> str:
    """A job name as the service takes it: [A-Za-z0-9._-]{1,64}."""
    if not JOB_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a job name must match [A-Za-z0-9._-]{{1,64}}: {text!r}")
    return text
