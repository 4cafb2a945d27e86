"""Opening STDF files: compression, byte order, and a record-header walk for damaged files.

Nothing here decodes record fields; the engines do that. This module answers three questions
that every engine needs answered the same way: how to get at the bytes (plain, gzip, bzip2,
zip), which byte order the file uses, and, when a parse fails, where exactly reading stopped.
"""

from __future__ import annotations

import bz2
import gzip
import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FAR_TYPE = (0, 10)
CPU_TYPE_BYTE_ORDER = {1: ">", 2: "<"}  # STDF V4: 1 = Sun (big-endian), 2 = PC (little-endian)


class StdfReadError(Exception):
    """An STDF file that cannot be read; the message names the file and the byte offset."""

    def __init__(self, path: str | Path, message: str, offset: int | None = None) -> None:
        self.path = str(path)
        self.offset = offset
        self.reason = message
        where = f" (reading stopped at byte {offset})" if offset is not None else ""
        super().__init__(f"{self.path}: {message}{where}")


def compression_of(path: str | Path) -> str:
    """'gzip', 'bzip2', 'zip' or 'none', decided from the file's magic bytes, not its name."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic[:3] == b"BZh":
        return "bzip2"
    if magic == b"PK\x03\x04":
        return "zip"
    return "none"


def open_stream(path: str | Path) -> BinaryIO:
    """The decompressed byte stream of an STDF file (zip: its first member)."""
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bzip2":
        return bz2.open(path, "rb")
    if kind == "zip":
        archive = zipfile.ZipFile(path)
        members = archive.namelist()
        if not members:
            raise StdfReadError(path, "zip archive has no members", 0)
        return archive.open(members[0])
    return open(path, "rb")


@dataclass(frozen=True)
class ByteOrder:
    """The byte order read off the FAR, and whether its CPU_TYPE agrees with it."""

    order: str  # "<" or ">"
    cpu_type: int
    stdf_ver: int

    @property
    def cpu_type_agrees(self) -> bool:
        return CPU_TYPE_BYTE_ORDER.get(self.cpu_type) == self.order

    @property
    def name(self) -> str:
        return "little-endian" if self.order == "<" else "big-endian"


def sniff_byte_order(path: str | Path) -> ByteOrder:
    """Decide the byte order from the FAR's REC_LEN (always 2), cross-checked with CPU_TYPE.

    Some real testers write a wrong CPU_TYPE; REC_LEN cannot lie, so it wins.
    """
    try:
        with open_stream(path) as stream:
            head = stream.read(6)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise StdfReadError(path, f"cannot decompress: {exc}", 0) from None
    if len(head) == 0:
        raise StdfReadError(path, "empty file", 0)
    if len(head) < 6:
        raise StdfReadError(path, f"file too short for an STDF FAR record ({len(head)} bytes)", 0)
    typ_sub = (head[2], head[3])
    if typ_sub != FAR_TYPE:
        raise StdfReadError(path, f"not an STDF file: first record is type {typ_sub}, not FAR (0, 10)", 0)
    for order in ("<", ">"):
        if struct.unpack(order + "H", head[:2])[0] == 2:
            return ByteOrder(order=order, cpu_type=head[4], stdf_ver=head[5])
    raise StdfReadError(path, f"FAR record length is {head[0]:#04x}{head[1]:02x}, not 2 in either byte order", 0)


@dataclass(frozen=True)
class Walk:
    """Where a record-header walk over the decompressed stream ended."""

    records: int  # complete records seen
    complete_end: int  # byte offset just past the last complete record
    stream_end: int  # bytes the stream yielded
    problem: str | None  # None when the stream ends exactly on a record boundary

    @property
    def truncated(self) -> bool:
        return self.problem is not None and self.problem.startswith("truncated")


def walk_records(path: str | Path, order: str, chunk: int = 1 << 24) -> Walk:
    """Follow REC_LEN from header to header to find where the record chain breaks.

    Used only after a fast engine has failed, to name the byte offset and tell a truncated
    file (the last record runs past the end) from one whose decompression fails.
    """
    fmt = struct.Struct(order + "H")
    offset = records = 0
    buf = b""
    base = 0  # stream offset of buf[0]
    try:
        with open_stream(path) as stream:
            while True:
                data = stream.read(chunk)
                if not data:
                    break
                buf = buf[offset - base :] + data
                base = offset
                while offset + 4 <= base + len(buf):
                    rec_len = fmt.unpack_from(buf, offset - base)[0]
                    if offset + 4 + rec_len > base + len(buf):
                        break
                    offset += 4 + rec_len
                    records += 1
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        return Walk(records, offset, base + len(buf), f"decompression failed: {exc}")
    stream_end = base + len(buf)
    if offset == stream_end:
        return Walk(records, offset, stream_end, None)
    missing = "header" if stream_end - offset < 4 else "record"
    return Walk(records, offset, stream_end, f"truncated: the last {missing} at byte {offset} is incomplete")


def write_prefix(path: str | Path, end: int, out: BinaryIO, chunk: int = 1 << 24) -> None:
    """Copy the first `end` decompressed bytes of `path` into `out` (salvaging a truncated file)."""
    left = end
    with open_stream(path) as stream:
        while left > 0:
            data = stream.read(min(chunk, left))
            if not data:
                break
            out.write(data)
            left -= len(data)
    out.flush()


def read_all(path: str | Path) -> bytes:
    """The whole decompressed stream (small files and tests)."""
    with open_stream(path) as stream:
        return stream.read()


def as_stream(data: bytes) -> BinaryIO:
    return io.BytesIO(data)
