"""From raw STDF record batches to the four normalized tables, in one streaming pass.

Results (PTR, FTR, MPR) are the bulk of a file. Each belongs to the part that is open on its
head and site: the latest PIR before it, closed by the next PRR. Batches of each record type
arrive separately, so a result can only be placed once the PIRs before it and the PRR after it
have arrived; until then it waits in `pending`, in memory up to a limit and on disk beyond it
(files with few parts of thousands of tests each keep many results waiting). Memory stays flat
whatever the file size, while the parser runs ahead on its own thread.

Parts, bins, tests and file facts are small (one row per die at most) and are built at the end
(tables.py). Placement rules: parts.py; the arrow engine's walker: walker.py; refusals:
plausibility.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalogue import Catalogue
from .columns import decode_flags, epoch_to_utc, expand_pins, flag_bytes, site_key, take_rows, to_numpy
from .parts import Parts
from .plausibility import ContentCheck, Plausibility, StructureError
from .records import KNOWN_RECORD_TYPES
from .spill import Spill
from .tables import (
    ALL_HEADS,
    KIND_DICTIONARY,
    PARTS_SCHEMA,
    RESULT_KINDS,
    RESULTS_SCHEMA,
    bins_table,
    parts_table,
    tests_table,
)
from .walker import PART_MARKS, PartWalker

RAW_ROWS = 1 << 18  # raw result records decoded together (amortizes per-call overhead)
# REC_TYP codes of V4 and V4-2007, and 180/181, which the spec reserves for testers' own records
STDF_RECORD_TYPES = tuple(sorted({typ for typ, _ in KNOWN_RECORD_TYPES} | {180, 181}))
SKIPPED_QUIETLY = {"FAR", "MIR", "MRR", "WIR", "WRR", "HBR", "SBR", "TSR", "PCR", "PIR", "PRR", *RESULT_KINDS}
SUMMARY_TYPES = ("HBR", "SBR", "TSR", "PCR")


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
        self.parts = Parts()
        self.walker = walker
        self.prr_batches: list[pa.RecordBatch] = []
        self.raw: dict[str, list[pa.RecordBatch]] = {}
        self.raw_rows = 0
        self.pending = Spill(spill_rows)
        self.settling: Iterator[None] | None = None  # a settle in progress, one chunk per step
        self.catalogues: dict[str, Catalogue] = {}
        self.small: dict[str, list[pa.RecordBatch]] = {}
        self.first_unknown: int | None = None
        self.last_batch: dict[str, pa.RecordBatch] = {}
        self.results_written = 0
        self.results_dropped = 0
        self.site_mismatches = 0
        self.content = ContentCheck(plausibility or Plausibility())
        self.loose = np.zeros(0, np.int64)  # per part: results read while no PIR was open
        self.unclosed_sites: set[int] = set()

    # feeding ---------------------------------------------------------------------------------

    def feed(self, record_type: str, batch: pa.RecordBatch) -> None:
        self.counts[record_type] += batch.num_rows
        if batch.num_rows:
            self.last_batch[record_type] = batch  # the file's last record is the last of one of these
            walked = self.walker is not None and self.walker.covered >= 0
            batch = self.content.check(record_type, batch, sum(self.counts.values()), walked)
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
        self.catalogues.setdefault(kind, Catalogue(kind)).update(batch, test_num)
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
        return expand_pins(table, batch) if kind == "MPR" else table

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
            self._emit(take_rows(table, keep), where.part[keep])
        return None if ready.all() else take_rows(table, ~ready)

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
        tests = tests_table(self.catalogues, self._table("TSR"))
        return parts, tests, bins_table(self._table("HBR"), self._table("SBR")), facts

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
        structure = self.parts.notes(
            pir, self.loose, self.unclosed_sites, self.results_dropped, self.site_mismatches
        )
        if not self.prr_batches:
            return PARTS_SCHEMA.empty_table(), structure
        prr = pa.Table.from_batches(self.prr_batches)
        # the WIR open when the part began: at its PIR, or for a part without one, at its PRR
        pir_seq = self.parts.all_pir[np.clip(pir, 0, None)] if len(self.parts.all_pir) else 0
        opened = np.where(pir >= 0, pir_seq, self.parts.all_prr)
        return parts_table(prr, opened, self._table("MIR"), self._table("WIR"), self.source_file), structure

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
            "implausible_records": dict(sorted(self.content.implausible.items())),
        }

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
