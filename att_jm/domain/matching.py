"""Pure rules for which jobs a notification triggers and the Command it builds.

- A job's `match` is an object field -> value; every field must equal the
  notification's (JSON equality: `true` never equals `1`). A dotted name
  (`a.b`) reaches a nested field; an exact top-level key `a.b` wins over nesting.
- A Command template fills `{field}` / `{a.b}` from the notification: strings
  are inserted as they are, any other JSON value as compact JSON. `{{` and `}}`
  stand for literal braces. There is no other formatting.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import orjson

from att_jm.domain.limits import MAX_COMMAND_BYTES, MAX_TRIGGER_CHARS, shown
from att_jm.errors import InvalidInput

_FIELD = r"[A-Za-z0-9_\-$@]+(?:\.[A-Za-z0-9_\-$@]+)*"
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + _FIELD + r")\}|[{}]")
_MISSING = object()


def lookup(payload: Mapping[str, Any], field: str) -> Any:
    """The value of `field` in `payload` (dotted names reach nested objects), or `_MISSING`."""
    if field in payload:
        return payload[field]
    node: Any = payload
    for part in field.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def json_equal(left: Any, right: Any) -> bool:
    """Equality of two decoded JSON values that never confuses booleans with numbers."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and bool(left == right)


def matches(match: Mapping[str, Any] | None, payload: Mapping[str, Any]) -> bool:
    """Whether every field of `match` equals the notification's field."""
    if not match:
        return True
    for field, expected in match.items():
        actual = lookup(payload, field)
        if actual is _MISSING or not json_equal(actual, expected):
            return False
    return True


def template_fields(template: str) -> list[str]:
    """The placeholders of `template`; InvalidInput when a brace is unbalanced or a name is bad."""
    fields: list[str] = []
    for token in _TOKEN.finditer(template):
        text = token.group(0)
        if text in ("{{", "}}"):
            continue
        if token.group(1) is None:
            raise InvalidInput(
                f"command template has a stray {text!r} at offset {token.start()}: "
                "use {field} or {a.b} for a placeholder and {{ or }} for a literal brace"
            )
        fields.append(token.group(1))
    return fields


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class CommandTooLarge(InvalidInput):
    """The filled Command would be over its cap (the job is skipped for that notification)."""


@functools.lru_cache(maxsize=4096)
def _compiled(template: str) -> tuple[tuple[str, str | None], ...]:
    """`template` as (literal text, field or None) pairs, parsed once per template."""
    parts: list[tuple[str, str | None]] = []
    last = 0
    for token in _TOKEN.finditer(template):
        literal = template[last : token.start()]
        last = token.end()
        text = token.group(0)
        if text in ("{{", "}}"):
            parts.append((literal + text[0], None))
            continue
        field = token.group(1)
        if field is None:
            raise InvalidInput(f"command template has a stray {text!r} at offset {token.start()}")
        parts.append((literal, field))
    parts.append((template[last:], None))
    return tuple(parts)


def fill_template(
    template: str | None, payload: Mapping[str, Any], max_bytes: int = MAX_COMMAND_BYTES
) -> str:
    """The Command for `payload`: the filled template, or the payload as compact JSON.

    Raises InvalidInput naming the first placeholder the notification lacks, and
    CommandTooLarge as soon as the Command grows past `max_bytes` (UTF-8) or when it would
    hold a NUL character (a script cannot get it as an argument).
    """
    if template is None:
        command = orjson.dumps(payload).decode()
        _check_command(command, max_bytes)
        return command
    out: list[str] = []
    size = 0  # characters so far: a lower bound of the bytes
    for literal, field in _compiled(template):
        out.append(literal)
        size += len(literal)
        if field is None:
            continue
        value = lookup(payload, field)
        if value is _MISSING:
            raise InvalidInput(
                f"the notification has no field {shown(field)} for the command template"
            )
        text = _render(value)
        size += len(text)
        if size > max_bytes:
            raise CommandTooLarge(
                f"the Command would be over {max_bytes} bytes (the cap of one script argument)"
            )
        out.append(text)
    command = "".join(out)
    _check_command(command, max_bytes)
    return command


def _check_command(command: str, max_bytes: int) -> None:
    if len(command) > max_bytes or len(command.encode("utf-8", "surrogatepass")) > max_bytes:
        raise CommandTooLarge(
            f"the Command would be over {max_bytes} bytes (the cap of one script argument)"
        )
    if "\x00" in command:
        raise CommandTooLarge("the Command would hold a NUL character, which no script "
                              "argument can carry")


def check_topic_level(value: Any, what: str, max_length: int = MAX_TRIGGER_CHARS) -> str:
    """`value` if it is a usable single MQTT topic level, else InvalidInput."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidInput(f"{what} must be at most {max_length} characters")
    if any(c in value for c in "/+#\x00"):
        raise InvalidInput(f"{what} must be one topic level: no '/', '+', '#' or NUL")
    return value
