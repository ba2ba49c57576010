"""How an event's state is stored: its JSON, or that JSON made compact (issue 16.2).

The transcoder makes an event's JSON (`att_jm.log.transcoder`); the store keeps it either as
it is (every row written before this codec, whose first byte is `{`) or encoded:

    byte 0    the codec: 0x01 = raw DEFLATE (window 2^12) with the preset dictionary 1
    byte 1..  the compressed *tokenized* JSON

Tokenized: two runs of the JSON replaced by a byte JSON text never holds (orjson escapes
every control character) and their binary value:

- the leading `{"timestamp":{"_type_":"datetime_iso","_data_":"YYYY-MM-DDTHH:MM:SS.ffffff
  +00:00"},` (every event's first field, as the transcoder writes it) -> 0x01 and the
  microseconds since 1970 as 7 bytes big-endian;
- every JSON string holding a UUID in its usual lowercase text form -> 0x02 and its 16 bytes.

`decode_state` gives back the JSON byte for byte, so what is hashed (`att_jm.log.chain`),
exported, published and replayed is the same whatever the row's encoding: logs written before
stay readable as they are, and old, new and mixed logs verify alike. A dictionary, once
shipped, is kept for ever (`att_jm.log.codec_dict`); a new one takes a new first byte.
Decoding is bounded (`MAX_DECODED`): a row that would inflate beyond it is undecodable.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from eventsourcing.persistence import Compressor

from att_jm.log.codec_dict import DICTIONARY_1

CODEC_1: Final = 0x01
_WBITS: Final = 12  # a 4 KiB window: the dictionary is 3.8 KiB, states are mostly < 1 KiB
_MEM_LEVEL: Final = 1  # the smallest hash tables: a fresh compressor is a small copy
_LEVEL: Final = 9
#: No stored state decodes to more than this (a snapshot may hold more than one event's
#: cap, `limits.MAX_EVENT_BYTES`; a crafted row must not inflate without bound).
MAX_DECODED: Final = 256 * 1024 * 1024

_TS_PREFIX: Final = b'{"timestamp":{"_type_":"datetime_iso","_data_":"'
_TS_END: Final = b'+00:00"},'
_TS_AT: Final = len(_TS_PREFIX)
_TS_LEN: Final = 26  # YYYY-MM-DDTHH:MM:SS.ffffff
_TS_STOP: Final = _TS_AT + _TS_LEN + len(_TS_END)
_UUID: Final = re.compile(
    rb'"([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})"')
_EPOCH: Final = datetime(1970, 1, 1)  # naive: the stored text is UTC (+00:00)
_MICRO: Final = timedelta(microseconds=1)
_TS_SHAPE: Final = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\Z")

_compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -_WBITS, _MEM_LEVEL,
                               zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY_1)


class UndecodableState(ValueError):
    """A stored state that claims an encoding but does not decode."""


def _uuid_token(match: re.Match[bytes]) -> bytes:
    return b"\x02" + bytes.fromhex(b"".join(match.groups()).decode())


def tokenize(plain: bytes) -> bytes | None:
    """`plain` JSON with its timestamp and UUIDs as tokens; None when it holds a token's
    byte (never in JSON text: orjson escapes every control character) and so cannot be
    tokenized."""
    if b"\x01" in plain or b"\x02" in plain:
        return None
    head = b""
    if plain.startswith(_TS_PREFIX) and plain[_TS_AT + _TS_LEN:_TS_STOP] == _TS_END:
        text = plain[_TS_AT:_TS_AT + _TS_LEN]
        micros = _micros(text)
        if micros is not None:
            head = b"\x01" + micros.to_bytes(7, "big")
            plain = plain[_TS_STOP:]
    return head + _UUID.sub(_uuid_token, plain)


_last_micros: tuple[bytes, int | None] = (b"", None)


def _micros(text: bytes) -> int | None:
    """Microseconds since 1970 of `YYYY-MM-DDTHH:MM:SS.ffffff` (UTC); None for any other
    text, or one that would not come back the same."""
    global _last_micros  # noqa: PLW0603 -- a one-entry cache (a batch shares its timestamp)
    last = _last_micros
    if last[0] == text:
        return last[1]
    micros = None
    if _TS_SHAPE.match(text) is not None:
        value = (datetime.fromisoformat(text.decode()) - _EPOCH) // _MICRO
        if 0 <= value < 1 << 56 and _stamp(value) == text:
            micros = value
    _last_micros = (text, micros)
    return micros


_last_stamp: tuple[int, bytes] = (-1, b"")


def _stamp(micros: int) -> bytes:
    """`YYYY-MM-DDTHH:MM:SS.ffffff` of microseconds since 1970 (UTC)."""
    global _last_stamp  # noqa: PLW0603 -- idem
    last = _last_stamp
    if last[0] == micros:
        return last[1]
    at = _EPOCH + micros * _MICRO
    text = b"%04d-%02d-%02dT%02d:%02d:%02d.%06d" % (
        at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond)
    _last_stamp = (micros, text)
    return text


def _hex_uuid(raw: bytes) -> bytes:
    h = raw.hex()
    return f'"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"'.encode()


def detokenize(tokens: bytes) -> bytes:
    """The JSON `tokenize` made `tokens` of (ValueError when they are not such tokens)."""
    parts: list[bytes] = []
    at = 0
    if tokens[:1] == b"\x01":
        if len(tokens) < 8:
            raise ValueError("a truncated timestamp")
        parts += (_TS_PREFIX, _stamp(int.from_bytes(tokens[1:8], "big")), _TS_END)
        at = 8
    find = tokens.find
    while True:
        start = find(b"\x02", at)
        if start < 0:
            rest = tokens[at:]
            if b"\x01" in rest:
                raise ValueError("a misplaced token")
            parts.append(rest)
            return b"".join(parts)
        if b"\x01" in tokens[at:start] or start + 17 > len(tokens):
            raise ValueError("a misplaced token")
        parts.append(tokens[at:start])
        parts.append(_hex_uuid(tokens[start + 1:start + 17]))
        at = start + 17


def encode_state(plain: bytes) -> bytes:
    """What the store keeps of an event's (or snapshot's) JSON `plain`."""
    tokens = tokenize(plain)
    if tokens is None or plain[:1] != b"{":
        return plain  # kept as it is: its first byte is no codec's
    compressor = _compressor.copy()
    return b"\x01" + compressor.compress(tokens) + compressor.flush()


def is_encoded(stored: bytes) -> bool:
    """Whether `stored` claims an encoding (else it is plain JSON, as written before)."""
    return stored[:1] == b"\x01"


def decode_state(stored: bytes) -> bytes:
    """The JSON of a stored state (`stored` itself when it is plain); UndecodableState when
    it claims an encoding but does not decode."""
    if stored[:1] != b"\x01":
        return stored
    try:
        inflater = zlib.decompressobj(-_WBITS, zdict=DICTIONARY_1)
        tokens = inflater.decompress(memoryview(stored)[1:], MAX_DECODED)
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise ValueError("not one whole stream within the bound")
        return detokenize(tokens)
    except (zlib.error, ValueError, OverflowError) as error:
        raise UndecodableState(f"an encoded state that does not decode ({error})") from None


def content_bytes(stored: bytes) -> bytes:
    """What a seal hashes of a stored state: its JSON, or the stored bytes themselves when
    they do not decode (so that a change to them still shows)."""
    try:
        return decode_state(stored)
    except UndecodableState:
        return stored


def loads_state(stored: bytes) -> Any:
    """A stored state parsed as JSON (orjson.JSONDecodeError, a ValueError, when it is not
    JSON; UndecodableState, a ValueError too, when it claims an encoding and does not
    decode)."""
    return orjson.loads(decode_state(stored))


def plain_state(stored: Any) -> Any:
    """`stored` decoded when it is bytes that decode, else as it is (for readers that
    report a bad cell rather than raise)."""
    if isinstance(stored, bytes | bytearray | memoryview):
        try:
            return decode_state(bytes(stored))
        except UndecodableState:
            return bytes(stored)
    return stored


class StateCodec(Compressor):
    """The codec as the library's mapper takes it (`Application.construct_compressor`):
    every event and snapshot the library stores or loads goes through it."""

    def compress(self, data: bytes) -> bytes:
        return encode_state(data)

    def decompress(self, data: bytes) -> bytes:
        return decode_state(data)

