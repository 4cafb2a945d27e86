"""STDF V4 writer: one record at a time (`StdfWriter.write`) or whole blocks at once (`pack_records`).

    with StdfWriter("lot_01.stdf.gz", byte_order=">") as w:     # FAR (CPU_TYPE 1) is written for you
        w.write("MIR", SETUP_T=t0, START_T=t0, STAT_NUM=1, LOT_ID="L1", ...)
        w.write("PIR", HEAD_NUM=1, SITE_NUM=1)
        w.write_bytes(pack_ptrs(test_num, 1, 1, 0, 0, result, ">"))  # a million short PTRs, no loop
        ...

Rules the encoder follows (STDF V4 "Optional fields"):

- Fields left out at the end of a record are omitted: the record is shortened, and readers fill
  in the defaults. A field left out *before* one that is given gets the specification's
  "missing" value (`records.MISSING`, else 0 / "" / " " / empty array).
- An array's count field may be left out; it is then the array's length.
- Strings must be ASCII (pystdf decodes them as ASCII): anything else raises `StdfEncodeError`.
- Integers out of their field's range raise `StdfEncodeError` rather than wrapping around.

The file is written to a temporary name beside the target and renamed into place only when
the writer closes cleanly, so a crash never leaves a half-written file under the final name.
Compression follows the suffix: .gz (gzip header with mtime 0, so output is reproducible),
.bz2, anything else plain.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

from jobs.files import file_mode

from .records import ARRAY_COUNTS, ELEMENT_WIDTHS, LAYOUTS, RECORD_CODES, default_value

__all__ = [
    "CPU_TYPES",
    "PackedRecords",
    "StdfEncodeError",
    "StdfWriter",
    "encode_record",
    "interleave",
    "pack_ftrs",
    "pack_pirs",
    "pack_prrs",
    "pack_ptrs",
    "pack_records",
    "record_offsets",
]

# FAR.CPU_TYPE for each byte order: 1 = big-endian (Sun/SPARC), 2 = little-endian (x86).
CPU_TYPES: dict[str, int] = {">": 1, "<": 2}

_STRUCT = dict(U1="B", U2="H", U4="I", U8="Q", I1="b", I2="h", I4="i", I8="q", R4="f", R8="d", B1="B")
_NUMPY = dict(
    U1="u1", U2="u2", U4="u4", U8="u8", I1="i1", I2="i2", I4="i4", I8="i8", R4="f4", R8="f8", B1="u1"
)
# GDR value type codes (spec: "Vn"); 0 is a pad byte, 13 a nibble.
_GDR_CODES = {
    1: "U1",
    2: "U2",
    3: "U4",
    4: "I1",
    5: "I2",
    6: "I4",
    7: "R4",
    8: "R8",
    10: "Cn",
    11: "Bn",
    12: "Dn",
}
_GDR_PAD, _GDR_N1 = 0, 13


class StdfEncodeError(ValueError):
    """A value that cannot be written into its STDF field (wrong type, range, or not ASCII)."""


def _check_order(byte_order: str) -> str:
    if byte_order not in CPU_TYPES:
        raise ValueError(f"byte_order must be '<' (little-endian) or '>' (big-endian), not {byte_order!r}")
    return byte_order


def _layout(name: str) -> list[tuple[str, str]]:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise StdfEncodeError(f"unknown STDF record type {name!r}") from None


# --------------------------------------------------------------------------------------------
# One record


def _ascii(record: str, field: str, value: Any) -> bytes:
    if isinstance(value, bytes | bytearray) and bytes(value).isascii():
        return bytes(value)
    if not isinstance(value, str | bytes | bytearray):
        raise StdfEncodeError(f"{record}.{field}: expected a string, got {type(value).__name__}")
    if isinstance(value, str) and value.isascii():
        return value.encode("ascii")
    raise StdfEncodeError(f"{record}.{field}: {value!r} is not ASCII (STDF strings are ASCII)")


def _encode_scalar(record: str, field: str, stdf_type: str, value: Any, order: str) -> bytes:
    if stdf_type in _STRUCT:
        try:
            return struct.pack(order + _STRUCT[stdf_type], value)
        except (struct.error, TypeError) as exc:
            raise StdfEncodeError(f"{record}.{field} ({stdf_type}): cannot encode {value!r}: {exc}") from None
    if stdf_type == "C1":
        raw = _ascii(record, field, value)
        if len(raw) != 1:
            raise StdfEncodeError(f"{record}.{field} (C1): expected one character, got {value!r}")
        return raw
    if stdf_type == "Cn":
        raw = _ascii(record, field, value)
        if len(raw) > 255:
            raise StdfEncodeError(f"{record}.{field} (Cn): {len(raw)} bytes, at most 255")
        return bytes([len(raw)]) + raw
    if stdf_type == "Sn":
        raw = _ascii(record, field, value)
        if len(raw) > 65535:
            raise StdfEncodeError(f"{record}.{field} (Sn): {len(raw)} bytes, at most 65535")
        return struct.pack(order + "H", len(raw)) + raw
    if stdf_type == "Bn":
        raw = bytes(value)
        if len(raw) > 255:
            raise StdfEncodeError(f"{record}.{field} (Bn): {len(raw)} bytes, at most 255")
        return bytes([len(raw)]) + raw
    if stdf_type == "Dn":
        bits, raw = (
            (value[0], bytes(value[1])) if isinstance(value, tuple) else (8 * len(value), bytes(value))
        )
        if len(raw) != (bits + 7) // 8 or bits > 65535:
            raise StdfEncodeError(f"{record}.{field} (Dn): {bits} bits do not fit {len(raw)} bytes")
        return struct.pack(order + "H", bits) + raw
    raise StdfEncodeError(f"{record}.{field}: type {stdf_type} cannot be written as a single value")


def _encode_array(record: str, field: str, item: str, values: Sequence[Any], order: str, width: int) -> bytes:
    if item == "N1":
        nibbles = [int(v) for v in values]
        if any(not 0 <= v <= 15 for v in nibbles):
            raise StdfEncodeError(f"{record}.{field} (N1): nibbles are 0..15")
        nibbles += [0] * (len(nibbles) % 2)
        return bytes(lo | hi << 4 for lo, hi in zip(nibbles[::2], nibbles[1::2], strict=True))
    if item == "Uf":
        if width not in (1, 2, 4, 8):
            raise StdfEncodeError(f"{record}.{field} (Uf): element width {width} is not 1, 2, 4 or 8")
        return b"".join(_encode_scalar(record, field, f"U{width}", v, order) for v in values)
    if item == "Cf":
        raws = [_ascii(record, field, v) for v in values]
        if any(len(r) > width for r in raws):
            raise StdfEncodeError(f"{record}.{field} (Cf): a string is longer than its width {width}")
        return b"".join(r.ljust(width, b" ") for r in raws)
    return b"".join(_encode_scalar(record, field, item, v, order) for v in values)


def _encode_gdr(values: Sequence[tuple[int, Any]], order: str) -> bytes:
    out = []
    for code, value in values:
        if code == _GDR_PAD:
            out.append(b"\x00")
        elif code == _GDR_N1:
            out.append(bytes([13, int(value) & 0x0F]))
        elif code in _GDR_CODES:
            out.append(bytes([code]) + _encode_scalar("GDR", "GEN_DATA", _GDR_CODES[code], value, order))
        else:
            raise StdfEncodeError(f"GDR.GEN_DATA: unknown type code {code}")
    return b"".join(out)


@functools.cache
def _record_spec(name: str) -> tuple[list[tuple[str, str]], dict[str, int], list[Any]]:
    layout = _layout(name)
    index = {field: i for i, (field, _) in enumerate(layout)}
    return layout, index, [default_value(name, field, stdf_type) for field, stdf_type in layout]


def _resolve(name: str, fields: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """The fields a record is written with: up to the last one given, defaults filled in."""
    layout, index, defaults = _record_spec(name)
    given = {k: v for k, v in fields.items() if v is not None}
    unknown = set(given) - index.keys()
    if unknown:
        raise StdfEncodeError(f"{name} has no field(s) {', '.join(sorted(unknown))}")
    last = max((index[f] for f in given), default=-1)
    values = defaults[: last + 1]
    for field, value in given.items():
        values[index[field]] = value
    for array, count in ARRAY_COUNTS.get(name, {}).items():
        if index[array] > last:
            continue
        if count not in given:  # a count left out is the length of the array it counts
            values[index[count]] = len(values[index[array]])
        if len(values[index[array]]) != values[index[count]]:
            raise StdfEncodeError(
                f"{name}.{array} has {len(values[index[array]])} items but {count} is {values[index[count]]}"
            )
    return [(field, stdf_type, value) for (field, stdf_type), value in zip(layout, values, strict=False)]


def _encode_fields(name: str, resolved: list[tuple[str, str, Any]], order: str) -> list[bytes]:
    values = {f: v for f, _, v in resolved}
    widths = ELEMENT_WIDTHS.get(name, {})
    parts = []
    for field, stdf_type, value in resolved:
        if stdf_type.startswith("kx"):
            width = int(values[widths[field]]) if field in widths else 0
            parts.append(_encode_array(name, field, stdf_type[2:], value, order, width))
        elif stdf_type == "Vn":
            parts.append(_encode_gdr(value, order))
        else:
            parts.append(_encode_scalar(name, field, stdf_type, value, order))
    return parts


def encode_record(name: str, byte_order: str = "<", **fields: Any) -> bytes:
    """One complete record (header included) as bytes; see the module docstring for the rules."""
    order = _check_order(byte_order)
    body = b"".join(_encode_fields(name, _resolve(name, fields), order))
    if len(body) > 65535:
        raise StdfEncodeError(f"{name}: {len(body)} bytes of fields, at most 65535 fit in a record")
    typ, sub = RECORD_CODES[name]
    return struct.pack(order + "HBB", len(body), typ, sub) + body


# --------------------------------------------------------------------------------------------
# Many records at once


@dataclass(frozen=True)
class PackedRecords:
    """Records of one type packed back to back, with each record's size in bytes."""

    data: bytes
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.sizes)

    @classmethod
    def uniform(cls, data: bytes, count: int) -> PackedRecords:
        """`count` records of one size, back to back (e.g. the output of `pack_ptrs`)."""
        if count and len(data) % count:
            raise ValueError(f"{len(data)} bytes do not split into {count} records of one size")
        return cls(data, np.full(count, len(data) // max(count, 1), dtype=np.int64))

    @property
    def offsets(self) -> np.ndarray:
        """Start of each record in `data`, plus the end: len(self) + 1 values."""
        return np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])


_PLACEHOLDER = {"C1": " ", "Cn": ""}


def _is_column(stdf_type: str, value: Any) -> bool:
    """Whether a bulk argument holds one value per record (else one value shared by all)."""
    if stdf_type in _NUMPY:
        return np.ndim(value) == 1
    if stdf_type in _PLACEHOLDER:
        return isinstance(value, list | tuple | np.ndarray)
    return False


def _numeric_column(name: str, field: str, stdf_type: str, values: Any, n: int) -> np.ndarray:
    column = np.asarray(values)
    if column.shape != (n,):
        raise StdfEncodeError(f"{name}.{field}: {column.shape[0]} values for {n} records")
    if stdf_type in ("R4", "R8") or not column.size:
        return column
    if column.dtype.kind not in "iub" and not np.array_equal(column, np.floor(column)):
        raise StdfEncodeError(f"{name}.{field} ({stdf_type}): values must be integers")
    info = np.iinfo(_NUMPY[stdf_type])
    lo, hi = column.min(), column.max()
    if lo < info.min or hi > info.max:
        raise StdfEncodeError(
            f"{name}.{field} ({stdf_type}): values {lo}..{hi} outside {info.min}..{info.max}"
        )
    return column


def _string_column(name: str, field: str, values: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ASCII bytes (numpy dtype S) and byte lengths of a string column."""
    try:
        strings = np.asarray(values).astype("S")
    except UnicodeEncodeError:
        raise StdfEncodeError(f"{name}.{field}: a value is not ASCII (STDF strings are ASCII)") from None
    if strings.shape != (n,):
        raise StdfEncodeError(f"{name}.{field}: {strings.shape[0]} values for {n} records")
    if strings.size and np.frombuffer(strings.tobytes(), np.uint8).max(initial=0) > 127:
        raise StdfEncodeError(f"{name}.{field}: a value is not ASCII (STDF strings are ASCII)")
    lengths = np.strings.str_len(strings).astype(np.int64)
    if lengths.size and lengths.max() > 255:
        raise StdfEncodeError(f"{name}.{field} (Cn): a value is {lengths.max()} bytes, at most 255")
    return strings, lengths


def pack_records(name: str, byte_order: str = "<", n: int | None = None, **fields: Any) -> PackedRecords:
    """Encode many records of one type at once, with numpy and no Python loop over the records.

    Each keyword is a field: a 1-D array with one value per record (numeric, C1 and Cn fields),
    or a single value shared by every record (any field type). Fields are omitted or defaulted
    exactly as in `encode_record`. Give `n` when every field is a single value.
    """
    order = _check_order(byte_order)
    layout_types = dict(_layout(name))
    fields = {f: v for f, v in fields.items() if v is not None}
    columns = {f: v for f, v in fields.items() if _is_column(layout_types.get(f, ""), v)}
    if n is None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise StdfEncodeError(f"{name}: give n, or columns of one common length (got {sorted(lengths)})")
        n = lengths.pop()
    # Resolve as for a single record, with a placeholder standing in for each column.
    shared = {f: _PLACEHOLDER.get(layout_types[f], 0) if f in columns else v for f, v in fields.items()}
    resolved = _resolve(name, shared)
    constants = _encode_fields(name, resolved, order)

    dtype: list[tuple[str, Any]] = [("REC_LEN", order + "u2"), ("REC_TYP", "u1"), ("REC_SUB", "u1")]
    values: dict[str, Any] = {"REC_TYP": RECORD_CODES[name][0], "REC_SUB": RECORD_CODES[name][1]}
    strings: dict[str, np.ndarray] = {}  # variable-length string field -> lengths
    for (field, stdf_type, _), constant in zip(resolved, constants, strict=True):
        if field not in columns:
            dtype.append((field, "u1", (len(constant),)))
            values[field] = np.frombuffer(constant, np.uint8)
        elif stdf_type in _NUMPY:
            dtype.append((field, order + _NUMPY[stdf_type]))
            values[field] = _numeric_column(name, field, stdf_type, columns[field], n)
        else:
            data, lengths = _string_column(name, field, columns[field], n)
            if stdf_type == "C1":
                if not np.all(lengths == 1):
                    raise StdfEncodeError(f"{name}.{field} (C1): every value must be one character")
                dtype.append((field, "S1"))
            else:
                dtype += [(field + ":len", "u1"), (field, f"S{max(int(lengths.max(initial=0)), 1)}")]
                values[field + ":len"] = lengths
                strings[field] = lengths
            values[field] = data
    records = np.zeros(n, dtype=np.dtype(dtype))
    string_bytes = sum((records.dtype[f].itemsize for f in strings), 0)
    rec_len = records.dtype.itemsize - 4 - string_bytes + sum(strings.values(), np.zeros(n, np.int64))
    if n and rec_len.max() > 65535:
        raise StdfEncodeError(f"{name}: a record has more than 65535 bytes of fields")
    values["REC_LEN"] = rec_len
    for field, value in values.items():
        records[field] = value
    if not strings:
        return PackedRecords(records.tobytes(), np.full(n, records.dtype.itemsize, dtype=np.int64))
    # Variable-length strings: lay records out padded, then drop the padding bytes.
    matrix = records.view(np.uint8).reshape(n, records.dtype.itemsize)
    keep = np.ones(matrix.shape, dtype=bool)
    for field, lengths in strings.items():
        start, width = records.dtype.fields[field][1], records.dtype[field].itemsize
        keep[:, start : start + width] = np.arange(width) < lengths[:, None]
    return PackedRecords(matrix[keep].tobytes(), rec_len + 4)


def pack_pirs(head_num: Any, site_num: Any, byte_order: str = "<") -> bytes:
    """PIRs, one per element of the (broadcast) head and site arrays."""
    head, site = np.broadcast_arrays(np.asarray(head_num), np.asarray(site_num))
    return pack_records("PIR", byte_order, n=head.size, HEAD_NUM=head.ravel(), SITE_NUM=site.ravel()).data


def pack_ptrs(
    test_num: Any,
    head_num: Any,
    site_num: Any,
    test_flg: Any,
    parm_flg: Any,
    result: Any,
    byte_order: str = "<",
) -> bytes:
    """Short PTRs (fields up to RESULT, empty TEST_TXT and ALARM_ID: 18 bytes each with header).

    Arguments are arrays of one value per record or single values; the limits, units and
    other defaults come from the first PTR of each test, which must be written in full.
    """
    arrays = np.broadcast_arrays(*map(np.asarray, (test_num, head_num, site_num, test_flg, parm_flg, result)))
    test, head, site, tflg, pflg, res = (a.ravel() for a in arrays)
    return pack_records(
        "PTR",
        byte_order,
        n=test.size,
        TEST_NUM=test,
        HEAD_NUM=head,
        SITE_NUM=site,
        TEST_FLG=tflg,
        PARM_FLG=pflg,
        RESULT=res,
        TEST_TXT="",
        ALARM_ID="",
    ).data


def pack_ftrs(
    test_num: Any,
    head_num: Any,
    site_num: Any,
    test_flg: Any,
    byte_order: str = "<",
    *,
    opt_flag: Any = 0xFF,
    cycl_cnt: Any = 0,
    rel_vadr: Any = 0,
    num_fail: Any = 0,
) -> bytes:
    """Short FTRs: fields up to PGM_ICNT (no pin arrays, no strings), 42 bytes each with header.

    `opt_flag` says which of CYCL_CNT, REL_VADR, REPT_CNT, NUM_FAIL, X/YFAIL_AD and VECT_OFF
    are valid (a set bit means invalid; bits 6-7 are reserved and set).
    """
    arrays = np.broadcast_arrays(
        *map(np.asarray, (test_num, head_num, site_num, test_flg, opt_flag, cycl_cnt, rel_vadr, num_fail))
    )
    test, head, site, tflg, opt, cycl, vadr, nfail = (a.ravel() for a in arrays)
    return pack_records(
        "FTR",
        byte_order,
        n=test.size,
        TEST_NUM=test,
        HEAD_NUM=head,
        SITE_NUM=site,
        TEST_FLG=tflg,
        OPT_FLAG=opt,
        CYCL_CNT=cycl,
        REL_VADR=vadr,
        REPT_CNT=0,
        NUM_FAIL=nfail,
        XFAIL_AD=0,
        YFAIL_AD=0,
        VECT_OFF=0,
        RTN_ICNT=0,
        PGM_ICNT=0,
    ).data


def pack_prrs(
    head_num: Any,
    site_num: Any,
    part_flg: Any,
    num_test: Any,
    hard_bin: Any,
    soft_bin: Any,
    x_coord: Any,
    y_coord: Any,
    test_t: Any,
    part_id: Any = None,
    part_txt: Any = None,
    byte_order: str = "<",
) -> bytes:
    """PRRs; `part_id` and `part_txt` are optional string arrays (or one shared string)."""
    numeric = np.broadcast_arrays(
        *map(
            np.asarray, (head_num, site_num, part_flg, num_test, hard_bin, soft_bin, x_coord, y_coord, test_t)
        )
    )
    head, site, flg, ntest, hbin, sbin, x, y, t = (a.ravel() for a in numeric)
    return pack_records(
        "PRR",
        byte_order,
        n=head.size,
        HEAD_NUM=head,
        SITE_NUM=site,
        PART_FLG=flg,
        NUM_TEST=ntest,
        HARD_BIN=hbin,
        SOFT_BIN=sbin,
        X_COORD=x,
        Y_COORD=y,
        TEST_T=t,
        PART_ID=part_id,
        PART_TXT=part_txt,
    ).data


def interleave(kinds: np.ndarray, blocks: Sequence[PackedRecords]) -> bytes:
    """Merge blocks of records into file order.

    `kinds[i]` is the block the i-th record of the output comes from; each block's records are
    used in their order. The only Python loop is over runs of consecutive records from the
    same block (a few per touchdown), never over records.
    """
    kinds = np.asarray(kinds)
    packed = list(blocks)
    if kinds.size == 0:
        return b""
    starts = np.flatnonzero(np.diff(kinds)) + 1
    run_start = np.concatenate([[0], starts])
    run_kind = kinds[run_start]
    run_len = np.diff(np.concatenate([run_start, [kinds.size]]))
    first = np.zeros(run_len.size, dtype=np.int64)  # index of each run's first record in its block
    for k in range(len(packed)):
        mine = run_kind == k
        first[mine] = np.cumsum(run_len[mine]) - run_len[mine]
        if run_len[mine].sum() != len(packed[k]):
            raise ValueError(f"block {k} has {len(packed[k])} records but kinds uses {run_len[mine].sum()}")
    offsets = [b.offsets for b in packed]
    views = [memoryview(b.data) for b in packed]
    chunks = [
        views[k][offsets[k][i] : offsets[k][i + m]]
        for k, i, m in zip(run_kind.tolist(), first.tolist(), run_len.tolist(), strict=True)
    ]
    return b"".join(chunks)


def record_offsets(data: bytes, byte_order: str = "<") -> np.ndarray:
    """Offsets of the record headers in an uncompressed STDF stream (stops at a broken tail)."""
    fmt = struct.Struct(_check_order(byte_order) + "H")
    offsets, pos, end = [], 0, len(data)
    while pos + 4 <= end:
        offsets.append(pos)
        pos += 4 + fmt.unpack_from(data, pos)[0]
    return np.asarray(offsets, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Files


class StdfWriter:
    """Write one STDF file atomically; FAR first, then whatever records you write.

    `byte_order` is "<" (little-endian, FAR.CPU_TYPE 2) or ">" (big-endian, CPU_TYPE 1). The
    suffix picks the compression: .gz (gzip, `compresslevel` default 6), .bz2 (default 9), other
    suffixes plain. Data goes to a hidden temporary file beside `path`, renamed to `path` when
    the writer is closed without an error; on an error the temporary file is removed.
    """

    def __init__(
        self, path: str | os.PathLike[str], byte_order: str = "<", compresslevel: int | None = None
    ) -> None:
        self.path = Path(path)
        self.byte_order = _check_order(byte_order)
        self._written = 0
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._tmp = Path(tmp)
        self._raw: IO[bytes] | None = os.fdopen(fd, "wb")
        try:
            self._out: IO[bytes] = self._open_compressed(self._raw, compresslevel)
            self.write("FAR", CPU_TYPE=CPU_TYPES[byte_order], STDF_VER=4)
        except BaseException:
            self.abort()
            raise

    def _open_compressed(self, raw: IO[bytes], level: int | None) -> IO[bytes]:
        suffix = self.path.suffix.lower()
        if suffix == ".gz":
            # filename="" and mtime=0: no temporary name or clock in the gzip header.
            return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level or 6, mtime=0)
        if suffix == ".bz2":
            return bz2.BZ2File(raw, "wb", compresslevel=level or 9)
        return raw

    @property
    def bytes_written(self) -> int:
        """Uncompressed bytes written so far: the offset at which the next record starts."""
        return self._written

    def write(self, name: str, **fields: Any) -> None:
        """Write one record; see the module docstring for omitted and missing fields."""
        self.write_bytes(encode_record(name, self.byte_order, **fields))

    def write_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Write records already encoded in this file's byte order (e.g. from `pack_ptrs`)."""
        if self._raw is None:
            raise ValueError(f"{self.path}: writer is closed")
        self._out.write(data)
        self._written += memoryview(data).nbytes

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._raw is None:
            return
        try:
            if self._out is not self._raw:
                self._out.close()
            self._raw.close()
            self._raw = None
            os.chmod(self._tmp, file_mode())  # mkstemp's is 0600: give the umask's, as open() would
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the file: nothing appears under `path`."""
        for handle in (getattr(self, "_out", None), self._raw):
            if handle is not None:
                with contextlib.suppress(Exception):  # the file is being discarded anyway
                    handle.close()
        self._raw = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
