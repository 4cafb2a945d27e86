"""Vectorized helpers on Arrow columns and tables, shared by the normalizer's modules.

Flag bytes, numpy conversion, head/site keys, retest counting, blank text, epoch times, the
PTR/FTR/MPR test flags, MPR pin expansion and cheap row selection.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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


def expand_pins(table: pa.Table, batch: pa.Table) -> pa.Table:
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


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """table.filter(rows), as a slice (no copy) when the rows are contiguous: the usual case, as
    the results of the parts still open come last."""
    picked = np.flatnonzero(rows)
    if len(picked) and picked[-1] - picked[0] + 1 == len(picked):
        return table.slice(int(picked[0]), len(picked))
    return table.filter(pa.array(rows))
