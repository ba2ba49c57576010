"""Train the stored-state codec's preset dictionary (issue 16.2; `att_jm/log/codec.py`).

    python -m bench.codec_dict [--events 30000] [--seed 11] [--write]
    python -m bench.codec_dict --cost STORE   # µs per encode / decode of STORE's states

Builds a log of `--events` events with `bench.replay`'s generator (the real aggregates and
application: jobs, notifications matching zero to two jobs, executions that start, succeed
or fail, operators, rejections, settings, Auto Cleanup, seals), tokenizes every stored state
as the codec does, and makes a Zstandard dictionary of them: its content is, for each topic,
its median-length state (a seal's with its digests cut short), the rarest first, so that the
commonest sit nearest the data (shorter offsets), cut to the codec's 4 KiB window; zstd's
`finalize_dict` then adds the entropy tables fitted to all the states (it needs the
`backports.zstd` package, `pip install backports-zstd`, only here: the codec reads the
dictionary with `zstandard`). It prints the dictionary's size and what it does to the states
of the log it was trained on; `--write` writes it to `att_jm/log/codec_dict.py` as the next
dictionary. A shipped dictionary is never changed: stored rows name theirs by their first
byte, so a new one gets new codec bytes, and the old one stays.

Dictionary 2 (`DICTIONARY_2`) was made by `python -m bench.codec_dict --events 30000 --seed 11
--write` on 2026-12-03 (dictionary 1, raw DEFLATE's, was never merged).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sqlite3
import statistics
import tempfile
import timeit
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import zstandard

from att_jm.log.codec import PARAMETERS, decode_state, encode_state, tokens_of
from att_jm.log.rows import readonly_uri
from bench.replay import generate

#: The codec's window (2^12): the most of the dictionary's content a match can reach.
REACH = 1 << 12
#: The compression level finalize_dict fits the entropy tables to.
LEVEL = 3
TARGET = Path(__file__).resolve().parent.parent / "att_jm" / "log" / "codec_dict.py"


def states(store: Path) -> dict[str, list[bytes]]:
    """What the codec compresses of the states of the log at `store`, by topic."""
    db = sqlite3.connect(readonly_uri(str(store)), uri=True)
    out: dict[str, list[bytes]] = defaultdict(list)
    try:
        for topic, state in db.execute("SELECT topic, state FROM stored_events ORDER BY rowid"):
            plain = decode_state(bytes(state))
            if topic == "att_jm:Ledger.Sealed":  # keys and shape, not 1,000 random digests
                head, _, tail = plain.partition(b'"digests":"')
                plain = head + b'"digests":"' + tail[:16] + b'"}'
            tokens = tokens_of(plain)
            if tokens is not None:
                out[str(topic)].append(tokens)
    finally:
        db.close()
    return out


def content(by_topic: dict[str, list[bytes]]) -> bytes:
    parts: list[bytes] = []
    for topic in sorted(by_topic, key=lambda t: (len(by_topic[t]), t)):
        samples = sorted(by_topic[topic], key=len)
        parts.append(samples[len(samples) // 2])
    return b"".join(parts)[-REACH:]


def train(by_topic: dict[str, list[bytes]]) -> bytes:
    """The dictionary: `content` and entropy tables fitted to every state."""
    zstd: Any = importlib.import_module("backports.zstd")  # only here: pip install backports-zstd
    raw = content(by_topic)
    samples = [sample for topic in sorted(by_topic) for sample in by_topic[topic]]
    return bytes(zstd.finalize_dict(zstd.ZstdDict(raw, is_raw=True), samples, len(raw) + 1024,
                                    LEVEL).dict_content)


def ratio(dictionary: bytes, by_topic: dict[str, list[bytes]]) -> dict[str, tuple[float, float]]:
    """{topic: (average tokenized bytes, average stored bytes)} with `dictionary` (the
    codec's settings; magic, frame header and block header left out, the form byte and
    the timestamp's 7 bytes counted, as the codec stores most states)."""
    compressor = zstandard.ZstdCompressor(
        dict_data=zstandard.ZstdCompressionDict(dictionary),
        compression_params=zstandard.ZstdCompressionParameters(
            write_checksum=0, write_dict_id=0, write_content_size=1, **PARAMETERS))
    out = {}
    for topic, samples in sorted(by_topic.items()):
        sizes = [len(compressor.compress(sample)) - 7 + 8 for sample in samples]
        out[topic] = (statistics.fmean(map(len, samples)), statistics.fmean(sizes))
    return out


def literal(name: str, data: bytes, width: int = 88) -> str:
    """`name = (b"..." b"...")`, lines of at most `width` characters."""
    lines, line = [], ""
    for byte in data:
        char = chr(byte)
        piece = (char if 0x20 <= byte < 0x7F and char not in '\\"' else
                 "\\\\" if char == "\\" else '\\"' if char == '"' else f"\\x{byte:02x}")
        if len(line) + len(piece) > width - 8:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    body = "\n".join(f'    b"{text}"' for text in lines)
    return f"{name}: Final = (\n{body}\n)\n"


def _each(work: Callable[[bytes], object], items: list[bytes]) -> None:
    for item in items:
        work(item)


def cost(store: Path, rounds: int = 9) -> None:
    """Microseconds per state to encode (JSON -> stored) and decode (stored -> JSON) with the
    codec, and orjson.loads of the JSON for scale, over the states of `store` (the median and
    the best of `rounds` passes: the machine is shared)."""
    db = sqlite3.connect(readonly_uri(str(store)), uri=True)
    try:
        plain = [decode_state(bytes(s)) for (s,) in db.execute(
            "SELECT state FROM stored_events WHERE topic != 'att_jm:Ledger.Sealed'")]
    finally:
        db.close()
    stored = [encode_state(p) for p in plain]
    cases: tuple[tuple[str, Callable[[bytes], object], list[bytes]], ...] = (
        ("encode", encode_state, plain), ("decode", decode_state, stored),
        ("orjson.loads", orjson.loads, plain))
    for label, work, items in cases:
        times = [timeit.timeit(functools.partial(_each, work, items), number=1)
                 for _ in range(rounds)]
        print(f"  {label:13} {1e6 * statistics.median(times) / len(items):6.2f} us per state, "
              f"median (best {1e6 * min(times) / len(items):.2f}; {len(items)} states)")
    print(f"  bytes: {sum(map(len, plain)) / len(plain):.1f} -> "
          f"{sum(map(len, stored)) / len(stored):.1f} per state")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--write", action="store_true",
                        help="write att_jm/log/codec_dict.py (a new dictionary only)")
    parser.add_argument("--cost", type=Path, help="measure the codec on this store's states")
    args = parser.parse_args(argv)
    if args.cost is not None:
        cost(args.cost)
        return 0
    with tempfile.TemporaryDirectory(prefix="att-jm-dict-") as tmp:
        store = Path(tmp) / "train.db"
        generate(store, args.events, seed=args.seed)
        by_topic = states(store)
    dictionary = train(by_topic)
    print(f"dictionary: {len(dictionary)} bytes from {sum(map(len, by_topic.values()))} states")
    for topic, (plain, packed) in ratio(dictionary, by_topic).items():
        print(f"  {topic:36} tokenized {plain:7.1f} B -> {packed:6.1f} B")
    if args.write:
        TARGET.write_text(
            '"""The stored-state codec\'s preset dictionaries (`att_jm.log.codec`): never '
            "changed once\nshipped (stored rows name theirs by their first byte). Made by "
            '`python -m bench.codec_dict`."""\n\nfrom __future__ import annotations\n\n'
            "from typing import Final\n\n" + literal("DICTIONARY_2", dictionary))
        print(f"written: {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
