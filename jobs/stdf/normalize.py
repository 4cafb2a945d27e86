"""From raw STDF record batches to the four normalized tables, in one streaming pass.

Results (PTR, FTR, MPR) are the bulk of a file. Each belongs to the part that is open on its
head and site: the latest PIR before it, closed by the next PRR. Batches of each record type
arrive separately, so a result can only be placed once the PIRs before it and the PRR after it
have arrived; until then it waits in `pending`. That keeps memory to about one batch of parts'
results, whatever the file size, while the parser runs ahead on its own thread.

Parts, bins, tests and file facts are small (one row per die at most) and are built at the end.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RESULT_KINDS = ("PTR", "FTR", "MPR")
STDF_RECORD_TYPES = (0, 1, 2, 3, 5, 10, 15, 20, 50, 180, 181)  # REC_TYP codes of V4 and V4-2007
SEQ_BITS = 40  # a (head, site) key is packed above the record sequence number
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
    executions: int = 0


def _neighbour(sorted_keys: np.ndarray, pos: np.ndarray, site: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sequence number at `pos` in sorted (site, seq) keys, if it is on the same site."""
    if len(sorted_keys) == 0:
        return np.zeros(len(pos), bool), np.full(len(pos), -1.0)
    key = sorted_keys[np.clip(pos, 0, len(sorted_keys) - 1)]
    same = (pos >= 0) & (pos < len(sorted_keys)) & ((key >> np.uint64(SEQ_BITS)) == site)
    seq = (key & np.uint64((1 << SEQ_BITS) - 1)).astype(np.float64)
    return same, seq


@dataclass
class Placement:
    """Where records fall among the parts (see `_Parts.place`)."""

    part: np.ndarray  # part index (PIR ordinal), -1 where no part is open
    closed_at: np.ndarray  # sequence number of the PRR closing that part; inf if not seen yet
    nested: np.ndarray  # a new PIR came on the same head/site before the part's PRR
    by_fallback: np.ndarray  # head/site matched no open part; placed in the file's only open part


@dataclass
class _Parts:
    """PIR/PRR bookkeeping: which part is open at any record.

    A record belongs to the part open on its own head and site. Some files (synthetic ones, or
    testers that number heads oddly) put different head/site numbers on a part's records; when
    exactly one part is open in the whole file, such a record is placed in it and counted.
    """

    pir_seq: list[np.ndarray] = field(default_factory=list)
    prr_seq: list[np.ndarray] = field(default_factory=list)
    pir_keys: list[np.ndarray] = field(default_factory=list)
    prr_batches: list[pa.RecordBatch] = field(default_factory=list)
    pir_wm: float = -1.0  # every PIR with a sequence number <= this has arrived
    sorted_pir: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    sorted_pir_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sorted_prr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    all_pir: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    all_prr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    @property
    def count(self) -> int:
        return len(self.all_pir)

    def add_pir(self, batch: pa.RecordBatch) -> None:
        seq = to_numpy(batch["sequence_number"], np.uint64)
        self.pir_seq.append(seq)
        self.pir_keys.append((site_key(batch["HEAD_NUM"], batch["SITE_NUM"]) << np.uint64(SEQ_BITS)) | seq)
        self.pir_wm = float(seq[-1]) if len(seq) else self.pir_wm
        keys = np.concatenate(self.pir_keys)
        order = np.argsort(keys, kind="stable")
        self.sorted_pir, self.sorted_pir_index = keys[order], order
        self.all_pir = np.concatenate(self.pir_seq)

    def add_prr(self, batch: pa.RecordBatch) -> None:
        self.prr_batches.append(batch)
        seq = to_numpy(batch["sequence_number"], np.uint64)
        keys = (site_key(batch["HEAD_NUM"], batch["SITE_NUM"]) << np.uint64(SEQ_BITS)) | seq
        self.sorted_prr = np.sort(np.concatenate([self.sorted_prr, keys]))
        self.prr_seq.append(seq)
        self.all_prr = np.concatenate(self.prr_seq)

    def place(self, site: np.ndarray, seq: np.ndarray) -> Placement:
        """Place records at (site, seq): a result, or a PRR (which closes the part it is in)."""
        keys = (site << np.uint64(SEQ_BITS)) | seq
        pir_pos = np.searchsorted(self.sorted_pir, keys, side="right") - 1
        has_pir, pir_seq = _neighbour(self.sorted_pir, pir_pos, site)
        has_next_pir, next_pir_seq = _neighbour(self.sorted_pir, pir_pos + 1, site)
        prr_pos = np.searchsorted(self.sorted_prr, keys, side="left")
        has_prev_prr, prev_prr_seq = _neighbour(self.sorted_prr, prr_pos - 1, site)
        has_next_prr, next_prr_seq = _neighbour(self.sorted_prr, prr_pos, site)
        open_on_site = has_pir & ~(has_prev_prr & (prev_prr_seq > pir_seq))
        part = np.where(
            open_on_site, self.sorted_pir_index[np.clip(pir_pos, 0, None)] if self.count else -1, -1
        )
        next_pir = np.where(has_next_pir, next_pir_seq, np.inf)
        closed_at = np.where(has_next_prr, next_prr_seq, np.inf)
        nested = open_on_site & (next_pir < closed_at)
        fallback = ~open_on_site
        if fallback.any():  # rare: only files whose records disagree on head/site numbers
            fallback[fallback] = self._only_open_part(seq[fallback], part, closed_at, fallback)
        return Placement(part=part.astype(np.int64), closed_at=closed_at, nested=nested, by_fallback=fallback)

    def _only_open_part(
        self, seq: np.ndarray, part: np.ndarray, closed_at: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Place records in the file's only open part, if exactly one is open; True where placed."""
        n_pir = np.searchsorted(self.all_pir, seq, side="left")
        n_prr = np.searchsorted(self.all_prr, seq, side="left")
        last_pir = self.all_pir[np.clip(n_pir - 1, 0, None)] if self.count else np.zeros_like(seq)
        last_prr = self.all_prr[np.clip(n_prr - 1, 0, None)] if len(self.all_prr) else np.zeros_like(seq)
        placed = (n_pir - n_prr == 1) & ((n_prr == 0) | (last_pir > last_prr))
        has_close = n_prr < len(self.all_prr)
        next_prr = (
            self.all_prr[np.clip(n_prr, 0, max(len(self.all_prr) - 1, 0))] if len(self.all_prr) else seq
        )
        where = np.flatnonzero(rows)[placed]
        part[where] = n_pir[placed] - 1
        closed_at[where] = np.where(has_close, next_prr.astype(np.float64), np.inf)[placed]
        return placed


class Normalizer:
    """Feed it (record type, batch) pairs in arrival order; results go to `emit` as they settle.

    `finish()` returns the parts, tests and bins tables and the file facts.
    """

    def __init__(self, emit: Callable[[pa.Table], None], source_file: str) -> None:
        self.emit = emit
        self.source_file = source_file
        self.counts: Counter[str] = Counter()
        self.parts = _Parts()
        self.raw: dict[str, list[pa.RecordBatch]] = {}
        self.pending: list[pa.Table] = []
        self.tests: dict[tuple[str, int], _Test] = {}
        self.tsr_names: dict[int, str] = {}
        self.small: dict[str, list[pa.RecordBatch]] = {}
        self.first_unknown: int | None = None
        self.last_offset = 0
        self.records_end = 0  # byte offset just past the last record
        self.results_written = 0
        self.results_dropped = 0
        self.site_mismatches = 0

    # feeding ---------------------------------------------------------------------------------

    def feed(self, record_type: str, batch: pa.RecordBatch) -> None:
        self.counts[record_type] += batch.num_rows
        if batch.num_rows:
            last = batch["byte_offset"][-1].as_py()
            if last >= self.last_offset:
                self.last_offset = last
                self.records_end = last + 4 + batch["rec_len"][-1].as_py()
        if record_type in RESULT_KINDS:
            self.raw.setdefault(record_type, []).append(batch)  # decoded in bulk when they can settle
        elif record_type == "PIR":
            self.parts.add_pir(batch)
        elif record_type == "PRR":  # PRR batch k arrives after PIR batch k: results before it can settle
            self.parts.add_prr(batch)
            self._settle(final=False)
        elif record_type == "UNKNOWN":
            self._unknown(batch)
        elif record_type in ("FAR", "MIR", "MRR", "WIR", "WRR", "HBR", "SBR", "TSR"):
            self.small.setdefault(record_type, []).append(batch)

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
        self._catalogue(kind, batch, test_num)
        test_flg = flag_bytes(batch["TEST_FLG"])
        parm_flg = flag_bytes(batch["PARM_FLG"]) if kind != "FTR" else None
        failed, alarm, unreliable = decode_flags(test_flg, parm_flg)
        columns = {
            "seq": batch["sequence_number"],
            "offset": batch["byte_offset"],
            "site": pa.array(site_key(batch["HEAD_NUM"], batch["SITE_NUM"])),
            "kind": pa.DictionaryArray.from_arrays(
                pa.array(np.full(batch.num_rows, RESULT_KINDS.index(kind), np.int8)), KIND_DICTIONARY
            ),
            "test_num": pa.array(test_num),
            "test_txt": self._names(kind, test_num),
            "pin_index": pa.nulls(batch.num_rows, pa.int32()),
            "result": batch["RESULT"] if kind == "PTR" else pa.nulls(batch.num_rows, pa.float32()),
            "failed": failed,
            "alarm": alarm,
            "unreliable": unreliable,
        }
        table = pa.table(columns)
        return _expand_pins(table, batch) if kind == "MPR" else table

    def _catalogue(self, kind: str, batch: pa.Table, test_num: np.ndarray) -> None:
        """Record each test's defaults from its first record (STDF: later PTRs default to it)."""
        unique, first = np.unique(test_num, return_index=True)
        new = [
            (int(t), int(i)) for t, i in zip(unique, first, strict=True) if (kind, int(t)) not in self.tests
        ]
        counts = np.bincount(np.searchsorted(unique, test_num), minlength=len(unique))
        for t, i in new:
            row = {
                name: batch[name][i].as_py()
                for name in ("TEST_TXT", "OPT_FLAG", "LO_LIMIT", "HI_LIMIT", "UNITS", "RES_SCAL")
                if name in batch.schema.names
            }
            self.tests[(kind, t)] = _first_record_defaults(kind, row)
        for t, c in zip(unique, counts, strict=True):
            test = self.tests[(kind, int(t))]
            test.executions += int(c)
            if not test.name:
                names = batch["TEST_TXT"].filter(
                    pc.and_(pc.equal(batch["TEST_NUM"], int(t)), pc.not_equal(batch["TEST_TXT"], ""))
                )
                if len(names):
                    test.name = names[0].as_py()

    def _names(self, kind: str, test_num: np.ndarray) -> pa.DictionaryArray:
        """Each result's test name, from the catalogue (real testers give a number one name).

        A dictionary column: cheap to build and to write, however many millions of rows.
        """
        numbers = np.array(sorted(t for (k, t) in self.tests if k == kind), np.uint32)
        names = pa.array([self.tests[(kind, int(t))].name or None for t in numbers], pa.string())
        return pa.DictionaryArray.from_arrays(
            pa.array(np.searchsorted(numbers, test_num).astype(np.int32)), names
        )

    # settling results into parts ---------------------------------------------------------------

    def _settle(self, final: bool) -> None:
        """Emit every pending result whose part is known; keep the rest waiting."""
        for kind, batches in self.raw.items():
            if batches:
                self.pending.append(self._results(kind, pa.Table.from_batches(batches).combine_chunks()))
        self.raw = {}
        if not self.pending:
            return
        table = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = []
        seq = to_numpy(table["seq"], np.uint64)
        where = self.parts.place(to_numpy(table["site"], np.uint64), seq)
        if final:
            ready = np.ones(len(seq), bool)
        else:
            ready = (where.closed_at < np.inf) & (seq.astype(np.float64) < self.parts.pir_wm)
        orphan = ready & (where.part < 0)
        nested = ready & where.nested
        if orphan.any() or nested.any():
            bad = int(np.argmax(orphan | nested))
            what = "a result outside any part (no open PIR on its head/site)"
            if not orphan[bad]:
                what = "a PIR opened while the previous part on its head/site was still open"
            raise StructureError(what, int(table["offset"][bad].as_py()))
        keep = ready & (where.closed_at < np.inf)
        self.results_dropped += int((ready & ~keep).sum())  # only at the end: the part never closed
        self.site_mismatches += int((keep & where.by_fallback).sum())
        if keep.any():
            settled = table.filter(pa.array(keep)).drop_columns(["seq", "offset", "site"])
            out = settled.add_column(0, "part_index", pa.array(where.part[keep].astype(np.int32)))
            self.results_written += out.num_rows
            self.emit(out.cast(RESULTS_SCHEMA))
        if not ready.all():
            self.pending = [table.filter(pa.array(~ready))]

    # the end ---------------------------------------------------------------------------------

    def finish(self) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
        self._settle(final=True)
        parts, open_parts = self._parts_table()
        facts = self._file_facts()
        facts["open_parts_dropped"] = open_parts
        facts["results_dropped"] = self.results_dropped
        facts["head_site_mismatches"] = self.site_mismatches
        return parts, self._tests_table(), self._bins_table(), facts

    def _table(self, record_type: str) -> pa.Table | None:
        batches = self.small.get(record_type)
        return pa.Table.from_batches(batches) if batches else None

    def _parts_table(self) -> tuple[pa.Table, int]:
        if not self.parts.prr_batches:
            return PARTS_SCHEMA.empty_table(), self.parts.count
        prr = pa.Table.from_batches(self.parts.prr_batches)
        seq = to_numpy(prr["sequence_number"], np.uint64)
        site = site_key(prr["HEAD_NUM"], prr["SITE_NUM"])
        where = self.parts.place(site, seq)
        if (where.part < 0).any():
            bad = int(np.argmax(where.part < 0))
            raise StructureError(
                "a PRR with no open part (no PIR before it on its head/site)", _offset(prr, bad)
            )
        part_index = where.part
        if len(np.unique(part_index)) != len(part_index):
            dup = _first_duplicate(part_index)
            raise StructureError("two PRRs close the same part", _offset(prr, dup))
        self.site_mismatches += int(where.by_fallback.sum())
        pir_seq = np.concatenate(self.parts.pir_seq)[part_index]
        x = to_numpy(prr["X_COORD"], np.int16, NO_COORD)
        y = to_numpy(prr["Y_COORD"], np.int16, NO_COORD)
        part_flg = flag_bytes(prr["PART_FLG"])
        wafer = self._wafer_of(to_numpy(prr["HEAD_NUM"], np.uint8), pir_seq)
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
        return table.cast(PARTS_SCHEMA), self.parts.count - prr.num_rows

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
            {
                "test_num": number,
                "kind": kind,
                "test_txt": test.name or self.tsr_name(number) or None,
                "units": test.units,
                "lo_limit": test.lo_limit,
                "hi_limit": test.hi_limit,
                "res_scal": test.res_scal,
                "executions": test.executions,
            }
            for (kind, number), test in self.tests.items()
        ]
        rows.sort(key=lambda row: (row["test_num"], RESULT_KINDS.index(row["kind"])))
        return pa.Table.from_pylist(rows, schema=TESTS_SCHEMA)

    def tsr_name(self, test_num: int) -> str:
        tsr = self._table("TSR")
        if tsr is None:
            return ""
        names = tsr.filter(pc.and_(pc.equal(tsr["TEST_NUM"], test_num), pc.not_equal(tsr["TEST_NAM"], "")))
        return names["TEST_NAM"][0].as_py() if names.num_rows else ""

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
                        "site_num": t["SITE_NUM"],
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
            raise StructureError("no MIR record: the file has no lot information", self.last_offset)
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
            "parts": sum(b.num_rows for b in self.parts.prr_batches),
            "results": self.results_written,
            "record_counts": dict(sorted(self.counts.items())),
            "records_end": self.records_end,
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


def _offset(table: pa.Table, row: int) -> int:
    return int(table["byte_offset"][row].as_py())


def _first_duplicate(values: np.ndarray) -> int:
    seen: set[int] = set()
    for i, v in enumerate(values.tolist()):
        if v in seen:
            return i
        seen.add(v)
    return 0
