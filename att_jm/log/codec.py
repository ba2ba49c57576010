"""How an event's state is stored: its JSON, or that JSON made compact (issue 16.2).

The transcoder makes an event's JSON (`att_jm.log.transcoder`); the store keeps it either as
it is (every row written before this codec, whose first byte is `{`) or encoded:

    byte 0    the form (below); then, for 0x05-0x07, 7 bytes: the timestamp
    then      a Zstandard frame of the rest of the JSON, UUIDs tokenized, compressed with
              the dictionary 2 (`att_jm.log.codec_dict`), its constant parts left out

    0x02 / 0x05  a frame of one compressed block, content < 256 bytes: 1 byte, the
                 content's size, then the block
    0x03 / 0x06  idem, content of 256 to 65,791 bytes: 2 bytes, its size less 256
                 (little-endian), then the block
    0x04 / 0x07  any other frame, as zstd writes it (magic number, no checksum)
    0x01         raw DEFLATE with dictionary 1: never merged, does not decode

The left-out parts (magic number, frame header byte, block header) are the same for every
such frame or follow from the row's length: 5 to 8 bytes a row.

The timestamp: every event's JSON begins `{"timestamp":{"_type_":"datetime_iso","_data_":
"YYYY-MM-DDTHH:MM:SS.ffffff+00:00"},` (as the transcoder writes it); for 0x05-0x07 that
run is left out and the row keeps its microseconds since 1970 (7 bytes, big-endian).
Tokenized: every JSON string holding a UUID in its usual lowercase text form becomes 0x02
and its 16 bytes (a byte JSON text never holds: orjson escapes every control character; a
JSON holding one is stored as it is).

`decode_state` gives back the JSON byte for byte, so what is hashed (`att_jm.log.chain`),
exported, published and replayed is the same whatever the row's encoding: logs written before
stay readable as they are, and old, new and mixed logs verify alike. A dictionary, once
shipped, is kept for ever (`att_jm.log.codec_dict`); a new one takes new first bytes.
Decoding is bounded (`MAX_DECODED`): a row that would inflate beyond it is undecodable.
zstd's contexts are made once and reused, one thread at a time (`_idle`).
"""

from __future__ import annotations

import contextlib
import re
from binascii import hexlify, unhexlify
from collections.abc import Callable
from datetime import date
from typing import Any, Final

import orjson
import zstandard
from eventsourcing.persistence import Compressor

from att_jm.log.codec_dict import DICTIONARY_2

#: No stored state decodes to more than this (a snapshot may hold more than one event's
#: cap, `limits.MAX_EVENT_BYTES`; a crafted row must not inflate without bound).
MAX_DECODED: Final = 256 * 1024 * 1024
#: Zstandard's settings, chosen on the real event mix (docs/adr/0002-compact-events.md): a
#: 4 KiB window and tables (the dictionary is 3 KiB, states mostly < 1 KiB), greedy matching
#: of 5 bytes or more.
PARAMETERS: Final = {"window_log": 12, "chain_log": 12, "hash_log": 12, "search_log": 2,
                     "min_match": 5, "target_length": 16, "strategy": 3}

_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_ONE_BLOCK: Final = 0b101  # a block header's low bits: the last block, compressed
#: form byte -> (where the frame's size begins, the frame's left-out head, the size's bytes)
_FORMS: Final[dict[bytes, tuple[int, bytes, int]]] = {
    b"\x02": (1, _MAGIC + b"\x20", 1), b"\x03": (1, _MAGIC + b"\x60", 2), b"\x04": (1, b"", 0),
    b"\x05": (8, _MAGIC + b"\x20", 1), b"\x06": (8, _MAGIC + b"\x60", 2), b"\x07": (8, b"", 0),
}
_FORM_BYTE: Final = (b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x07")
_RETIRED: Final = b"\x01"

_TS_PREFIX: Final = b'{"timestamp":{"_type_":"datetime_iso","_data_":"'
_TS_END: Final = b'+00:00"},'
_TS_AT: Final = len(_TS_PREFIX)
_TS_SECONDS: Final = _TS_AT + 17  # after YYYY-MM-DDTHH:MM:
_TS_STOP: Final = _TS_AT + 26 + len(_TS_END)  # YYYY-MM-DDTHH:MM:SS.ffffff
_TS_MINUTE: Final = re.compile(rb"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:\Z")
_TS_REST: Final = re.compile(rb"[0-5]\d\.\d{6}\Z")  # SS.ffffff
_MINUTE: Final = 60_000_000  # microseconds
_EPOCH_DAY: Final = date(1970, 1, 1).toordinal()
_UUID: Final = re.compile(rb'"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"')
_UUID_HINT: Final = re.compile(rb"-[0-9a-f]{4}-[0-9a-f]{4}-")  # in every UUID's text
_TOKEN: Final = re.compile(rb"\x02(.{16})", re.DOTALL)


def _contexts() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """A new compressor and decompressor (their compress and decompress) with dictionary 2."""
    parameters = zstandard.ZstdCompressionParameters(
        write_checksum=0, write_dict_id=0, write_content_size=1, **PARAMETERS)
    dictionary = zstandard.ZstdCompressionDict(DICTIONARY_2)
    dictionary.precompute_compress(compression_params=parameters)  # indexed once
    return (zstandard.ZstdCompressor(dict_data=dictionary, compression_params=parameters).compress,
            zstandard.ZstdDecompressor(dict_data=dictionary).decompress)


#: Idle contexts, taken (`pop`) and given back (`append`) around each use: zstd's contexts
#: are not thread-safe, and both calls are atomic, so no two threads share one at a time
#: (there are as many as threads ever coded at once); cheaper than a threading.local.
_idle: list[tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = [_contexts()]


class UndecodableState(ValueError):
    """A stored state that claims an encoding but does not decode."""


# One-entry caches (a log's timestamps share their minute, a notification's events often
# their timestamp): minute text -> its microseconds since 1970, timestamp text -> idem, and
# microseconds -> the JSON's head up to the end of its timestamp.
_last_minute: tuple[bytes, int | None] = (b"", None)
_last_stamp: tuple[bytes, int | None] = (b"", None)
_last_head: tuple[int, bytes] = (-1, b"")


def _minute_micros(text: bytes) -> int | None:
    """Microseconds from 1970 to the minute `YYYY-MM-DDTHH:MM:` (None for any other text,
    or one before 1970)."""
    global _last_minute  # noqa: PLW0603 -- a one-entry cache
    value = None
    if _TS_MINUTE.match(text) is not None:
        with contextlib.suppress(ValueError):
            day = date.fromisoformat(text[:10].decode())
            if day.isoformat().encode() == text[:10] and day.toordinal() >= _EPOCH_DAY:
                value = (((day.toordinal() - _EPOCH_DAY) * 24 + int(text[11:13])) * 60
                         + int(text[14:16])) * _MINUTE
    _last_minute = (text, value)
    return value


def stamp_micros(plain: bytes) -> int | None:
    """The microseconds since 1970 of `plain`'s leading timestamp, when it is one the codec
    leaves out (`{"timestamp":{..."_data_":"YYYY-MM-DDTHH:MM:SS.ffffff+00:00"},`, 1970 to
    year 4253); else None."""
    global _last_stamp  # noqa: PLW0603 -- a one-entry cache (events share a timestamp)
    if not plain.startswith(_TS_PREFIX) or not plain.startswith(_TS_END, _TS_STOP - 9):
        return None
    text = plain[_TS_AT:_TS_STOP - 9]
    last = _last_stamp
    if last[0] == text:
        return last[1]
    minute = text[:17]
    cached = _last_minute
    at = cached[1] if cached[0] == minute else _minute_micros(minute)
    value = None
    if at is not None and _TS_REST.match(text, 17) is not None:
        value = at + int(text[17:19] + text[20:])  # SSffffff: microseconds into the minute
        if value >= 1 << 56:
            value = None
    _last_stamp = (text, value)
    return value


def stamped(micros: int, rest: bytes) -> bytes:
    """The JSON whose leading timestamp is `micros` (since 1970) and the rest `rest`."""
    global _last_head  # noqa: PLW0603 -- a one-entry cache
    last = _last_head
    if last[0] == micros:
        return last[1] + rest
    minute, within = divmod(micros, _MINUTE)
    hours, at = divmod(minute, 60)
    days, hour = divmod(hours, 24)
    head = b'%b%bT%02d:%02d:%02d.%06d+00:00"},' % (
        _TS_PREFIX, date.fromordinal(_EPOCH_DAY + days).isoformat().encode(), hour, at,
        within // 1_000_000, within % 1_000_000)
    _last_head = (micros, head)
    return head + rest


def _uuid_token(match: re.Match[bytes]) -> bytes:
    return b"\x02" + unhexlify(match[0][1:37].replace(b"-", b""))


def tokenize(plain: bytes) -> bytes | None:
    """`plain` with every UUID string as 0x02 and its 16 bytes; None when it holds 0x02
    (never in JSON text: orjson escapes every control character)."""
    if b"\x02" in plain:
        return None
    if _UUID_HINT.search(plain) is None:  # most states hold none: a cheaper scan first
        return plain
    return _UUID.sub(_uuid_token, plain)


def tokens_of(plain: bytes) -> bytes | None:
    """What the codec compresses of `plain`: the rest after its timestamp, or all of it, UUIDs
    tokenized (None: `plain` is stored as it is)."""
    if plain[:1] != b"{":
        return None
    return tokenize(plain if stamp_micros(plain) is None else plain[_TS_STOP:])


def _uuid_text(match: re.Match[bytes]) -> bytes:
    h = hexlify(match[1])
    return b'"%b-%b-%b-%b-%b"' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def detokenize(tokens: bytes) -> bytes:
    """The JSON `tokenize` made `tokens` of (ValueError when they are not such tokens)."""
    if b"\x02" not in tokens:
        return tokens
    plain = _TOKEN.sub(_uuid_text, tokens)  # a token's 16 bytes are skipped whole
    if b"\x02" in plain:
        raise ValueError("a truncated UUID")
    return plain


def encode_state(plain: bytes) -> bytes:
    """What the store keeps of an event's (or snapshot's) JSON `plain`."""
    if plain[:1] != b"{":
        return plain  # kept as it is: its first byte is no form's
    micros = stamp_micros(plain)
    tokens = tokenize(plain if micros is None else plain[_TS_STOP:])
    if tokens is None:
        return plain
    try:
        contexts = _idle.pop()
    except IndexError:
        contexts = _contexts()
    try:
        frame = contexts[0](tokens)
    finally:
        _idle.append(contexts)
    # magic (4), frame header (0x20: one segment, a 1-byte size; 0x60: a 2-byte one), the
    # size, then the block: 3 bytes of header (last, compressed, its length), its body. A
    # frame of one segment under 128 KiB is one block, the last: its length is the rest.
    kind = frame[4]
    at = 6 if kind == 0x20 else 7 if kind == 0x60 else 0
    if at and frame[at] & 0b111 == _ONE_BLOCK:
        parts = (frame[5:at], frame[at + 3:])
        form = 0 if at == 6 else 1
    else:
        parts = (frame, b"")
        form = 2
    if micros is None:
        return _FORM_BYTE[form] + parts[0] + parts[1]
    return b"".join((_FORM_BYTE[form + 3], micros.to_bytes(7, "big"), *parts))


def is_encoded(stored: bytes) -> bool:
    """Whether `stored` claims an encoding (else it is plain JSON, as written before)."""
    return stored[:1] in _FORMS or stored[:1] == _RETIRED


def decode_state(stored: bytes) -> bytes:
    """The JSON of a stored state (`stored` itself when it is plain); UndecodableState when
    it claims an encoding but does not decode."""
    form = _FORMS.get(stored[:1])
    if form is None:
        if stored[:1] == _RETIRED:
            raise UndecodableState("codec 0x01 (raw DEFLATE) was never merged")
        return stored
    at, head, size = form
    try:
        contexts = _idle.pop()
    except IndexError:
        contexts = _contexts()
    try:
        if head:
            body = at + size
            if len(stored) < body:
                raise ValueError("truncated")
            tokens = contexts[1](b"%b%b%b%b" % (
                head, stored[at:body], ((len(stored) - body) << 3 | _ONE_BLOCK).to_bytes(
                    3, "little"), stored[body:]))
        else:
            frame = stored[at:]
            if not 0 <= zstandard.frame_content_size(frame) <= MAX_DECODED:
                raise ValueError("no size, or beyond the bound")
            tokens = contexts[1](frame)
        if b"\x02" in tokens:  # most states hold no UUID
            tokens = detokenize(tokens)
        if at == 1:
            return tokens
        if len(stored) < 8:
            raise ValueError("truncated")
        return stamped(int.from_bytes(stored[1:8], "big"), tokens)
    except (zstandard.ZstdError, ValueError, OverflowError) as error:
        raise UndecodableState(f"an encoded state that does not decode ({error})") from None
    finally:
        _idle.append(contexts)


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

