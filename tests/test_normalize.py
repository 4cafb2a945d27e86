"""The normalizer's small pure pieces: flag decoding, retest counting, test defaults."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jobs.stdf.catalogue import first_record_defaults
from jobs.stdf.columns import blank_to_null, cumcount, decode_flags, flag_bytes


def test_flag_bytes_reads_one_byte_per_value_and_zero_for_missing() -> None:
    column = pa.array([b"\x80", b"", None, b"\x41", b"\x02"], pa.binary())
    assert flag_bytes(column).tolist() == [0x80, 0, 0, 0x41, 0x02]
    assert flag_bytes(column.slice(3)).tolist() == [0x41, 0x02]  # honours the array offset
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(3)])
    assert flag_bytes(chunked).tolist() == [0x80, 0, 0x41, 0x02]


def test_decode_flags_follows_the_spec() -> None:
    test_flg = np.array([0x00, 0x80, 0xC0, 0x01, 0x04, 0x10], np.uint8)
    parm_flg = np.array([0x00, 0x00, 0x00, 0x00, 0x00, 0x02], np.uint8)
    failed, alarm, unreliable = decode_flags(test_flg, parm_flg)
    assert failed.to_pylist() == [False, True, None, False, False, False]  # 0x40: no verdict
    assert alarm.to_pylist() == [False, False, False, True, False, True]  # PARM_FLG drift counts
    assert unreliable.to_pylist() == [False, False, False, False, True, True]  # unreliable, not run


def test_cumcount_counts_earlier_rows_with_the_same_key() -> None:
    x = np.array([1, 2, 1, 1, 2])
    y = np.array([5, 5, 5, 6, 5])
    assert cumcount(x, y).tolist() == [0, 0, 1, 0, 1]
    assert cumcount(np.array([], int)).tolist() == []


def test_first_record_defaults_honour_opt_flag() -> None:
    row = {"TEST_TXT": "IDD", "LO_LIMIT": -1.0, "HI_LIMIT": 1.0, "UNITS": "A", "RES_SCAL": 3}
    both = first_record_defaults("PTR", {**row, "OPT_FLAG": b"\x02"})
    assert (both.lo_limit, both.hi_limit, both.res_scal) == (-1.0, 1.0, 3)
    no_low = first_record_defaults("PTR", {**row, "OPT_FLAG": b"\x40"})  # bit 6: no low limit
    assert (no_low.lo_limit, no_low.hi_limit) == (None, 1.0)
    invalid_high = first_record_defaults("PTR", {**row, "OPT_FLAG": b"\x21"})  # bits 5, 0
    assert (invalid_high.hi_limit, invalid_high.res_scal) == (None, None)
    short = first_record_defaults("PTR", {"TEST_TXT": "IDD", "OPT_FLAG": None})  # record cut short
    assert (short.lo_limit, short.hi_limit, short.units) == (None, None, None)


def test_blank_text_becomes_null() -> None:
    assert blank_to_null(pa.array(["a", "", None])).to_pylist() == ["a", None, None]
