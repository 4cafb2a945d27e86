"""Opening STDF files: compression, byte order, and a record-header walk for damaged files.

Nothing here decodes record fields; the engines do that. This module answers three questions
that every engine needs answered the same way: how to get at the bytes (plain, gzip, bzip2,
zip), which byte order the file uses, and, when a parse fails, where exactly reading stopped.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import struct
import threading
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FAR_TYPE = (0, 10)
# OSErrors of a storage share that is down or busy: worth another try, never a verdict on a file.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ETIMEDOUT, errno.EIO, errno.ESTALE, errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH,
        errno.ENETUNREACH, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EAGAIN,
        errno.EBUSY, errno.EINTR,
    }
)  # fmt: skip
CPU_TYPE_BYTE_ORDER = {1: ">", 2: "<"}  # STDF V4: 1 = Sun (big-endian), 2 = PC (little-endian)


class StdfReadError(Exception):
    """An STDF file that cannot be read; the message names the file and the byte offset."""

    def __init__(self, path: str | Path, message: str, offset: int | None = None) -> None:
        self.path = str(path)
        self.offset = offset
        self.reason = message
        where = f" (reading stopped at byte {offset})" if offset is not None else ""
        super().__init__(f"{self.path}: {message}{where}")


def share_failure(exc: BaseException) -> bool:
    """Whether an error while reading is the storage's (retry) rather than the file's (verdict)."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


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
        if share_failure(exc):
            raise
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
    raise StdfReadError(
        path, f"FAR record length is {head[0]:#04x}{head[1]:02x}, not 2 in either byte order", 0
    )


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


def walk_records(path: str | Path, order: str, chunk: int = 1 << 20) -> Walk:
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
    except EOFError:  # the compressed file itself was cut short: a truncation like any other
        return Walk(
            records,
            offset,
            base + len(buf),
            f"truncated: the compressed stream ends at byte {base + len(buf)}",
        )
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        if share_failure(exc):
            raise
        # the stream broke inside the chunk after `base + len(buf)`
        return Walk(records, base + len(buf), base + len(buf), f"decompression failed: {exc}")
    stream_end = base + len(buf)
    if offset == stream_end:
        return Walk(records, offset, stream_end, None)
    missing = "header" if stream_end - offset < 4 else "record"
    return Walk(records, offset, stream_end, f"truncated: the last {missing} at byte {offset} is incomplete")


class StreamWindow:
    """The decompressed stream of a file, decompressed ahead on a thread, for a reader that looks
    at bytes near a moving position (the records between those a parser has delivered).

    Bytes before the position given to `release` are dropped, and the thread stays at most
    `lead` bytes past it, so memory stays bounded whatever the file size (zlib and bz2 release
    the GIL, so decompressing overlaps with the reader's work).
    """

    def __init__(self, path: str | Path, lead: int = 1 << 25, chunk: int = 1 << 20) -> None:
        self.lead = lead
        self.chunks: deque[tuple[int, bytes]] = deque()  # (stream offset, data), in order
        self.start = self.end = 0  # stream offsets of the first kept byte and past the last
        self.done = self.closed = False
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._fill, args=(path, chunk), name="stdf-window", daemon=True)
        self.thread.start()

    def _fill(self, path: str | Path, chunk: int) -> None:
        try:
            with open_stream(path) as stream:
                while data := stream.read(chunk):
                    with self.ready:
                        while self.end - self.start > self.lead and not self.closed:
                            self.ready.wait()
                        if self.closed:
                            return
                        self.chunks.append((self.end, data))
                        self.end += len(data)
                        self.ready.notify_all()
        except (OSError, EOFError, zipfile.BadZipFile, ValueError):
            pass  # a damaged stream: reads past what came out fail; the engine reports the damage
        finally:
            with self.ready:
                self.done = True
                self.ready.notify_all()

    def read(self, begin: int, end: int) -> bytes | None:
        """Stream bytes begin..end; None if they are released, too far ahead or past the end."""
        with self.ready:
            if begin < self.start or end - self.start > self.lead:
                return None
            while self.end < end and not self.done:
                self.ready.wait()
            if self.end < end:
                return None
            parts = [
                data[max(begin - at, 0) : end - at]
                for at, data in self.chunks
                if at < end and at + len(data) > begin
            ]
        return b"".join(parts)

    def release(self, before: int) -> None:
        """Drop the bytes before stream offset `before` (never read again)."""
        with self.ready:
            while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= before:
                at, data = self.chunks.popleft()
                self.start = at + len(data)
            self.ready.notify_all()

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.chunks.clear()
            self.ready.notify_all()
        self.thread.join()


def write_prefix(path: str | Path, end: int, out: BinaryIO, chunk: int = 1 << 24) -> None:
    """Copy the first `end` decompressed bytes of `path` into `out` (salvaging a truncated file)."""
    left = end
    with open_stream(path) as stream:
        while left > 0 and (data := stream.read(min(chunk, left))):
            out.write(data)
            left -= len(data)
    out.flush()


def results_per_part(path: str | Path, order: str, sample: int = 1 << 22) -> float | None:
    """Test results (PTR/FTR/MPR) per part in the first `sample` bytes; None if no part ended there."""
    data = b""
    try:
        with open_stream(path) as stream:
            while len(data) < sample and (chunk := stream.read(min(1 << 20, sample - len(data)))):
                data += chunk
    except (OSError, EOFError, zipfile.BadZipFile, ValueError):
        pass  # a damaged file: estimate from what could be read; the engines report the damage
    fmt = struct.Struct(order + "HBB")
    offset = results = parts = 0
    while offset + 4 <= len(data):
        rec_len, typ, sub = fmt.unpack_from(data, offset)
        if typ == 15:
            results += 1
        elif (typ, sub) == (5, 20):
            parts += 1
        offset += 4 + rec_len
    return results / parts if parts else None


def stored_stream_size(path: str | Path) -> int | None:
    """The decompressed size as the container records it, without decompressing.

    Plain files: their size; zip: the member's size; gzip: ISIZE, the size modulo 2**32;
    bzip2 records nothing (None).
    """
    kind = compression_of(path)
    if kind == "none":
        return Path(path).stat().st_size
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            return archive.infolist()[0].file_size
    if kind == "gzip":
        with open(path, "rb") as f:
            f.seek(-4, 2)
            return struct.unpack("<I", f.read(4))[0]
    return None


def ends_inside_record(path: str | Path, records_end: int) -> bool:
    """True when bytes remain after the last complete record (a header cut short at the end)."""
    try:
        size = stored_stream_size(path)
        if size is None:  # bzip2: count by decompressing once
            size = 0
            with open_stream(path) as stream:
                while data := stream.read(1 << 22):
                    size += len(data)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError):
        return False  # a damaged container is reported by the engines
    if compression_of(path) == "gzip":
        return size != records_end % (1 << 32)
    return size != records_end
