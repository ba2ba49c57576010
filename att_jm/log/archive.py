"""The archive file: a sealed range of the log, compressed and self-verifying.

`att-jm audit archive` moves the rows of positions (previous anchor, P] out of the store into
such a file (docs/audit.md, "Archival"). The file is one Zstandard stream (written and read
in a streaming way: memory stays bounded whatever the range) of:

    header  JSON line: {"format": "att-jm-archive", "version": 1, "store", "first", "last",
            "previous", "seals_before", "created"}
    seals   b"S" + row, the seal events (`ledger.sealed`) covering first..last, in order
            (those stored after `last` are copies of rows the store keeps)
    rows    b"R" + row, for every stored row of positions first..last, in log order
    trailer b"E" + JSON {"rows", "seals", "sha256"}: SHA-256 of every byte before the "E"

with row = i64 position | u32 len | originator id | i64 version | u32 len | topic |
u32 len | state (the bytes as stored: plain JSON or the compact form, `att_jm.log.codec`),
integers big-endian. `previous` is the hash of the last seal before `first` ("" when the
archive starts the log), `seals_before` the number of seals before it.

`att_jm.log.archive_check.check_archive` reads a file back and checks it. The seals come
first so that a reader checks the rows as they stream by.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson
import zstandard

from att_jm.log.stored import AuditError, Row

FORMAT: Final = "att-jm-archive"
VERSION: Final = 1
LEVEL: Final = 9  # zstd level: ~2x slower than 3 to write, a few % smaller; read speed alike
_ROW: Final = b"R"
_SEAL: Final = b"S"
_END: Final = b"E"
_I64: Final = struct.Struct(">q")
_U32: Final = struct.Struct(">I")
_MAX_FIELD: Final = 1 << 30  # a length beyond this is a damaged file, not a row


class ArchiveError(AuditError):
    """An archive file that cannot be read or does not verify (the message names the file
    and, when known, the position)."""


@dataclass(frozen=True)
class Header:
    """What an archive says of itself, before its rows."""

    first: int
    last: int
    previous: str  # hash of the last seal before `first` ("" for the start of the log)
    seals_before: int  # seals before the first one of this archive
    store: str | None = None
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "store": self.store, "first": self.first,
                "last": self.last, "previous": self.previous,
                "seals_before": self.seals_before, "created": self.created}


def _pack(row: Row) -> bytes:
    oid, topic = row.originator_id.encode(), row.topic.encode()
    return b"".join((_I64.pack(row.position), _U32.pack(len(oid)), oid,
                     _I64.pack(row.originator_version), _U32.pack(len(topic)), topic,
                     _U32.pack(len(row.state)), row.state))


class ArchiveWriter:
    """Writes an archive to `path` + ".tmp", fsynced and renamed to `path` by `finish()`
    (a crash leaves no file at `path`). Seals first, then rows, each in order."""

    def __init__(self, path: str, header: Header) -> None:
        self.path = path
        self.temp = path + ".tmp"
        self._file = open(self.temp, "wb")  # noqa: SIM115 -- closed by finish()/abort()
        self._zstd = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).stream_writer(
            self._file, closefd=False)
        self._digest = hashlib.sha256()
        self.rows = 0
        self.seals = 0
        self._last = header.first - 1
        self._put(orjson.dumps(header.to_json()) + b"\n")

    def _put(self, data: bytes) -> None:
        self._digest.update(data)
        self._zstd.write(data)

    def add_rows(self, rows: Iterable[Row]) -> None:
        for row in rows:
            if row.position <= self._last:
                raise AuditError(f"archive rows out of order at position {row.position}")
            self._last = row.position
            self._put(_ROW + _pack(row))
            self.rows += 1

    def add_seal(self, row: Row) -> None:
        if self.rows:
            raise AuditError("archive seals go before the rows")
        self._put(_SEAL + _pack(row))
        self.seals += 1

    def finish(self) -> tuple[int, str]:
        """Write the trailer, fsync, rename; (size in bytes, SHA-256 of the file)."""
        trailer = {"rows": self.rows, "seals": self.seals, "sha256": self._digest.hexdigest()}
        self._zstd.write(_END + orjson.dumps(trailer) + b"\n")
        self._zstd.flush(zstandard.FLUSH_FRAME)
        self._zstd.close()  # type: ignore[no-untyped-call]  # zstandard's stub
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp, self.path)
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return os.path.getsize(self.path), file_sha256(self.path)

    def abort(self) -> None:
        """Drop the temporary file."""
        with contextlib.suppress(OSError, ValueError, zstandard.ZstdError):
            self._zstd.close()  # type: ignore[no-untyped-call]  # zstandard's stub
        self._file.close()
        Path(self.temp).unlink(missing_ok=True)


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (as stored, compressed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# Reading -----------------------------------------------------------------------------------


class _Stream:
    """Exact reads from the decompressed stream, each byte also hashed."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw = raw
        self.name = name
        self.digest = hashlib.sha256()

    def read(self, size: int, *, hashed: bool = True) -> bytes:
        parts: list[bytes] = []
        left = size
        while left:
            try:
                chunk = self._raw.read(left)
            except zstandard.ZstdError as error:
                raise ArchiveError(f"{self.name}: damaged ({error})") from None
            if not chunk:
                raise ArchiveError(f"{self.name}: truncated (the file ends too early)")
            parts.append(chunk)
            left -= len(chunk)
        data = b"".join(parts)
        if hashed:
            self.digest.update(data)
        return data

    def read_rest(self) -> bytes:
        """What is left of the stream (nothing, in a sound file)."""
        try:
            return self._raw.read(1 << 16)
        except zstandard.ZstdError as error:
            raise ArchiveError(f"{self.name}: damaged ({error})") from None

    def line(self) -> bytes:
        out = bytearray()
        while True:
            byte = self.read(1)
            out += byte
            if byte == b"\n":
                return bytes(out)
            if len(out) > 1 << 20:
                raise ArchiveError(f"{self.name}: no header line")

    def row(self) -> Row:
        position = _I64.unpack(self.read(8))[0]
        oid = self._text()
        version = _I64.unpack(self.read(8))[0]
        topic = self._text()
        return Row(position, oid, version, topic, self._field())

    def _field(self) -> bytes:
        size = _U32.unpack(self.read(4))[0]
        if size > _MAX_FIELD:
            raise ArchiveError(f"{self.name}: damaged (a field of {size} bytes)")
        return self.read(size)

    def _text(self) -> str:
        try:
            return self._field().decode()
        except UnicodeDecodeError:
            raise ArchiveError(f"{self.name}: damaged (a text that is not UTF-8)") from None


class ArchiveReader:
    """One archive file read in one pass: `header` at once, then `rows()`, then `seals`
    and the trailer's check (ArchiveError when the file is damaged or truncated)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        try:
            self._file = open(path, "rb")  # noqa: SIM115 -- closed by close()
        except OSError as error:
            raise ArchiveError(f"cannot read the archive {path}: {error}") from None
        raw = zstandard.ZstdDecompressor().stream_reader(self._file, read_across_frames=False)
        self._stream = _Stream(io.BufferedReader(raw, 1 << 16), self.name)
        self.trailer: dict[str, Any] | None = None
        self._kind = b""  # the record read ahead (the first that is not a seal)
        try:
            self.header = self._header()
            self.seal_rows: list[Row] = []
            while (kind := self._next_kind()) == _SEAL:
                self.seal_rows.append(self._stream.row())
            self._kind = kind
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _header(self) -> Header:
        try:
            data = orjson.loads(self._stream.line())
            if data.get("format") != FORMAT:
                raise ArchiveError(f"{self.name}: not an att-jm archive")
            if data.get("version") != VERSION:
                raise ArchiveError(f"{self.name}: archive version {data.get('version')!r} "
                                   f"is not {VERSION}")
            return Header(first=int(data["first"]), last=int(data["last"]),
                          previous=str(data["previous"]),
                          seals_before=int(data["seals_before"]),
                          store=data.get("store"), created=str(data.get("created", "")))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError,
                ValueError) as error:
            if isinstance(error, ArchiveError):
                raise
            raise ArchiveError(f"{self.name}: not an att-jm archive ({error})") from None

    def _next_kind(self) -> bytes:
        stream = self._stream
        kind = stream.read(1, hashed=False)
        if kind != _END:
            stream.digest.update(kind)
        return kind

    def rows(self) -> Iterator[Row]:
        """The archived rows, in log order; then the trailer is read and its digest checked
        (ArchiveError when it differs)."""
        stream = self._stream
        kind = self._kind
        while True:
            if kind == _END:
                self._finish(stream.digest.hexdigest())
                return
            if kind != _ROW:
                raise ArchiveError(f"{self.name}: damaged (unknown record {kind!r})")
            yield stream.row()
            kind = self._next_kind()

    def _finish(self, digest: str) -> None:
        out = bytearray()
        while not out.endswith(b"\n"):
            out += self._stream.read(1, hashed=False)
            if len(out) > 1 << 16:
                raise ArchiveError(f"{self.name}: damaged trailer")
        try:
            trailer = orjson.loads(bytes(out))
        except orjson.JSONDecodeError:
            raise ArchiveError(f"{self.name}: damaged trailer") from None
        if not isinstance(trailer, dict) or trailer.get("sha256") != digest:
            raise ArchiveError(f"{self.name}: its content does not match its trailer's "
                               "SHA-256 (modified)")
        self.trailer = trailer
        if self._stream.read_rest():
            raise ArchiveError(f"{self.name}: bytes after its trailer")
