"""The four normalized tables' schemas, and the builders of the small ones (parts, tests, bins).

Results (the bulk) are built as they settle, in normalize.py; parts, tests and bins are one row
per die, test or bin at most and are built at the end from the records kept.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalogue import Catalogue
from .columns import blank_to_null, cumcount, flag_bytes, to_numpy

RESULT_KINDS = ("PTR", "FTR", "MPR")
NO_COORD = -32768
NO_BIN = 65535
ALL_HEADS = 255  # HEAD_NUM of a summary over all heads (its SITE_NUM is then ignored); SITE_NUM: all sites

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


def parts_table(
    prr: pa.Table, opened: np.ndarray, mir: pa.Table | None, wir: pa.Table | None, source_file: str
) -> pa.Table:
    """One row per PRR (part index = PRR ordinal); `opened`: each part's sequence number when it
    began (its PIR, or its PRR for a part without one)."""
    part_index = np.arange(prr.num_rows)
    x = to_numpy(prr["X_COORD"], np.int16, NO_COORD)
    y = to_numpy(prr["Y_COORD"], np.int16, NO_COORD)
    part_flg = flag_bytes(prr["PART_FLG"])
    wafer = wafer_of(wir, to_numpy(prr["HEAD_NUM"], np.uint8), opened)
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
            "source_file": pa.array([source_file] * prr.num_rows, pa.string()),
        }
    )
    return table.cast(PARTS_SCHEMA)


def wafer_of(wir: pa.Table | None, head: np.ndarray, pir_seq: np.ndarray) -> pa.Array:
    """The WAFER_ID of the WIR open on each part's head when its PIR came (null: no WIR)."""
    wafer = np.full(len(head), None, object)
    if wir is not None:
        for row in wir.select(["sequence_number", "HEAD_NUM", "WAFER_ID"]).to_pylist():
            on_head = (head == row["HEAD_NUM"]) | (row["HEAD_NUM"] == 255)
            wafer[on_head & (pir_seq > row["sequence_number"])] = row["WAFER_ID"]
    return pa.array(wafer, pa.string())


def tests_table(catalogues: dict[str, Catalogue], tsr: pa.Table | None) -> pa.Table:
    """One row per test and kind, named by its records or else by its TSR."""
    rows = [row for kind in RESULT_KINDS if kind in catalogues for row in catalogues[kind].rows()]
    names = tsr_names(tsr)
    for row in rows:
        row["test_txt"] = row["test_txt"] or names.get(row["test_num"]) or None
    rows.sort(key=lambda row: (row["test_num"], RESULT_KINDS.index(row["kind"])))
    return pa.Table.from_pylist(rows, schema=TESTS_SCHEMA)


def tsr_names(tsr: pa.Table | None) -> dict[int, str]:
    """Test names from the TSRs (the first non-empty one per number), for tests whose records
    carry none."""
    names: dict[int, str] = {}
    if tsr is not None:
        for number, name in zip(tsr["TEST_NUM"].to_pylist(), tsr["TEST_NAM"].to_pylist(), strict=True):
            if name:
                names.setdefault(number, name)
    return names


def bins_table(hbr: pa.Table | None, sbr: pa.Table | None) -> pa.Table:
    """The HBRs and SBRs as written (a HEAD_NUM 255 row gets site_num 255)."""
    tables = []
    for t, prefix, label in ((hbr, "HBIN", "hard"), (sbr, "SBIN", "soft")):
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
