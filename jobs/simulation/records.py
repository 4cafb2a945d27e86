"""STDF records of the simulated files, packed with jobs/stdf/writer.py: the part stream (PIR, PTR,
FTR, PRR in probing order), the summaries (TSR, HBR, SBR, PCR), MIR and SDR, and a landing file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.simulation.floor import PRODUCT, Fab, Tester
from jobs.simulation.measure import Results
from jobs.simulation.programs import HARD_BINS, SOFT_BINS, Program
from jobs.stdf.writer import (
    PackedRecords,
    StdfWriter,
    encode_record,
    interleave,
    pack_ftrs,
    pack_pirs,
    pack_ptrs,
    pack_records,
)


class Stream:
    """An STDF byte stream being assembled, which knows where each record starts."""

    def __init__(self, byte_order: str):
        self.byte_order = byte_order
        self.chunks: list[bytes] = []
        self.sizes: list[np.ndarray] = []

    def add(self, name: str, **fields: Any) -> None:
        record = encode_record(name, self.byte_order, **fields)
        self.chunks.append(record)
        self.sizes.append(np.array([len(record)]))

    def add_block(self, block: PackedRecords) -> None:
        self.chunks.append(block.data)
        self.sizes.append(block.sizes)

    def content(self) -> bytes:
        return b"".join(self.chunks)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(np.concatenate(self.sizes))[:-1]])


@dataclass
class Parts:
    """Part insertions in file order (one PIR/PRR pair each)."""

    results: Results
    touchdown: np.ndarray
    site: np.ndarray  # 1-based
    x: np.ndarray  # int16; -32768 (missing) at final test
    y: np.ndarray
    part_flg: np.ndarray
    part_txt: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.site)


# The blocks `part_stream` interleaves.
PIR, PTR, FTR, PRR, FIRST_PTR, FIRST_FTR = range(6)


def part_stream(program: Program, parts: Parts, order: str) -> PackedRecords:
    """All parts' PIR, PTR/FTR and PRR records in probing order.

    Per touchdown: the PIRs of its sites, then test by test the results of every site still
    running (a part stops at its first failure), then the PRRs. The first PTR (or FTR) of each
    test in the file carries its name, units and limits; later ones are the short form.
    Each kind of record is packed at once with numpy; `interleave` puts them in file order.
    """
    res = parts.results
    grid = np.full((parts.touchdown.max() + 1, parts.site.max()), -1)
    grid[parts.touchdown, parts.site - 1] = np.arange(len(parts))
    present = grid >= 0
    part_at = np.where(present, grid, 0)
    running = (np.arange(len(program)) < res.num_test[part_at][..., None]) & present[..., None]
    cells = np.concatenate([present[..., None], running, present[..., None]], axis=2).transpose(0, 2, 1)
    td, col, site_index = np.nonzero(cells)  # row-major order is the file order
    part, site = part_at[td, site_index], (site_index + 1).astype(np.uint8)
    kind = np.concatenate([[PIR], np.where(program.is_ftr, FTR, PTR), [PRR]])[col]
    tests = np.flatnonzero((col > 0) & (col <= len(program)))
    _, first_seen = np.unique(col[tests], return_index=True)
    kind[tests[first_seen]] += FIRST_PTR - PTR  # PTR -> FIRST_PTR, FTR -> FIRST_FTR

    results = test_results(program, res, part[tests], col[tests] - 1, site[tests])
    test_kind = kind[tests]
    blocks = [
        PackedRecords.uniform(pack_pirs(1, site[kind == PIR], order), int((kind == PIR).sum())),
        short_ptrs(program, results, test_kind == PTR, order),
        short_ftrs(program, results, test_kind == FTR, order),
        prrs(parts, part[kind == PRR], order),
        first_ptrs(program, results, test_kind == FIRST_PTR, order),
        first_ftrs(program, results, test_kind == FIRST_FTR, order),
    ]
    sizes = np.empty(len(kind), dtype=np.int64)
    for k, block in enumerate(blocks):
        sizes[kind == k] = block.sizes
    return PackedRecords(interleave(kind, blocks), sizes)


def test_results(
    program: Program, res: Results, part: np.ndarray, test: np.ndarray, site: np.ndarray
) -> dict[str, np.ndarray]:
    """Field values of test records (one per executed test of a part), in file order. RESULT is in
    the units the program writes; the flags are the model's."""
    value, failed = res.value[part, test], res.failed[part, test]
    low, high = failed & (value < program.lo[test]), failed & (value > program.hi[test])
    return dict(
        test=test,
        site=site,
        value=program.written(value, test),
        test_flg=np.where(failed, 0x80, 0).astype(np.uint8),
        parm_flg=(low * 0x10 | high * 0x08).astype(np.uint8),
        # FTR: on failure the first failing cycle, vector address and pin count are valid.
        opt_flag=np.where(failed, 0xF4, 0xFF).astype(np.uint8),
        cycl_cnt=np.where(failed, 1000 + (part * 7919 + test * 104729) % 900_000, 0).astype(np.uint32),
        rel_vadr=np.where(failed, (part * 31 + test * 17) % 4096, 0).astype(np.uint32),
        num_fail=res.num_fail[part, test].astype(np.uint32),
    )


def short_ptrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    number = program.number[r["test"][sel]]
    data = pack_ptrs(
        number, 1, r["site"][sel], r["test_flg"][sel], r["parm_flg"][sel], r["value"][sel], order
    )
    return PackedRecords.uniform(data, len(number))


def short_ftrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    number = program.number[r["test"][sel]]
    data = pack_ftrs(
        number,
        1,
        r["site"][sel],
        r["test_flg"][sel],
        order,
        opt_flag=r["opt_flag"][sel],
        cycl_cnt=r["cycl_cnt"][sel],
        rel_vadr=r["rel_vadr"][sel],
        num_fail=r["num_fail"][sel],
    )
    return PackedRecords.uniform(data, len(number))


def first_ptrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    """The first PTR of each test: results plus name, limits, units and formats."""
    t = r["test"][sel]
    lo, hi = program.written(program.lo[t], t), program.written(program.hi[t], t)
    no_limit = np.where(np.isinf(lo), 0x40, 0) | np.where(np.isinf(hi), 0x80, 0)
    return pack_records(
        "PTR",
        order,
        n=len(t),
        TEST_NUM=program.number[t],
        HEAD_NUM=1,
        SITE_NUM=r["site"][sel],
        TEST_FLG=r["test_flg"][sel],
        PARM_FLG=r["parm_flg"][sel],
        RESULT=r["value"][sel],
        TEST_TXT=np.array(program.names)[t],
        ALARM_ID="",
        OPT_FLAG=0x0E | no_limit,  # scaling and limits valid, no spec limits
        RES_SCAL=0,
        LLM_SCAL=0,
        HLM_SCAL=0,
        LO_LIMIT=np.where(np.isinf(lo), 0.0, lo),
        HI_LIMIT=np.where(np.isinf(hi), 0.0, hi),
        UNITS=np.array(program.units)[t],
        C_RESFMT=program.c_format[t],
        C_LLMFMT=program.c_format[t],
        C_HLMFMT=program.c_format[t],
    )


def first_ftrs(program: Program, r: dict[str, np.ndarray], sel: np.ndarray, order: str) -> PackedRecords:
    """The first FTR of each test: the short fields plus the test name."""
    t = r["test"][sel]
    return pack_records(
        "FTR",
        order,
        n=len(t),
        TEST_NUM=program.number[t],
        HEAD_NUM=1,
        SITE_NUM=r["site"][sel],
        TEST_FLG=r["test_flg"][sel],
        OPT_FLAG=r["opt_flag"][sel],
        CYCL_CNT=r["cycl_cnt"][sel],
        REL_VADR=r["rel_vadr"][sel],
        NUM_FAIL=r["num_fail"][sel],
        RTN_ICNT=0,
        PGM_ICNT=0,
        TEST_TXT=np.array(program.names)[t],
    )


def prrs(parts: Parts, part: np.ndarray, order: str) -> PackedRecords:
    res = parts.results
    return pack_records(
        "PRR",
        order,
        HEAD_NUM=1,
        SITE_NUM=parts.site[part],
        PART_FLG=parts.part_flg[part] | np.where(res.passed[part], 0, 0x08),
        NUM_TEST=res.num_test[part],
        HARD_BIN=res.hard_bin[part],
        SOFT_BIN=res.soft_bin[part],
        X_COORD=parts.x[part],
        Y_COORD=parts.y[part],
        TEST_T=res.test_ms[part],
        PART_ID=(part + 1).astype(str),
        PART_TXT=None if parts.part_txt is None else parts.part_txt[part],
    )


def test_synopsis(program: Program, parts: Parts, order: str) -> PackedRecords:
    """One TSR per test, over all sites (HEAD_NUM 255), with result statistics."""
    res = parts.results
    results = program.written(res.value)  # as the PTRs give them
    executed = np.arange(len(program)) < res.num_test[:, None]
    measured = executed & ~program.is_ftr
    value = np.where(measured, results, 0).astype(np.float64)
    has_stats = measured.any(axis=0)
    return pack_records(
        "TSR",
        order,
        HEAD_NUM=255,
        SITE_NUM=255,
        TEST_TYP=np.where(program.is_ftr, "F", "P"),
        TEST_NUM=program.number,
        EXEC_CNT=executed.sum(axis=0),
        FAIL_CNT=(executed & res.failed).sum(axis=0),
        ALRM_CNT=0,
        TEST_NAM=program.names,
        SEQ_NAME=program.category,
        TEST_LBL="",
        OPT_FLAG=np.where(has_stats, 0xC8, 0xFB),  # 0xFB: min, max, sums and squares invalid
        TEST_TIM=program.time_ms / 1000,
        TEST_MIN=np.where(has_stats, np.where(measured, results, np.inf).min(axis=0, initial=np.inf), 0),
        TEST_MAX=np.where(has_stats, np.where(measured, results, -np.inf).max(axis=0, initial=-np.inf), 0),
        TST_SUMS=value.sum(axis=0),
        TST_SQRS=(value**2).sum(axis=0),
    )


def bin_summary(stream: Stream, parts: Parts) -> None:
    """HBRs, SBRs and PCRs per site and for all sites (HEAD_NUM 255)."""
    res = parts.results
    groups = [(1, s, parts.site == s) for s in range(1, parts.site.max() + 1)]
    groups.append((255, 255, np.ones(len(parts), dtype=bool)))
    for record, bins in (("HBR", res.hard_bin), ("SBR", res.soft_bin)):
        prefix = record[0] + "BIN"
        for head, site, mine in groups:
            for number, count in zip(*np.unique(bins[mine], return_counts=True), strict=True):
                name = HARD_BINS[int(number)] if record == "HBR" else SOFT_BINS[int(number)][0]
                stream.add(
                    record,
                    HEAD_NUM=head,
                    SITE_NUM=site,
                    **{
                        f"{prefix}_NUM": int(number),
                        f"{prefix}_CNT": int(count),
                        f"{prefix}_PF": "P" if number == 1 else "F",
                        f"{prefix}_NAM": name,
                    },
                )
    for head, site, mine in groups:
        retests = int((parts.part_flg[mine] & 0x02 > 0).sum())
        good = int(res.passed[mine].sum())
        stream.add(
            "PCR",
            HEAD_NUM=head,
            SITE_NUM=site,
            PART_CNT=int(mine.sum()),
            RTST_CNT=retests,
            ABRT_CNT=0,
            GOOD_CNT=good,
        )


def summary_records(stream: Stream, program: Program, parts: Parts) -> None:
    """After the last part: TSRs, then HBR/SBR/PCR."""
    stream.add_block(test_synopsis(program, parts, stream.byte_order))
    bin_summary(stream, parts)


def header_records(
    stream: Stream, fab: Fab, tester: Tester, program: Program, lot: str, setup: int, start: int
) -> None:
    """MIR and SDR (FAR is the writer's)."""
    final = program.name.startswith("FT")
    stream.add(
        "MIR",
        SETUP_T=setup,
        START_T=start,
        STAT_NUM=int(tester.node[-2:]),
        MODE_COD="P",
        RTST_COD=" ",
        PROT_COD=" ",
        BURN_TIM=65535,
        CMOD_COD=" ",
        LOT_ID=lot,
        PART_TYP=PRODUCT,
        NODE_NAM=tester.node,
        TSTR_TYP=tester.kind,
        JOB_NAM=f"{PRODUCT}_{program.name}",
        JOB_REV="B3",
        SBLOT_ID="",
        OPER_NAM=f"OP{start % 37:02d}",
        EXEC_TYP=tester.exec_typ,
        EXEC_VER=tester.exec_ver,
        TEST_COD=program.name,
        TST_TEMP="85" if final else "25",
        USER_TXT="",
        AUX_FILE="",
        PKG_TYP="QFN48" if final else "",
        FAMLY_ID="PMX",
        DATE_COD="",
        FACIL_ID=fab.facility,
        FLOOR_ID="FT" if final else "SORT",
        PROC_ID="C40LP",
        OPER_FRQ="",
        SPEC_NAM=f"{PRODUCT}_DS",
        SPEC_VER="1.2",
        FLOW_ID=program.name,
    )
    stream.add(
        "SDR",
        HEAD_NUM=1,
        SITE_GRP=1,
        SITE_NUM=list(range(1, tester.sites + 1)),
        HAND_TYP="SRM-HT8" if final else "TEL-P12XL",
        HAND_ID=f"{tester.node}-H1",
        CARD_TYP="" if final else f"PC-{tester.sites}X",
        CARD_ID="" if final else f"PC{tester.sites}-{tester.node[-2:]}",
    )


def write_landing(path: Path, content: bytes, byte_order: str, level: int, mtime: int) -> None:
    """Write one landing file atomically (FAR from the writer) and date it to its upload time."""
    far = encode_record("FAR", byte_order, CPU_TYPE=1 if byte_order == ">" else 2, STDF_VER=4)
    if not content.startswith(far):
        raise ValueError(f"{path.name}: the stream must start with a FAR for byte order {byte_order!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with StdfWriter(path, byte_order, compresslevel=level) as writer:
        writer.write_bytes(memoryview(content)[len(far) :])
    os.utime(path, (mtime, mtime))
