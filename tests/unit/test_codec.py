"""The stored-state codec (att_jm/log/codec.py): exact round trips, plain rows as they are,
bad rows refused, and every event type through the application's mapper."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from att_jm.log.codec import (
    UndecodableState,
    content_bytes,
    decode_state,
    detokenize,
    encode_state,
    loads_state,
    tokenize,
)
from att_jm.log.transcoder import OrjsonTranscoder

AT = datetime(2026, 12, 3, 18, 17, 11, 332098, tzinfo=UTC)
PLAIN = (b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-03T18:17:11.332098+00:00"},'
         b'"execution_id":"3e5beb47-1074-5088-a36a-bcf3d07a71d9","front":false,'
         b'"actor":"scheduler"}')


def test_a_state_round_trips_and_shrinks() -> None:
    stored = encode_state(PLAIN)
    assert stored[:1] == b"\x01"
    assert len(stored) < len(PLAIN) / 3
    assert decode_state(stored) == PLAIN
    assert loads_state(stored) == orjson.loads(PLAIN)


def test_plain_rows_read_as_they_are() -> None:
    assert decode_state(PLAIN) == PLAIN  # rows written before the codec
    assert content_bytes(PLAIN) == PLAIN
    assert decode_state(b"") == b""
    assert decode_state(b"not json") == b"not json"


@pytest.mark.parametrize("stamp", [
    "2026-12-03T18:17:11+00:00",  # no fraction: left as text
    "2026-12-03T18:17:11.000000+00:00",
    "1969-12-31T23:59:59.999999+00:00",  # before 1970: left as text
    "2026-12-03T18:17:11.332098+01:00",
    "0001-01-01T00:00:00.000001+00:00",
])
def test_any_timestamp_text_comes_back(stamp: str) -> None:
    plain = b'{"timestamp":{"_type_":"datetime_iso","_data_":"%s"},"a":1}' % stamp.encode()
    assert decode_state(encode_state(plain)) == plain


def test_uuid_like_text_comes_back_exactly() -> None:
    plain = orjson.dumps({"a": "3E5BEB47-1074-5088-A36A-BCF3D07A71D9",
                          "b": "3e5beb47-1074-5088-a36a-bcf3d07a71d9x",
                          "c": ["3e5beb47-1074-5088-a36a-bcf3d07a71d9"] * 3,
                          "d": {"3e5beb47-1074-5088-a36a-bcf3d07a71d9": 1}})
    assert decode_state(encode_state(plain)) == plain


def test_a_state_with_token_bytes_is_kept_plain() -> None:
    weird = b'{"a":"\x01\x02"}'  # never from orjson (it escapes control characters)
    assert tokenize(weird) is None
    assert encode_state(weird) == weird
    assert encode_state(b"[1]") == b"[1]"  # not an object: as it is


def test_a_damaged_row_changes_what_is_hashed() -> None:
    stored = encode_state(PLAIN)
    for at in range(1, len(stored)):  # raw DEFLATE has no checksum: a changed byte either
        damaged = bytearray(stored)    # does not decode or decodes to other JSON
        damaged[at] ^= 0xFF
        assert content_bytes(bytes(damaged)) != PLAIN
    with pytest.raises(UndecodableState):
        decode_state(stored[:-3])  # truncated
    with pytest.raises(UndecodableState):
        decode_state(stored + b"x")  # trailing bytes
    with pytest.raises(ValueError):
        loads_state(stored[:-3])
    assert content_bytes(stored[:-3]) == stored[:-3]  # undecodable: hashed as stored


def test_decoding_is_bounded() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -12)
    data = b"\x01" + bomb.compress(b"{" + b" " * (300 * 1024 * 1024)) + bomb.flush()
    with pytest.raises(UndecodableState):
        decode_state(data)


def test_misplaced_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        detokenize(b"\x01\x00")
    with pytest.raises(ValueError):
        detokenize(b'{"a":\x02\x00}')
    with pytest.raises(ValueError):
        detokenize(b'{"a":\x01}')


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text() | st.uuids().map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20), st.datetimes(timezones=st.just(UTC)))
def test_any_event_json_round_trips(value: object, at: datetime) -> None:
    plain = OrjsonTranscoder().encode({"timestamp": at, "value": value})
    assert decode_state(encode_state(plain)) == plain
