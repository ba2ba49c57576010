"""The pure matching rules: lookup, JSON equality, `match`, Command templates, topic levels."""

from __future__ import annotations

from typing import Any

import pytest

from att_jm.domain.matching import (
    _MISSING,
    check_topic_level,
    fill_template,
    json_equal,
    lookup,
    matches,
    template_fields,
)
from att_jm.errors import InvalidInput

NESTED: dict[str, Any] = {
    "id": "n-1",
    "site": "paris",
    "device": {"kind": "router", "port": {"number": 7, "up": True}},
    "a.b": "exact key",
    "a": {"b": "nested"},
    "tags": ["x", "y"],
    "nothing": None,
}


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("site", "paris"),
        ("device.kind", "router"),
        ("device.port.number", 7),
        ("device.port.up", True),
        ("device.port", {"number": 7, "up": True}),
        ("a.b", "exact key"),  # an exact top-level key wins over nesting
        ("tags", ["x", "y"]),
        ("nothing", None),  # a present null is a value, not a missing field
    ],
)
def test_lookup_finds_top_level_and_dotted_fields(field: str, expected: Any) -> None:
    assert lookup(NESTED, field) == expected


@pytest.mark.parametrize(
    "field",
    ["absent", "device.colour", "device.port.number.more", "site.name", "tags.0", "device..kind",
     "nothing.below"],
)
def test_lookup_reports_missing_fields_with_the_sentinel(field: str) -> None:
    assert lookup(NESTED, field) is _MISSING


def test_lookup_falls_back_to_nesting_when_no_exact_key_exists() -> None:
    assert lookup({"a": {"b": 1}}, "a.b") == 1


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        (False, False, True),
        (1, 1.0, True),
        (0, -0.0, True),
        (2, 2.5, False),
        ("1", 1, False),
        ("a", "a", True),
        (None, None, True),
        (None, 0, False),
        (None, False, False),
        ("", None, False),
        ([1, 2], [1, 2], True),
        ([1, 2], [2, 1], False),
        ([1], [1, 1], False),
        ([True], [1], False),
        ([1.0], [1], True),
        ({"a": 1, "b": [1, {"c": 2}]}, {"b": [1.0, {"c": 2}], "a": 1}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": {"b": False}}, {"a": {"b": 0}}, False),
        ([], {}, False),
        ({}, {}, True),
    ],
)
def test_json_equal_follows_json_not_python_equality(left: Any, right: Any, equal: bool) -> None:
    assert json_equal(left, right) is equal
    assert json_equal(right, left) is equal


@pytest.mark.parametrize(
    ("match", "payload", "expected"),
    [
        (None, {"id": "1"}, True),
        ({}, {"id": "1"}, True),
        ({"site": "paris"}, {"id": "1", "site": "paris"}, True),
        ({"site": "paris"}, {"id": "1", "site": "lyon"}, False),
        ({"site": "paris"}, {"id": "1"}, False),
        ({"site": "paris", "level": 3}, {"id": "1", "site": "paris", "level": 3}, True),
        ({"site": "paris", "level": 3}, {"id": "1", "site": "paris", "level": 4}, False),
        ({"level": 3}, {"id": "1", "level": 3.0}, True),
        ({"up": True}, {"id": "1", "up": 1}, False),
        ({"up": 1}, {"id": "1", "up": True}, False),
        ({"device.kind": "router"}, {"id": "1", "device": {"kind": "router"}}, True),
        ({"device.kind": "router"}, {"id": "1", "device": {"kind": "switch"}}, False),
        ({"device.kind": "router"}, {"id": "1", "device": "router"}, False),
        ({"a.b": 1}, {"id": "1", "a.b": 1, "a": {"b": 2}}, True),
        ({"a.b": 2}, {"id": "1", "a.b": 1, "a": {"b": 2}}, False),
        ({"gone": None}, {"id": "1", "gone": None}, True),
        ({"gone": None}, {"id": "1"}, False),
        ({"tags": ["x"]}, {"id": "1", "tags": ["x"]}, True),
        ({"obj": {"k": 1}}, {"id": "1", "obj": {"k": 1}}, True),
    ],
)
def test_match_holds_only_when_every_field_equals(
    match: dict[str, Any] | None, payload: dict[str, Any], expected: bool
) -> None:
    assert matches(match, payload) is expected


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("", []),
        ("plain text", []),
        ("{site}", ["site"]),
        ("run {site} on {device.port.number}", ["site", "device.port.number"]),
        ("{a}{b}{a}", ["a", "b", "a"]),
        ("{{literal}}", []),
        ("{{{site}}}", ["site"]),
        ("json: {{\"k\": {v}}}", ["v"]),
        ("{with-dash_and$at@}", ["with-dash_and$at@"]),
        ("}}{{", []),
    ],
)
def test_template_fields_lists_the_placeholders(template: str, fields: list[str]) -> None:
    assert template_fields(template) == fields


@pytest.mark.parametrize(
    "template",
    ["{", "}", "a { b", "a } b", "{}", "{ site }", "{site", "site}", "{a..b}", "{.a}", "{a.}",
     "{a b}", "{a:>10}", "{a!r}", "{0}x{", "{{{", "}}}"],
)
def test_template_fields_rejects_stray_braces_and_bad_names(template: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        template_fields(template)
    assert caught.value.code == "invalid"


def test_template_fields_error_names_the_offset_of_the_stray_brace() -> None:
    with pytest.raises(InvalidInput, match=r"stray '\}' at offset 4"):
        template_fields("ab{{}")


PAYLOAD: dict[str, Any] = {
    "id": "n-42",
    "site": "paris",
    "count": 3,
    "ratio": 0.5,
    "flag": False,
    "none": None,
    "obj": {"k": "v", "n": [1, 2]},
    "list": [1, "two", None],
    "text": "a \"quoted\" {brace}",
    "unicode": "né 日本",
}


@pytest.mark.parametrize(
    ("template", "command"),
    [
        ("", ""),
        ("no placeholders", "no placeholders"),
        ("{site}", "paris"),
        ("deploy --site={site} --n={count}", "deploy --site=paris --n=3"),
        ("{ratio}", "0.5"),
        ("{flag}", "false"),
        ("{none}", "null"),
        ("{obj}", '{"k":"v","n":[1,2]}'),
        ("{obj.k}", "v"),
        ("{obj.n}", "[1,2]"),
        ("{list}", '[1,"two",null]'),
        ("{text}", 'a "quoted" {brace}'),  # strings go in as they are, never re-parsed
        ("{unicode}", "né 日本"),
        ("{{site}}", "{site}"),
        ("{{{site}}}", "{paris}"),
        ("}}{{", "}{"),
        ("{id}-{id}", "n-42-n-42"),
    ],
)
def test_fill_template_inserts_strings_as_is_and_other_values_as_compact_json(
    template: str, command: str
) -> None:
    assert fill_template(template, PAYLOAD) == command


def test_fill_template_without_a_template_gives_the_payload_as_compact_json() -> None:
    payload = {"id": "n-1", "b": [1, 2], "a": {"x": None}, "u": "é"}
    assert fill_template(None, payload) == '{"id":"n-1","b":[1,2],"a":{"x":null},"u":"é"}'


@pytest.mark.parametrize("field", ["missing", "obj.missing", "site.deeper"])
def test_fill_template_names_the_missing_field(field: str) -> None:
    with pytest.raises(InvalidInput, match=repr(field)) as caught:
        fill_template("run {site} {" + field + "}", PAYLOAD)
    assert caught.value.code == "invalid"


def test_fill_template_rejects_a_stray_brace() -> None:
    with pytest.raises(InvalidInput, match="stray"):
        fill_template("run {site", PAYLOAD)


@pytest.mark.parametrize("value", ["a", "alarm.raised", "x" * 200, "with space", "ünïcode", "-"])
def test_check_topic_level_accepts_a_single_level(value: str) -> None:
    assert check_topic_level(value, "trigger") == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "non-empty string"),
        (None, "non-empty string"),
        (3, "non-empty string"),
        (["a"], "non-empty string"),
        ("x" * 201, "at most 200 characters"),
        ("a/b", "one topic level"),
        ("a+", "one topic level"),
        ("#", "one topic level"),
        ("a\x00b", "one topic level"),
    ],
)
def test_check_topic_level_rejects_what_is_not_one_level(value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"trigger must .*{message}|{message}"):
        check_topic_level(value, "trigger")


def test_check_topic_level_honours_a_custom_maximum_length() -> None:
    assert check_topic_level("abc", "actor", max_length=3) == "abc"
    with pytest.raises(InvalidInput, match="actor must be at most 3 characters"):
        check_topic_level("abcd", "actor", max_length=3)
