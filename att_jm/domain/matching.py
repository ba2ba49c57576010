"""Pure rules for which jobs a notification triggers and the Command it builds.

- A job's `match` is an object field -> value; every field must equal the
  notification's (JSON equality: `true` never equals `1`). A dotted name
  (`a.b`) reaches a nested field; an exact top-level key `a.b` wins over nesting.
- A Command template fills `{field}` / `{a.b}` from the notification: strings
  are inserted as they are, any other JSON value as compact JSON. `{{` and `}}`
  stand for literal braces. There is no other formatting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from att_jm.domain.errors import InvalidInput

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


def fill_template(template: str | None, payload: Mapping[str, Any]) -> str:
    """The Command for `payload`: the filled template, or the payload as compact JSON.

    Raises InvalidInput naming the first placeholder the notification lacks.
    """
    if template is None:
        return orjson.dumps(payload).decode()
    out: list[str] = []
    last = 0
    for token in _TOKEN.finditer(template):
        out.append(template[last : token.start()])
        last = token.end()
        text = token.group(0)
        if text in ("{{", "}}"):
            out.append(text[0])
            continue
        field = token.group(1)
        if field is None:
            raise InvalidInput(f"command template has a stray {text!r} at offset {token.start()}")
        value = lookup(payload, field)
        if value is _MISSING:
            raise InvalidInput(f"the notification has no field {field!r} for the command template")
        out.append(_render(value))
    out.append(template[last:])
    return "".join(out)


def check_topic_level(value: Any, what: str, max_length: int = 200) -> str:
    """`value` if it is a usable single MQTT topic level, else InvalidInput."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidInput(f"{what} must be at most {max_length} characters")
    if any(c in value for c in "/+#\x00"):
        raise InvalidInput(f"{what} must be one topic level: no '/', '+', '#' or NUL")
    return value
