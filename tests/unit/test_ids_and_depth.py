"""The deterministic ids (`att_jm.domain.ids.uuid5`) are the standard library's uuid5, and the
depth check's shortcut on the raw text (`check_depth(..., text=...)`) refuses exactly what the
walk refuses."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from att_jm.application.rejections import check_depth
from att_jm.domain import ids
from att_jm.domain import limits as lim
from att_jm.errors import InvalidInput


@given(st.text(max_size=300))
def test_uuid5_is_the_standard_librarys(name: str) -> None:
    ours = ids.uuid5(ids.NAMESPACE, name)
    assert ours == uuid.uuid5(ids.NAMESPACE, name)
    assert ours.version == 5 and ours.variant == uuid.RFC_4122
    assert str(ours) == str(uuid.uuid5(ids.NAMESPACE, name))


@given(st.uuids(), st.text(max_size=50))
def test_uuid5_in_another_namespace_is_the_standard_librarys(namespace: uuid.UUID,
                                                             name: str) -> None:
    assert ids.uuid5(namespace, name) == uuid.uuid5(namespace, name)


def test_the_ids_are_the_ones_stored_before() -> None:
    """Ids already in stores: each function gives what `uuid.uuid5` gave it."""
    assert uuid.uuid5(ids.NAMESPACE, "scheduler") == ids.SCHEDULER_ID
    assert ids.job_id("backup") == uuid.uuid5(ids.NAMESPACE, "job:backup")
    assert ids.notification_id("n-1") == uuid.uuid5(ids.NAMESPACE, "notification:n-1")
    assert ids.execution_id("n-1", "backup") == uuid.uuid5(
        ids.NAMESPACE, "execution:n-1\x00backup")
    assert ids.command_id("ops", b"\x00\xff") == uuid.uuid5(ids.NAMESPACE, "command:ops\x0000ff")


def test_a_lone_surrogate_is_refused_as_the_standard_library_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        uuid.uuid5(ids.NAMESPACE, "\ud800")
    with pytest.raises(UnicodeEncodeError):
        ids.uuid5(ids.NAMESPACE, "\ud800")


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.text(alphabet="{}[]x\"\\", max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(alphabet="{[]}k", max_size=3), children, max_size=3),
    max_leaves=40,
)


def refused(value: Any, limit: int, text: bytes | None = None) -> bool:
    try:
        check_depth(value, limit, text=text)
    except InvalidInput:
        return True
    return False


@settings(max_examples=400)
@given(JSON, st.integers(min_value=0, max_value=8))
def test_the_shortcut_refuses_exactly_what_the_walk_refuses(value: Any, limit: int) -> None:
    """Brackets inside strings count too: the shortcut only ever declines to decide."""
    assert refused(value, limit, orjson.dumps(value)) == refused(value, limit)


@pytest.mark.parametrize("depth", [lim.MAX_JSON_DEPTH, lim.MAX_JSON_DEPTH + 1, 250, 1000])
def test_the_deepest_json_is_refused_with_or_without_its_text(depth: int) -> None:
    value = nested(depth)
    text = b"[" * depth + b"]" * depth  # as deep (orjson writes at most 254 levels)
    assert refused(value, lim.MAX_JSON_DEPTH, text) == (depth > lim.MAX_JSON_DEPTH)
    assert refused(value, lim.MAX_JSON_DEPTH) == (depth > lim.MAX_JSON_DEPTH)


def test_a_shallow_text_full_of_brackets_is_walked_and_accepted() -> None:
    value = {"note": "[{" * 10_000, "list": [[1]] * 100}
    assert not refused(value, lim.MAX_JSON_DEPTH, orjson.dumps(value))
