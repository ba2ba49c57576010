"""The stored-state codec (att_jm/log/codec.py): exact round trips, plain rows as they are,
bad rows refused, and every event type through the application's mapper."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from att_jm.log import codec
from att_jm.log.codec import (
    UndecodableState,
    content_bytes,
    decode_state,
    detokenize,
    encode_state,
    is_encoded,
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
    assert stored[:1] == b"\x05"  # the timestamp left out, a small frame
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
    "2026-12-03T24:00:00.000000+00:00",  # no such hour
    "2026-12-03T23:60:00.000000+00:00",
    "2026-12-03T23:59:60.000000+00:00",  # a leap second
    "2026-02-30T10:00:00.000000+00:00",  # no such day
    "2026-12-3T10:00:00.0000001+00:00",
    "2026-12-03T10:00:00.00000a+00:00",
    "4253-12-31T23:59:59.999999+00:00",  # beyond 7 bytes of microseconds: left as text
])
def test_any_timestamp_text_comes_back(stamp: str) -> None:
    plain = b'{"timestamp":{"_type_":"datetime_iso","_data_":"%s"},"a":1}' % stamp.encode()
    assert decode_state(encode_state(plain)) == plain
    assert decode_state(encode_state(plain)) == plain  # the caches give the same again


@pytest.mark.parametrize(("size", "forms"), [
    (30, b"\x02\x05"), (400, b"\x03\x06"), (100_000, b"\x04\x07"),
    (0, b"\x04\x07"),  # too small to compress: zstd writes a raw block, kept whole
])
def test_every_form_round_trips(size: int, forms: bytes) -> None:
    rest = orjson.dumps({"a": "x" * size, "b": ["3e5beb47-1074-5088-a36a-bcf3d07a71d9"]})
    stamped = PLAIN[:PLAIN.index(b"},") + 2] + rest[1:]
    for plain, form in ((rest, forms[:1]), (stamped, forms[1:])):
        stored = encode_state(plain)
        assert stored[:1] == form
        assert is_encoded(stored)
        assert decode_state(stored) == plain


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
    frame = zstandard.ZstdCompressor().compress(b"{" + b" " * 100_000)
    assert decode_state(b"\x04" + frame) == b"{" + b" " * 100_000
    claims = bytearray(frame)  # the same frame claiming 300 MiB (4-byte size at 5)
    assert claims[4] & 0xC0 == 0x80
    claims[5:9] = (300 * 1024 * 1024).to_bytes(4, "little")
    with pytest.raises(UndecodableState):
        decode_state(b"\x04" + bytes(claims))
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"{}")
    with pytest.raises(UndecodableState):
        decode_state(b"\x04" + unsized)


def test_the_unmerged_deflate_codec_does_not_decode() -> None:
    assert is_encoded(b"\x01\x00")
    with pytest.raises(UndecodableState):
        decode_state(b"\x01\xab\x56\x02\x00")


def test_misplaced_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        detokenize(b'{"a":\x02\x00}')  # a truncated UUID
    assert detokenize(b'{"a":\x02' + b"\x02" * 16 + b"}") == (
        b'{"a":"02020202-0202-0202-0202-020202020202"}')  # a token's bytes are skipped whole
    for truncated in (b"\x05\x00", b"\x05" + b"\x00" * 7, b"\x06\x00" * 4, b"\x02"):
        with pytest.raises(UndecodableState):
            decode_state(truncated)


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text() | st.uuids().map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20), st.datetimes(timezones=st.just(UTC)))
def test_any_event_json_round_trips(value: object, at: datetime) -> None:
    plain = OrjsonTranscoder().encode({"timestamp": at, "value": value})
    assert decode_state(encode_state(plain)) == plain


def test_threads_coding_at_once_each_get_their_own_contexts() -> None:
    plains = [PLAIN.replace(b"scheduler", b"actor-%d" % n) for n in range(64)]

    def work(offset: int) -> bool:
        return all(decode_state(encode_state(plains[(offset + n) % 64])) == plains[
            (offset + n) % 64] for n in range(500))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(8)))
    assert len(codec._idle) >= 1
