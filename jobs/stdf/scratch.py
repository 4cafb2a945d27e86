"""A compressed STDF file decompressed once, into a plain scratch copy on local disk.

stdf-convert needs a seekable path (it refuses a pipe), and the arrow engine's part walker reads
the same bytes again; without a copy each would decompress the file on its own. The copy is
made in one pass that also hashes the compressed bytes (gzip: ISA-L through `isal`, about
twice zlib's speed), is bounded (`Scratch.max_bytes`, and the free space is checked first), and
is removed on every exit path; a killed run's copy is swept by the next conversion on the host
(its name holds the host and the writer's pid, see jobs/files.py).
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import hashlib
import shutil
import socket
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from isal import isal_zlib

from jobs.files import remove_leftovers, temp_sibling

from .source import StdfReadError, compression_of, stored_stream_size

CHUNK = 1 << 20
RAW_CHUNK = 1 << 16
DECOMPRESSION_ERRORS = (OSError, zipfile.BadZipFile, ValueError, zlib.error, isal_zlib.error)


@dataclass(frozen=True)
class Scratch:
    """Where plain copies go (`folder`; "" is the system's temporary folder) and how big one may be."""

    folder: str = ""
    max_bytes: int = 16 << 30

    def path(self) -> Path:
        return Path(self.folder or tempfile.gettempdir())


@dataclass
class PlainCopy:
    """What the readers open: the file itself when it is plain, else its decompressed copy."""

    path: Path
    compression: str
    sha256: str | None = None  # of the file's own (compressed) bytes; None for a plain file
    stream_bytes: int = 0
    seconds: float = 0.0
    truncated: bool = False  # the compressed stream ended early: the copy holds what came out

    def facts(self) -> dict:
        """How the file was decompressed, for the manifest (nothing for a plain file)."""
        if self.compression == "none":
            return {}
        return {
            "compression": self.compression,
            "bytes": self.stream_bytes,
            "seconds": round(self.seconds, 3),
        }


def prefix() -> str:
    """The start of this host's scratch names (a scratch folder is local; the pid is this host's)."""
    return f".stdf-scratch-{socket.gethostname()}-"


@contextlib.contextmanager
def plain_copy(path: Path, scratch: Scratch) -> Iterator[PlainCopy]:
    """The plain bytes of `path` on local disk, for the time of the block."""
    kind = compression_of(path)
    if kind == "none":
        yield PlainCopy(path, kind)
        return
    folder = scratch.path()
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder, 0, prefix=prefix())  # only dead writers' copies: a live pid keeps its own
    target = temp_sibling(folder / f"{prefix()[1:]}{path.name}")
    _check_space(path, kind, folder, scratch.max_bytes)
    try:
        yield _decompress(path, kind, target, scratch.max_bytes)
    finally:
        target.unlink(missing_ok=True)


def _check_space(path: Path, kind: str, folder: Path, max_bytes: int) -> None:
    """Refuse at once a copy known not to fit (gzip records its size modulo 2**32, bzip2 none)."""
    expected = stored_stream_size(path) or 0
    if kind == "gzip" and expected < path.stat().st_size:  # a wrapped ISIZE: unknown
        expected = 0
    if expected > max_bytes:
        raise _too_big(path, max_bytes)
    free = shutil.disk_usage(folder).free
    if expected > free:
        raise OSError(
            errno.ENOSPC,
            f"scratch space: {path.name} decompresses to {expected} bytes, {folder} has {free} free "
            "([stdf] scratch_dir)",
        )


def _too_big(path: Path, max_bytes: int) -> OSError:
    return OSError(
        errno.EFBIG,
        f"scratch space: {path.name} decompresses to more than {max_bytes} bytes ([stdf] scratch_max_bytes)",
    )


def _decompress(path: Path, kind: str, target: Path, max_bytes: int) -> PlainCopy:
    """Copy the decompressed stream into `target`, hashing the compressed bytes on the way."""
    started = time.perf_counter()
    copy = PlainCopy(target, kind)
    digest = hashlib.sha256()
    with open(path, "rb") as raw, open(target, "wb") as out:
        try:
            for data in _stream(path, kind, raw, digest):
                copy.stream_bytes += len(data)
                if copy.stream_bytes > max_bytes:
                    raise _too_big(path, max_bytes)
                _write(out, data, target)
        except EOFError:  # the compressed file was cut short: the copy holds all that came out
            copy.truncated = True
        except DECOMPRESSION_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG):
                raise
            raise StdfReadError(
                path, f"cannot decode: decompression failed: {exc}", copy.stream_bytes
            ) from None
        while chunk := raw.read(CHUNK):  # what the decompressor left unread (all of a zip: read by seeking)
            digest.update(chunk)
    copy.sha256 = digest.hexdigest()
    copy.seconds = time.perf_counter() - started
    return copy


def _stream(path: Path, kind: str, raw: BinaryIO, digest: hashlib._Hash) -> Iterator[bytes]:
    """The decompressed bytes, piece by piece; EOFError after the last piece of a stream cut short.

    gzip and bzip2 are decompressed from our own reads of the file (which are hashed), member
    after member, by decompressor objects: unlike gzip.open and igzip.open, they hand on every
    byte that came out before a cut, so a salvage keeps every complete record.
    """
    if kind == "zip":
        with _zip_member(path) as member:
            while data := member.read(CHUNK):
                yield data
        return
    new = (lambda: isal_zlib.decompressobj(wbits=31)) if kind == "gzip" else bz2.BZ2Decompressor
    decompressor, fed = new(), False
    while chunk := raw.read(RAW_CHUNK):  # small reads: the output of one is at most ~1000x its size
        digest.update(chunk)
        while chunk and (fed or chunk.strip(b"\0")):  # zero padding may follow the last member
            fed = True
            yield decompressor.decompress(chunk)
            chunk = decompressor.unused_data if decompressor.eof else b""
            if decompressor.eof:  # another member follows, or padding
                decompressor, fed = new(), False
    if fed:
        raise EOFError(f"{path.name}: the compressed stream ends inside a member")


@contextlib.contextmanager
def _zip_member(path: Path) -> Iterator[BinaryIO]:
    with zipfile.ZipFile(path) as archive:
        members = archive.namelist()
        if not members:
            raise StdfReadError(path, "zip archive has no members", 0)
        with archive.open(members[0]) as member:
            yield member


def _write(out: BinaryIO, data: bytes, target: Path) -> None:
    try:
        out.write(data)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise OSError(errno.ENOSPC, f"scratch space: {target.parent} is full ([stdf] scratch_dir)") from None
