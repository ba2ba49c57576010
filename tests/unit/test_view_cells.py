"""`cut_cell`: how a view message shows a cell too long to send whole."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from att_jm.domain.limits import CELL_MAX_CHARS, CUT_MARKER, cut_text
from projections.views import VIEW_MAX_BYTES, cut_cell

MARKER = "\u2026[cut: {} more characters]"


def test_the_constants_are_the_documented_ones() -> None:
    assert (CELL_MAX_CHARS, VIEW_MAX_BYTES) == (1024, 1_048_576)
    assert CUT_MARKER == MARKER


@pytest.mark.parametrize("length", [0, 1, 1023, 1024])
def test_a_string_of_at_most_1024_characters_is_unchanged(length: int) -> None:
    text = "é" * length  # characters, not bytes: 2 bytes each
    assert cut_cell(text) == (text, False)


def test_a_longer_string_keeps_1024_characters_and_says_how_many_went() -> None:
    text = "a" * 1000 + "日本" * 100  # 1,200 characters
    shown, cut = cut_cell(text)
    assert cut is True
    assert shown == text[:1024] + "\u2026[cut: 176 more characters]"
    assert cut_cell("x" * 1025) == ("x" * 1024 + "\u2026[cut: 1 more characters]", True)
    assert cut_text("x" * 128_000) == "x" * 1024 + "\u2026[cut: 126976 more characters]"


@pytest.mark.parametrize("value", [None, True, False, 0, -(2**63), 2.5, 1e308])
def test_scalars_are_never_cut(value: Any) -> None:
    shown, cut = cut_cell(value)
    assert (shown is value, cut) == (True, False)


def test_an_object_whose_compact_json_fits_is_unchanged() -> None:
    match = {"site": "paris", "n": [1, 2, None], "deep": {"ü": True}}
    shown, cut = cut_cell(match)
    assert (shown is match, cut) == (True, False)
    # 1,024 characters of compact JSON, more bytes (non-ASCII): the measure is characters
    edge = {"k": "é" * (1024 - len('{"k":""}'))}
    assert len(orjson.dumps(edge).decode()) == 1024
    assert cut_cell(edge) == (edge, False)


def test_a_larger_object_becomes_its_compact_json_text_cut_like_a_string() -> None:
    match = {"site": "paris", "ids": list(range(2000))}
    text = orjson.dumps(match).decode()
    shown, cut = cut_cell(match)
    assert cut is True
    assert shown == text[:1024] + f"\u2026[cut: {len(text) - 1024} more characters]"
    assert cut_cell([{"a": "b" * 2000}])[0].startswith('[{"a":"bbb')


@given(st.text(max_size=3000))
def test_any_string_is_a_prefix_of_itself_plus_a_marker_with_the_right_count(text: str) -> None:
    shown, cut = cut_cell(text)
    assert cut == (len(text) > CELL_MAX_CHARS)
    if not cut:
        assert shown == text
    else:
        assert shown == text[:CELL_MAX_CHARS] + MARKER.format(len(text) - CELL_MAX_CHARS)
        assert len(shown) <= CELL_MAX_CHARS + len(MARKER.format(len(text)))
