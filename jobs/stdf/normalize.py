"""From raw STDF record batches to the four normalized tables, in one streaming pass.

Results (PTR, FTR, MPR) are the bulk of a file. Each belongs to the part that is open on its
head and site: the latest PIR before it, closed by the next PRR. Batches of each record type
arrive separately, so a result can only be placed once the PIRs before it and the PRR after it
have arrived; until then it waits in `pending`, in memory up to a limit and on disk beyond it
(files with few parts of thousands of tests each keep many results waiting). Memory stays flat
whatever the file size, while the parser runs ahead on its own thread.

Parts, bins, tests and file facts are small (one row per die at most) and are built at the end.
"""

from __future__ import annotations

import datetime as dt
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .records import KNOWN_RECORD_TYPES, max_length
from .source import StreamWindow

RESULT_KINDS = ("PTR", "FTR", "MPR")
RAW_ROWS = 1 << 18  # raw result records decoded together (amortizes per-call overhead)
# REC_TYP codes of V4 and V4-2007, and 180/181, which the spec reserves for testers' own records
STDF_RECORD_TYPES = tuple(sorted({typ for typ, _ in KNOWN_RECORD_TYPES} | {180, 181}))
NO_COORD = -32768
NO_BIN = 65535

RESULTS_SCHEMA = pa.schema(
    [
        ("part_index", pa.int32()),
        ("kind", pa.dictionary(pa.int8(), pa.string())),
        ("test_num", pa.uint32()),
        ("test_txt", pa.dictionary(pa.int32(), pa.string())),
        ("pin_index", pa.int32()),
        ("result", pa.float32()),
        ("failed", pa.bool_()),
        ("alarm", pa.bool_()),
        ("unreliable", pa.bool_()),
    ]
)
KIND_DICTIONARY = pa.array(RESULT_KINDS)

PARTS_SCHEMA = pa.schema(
    [
        ("part_index", pa.int32()),
        ("lot_id", pa.string()),
        ("wafer_id", pa.string()),
        ("head_num", pa.uint8()),
        ("site_num", pa.uint8()),
        ("part_id", pa.string()),
        ("part_txt", pa.string()),
        ("x_coord", pa.int16()),
        ("y_coord", pa.int16()),
        ("hard_bin", pa.uint16()),
        ("soft_bin", pa.uint16()),
        ("passed", pa.bool_()),
        ("test_time_ms", pa.uint32()),
        ("num_test", pa.uint16()),
        ("retest", pa.int16()),
        ("source_file", pa.string()),
    ]
)

TESTS_SCHEMA = pa.schema(
    [
        ("test_num", pa.uint32()),
        ("kind", pa.string()),
        ("test_txt", pa.string()),
        ("units", pa.string()),
        ("lo_limit", pa.float32()),
        ("hi_limit", pa.float32()),
        ("res_scal", pa.int8()),
        ("executions", pa.int64()),
    ]
)

BINS_SCHEMA = pa.schema(
    [
        ("bin_type", pa.string()),
        ("head_num", pa.uint8()),
        ("site_num", pa.uint8()),
        ("bin_num", pa.uint16()),
        ("bin_count", pa.uint32()),
        ("pass_fail", pa.string()),
        ("bin_name", pa.string()),
    ]
)


class StructureError(Exception):
    """The record sequence breaks STDF's rules (a sign of corruption); carries the byte offset."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class ImplausibleContentError(StructureError):
    """Valid record headers over content no tester writes (zeros, junk): refused early."""


@dataclass(frozen=True)
class Plausibility:
    """When a file's content is refused as implausible (the [stdf] settings of the same names)."""

    max_bytes_without_parts: int = 64 << 20  # no PIR, PRR or result in this many bytes
    max_unknown_share: float = 0.5  # of the records: unknown types or empty (EPS aside)
    min_records: int = 10_000  # the share is judged once this many records were read


SKIPPED_QUIETLY = {"FAR", "MIR", "MRR", "WIR", "WRR", "HBR", "SBR", "TSR", "PCR", "PIR", "PRR", *RESULT_KINDS}
SUMMARY_TYPES = ("HBR", "SBR", "TSR", "PCR")
ALL_HEADS = 255  # HEAD_NUM of a summary over all heads (its SITE_NUM is then ignored); SITE_NUM: all sites


# --- small vectorized helpers -------------------------------------------------------------------


def flag_bytes(column: pa.Array) -> np.ndarray:
    """A B1 column (binary, one byte per value) as uint8; a missing byte counts as 0."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(column)
    if n == 0:
        return np.zeros(0, np.uint8)
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], np.int32, count=n + 1, offset=column.offset * 4)
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(1, np.uint8)
    has_byte = offsets[1:] > offsets[:-1]
    if column.null_count:
        has_byte &= np.asarray(column.is_valid())
    safe = np.where(has_byte, offsets[:-1], 0).clip(0, max(len(data) - 1, 0))
    return np.where(has_byte, data[safe] if len(data) else 0, 0).astype(np.uint8)


def to_numpy(column: pa.Array, dtype, fill=0) -> np.ndarray:
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def site_key(head: pa.Array, site: pa.Array) -> np.ndarray:
    return (to_numpy(head, np.uint64) << np.uint64(8)) | to_numpy(site, np.uint64)


def cumcount(*keys: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows share its key (rows in their given order)."""
    n = len(keys[0]) if keys else 0
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), *reversed(keys)))
    sorted_keys = [k[order] for k in keys]
    new_group = np.ones(n, bool)
    new_group[1:] = np.any([k[1:] != k[:-1] for k in sorted_keys], axis=0)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    counts = np.empty(n, np.int64)
    counts[order] = np.arange(n) - group_start
    return counts


def blank_to_null(column: pa.Array) -> pa.Array:
    """STDF writes a missing text field as an empty string; we write it as null."""
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)


def epoch_to_utc(seconds: int | None) -> str | None:
    if seconds is None or seconds == 0:
        return None
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- test flags (STDF V4 PTR/FTR/MPR TEST_FLG and PARM_FLG) -----------------------------------


def decode_flags(test_flg: np.ndarray, parm_flg: np.ndarray | None) -> tuple[pa.Array, ...]:
    """failed / alarm / unreliable from the flag bytes.

    TEST_FLG bit 7 is the pass/fail flag, valid only when bit 6 is clear (else: no pass/fail
    indication, so `failed` is null). Bit 0 is an alarm, bits 1-5 say the result is invalid,
    unreliable, timed out, not executed or aborted. PARM_FLG bits 0-2 are scale, drift and
    oscillation errors, counted as alarms.
    """
    no_verdict = (test_flg & 0x40) != 0
    failed = pa.array((test_flg & 0x80) != 0, mask=no_verdict)
    alarm = (test_flg & 0x01) != 0
    if parm_flg is not None:
        alarm |= (parm_flg & 0x07) != 0
    unreliable = (test_flg & 0x3E) != 0
    return failed, pa.array(alarm), pa.array(unreliable)


# --- the streaming normalizer -------------------------------------------------------------------


@dataclass
class _Test:
    kind: str
    name: str
    units: str | None
    lo_limit: float | None
    hi_limit: float | None
    res_scal: int | None


def _at_or_inf(values: np.ndarray, position: np.ndarray) -> np.ndarray:
    """values[position] as float, +inf where position is past the end."""
    if len(values) == 0:
        return np.full(len(position), np.inf)
    inside = position < len(values)
    return np.where(inside, values[np.clip(position, 0, len(values) - 1)].astype(np.float64), np.inf)


@dataclass
class Placement:
    """Where results fall among the parts (see `_Parts.place`)."""

    part: np.ndarray  # part index (PRR ordinal), -1 where no PRR closes the result (yet)
    closed_at: np.ndarray  # sequence number of the PRR closing that part; inf if not seen yet
    in_pir: np.ndarray  # a PIR on the result's head/site opened its part before the result
    by_fallback: np.ndarray  # head/site matched no part; placed in the file's only open part


@dataclass
class _Parts:
    """PIR/PRR bookkeeping. A part is what a PRR closes; the rules, for the structures that real
    testers write (see jobs/stdf/README.md):

    - a result belongs to the next PRR on its own head and site: the usual PIR ... PRR, a part
      without PIR (results since the previous PRR on that head/site, or the file start) and
      results written before their part's PIR all follow from it;
    - a part's PIR is the last PIR on its head/site since the previous PRR there; PIRs no PRR
      claims are parts never closed (dropped and counted), like results no PRR closes;
    - records whose head/site no PRR ever names (synthetic files, testers that number heads
      oddly) go to the file's only open part, when exactly one is open, and are counted.
    Part indices are PRR ordinals, so a part's index is known the moment its PRR arrives.
    """

    pir_by_site: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # seq, index
    prr_by_site: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # seq, index
    pir_wm: float = -1.0  # every PIR with a sequence number <= this has arrived
    all_pir: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    all_prr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def add(self, record_type: str, seq: np.ndarray, site: np.ndarray) -> None:
        """PIRs or PRRs (sequence numbers, site keys), the next ones in file order."""
        if record_type == "PIR":
            self.all_pir = _add_by_site(self.pir_by_site, self.all_pir, seq, site)
            self.pir_wm = float(seq[-1]) if len(seq) else self.pir_wm
        else:
            self.all_prr = _add_by_site(self.prr_by_site, self.all_prr, seq, site)

    def place(self, site: np.ndarray, seq: np.ndarray, final: bool = False) -> Placement:
        """Place results at (site, seq) in the parts known so far; at the end (`final`), results
        no PRR on their head/site closes go to the file's only open part where there is one.

        One pass per head/site over that site's results, against that site's PIRs and PRRs
        (small arrays), so millions of results cost a few binary searches each.
        """
        n = len(seq)
        part = np.full(n, -1, np.int64)
        closed_at = np.full(n, np.inf)
        in_pir = np.zeros(n, bool)
        sites = list(self.prr_by_site)
        for key in sites:
            rows = np.flatnonzero(site == key)
            prr_seq, prr_index = self.prr_by_site[key]
            pir_seq = self.pir_by_site.get(key, (seq[:0], None))[0]
            q = seq[rows]
            j = np.searchsorted(prr_seq, q, side="left")
            closed = j < len(prr_seq)
            at = np.clip(j, 0, len(prr_seq) - 1)
            part[rows] = np.where(closed, prr_index[at], -1)
            closed_at[rows] = np.where(closed, prr_seq[at].astype(np.float64), np.inf)
            prev_prr = np.where(j > 0, prr_seq[np.clip(j - 1, 0, None)].astype(np.float64), -1.0)
            p = np.searchsorted(pir_seq, q, side="right") - 1
            last_pir = (
                np.where(p >= 0, pir_seq[np.clip(p, 0, None)].astype(np.float64), -1.0)
                if len(pir_seq)
                else np.full(len(q), -1.0)
            )
            in_pir[rows] = last_pir > prev_prr
        fallback = np.zeros(n, bool)
        if final and (part < 0).any():  # rare: only files whose records disagree on head/site numbers
            unplaced = part < 0
            fallback[unplaced] = self._only_open_part(seq[unplaced], part, closed_at, unplaced)
            in_pir |= fallback
        return Placement(part=part, closed_at=closed_at, in_pir=in_pir, by_fallback=fallback)

    def _only_open_part(
        self, seq: np.ndarray, part: np.ndarray, closed_at: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Place records in the part closed by the next PRR, where exactly one part is open in the
        whole file; True where placed."""
        _, n_prr, placed = self._one_open(seq)
        placed &= n_prr < len(self.all_prr)
        where = np.flatnonzero(rows)[placed]
        part[where] = n_prr[placed]
        closed_at[where] = self.all_prr[n_prr[placed]].astype(np.float64)
        return placed

    def _one_open(self, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PIRs and PRRs before each `seq`, and whether exactly one part is open there."""
        n_pir = np.searchsorted(self.all_pir, seq, side="left")
        n_prr = np.searchsorted(self.all_prr, seq, side="left")
        last_pir = self.all_pir[np.clip(n_pir - 1, 0, None)] if len(self.all_pir) else np.zeros_like(seq)
        last_prr = self.all_prr[np.clip(n_prr - 1, 0, None)] if len(self.all_prr) else np.zeros_like(seq)
        return n_pir, n_prr, (n_pir - n_prr == 1) & ((n_prr == 0) | (last_pir > last_prr))

    def opening(self) -> tuple[np.ndarray, np.ndarray]:
        """For every PRR (all have arrived): the index of its part's PIR (-1: a part without PIR),
        and whether that PIR was found on another head/site (the file's only open part)."""
        pir = np.full(len(self.all_prr), -1, np.int64)
        for key, (prr_seq, prr_index) in self.prr_by_site.items():
            pir_seq, pir_index = self.pir_by_site.get(key, (prr_seq[:0], prr_index[:0]))
            if not len(pir_seq):
                continue
            p = np.searchsorted(pir_seq, prr_seq, side="left") - 1
            prev_prr = np.concatenate([[-1.0], prr_seq[:-1].astype(np.float64)])
            own = (p >= 0) & (pir_seq[np.clip(p, 0, None)].astype(np.float64) > prev_prr)
            pir[prr_index[own]] = pir_index[p[own]]
        mismatch = np.zeros(len(pir), bool)
        if (pir < 0).any() and len(self.all_pir):
            without = np.flatnonzero(pir < 0)
            n_pir, _, one = self._one_open(self.all_prr[without])
            claimed = set(pir[pir >= 0].tolist())
            one &= ~np.isin(n_pir - 1, list(claimed))
            pir[without[one]] = n_pir[one] - 1
            mismatch[without[one]] = True
        return pir, mismatch


def _add_by_site(
    by_site: dict[int, tuple[np.ndarray, np.ndarray]], all_seq: np.ndarray, seq: np.ndarray, site: np.ndarray
) -> np.ndarray:
    """Append records (in file order) to their head/site's arrays; return all sequence numbers."""
    index = np.arange(len(all_seq), len(all_seq) + len(seq))
    for key in np.unique(site).tolist():
        rows = site == key
        old_seq, old_index = by_site.get(key, (seq[:0], index[:0]))
        by_site[key] = (np.concatenate([old_seq, seq[rows]]), np.concatenate([old_index, index[rows]]))
    return np.concatenate([all_seq, seq])


PART_MARKS = {(5, 10): "PIR", (5, 20): "PRR"}  # (REC_TYP, REC_SUB)


class MispredictionError(Exception):
    """The walker's PIRs and PRRs differ from the parser's: the file must be normalized again."""


class PartWalker:
    """Finds the PIRs and PRRs between the PTRs the parser delivers, long before their own batches.

    The parser hands over each record type in batches of its own; in a file with few parts of
    thousands of tests each, the batch of PIRs and PRRs comes only at the end, and no result
    could be placed until then. But each PTR batch says where its records lie (byte offset,
    length, sequence number), and the few records between them are read off the decompressed
    stream by their headers. `Normalizer.finish` checks the findings against the parser's own
    PIRs and PRRs. The walker gives up (and the parser's batches take over) where the bytes
    between two PTRs do not add up with their sequence numbers.
    """

    def __init__(self, window: StreamWindow, order: str) -> None:
        self.window = window
        self.header = struct.Struct(order + "HBB")
        self.alive = True
        self.covered = -1  # every record up to this sequence number has been accounted for
        self.end = 0  # byte offset just past that record
        self.found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"PIR": [], "PRR": []}
        self.delivered: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"PIR": [], "PRR": []}

    def walk(self, batch: pa.RecordBatch) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """(sequence numbers, site keys) of the PIRs and PRRs before the batch's last PTR, or None
        (and the walker stops) if the records between the PTRs cannot be accounted for."""
        seq = to_numpy(batch["sequence_number"], np.int64)
        begin = to_numpy(batch["byte_offset"], np.int64)
        end = begin + 4 + to_numpy(batch["rec_len"], np.int64)
        seq_before = np.concatenate([[self.covered], seq[:-1]])
        end_before = np.concatenate([[self.end], end[:-1]])
        marks: dict[str, tuple[list[int], list[int]]] = {"PIR": ([], []), "PRR": ([], [])}
        for i in np.flatnonzero((seq - seq_before != 1) | (begin != end_before)).tolist():
            if not self._walk_gap(int(end_before[i]), int(begin[i]), int(seq_before[i]), int(seq[i]), marks):
                self.alive = False
                return None
        self.covered, self.end = int(seq[-1]), int(end[-1])
        self.window.release(self.end)
        found = {kind: (np.array(s, np.uint64), np.array(k, np.uint64)) for kind, (s, k) in marks.items()}
        for kind, rows in found.items():
            self.found[kind].append(rows)
        return found

    def _walk_gap(self, begin: int, end: int, seq_before: int, seq_after: int, marks: dict) -> bool:
        """Follow the record headers from byte `begin` to `end`; True if they end exactly there
        and are as many as the sequence numbers say."""
        data = self.window.read(begin, end)
        if data is None:
            return False
        offset, seq = 0, seq_before + 1
        while offset + 4 <= len(data):
            rec_len, typ, sub = self.header.unpack_from(data, offset)
            if offset + 4 + rec_len > len(data):
                return False
            if kind := PART_MARKS.get((typ, sub)):
                head = data[offset + 4] if rec_len >= 1 else 0  # missing fields read as 0, as in site_key
                site = data[offset + 5] if rec_len >= 2 else 0
                marks[kind][0].append(seq)
                marks[kind][1].append(head << 8 | site)
            offset += 4 + rec_len
            seq += 1
        return offset == len(data) and seq == seq_after

    def check(self) -> None:
        """Raise MispredictionError unless the parser delivered exactly the PIRs and PRRs found."""
        for kind in PART_MARKS.values():
            found_seq, found_site = _concat(self.found[kind])
            seq, site = _concat(self.delivered[kind])
            upto = seq.astype(np.int64) <= self.covered
            if not (np.array_equal(found_seq, seq[upto]) and np.array_equal(found_site, site[upto])):
                raise MispredictionError(f"the {kind}s found between the PTRs differ from the parser's")


def _concat(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate([seq for seq, _ in rows]), np.concatenate([site for _, site in rows])


LOOKUP_LIMIT = 1 << 20  # the largest test number for a lookup table (4 MB)


class _Catalogue:
    """The tests of one kind (PTR, FTR, MPR): each test's defaults from its first record (STDF:
    later records default to it), its name, and how often it ran. Arrays stay sorted by test
    number, so looking up millions of results is one searchsorted."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tests: dict[int, _Test] = {}
        self.numbers = np.zeros(0, np.uint32)
        self.executions = np.zeros(0, np.int64)
        self.names = pa.array([], pa.string())
        self.nameless: set[int] = set()
        self.lookup: np.ndarray | None = None  # test number -> position in `numbers`, if not too big

    def update(self, batch: pa.Table, test_num: np.ndarray) -> None:
        unique, first, counts = np.unique(test_num, return_index=True, return_counts=True)
        new = ~np.isin(unique, self.numbers)
        if new.any():
            columns = [c for c in FIRST_RECORD_COLUMNS if c in batch.schema.names]
            for number, row in zip(
                unique[new], batch.select(columns).take(first[new]).to_pylist(), strict=True
            ):
                self.tests[int(number)] = _first_record_defaults(self.kind, row)
                if not self.tests[int(number)].name:
                    self.nameless.add(int(number))
            self._rebuild()
        if self.nameless:
            self._find_names(batch, test_num)
        self.executions[self.index_of(unique)] += counts

    def index_of(self, test_num: np.ndarray) -> np.ndarray:
        """Positions of known test numbers in `numbers`."""
        if self.lookup is not None:
            return self.lookup[test_num]
        return np.searchsorted(self.numbers, test_num)

    def _rebuild(self) -> None:
        old = dict(zip(self.numbers.tolist(), self.executions.tolist(), strict=True))
        self.numbers = np.array(sorted(self.tests), np.uint32)
        self.executions = np.array([old.get(n, 0) for n in self.numbers.tolist()], np.int64)
        # test numbers are often small: then a table lookup is far cheaper than a binary search
        self.lookup = None
        if self.numbers[-1] < LOOKUP_LIMIT:
            self.lookup = np.zeros(int(self.numbers[-1]) + 1, np.int32)
            self.lookup[self.numbers] = np.arange(len(self.numbers), dtype=np.int32)
        # no nulls inside a dictionary (pandas cannot make categories of them): a test without
        # a name gets "" here and a null index in the results
        self.names = pa.array([self.tests[n].name for n in self.numbers.tolist()], pa.string())

    def _find_names(self, batch: pa.Table, test_num: np.ndarray) -> None:
        """A test whose first record had no TEST_TXT takes the first name a later record gives."""
        rows = np.flatnonzero(np.isin(test_num, list(self.nameless)))
        found = False
        for number, text in zip(
            test_num[rows].tolist(), batch["TEST_TXT"].take(rows).to_pylist(), strict=True
        ):
            if text and number in self.nameless:
                self.tests[number].name = text
                self.nameless.discard(number)
                found = True
        if found:
            self._rebuild()

    def rows(self) -> list[dict]:
        return [
            {"test_num": number, "kind": self.kind, "test_txt": test.name or None, "units": test.units,
             "lo_limit": test.lo_limit, "hi_limit": test.hi_limit, "res_scal": test.res_scal,
             "executions": int(self.executions[i])}
            for i, (number, test) in enumerate(sorted(self.tests.items()))
        ]  # fmt: skip


FIRST_RECORD_COLUMNS = ("TEST_TXT", "OPT_FLAG", "LO_LIMIT", "HI_LIMIT", "UNITS", "RES_SCAL")


class _Spill:
    """Results waiting for their parts, in memory up to `limit` rows and beyond that on disk.

    A file with few, huge parts (thousands of tests per die) can keep millions of results
    waiting for a batch of PRRs; spilling them to Arrow IPC files keeps memory flat.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.memory: list[pa.Table] = []
        self.in_memory = 0
        self.files: list[Path] = []
        self.folder: tempfile.TemporaryDirectory | None = None

    def add(self, table: pa.Table) -> None:
        self.memory.append(table)
        self.in_memory += table.num_rows
        if self.in_memory > self.limit:
            self.folder = self.folder or tempfile.TemporaryDirectory(prefix="stdf-spill-")
            path = Path(self.folder.name) / f"{len(self.files)}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, self.memory[0].schema) as writer:
                for chunk in self.memory:
                    writer.write_table(chunk)
            self.files.append(path)
            self.memory, self.in_memory = [], 0

    def drain(self) -> Iterator[pa.Table]:
        """Everything waiting, oldest first, in chunks of bounded size; the spill is emptied."""
        files, memory = self.files, self.memory
        self.files, self.memory, self.in_memory = [], [], 0
        for path in files:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
            yield table
            path.unlink()
        if memory:
            yield pa.concat_tables(memory) if len(memory) > 1 else memory[0]

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


class Normalizer:
    """Feed it (record type, batch) pairs in arrival order; results go to `emit` as they settle.

    `finish()` returns the parts, tests and bins tables and the file facts.
    """

    def __init__(
        self,
        emit: Callable[[pa.Table], None],
        source_file: str,
        spill_rows: int = 1 << 20,
        walker: PartWalker | None = None,
        plausibility: Plausibility | None = None,
    ) -> None:
        self.emit = emit
        self.source_file = source_file
        self.counts: Counter[str] = Counter()
        self.parts = _Parts()
        self.walker = walker
        self.prr_batches: list[pa.RecordBatch] = []
        self.raw: dict[str, list[pa.RecordBatch]] = {}
        self.raw_rows = 0
        self.pending = _Spill(spill_rows)
        self.settling: Iterator[None] | None = None  # a settle in progress, one chunk per step
        self.catalogues: dict[str, _Catalogue] = {}
        self.small: dict[str, list[pa.RecordBatch]] = {}
        self.first_unknown: int | None = None
        self.last_batch: dict[str, pa.RecordBatch] = {}
        self.results_written = 0
        self.results_dropped = 0
        self.site_mismatches = 0
        self.plausibility = plausibility or Plausibility()
        self.bytes_read = 0
        self.empty_or_unknown = 0
        self.implausible: Counter[str] = Counter()
        self.part_records = 0  # PIRs, PRRs and results delivered
        self.loose = np.zeros(0, np.int64)  # per part: results read while no PIR was open
        self.unclosed_sites: set[int] = set()

    # feeding ---------------------------------------------------------------------------------

    def feed(self, record_type: str, batch: pa.RecordBatch) -> None:
        self.counts[record_type] += batch.num_rows
        if batch.num_rows:
            self.last_batch[record_type] = batch  # the file's last record is the last of one of these
            batch = self._plausible(record_type, batch)
        if record_type in RESULT_KINDS:
            self.raw.setdefault(record_type, []).append(batch)  # decoded in bulk, see _decode_raw
            self.raw_rows += batch.num_rows
            if record_type == "PTR" and self.walker is not None and self.walker.alive:
                self._walk(batch)
            elif self.raw_rows >= RAW_ROWS:
                self._decode_raw()
        elif record_type in PART_MARKS.values():
            self._part_marks(record_type, batch)
        elif record_type == "UNKNOWN":
            self._unknown(batch)
        elif record_type in ("FAR", "MIR", "MRR", "WIR", "WRR", "HBR", "SBR", "TSR", "PCR"):
            self.small.setdefault(record_type, []).append(batch)
        if self.settling is not None and next(self.settling, StopIteration) is StopIteration:
            self.settling = None

    def _plausible(self, record_type: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Refuse content no tester writes, before parsing much of it; drop records longer than
        their type allows (junk under a valid header: its fields would be garbage)."""
        limits = self.plausibility
        rec_len = batch["rec_len"]
        self.bytes_read = max(self.bytes_read, batch["byte_offset"][-1].as_py() + 4 + rec_len[-1].as_py())
        if record_type == "UNKNOWN":
            self.empty_or_unknown += batch.num_rows
        elif record_type != "EPS":  # an EPS has no fields
            self.empty_or_unknown += pc.sum(pc.equal(rec_len, 0)).as_py() or 0
        if record_type in PART_MARKS.values() or record_type in RESULT_KINDS:
            self.part_records += batch.num_rows
        records = sum(self.counts.values())
        if records >= limits.min_records and self.empty_or_unknown > limits.max_unknown_share * records:
            raise ImplausibleContentError(
                f"implausible content: {self.empty_or_unknown} of the first {records} records are of no "
                f"known type or empty (zeros or junk after a valid header)",
                self.bytes_read,
            )
        walked = self.walker is not None and self.walker.covered >= 0
        if self.bytes_read > limits.max_bytes_without_parts and not self.part_records and not walked:
            raise ImplausibleContentError(
                f"implausible content: no part (PIR, PRR or test result) in the first {self.bytes_read} "
                f"bytes (limit [stdf] max_bytes_without_parts = {limits.max_bytes_without_parts})",
                self.bytes_read,
            )
        longest = max_length(record_type)
        if longest is None or (pc.max(rec_len).as_py() or 0) <= longest:
            return batch
        junk = pc.greater(rec_len, longest)
        self.implausible[record_type] += pc.sum(junk).as_py()
        return batch.filter(pc.invert(junk)) if record_type in RESULT_KINDS else batch

    def _walk(self, batch: pa.RecordBatch) -> None:
        """Place the parts the walker finds up to this PTR batch, and settle what they close."""
        found = self.walker.walk(batch)
        if found is None:
            self._hand_over()
            return
        for record_type, (seq, site) in found.items():
            self.parts.add(record_type, seq, site)
        self.parts.pir_wm = float(self.walker.covered)
        self._settle(final=False)

    def _part_marks(self, record_type: str, batch: pa.RecordBatch) -> None:
        """The parser's PIRs or PRRs: what the walker has not covered goes to the parts, the rest
        is kept to check the walker's findings."""
        if record_type == "PRR":
            self.prr_batches.append(batch)
        seq = to_numpy(batch["sequence_number"], np.uint64)
        site = site_key(batch["HEAD_NUM"], batch["SITE_NUM"])
        if self.walker is None:
            self.parts.add(record_type, seq, site)
        else:
            self.walker.delivered[record_type].append((seq, site))
            if self.walker.alive:
                return
            later = seq.astype(np.int64) > self.walker.covered
            self.parts.add(record_type, seq[later], site[later])
        if record_type == "PRR":  # PRR batch k arrives after PIR batch k: results before it can settle
            self._settle(final=False)

    def _hand_over(self) -> None:
        """The walker stops (it gave up, or the file ended): the parser's PIRs and PRRs after what
        it covered take over."""
        self.walker.alive = False
        for record_type, delivered in self.walker.delivered.items():
            for seq, site in delivered:
                later = seq.astype(np.int64) > self.walker.covered
                self.parts.add(record_type, seq[later], site[later])

    def _unknown(self, batch: pa.RecordBatch) -> None:
        """Unknown subtypes of STDF's record types are skipped and counted.

        A REC_TYP that is no STDF record type at all is what a broken record chain (corruption)
        reads as a header, so it is an error.
        """
        first = int(batch["byte_offset"][0].as_py())
        self.first_unknown = first if self.first_unknown is None else min(first, self.first_unknown)
        foreign = pc.invert(pc.is_in(batch["rec_typ"], pa.array(STDF_RECORD_TYPES, pa.uint8())))
        if pc.any(foreign).as_py():
            row = batch.filter(foreign).slice(0, 1).to_pylist()[0]
            raise StructureError(
                f"record chain broken: REC_TYP {row['rec_typ']} (sub {row['rec_sub']}) is no STDF type",
                row["byte_offset"],
            )

    def _results(self, kind: str, batch: pa.Table) -> pa.Table:
        """One batch of PTR/FTR/MPR as result rows (MPR expanded per pin), plus position columns."""
        test_num = to_numpy(batch["TEST_NUM"], np.uint32)
        self.catalogues.setdefault(kind, _Catalogue(kind)).update(batch, test_num)
        test_flg = flag_bytes(batch["TEST_FLG"])
        parm_flg = flag_bytes(batch["PARM_FLG"]) if kind != "FTR" else None
        failed, alarm, unreliable = decode_flags(test_flg, parm_flg)
        # contiguous columns (the batches came in many small chunks): later steps touch them often
        columns = {
            "seq": pa.array(to_numpy(batch["sequence_number"], np.uint64)),
            "offset": pa.array(to_numpy(batch["byte_offset"], np.uint64)),
            "site": pa.array(site_key(batch["HEAD_NUM"], batch["SITE_NUM"])),
            "kind": pa.array(np.full(batch.num_rows, RESULT_KINDS.index(kind), np.int8)),
            "test_num": pa.array(test_num),
            "pin_index": pa.nulls(batch.num_rows, pa.int32()),
            "result": batch["RESULT"].combine_chunks()
            if kind == "PTR"
            else pa.nulls(batch.num_rows, pa.float32()),
            "failed": failed,
            "alarm": alarm,
            "unreliable": unreliable,
        }
        table = pa.table(columns)
        return _expand_pins(table, batch) if kind == "MPR" else table

    # settling results into parts ---------------------------------------------------------------

    @property
    def records_end(self) -> int:
        """Byte offset just past the last record read."""
        ends = [b["byte_offset"][-1].as_py() + 4 + b["rec_len"][-1].as_py() for b in self.last_batch.values()]
        return max(ends, default=0)

    def record_order(self) -> dict:
        """Where the file's fixed records stand: STDF wants FAR first, MIR next, MRR last."""
        last_seq = {t: b["sequence_number"][-1].as_py() for t, b in self.last_batch.items()}
        last = max(last_seq, key=last_seq.get, default=None)
        mir = self.small.get("MIR")
        return {
            "last_record": last,
            "mir_second": bool(mir) and mir[0]["sequence_number"][0].as_py() == 1,
            "mrr_last": last == "MRR" and self.counts["MRR"] == 1,
        }

    def _decode_raw(self) -> None:
        for kind, batches in self.raw.items():
            if batches:
                self.pending.add(self._results(kind, pa.Table.from_batches(batches)))
        self.raw, self.raw_rows = {}, 0

    def _settle(self, final: bool) -> None:
        """Emit every pending result whose part is known; keep the rest waiting.

        Midway the work is done one chunk per incoming batch (see `feed`), so the parser's
        queue keeps draining; at the end it is done at once.
        """
        self._finish_settling()
        self._decode_raw()
        self.settling = self._settle_steps(final)
        if final:
            self._finish_settling()

    def _settle_steps(self, final: bool) -> Iterator[None]:
        waiting = []
        for table in self.pending.drain():
            if (rest := self._settle_table(table, final)) is not None:
                waiting.append(rest)
            yield
        for rest in waiting:
            self.pending.add(rest)

    def _finish_settling(self) -> None:
        for _ in self.settling or ():
            pass
        self.settling = None

    def _emit(self, settled: pa.Table, part: np.ndarray) -> None:
        """Settled results in the output layout: part index first, kind and test name as
        dictionary columns (names from the catalogues, which know every test by now)."""
        kind = to_numpy(settled["kind"], np.int8)
        test_num = to_numpy(settled["test_num"], np.uint32)
        names, indices, base = [], np.zeros(len(kind), np.int32), 0
        for code, catalogue in ((RESULT_KINDS.index(k), c) for k, c in self.catalogues.items()):
            rows = kind == code
            indices[rows] = base + catalogue.index_of(test_num[rows])
            names.append(catalogue.names)
            base += len(catalogue.numbers)
        dictionary = pa.concat_arrays(names) if names else pa.array([], pa.string())
        nameless = (
            pc.equal(dictionary, "").to_numpy(zero_copy_only=False)[indices] if len(dictionary) else None
        )
        out = settled.drop_columns(["seq", "offset", "site", "kind"])
        out = out.add_column(0, "part_index", pa.array(part.astype(np.int32)))
        out = out.add_column(1, "kind", pa.DictionaryArray.from_arrays(pa.array(kind), KIND_DICTIONARY))
        indices = pa.array(indices, mask=nameless)
        out = out.add_column(3, "test_txt", pa.DictionaryArray.from_arrays(indices, dictionary))
        self.results_written += out.num_rows
        self.emit(out.cast(RESULTS_SCHEMA))

    def _settle_table(self, table: pa.Table, final: bool) -> pa.Table | None:
        """Emit the rows of `table` whose part is known; return the others (or None).

        A result settles once the PRR after it on its head/site has arrived and every PIR before
        it has (which tells whether a PIR had opened its part)."""
        seq = to_numpy(table["seq"], np.uint64)
        site = to_numpy(table["site"], np.uint64)
        where = self.parts.place(site, seq, final)
        if final:
            ready = np.ones(len(seq), bool)
        else:
            ready = (where.closed_at < np.inf) & (seq.astype(np.float64) < self.parts.pir_wm)
        keep = ready & (where.part >= 0)
        never_closed = ready & ~keep  # only at the end: no PRR closes them
        if never_closed.any():
            self.results_dropped += int(never_closed.sum())
            self.unclosed_sites.update(np.unique(site[never_closed]).tolist())
        self.site_mismatches += int((keep & where.by_fallback).sum())
        if (loose := keep & ~where.in_pir).any():
            counts = np.bincount(where.part[loose])
            self.loose = np.pad(self.loose, (0, max(len(counts) - len(self.loose), 0)))
            self.loose[: len(counts)] += counts
        if keep.all():
            self._emit(table, where.part)
        elif keep.any():
            self._emit(_take(table, keep), where.part[keep])
        return None if ready.all() else _take(table, ~ready)

    # the end ---------------------------------------------------------------------------------

    def finish(self) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
        if self.walker is not None:
            self.walker.check()
            if self.walker.alive:
                self._hand_over()
        self._settle(final=True)
        self.close()
        parts, structure = self._parts_table()
        facts = self._file_facts()
        facts["open_parts_dropped"] = structure["pirs_never_closed"]
        facts["results_dropped"] = self.results_dropped
        facts["head_site_mismatches"] = self.site_mismatches
        facts["structure"] = {**structure, **self._record_notes()}
        return parts, self._tests_table(), self._bins_table(), facts

    def close(self) -> None:
        """Remove spilled results (also after a failure)."""
        self.pending.close()

    def _table(self, record_type: str) -> pa.Table | None:
        batches = self.small.get(record_type)
        return pa.Table.from_batches(batches) if batches else None

    def _parts_table(self) -> tuple[pa.Table, dict]:
        """One row per PRR (part index = PRR ordinal), and what the parts' structure was."""
        pir, mismatch = self.parts.opening()
        self.site_mismatches += int(mismatch.sum())
        structure = self._structure(pir)
        if not self.prr_batches:
            return PARTS_SCHEMA.empty_table(), structure
        prr = pa.Table.from_batches(self.prr_batches)
        part_index = np.arange(prr.num_rows)
        # the WIR open when the part began: at its PIR, or for a part without one, at its PRR
        pir_seq = self.parts.all_pir[np.clip(pir, 0, None)] if len(self.parts.all_pir) else 0
        opened = np.where(pir >= 0, pir_seq, self.parts.all_prr)
        x = to_numpy(prr["X_COORD"], np.int16, NO_COORD)
        y = to_numpy(prr["Y_COORD"], np.int16, NO_COORD)
        part_flg = flag_bytes(prr["PART_FLG"])
        wafer = self._wafer_of(to_numpy(prr["HEAD_NUM"], np.uint8), opened)
        mir = self._table("MIR")
        lot = mir["LOT_ID"][0].as_py() if mir is not None else None
        has_xy = (x != NO_COORD) & (y != NO_COORD)
        wafer_code = pc.dictionary_encode(pc.fill_null(wafer, "")).indices.to_numpy(zero_copy_only=False)
        part_code = (
            pc.dictionary_encode(pc.fill_null(prr["PART_ID"], ""))
            .combine_chunks()
            .indices.to_numpy(zero_copy_only=False)
        )
        retest = cumcount(
            has_xy, wafer_code, np.where(has_xy, x, 0), np.where(has_xy, y, 0), np.where(has_xy, 0, part_code)
        )
        hard = to_numpy(prr["HARD_BIN"], np.int64, NO_BIN)
        soft = to_numpy(prr["SOFT_BIN"], np.int64, NO_BIN)
        test_t = to_numpy(prr["TEST_T"], np.int64, 0)
        table = pa.table(
            {
                "part_index": pa.array(part_index.astype(np.int32)),
                "lot_id": pa.array([lot] * prr.num_rows, pa.string()),
                "wafer_id": wafer,
                "head_num": prr["HEAD_NUM"],
                "site_num": prr["SITE_NUM"],
                "part_id": blank_to_null(prr["PART_ID"]),
                "part_txt": blank_to_null(prr["PART_TXT"]),
                "x_coord": pa.array(x, mask=x == NO_COORD),
                "y_coord": pa.array(y, mask=y == NO_COORD),
                "hard_bin": pa.array(hard.astype(np.uint16), mask=hard == NO_BIN),
                "soft_bin": pa.array(soft.astype(np.uint16), mask=soft == NO_BIN),
                "passed": pa.array((part_flg & 0x08) == 0, mask=(part_flg & 0x10) != 0),
                "test_time_ms": pa.array(test_t.astype(np.uint32), mask=test_t == 0),
                "num_test": prr["NUM_TEST"],
                "retest": pa.array(retest.astype(np.int16)),
                "source_file": pa.array([self.source_file] * prr.num_rows, pa.string()),
            }
        )
        return table.cast(PARTS_SCHEMA), structure

    def _structure(self, pir: np.ndarray) -> dict:
        """How the file's parts were written (see `_Parts`): every count is of a documented rule."""
        has_pir = pir >= 0
        loose = np.pad(self.loose, (0, max(len(pir) - len(self.loose), 0)))
        claimed = np.zeros(len(self.parts.all_pir), bool)
        claimed[pir[has_pir]] = True
        lost_sites = set(self.unclosed_sites)
        for key, (pir_seq, pir_index) in self.parts.pir_by_site.items():
            prr_seq = self.parts.prr_by_site.get(key, (pir_seq[:0],))[0]
            after_last = pir_seq > (prr_seq[-1] if len(prr_seq) else -1)
            if (after_last & ~claimed[pir_index]).any():
                lost_sites.add(key)
        return {
            "parts_without_pir": int((~has_pir).sum()),
            "results_before_pir": int(loose[: len(pir)][has_pir].sum()),
            "results_in_parts_without_pir": int(loose[: len(pir)][~has_pir].sum()),
            "results_never_closed": self.results_dropped,
            "pirs_never_closed": int((~claimed).sum()),
            "parts_lost": len(lost_sites),
            "head_site_mismatches": self.site_mismatches,
        }

    def _record_notes(self) -> dict:
        """Summary records by scope, records skipped (counted, not used), records refused as junk."""
        scopes: Counter[str] = Counter()
        for record_type in SUMMARY_TYPES:
            if (t := self._table(record_type)) is not None and "HEAD_NUM" in t.column_names:
                head, site = to_numpy(t["HEAD_NUM"], np.int64), to_numpy(t["SITE_NUM"], np.int64)
                scopes["all_heads"] += int((head == ALL_HEADS).sum())
                scopes["all_sites_of_a_head"] += int(((head != ALL_HEADS) & (site == ALL_HEADS)).sum())
                scopes["one_site"] += int(((head != ALL_HEADS) & (site != ALL_HEADS)).sum())
        skipped = {t: n for t, n in sorted(self.counts.items()) if t not in SKIPPED_QUIETLY and n}
        return {
            "summary_records": dict(sorted(scopes.items())),
            "skipped_records": skipped,
            "implausible_records": dict(sorted(self.implausible.items())),
        }

    def _wafer_of(self, head: np.ndarray, pir_seq: np.ndarray) -> pa.Array:
        """The WAFER_ID of the WIR open on each part's head when its PIR came (null: no WIR)."""
        wir = self._table("WIR")
        wafer = np.full(len(head), None, object)
        if wir is not None:
            for row in wir.select(["sequence_number", "HEAD_NUM", "WAFER_ID"]).to_pylist():
                on_head = (head == row["HEAD_NUM"]) | (row["HEAD_NUM"] == 255)
                wafer[on_head & (pir_seq > row["sequence_number"])] = row["WAFER_ID"]
        return pa.array(wafer, pa.string())

    def _tests_table(self) -> pa.Table:
        rows = [
            row for kind in RESULT_KINDS if kind in self.catalogues for row in self.catalogues[kind].rows()
        ]
        tsr_names = self._tsr_names()
        for row in rows:
            row["test_txt"] = row["test_txt"] or tsr_names.get(row["test_num"]) or None
        rows.sort(key=lambda row: (row["test_num"], RESULT_KINDS.index(row["kind"])))
        return pa.Table.from_pylist(rows, schema=TESTS_SCHEMA)

    def _tsr_names(self) -> dict[int, str]:
        """Test names from the TSRs (the first non-empty one per number), for tests whose records
        carry none."""
        tsr = self._table("TSR")
        names: dict[int, str] = {}
        if tsr is not None:
            for number, name in zip(tsr["TEST_NUM"].to_pylist(), tsr["TEST_NAM"].to_pylist(), strict=True):
                if name:
                    names.setdefault(number, name)
        return names

    def _bins_table(self) -> pa.Table:
        tables = []
        for record_type, prefix, label in (("HBR", "HBIN", "hard"), ("SBR", "SBIN", "soft")):
            t = self._table(record_type)
            if t is None:
                continue
            tables.append(
                pa.table(
                    {
                        "bin_type": pa.array([label] * t.num_rows, pa.string()),
                        "head_num": t["HEAD_NUM"],
                        # the spec: with HEAD_NUM 255 (all heads) SITE_NUM is ignored; 255 = all sites
                        "site_num": pc.if_else(pc.equal(t["HEAD_NUM"], ALL_HEADS), ALL_HEADS, t["SITE_NUM"]),
                        "bin_num": t[f"{prefix}_NUM"],
                        "bin_count": t[f"{prefix}_CNT"],
                        "pass_fail": blank_to_null(t[f"{prefix}_PF"]),
                        "bin_name": blank_to_null(t[f"{prefix}_NAM"]),
                    }
                ).cast(BINS_SCHEMA)
            )
        return pa.concat_tables(tables) if tables else BINS_SCHEMA.empty_table()

    def _file_facts(self) -> dict:
        mir = self._table("MIR")
        if mir is None:
            seen = ", ".join(f"{n} {t}" for t, n in sorted(self.counts.items()) if n) or "no records"
            raise StructureError(
                f"not a complete STDF file: no MIR (the Master Information Record, with lot, tester and "
                f"test program) in its {self.records_end} bytes ({seen})",
                self.records_end,
            )
        m = mir.to_pylist()[0]
        mrr = self._table("MRR")
        wir = self._table("WIR")
        far = self._table("FAR")
        return {
            "tester_type": m["TSTR_TYP"],
            "node": m["NODE_NAM"],
            "station": m["STAT_NUM"],
            "job": m["JOB_NAM"],
            "job_rev": m["JOB_REV"],
            "lot_id": m["LOT_ID"],
            "sublot_id": m["SBLOT_ID"],
            "part_type": m["PART_TYP"],
            "operator": m["OPER_NAM"],
            "test_code": m["TEST_COD"],
            "temperature": m["TST_TEMP"],
            "facility": m["FACIL_ID"],
            "flow": m["FLOW_ID"],
            "wafers": [w for w in wir["WAFER_ID"].to_pylist()] if wir is not None else [],
            "setup_time_utc": epoch_to_utc(m["SETUP_T"]),
            "start_time_utc": epoch_to_utc(m["START_T"]),
            "finish_time_utc": epoch_to_utc(mrr["FINISH_T"][0].as_py()) if mrr is not None else None,
            "stdf_ver": far["STDF_VER"][0].as_py() if far is not None else None,
            "cpu_type": far["CPU_TYPE"][0].as_py() if far is not None else None,
            "parts": sum(b.num_rows for b in self.prr_batches),
            "results": self.results_written,
            "record_counts": dict(sorted(self.counts.items())),
            "records_end": self.records_end,
            "record_order": self.record_order(),
        }


def _first_record_defaults(kind: str, row: dict) -> _Test:
    """A test's catalogue entry from its first record, honouring OPT_FLAG.

    OPT_FLAG bits: 0 RES_SCAL invalid, 4/5 LO/HI_LIMIT invalid, 6/7 no low/high limit. A record
    that stops before OPT_FLAG carries no limits at all.
    """
    opt = row.get("OPT_FLAG")
    opt_byte = opt[0] if opt else None
    lo = row.get("LO_LIMIT")
    hi = row.get("HI_LIMIT")
    scal = row.get("RES_SCAL")
    if opt_byte is None:
        lo = hi = scal = None
    else:
        lo = None if opt_byte & 0x50 else lo
        hi = None if opt_byte & 0xA0 else hi
        scal = None if opt_byte & 0x01 else scal
    return _Test(kind=kind, name=row.get("TEST_TXT") or "", units=row.get("UNITS") or None,
                 lo_limit=lo, hi_limit=hi, res_scal=scal)  # fmt: skip


def _expand_pins(table: pa.Table, batch: pa.Table) -> pa.Table:
    """One row per pin of each MPR: RTN_RSLT[i] with pin RTN_INDX[i] (or i when absent)."""
    results = batch["RTN_RSLT"]
    lengths = to_numpy(pc.list_value_length(results), np.int64)
    parents = np.repeat(np.arange(len(lengths)), lengths)
    pin = (np.arange(len(parents)) - (np.cumsum(lengths) - lengths)[parents]).astype(np.int32)
    pins = batch["RTN_INDX"]
    same = to_numpy(pc.equal(pc.list_value_length(pins), pc.list_value_length(results)), bool, False)
    if same.any():
        pin[same[parents]] = to_numpy(pc.list_flatten(pins.filter(pa.array(same))), np.int32)
    expanded = table.take(pa.array(parents))
    expanded = expanded.set_column(expanded.schema.get_field_index("pin_index"), "pin_index", pa.array(pin))
    values = pc.list_flatten(results).cast(pa.float32())
    return expanded.set_column(expanded.schema.get_field_index("result"), "result", values)


def _take(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """table.filter(rows), as a slice (no copy) when the rows are contiguous: the usual case, as
    the results of the parts still open come last."""
    picked = np.flatnonzero(rows)
    if len(picked) and picked[-1] - picked[0] + 1 == len(picked):
        return table.slice(int(picked[0]), len(picked))
    return table.filter(pa.array(rows))


def _offset(table: pa.Table, row: int) -> int:
    return int(table["byte_offset"][row].as_py())
