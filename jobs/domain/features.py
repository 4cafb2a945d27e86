"""Features of the daily yield model, from converted wafer-sort and final-test files: one row per
die (robust-scaled and raw parametric results, position on the wafer, neighbours, wafer yield),
all computed within one fab-day. What each feature is and why: jobs/domain/README.md."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.domain.dies import DIE_KEY, last_tests
from jobs.domain.part_text import parse_part_txt
from jobs.domain.robust import robust_centre
from jobs.stdf.tables import PARTS_SCHEMA, RESULTS_SCHEMA

FEATURE_KEY = DIE_KEY  # a feature row is one die
WAFER_KEY = ["lot_id", "wafer_id"]
DIE_COLUMNS = [*FEATURE_KEY, "fab", "ws_passed"]  # a die's identity and wafer-sort outcome
TEST_PREFIX = "p_"
RAW_PREFIX = "raw_"
SPATIAL_FEATURES = [
    "radius",
    "edge_distance",
    "ring_zone",
    "failing_neighbours",
    "neighbour_fail_share",
    "local_fail_share",
]
WAFER_FEATURES = ["wafer_ws_yield", "wafer_mean_test_time_ms"]
READ_COLUMNS = 1_000  # read_rows reads this many columns at a time (see there)
CLIP = 15.0  # robust z beyond this is an outlier whatever its size; keeps imputation and scaling sane
RESULT_COLUMNS = ["kind", "test_num", "test_txt", "pin_index", "result", "failed", "alarm", "unreliable"]
# Die keys pack (wafer, x, y) into one int64: x and y are int16, shifted to be non-negative.
_SPAN = 1 << 17
_SHIFT = 1 << 16


# --- reading ------------------------------------------------------------------------------------


def combine_conversions(folders: Sequence[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parts and results of several converted files, with a `part_key` unique across them.

    `part_key` (int64) replaces `part_index`: the folder's offset (parts read so far) plus the
    part's index, so keys follow the order of `folders`. Parts gain `source_sha256`, the folder
    name (conversions are stored by content hash). A folder given twice is read once. In the
    results, `kind` and `test_txt` are pandas categoricals (dictionary-encoded, as stored).
    """
    parts_tables, result_tables, offset = [], [], 0
    for folder in dict.fromkeys(Path(f) for f in folders):
        parts = pq.read_table(folder / "parts.parquet")
        results = pq.read_table(folder / "results.parquet", columns=["part_index", *RESULT_COLUMNS])
        size = int(pa.compute.max(parts["part_index"]).as_py() or 0) + 1 if parts.num_rows else 0
        parts = _with_part_key(parts, offset).append_column(
            "source_sha256", pa.array([folder.name] * parts.num_rows, pa.string())
        )
        parts_tables.append(parts)
        result_tables.append(_with_part_key(results, offset))
        offset += size
    if not parts_tables:  # a day whose files were all set aside: empty tables, same columns
        no_parts = _with_part_key(PARTS_SCHEMA.empty_table(), 0)
        parts_tables = [no_parts.append_column("source_sha256", pa.array([], pa.string()))]
        no_results = RESULTS_SCHEMA.empty_table().select(["part_index", *RESULT_COLUMNS])
        result_tables = [_with_part_key(no_results, 0)]
    parts = pa.concat_tables(parts_tables).to_pandas()
    results = pa.concat_tables(result_tables).unify_dictionaries().combine_chunks()
    # a flag with nulls (`failed`: no pass/fail indication) as pandas "boolean", never object
    return parts, results.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)


def _with_part_key(table: pa.Table, offset: int) -> pa.Table:
    key = pa.array(table["part_index"].to_numpy().astype(np.int64) + offset)
    return table.drop_columns(["part_index"]).add_column(0, "part_key", key)


# --- dies and their wafer-sort outcome ----------------------------------------------------------


def final_dies(parts: pd.DataFrame) -> pd.DataFrame:
    """One row per die (FEATURE_KEY): its last test, the highest `retest`, ties to the last part_key.

    Parts without wafer coordinates cannot be placed on a wafer and are left out.
    """
    placed = parts.dropna(subset=["x_coord", "y_coord"])
    last = last_tests(placed).astype({"x_coord": np.int16, "y_coord": np.int16})
    return last.sort_values("part_key").reset_index(drop=True)


def _passed(dies: pd.DataFrame) -> np.ndarray:
    """Final wafer-sort status; a PRR whose pass/fail flag is invalid (null) counts as failing."""
    return dies["passed"].fillna(False).to_numpy(dtype=bool)


# --- the feature table ----------------------------------------------------------------------------


def build_features(parts: pd.DataFrame, results: pd.DataFrame, *, fab: str) -> pd.DataFrame:
    """One row per wafer-sort die of a fab-day (its final test): identifiers, outcome, features.

    Columns: fab, lot_id, wafer_id, x_coord, y_coord, ws_passed, ws_hard_bin, the `p_*` tests
    (in test-number order), the same `raw_*`, SPATIAL_FEATURES, WAFER_FEATURES.
    """
    dies = final_dies(parts)
    out = pd.DataFrame({"fab": pd.Series(fab, index=dies.index, dtype=dies["lot_id"].dtype)})
    out[FEATURE_KEY] = dies[FEATURE_KEY]
    out["ws_passed"] = _passed(dies)
    out["ws_hard_bin"] = dies["hard_bin"]
    tests = parametric_matrix(dies, results)
    spatial = spatial_features(dies)
    wafer = wafer_features(dies)
    return pd.concat([out, tests, spatial, wafer], axis=1)


def parametric_matrix(dies: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """(dies, PTR tests): robust z of each die's final-test results (`p_<test_txt>`), then the
    raw results (`raw_<test_txt>`), both float32, tests in test-number order."""
    ptr = results[results["kind"] == "PTR"]
    keys = dies["part_key"].to_numpy()  # sorted: final_dies orders by part_key
    at = np.minimum(np.searchsorted(keys, ptr["part_key"].to_numpy()), max(len(keys) - 1, 0))
    mine = keys[at] == ptr["part_key"].to_numpy() if len(keys) else np.zeros(len(ptr), bool)
    numbers, test = np.unique(ptr["test_num"].to_numpy()[mine], return_inverse=True)
    values = np.full((len(keys), len(numbers)), np.nan)
    values[at[mine], test] = ptr["result"].to_numpy(dtype=float)[mine]  # a repeated result: the last
    names = _test_names(ptr[mine], numbers)
    scaled = pd.DataFrame(robust_scale(values).astype(np.float32), columns=names, index=dies.index)
    raw = pd.DataFrame(values.astype(np.float32), columns=[raw_column(n) for n in names], index=dies.index)
    return pd.concat([scaled, raw], axis=1)


def raw_column(test: str) -> str:
    """`raw_X` for the test column `p_X`."""
    return RAW_PREFIX + test.removeprefix(TEST_PREFIX)


def _test_names(ptr: pd.DataFrame, numbers: np.ndarray) -> list[str]:
    """`p_<sanitized test_txt>` per test number; `p_<txt>_<num>` where names collide or are empty."""
    txt = ptr.drop_duplicates("test_num").set_index("test_num")["test_txt"]
    raw = [str(txt.get(n)) if pd.notna(txt.get(n)) else "" for n in numbers]
    clean = [re.sub(r"[^0-9A-Za-z]+", "_", t).strip("_") for t in raw]
    counts = pd.Series(clean).value_counts()
    return [
        f"{TEST_PREFIX}{c}" if c and counts[c] == 1 else f"{TEST_PREFIX}{c + '_' if c else ''}{n}"
        for c, n in zip(clean, numbers, strict=True)
    ]


def robust_scale(values: np.ndarray) -> np.ndarray:
    """Per column: (x - median) / (1.4826 MAD), or IQR/1.349, or 1 when that is 0; clipped to ±CLIP."""
    if values.size == 0:
        return values
    median, spread = robust_centre(values)  # an all-NaN column: no die ran the test
    return np.clip((values - median) / spread, -CLIP, CLIP)


def spatial_features(dies: pd.DataFrame) -> pd.DataFrame:
    """Radius, edge distance, ring zone and failing neighbours of every die (wafer centre 0, 0)."""
    x = dies["x_coord"].to_numpy(dtype=float)
    y = dies["y_coord"].to_numpy(dtype=float)
    radius = np.hypot(x, y)
    wafer = dies.groupby(WAFER_KEY, sort=False, dropna=False).ngroup().to_numpy()
    # the wafer's radius: the farthest die corner, the smallest circle that holds the whole map
    corner = pd.Series(np.hypot(np.abs(x) + 0.5, np.abs(y) + 0.5)).groupby(wafer).transform("max")
    wafer_radius = corner.to_numpy()
    failed = ~_passed(dies)
    count, present = neighbour_counts(wafer, dies["x_coord"], dies["y_coord"], failed, reach=1)
    count5, present5 = neighbour_counts(wafer, dies["x_coord"], dies["y_coord"], failed, reach=2)
    return pd.DataFrame(
        {
            "radius": radius,
            "edge_distance": wafer_radius - radius,
            "ring_zone": np.minimum(np.floor(4 * (radius / wafer_radius) ** 2), 3).astype(np.int8),
            "failing_neighbours": count.astype(np.int8),
            "neighbour_fail_share": count / np.maximum(present, 1),
            "local_fail_share": count5 / np.maximum(present5, 1),
        },
        index=dies.index,
    )


def neighbour_counts(
    wafer: np.ndarray, x: pd.Series | np.ndarray, y: pd.Series | np.ndarray, flag: np.ndarray, reach: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Per die: how many dies within `reach` (Chebyshev; 1: the 8 neighbours) have `flag`, and how
    many dies are there at all. Dies are looked up by a packed (wafer, x, y) key, not per die."""
    key = _die_key(wafer, np.asarray(x), np.asarray(y))
    if len(key) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    order = np.argsort(key, kind="stable")
    sorted_key, sorted_flag = key[order], np.asarray(flag, dtype=bool)[order]
    count = np.zeros(len(key), dtype=np.int32)
    present = np.zeros(len(key), dtype=np.int32)
    for dx in range(-reach, reach + 1):
        for dy in range(-reach, reach + 1):
            if dx == 0 and dy == 0:
                continue
            target = key + dx * _SPAN + dy
            at = np.minimum(np.searchsorted(sorted_key, target), len(key) - 1)
            found = sorted_key[at] == target
            present += found
            count += found & sorted_flag[at]
    return count, present


def _die_key(wafer: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    wafer = wafer.astype(np.int64)
    return (wafer * _SPAN + (x.astype(np.int64) + _SHIFT)) * _SPAN + (y.astype(np.int64) + _SHIFT)


def wafer_features(dies: pd.DataFrame) -> pd.DataFrame:
    """Wafer-sort yield and mean test time (ms, final tests; missing TEST_T ignored) of the die's wafer."""
    frame = pd.DataFrame(
        {
            "passed": _passed(dies),
            "test_time": dies["test_time_ms"].astype(float),
        },
        index=dies.index,
    )
    wafer = dies.groupby(WAFER_KEY, sort=False, dropna=False).ngroup()
    grouped = frame.groupby(wafer.to_numpy())
    return pd.DataFrame(
        {
            "wafer_ws_yield": grouped["passed"].transform("mean").to_numpy(dtype=float),
            "wafer_mean_test_time_ms": grouped["test_time"].transform("mean").to_numpy(dtype=float),
        },
        index=dies.index,
    )


def test_columns(frame: pd.DataFrame) -> list[str]:
    """The `p_*` columns of a feature table."""
    return [c for c in frame.columns if c.startswith(TEST_PREFIX)]


# --- reading the feature table ------------------------------------------------------------------


def read_table(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A features.parquet: every column, or `columns` in that order. A column the file lacks (a
    test no die of the day ran) comes as NaN float32: what concatenating the day with one that
    has it gives, so a model sees a missing test the same way however the days were read."""
    if columns is None:
        return pd.read_parquet(path)
    present = set(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in columns if c in present])
    return _with_columns(frame, columns)


def read_rows(path: Path, rows: np.ndarray, columns: Sequence[str], batch_size: int = 1024) -> pd.DataFrame:
    """`columns` (see read_table) of the rows at the sorted positions `rows` of a features.parquet,
    indexed by those positions. Read READ_COLUMNS columns at a time, a batch of rows at a time,
    keeping only the wanted rows: memory holds one such block and the rows kept, however wide
    the table and however large its row groups (a reader of all 11,000 tests of a 3,000-row
    group peaks at ~850 MB, of 1,000 at a time at ~300 MB, the interpreter's ~200 included)."""
    file = pq.ParquetFile(path)
    present = set(file.schema_arrow.names)
    wanted = [c for c in columns if c in present]
    frame = _kept_frame(file, rows, wanted, batch_size) if wanted else pd.DataFrame(index=rows)
    return _with_columns(frame.set_axis(pd.Index(rows)), columns)


def _kept_frame(file: pq.ParquetFile, rows: np.ndarray, columns: list[str], batch_size: int) -> pd.DataFrame:
    """The frame's memory comes from malloc, which gives it back once the caller drops the frame;
    Arrow's own pool keeps what it frees (the rows of every day read would pile up), so what it
    held for reading is handed back as well."""
    blocks = [
        _kept_rows(file, rows, columns[i : i + READ_COLUMNS], batch_size)
        for i in range(0, len(columns), READ_COLUMNS)
    ]
    table = pa.Table.from_arrays([column for block in blocks for column in block.columns], names=columns)
    del blocks
    frame = table.to_pandas(memory_pool=pa.system_memory_pool())
    del table
    pa.default_memory_pool().release_unused()
    return frame


def _kept_rows(file: pq.ParquetFile, rows: np.ndarray, columns: list[str], batch_size: int) -> pa.Table:
    kept, start = [], 0
    for batch in file.iter_batches(batch_size=batch_size, columns=columns):
        mine = rows[(rows >= start) & (rows < start + batch.num_rows)] - start
        if len(mine):
            kept.append(batch.take(pa.array(mine)))
        start += batch.num_rows
    return pa.Table.from_batches(kept) if kept else file.schema_arrow.empty_table().select(columns)


def _with_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`frame` with `columns` in that order, those it lacks all NaN float32."""
    missing = [c for c in columns if c not in frame]
    if missing:
        nan = np.full((len(frame), len(missing)), np.nan, dtype=np.float32)
        frame = pd.concat([frame, pd.DataFrame(nan, index=frame.index, columns=missing)], axis=1)
    return frame[list(columns)]


# --- labels from final test -----------------------------------------------------------------------


def final_test_labels(parts: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """`ft_failed` of each die named in the final-test PART_TXTs, and how many units were unnamed.

    Returns (labels, unparsed): labels has FEATURE_KEY (str, str, int16, int16) and ft_failed
    (pandas boolean: not passed on the unit's last test, null where that PRR's pass/fail flag
    is invalid); `unparsed` counts the units whose PART_TXT does not name a die, which are dropped.
    """
    named = dies_named(parts["part_txt"])
    ok = named["lot_id"].notna().to_numpy()
    units = pd.concat([parts.loc[ok, ["retest", "part_key", "passed"]], named[ok]], axis=1)
    last = last_tests(units)
    labels = last[FEATURE_KEY].astype({"x_coord": np.int16, "y_coord": np.int16})
    labels["ft_failed"] = ~last["passed"].astype("boolean")
    return labels.sort_values(FEATURE_KEY).reset_index(drop=True), int((~ok).sum())


def dies_named(text: pd.Series) -> pd.DataFrame:
    """(lot_id, wafer_id, x_coord, y_coord) of the die each PART_TXT names (jobs/domain/part_text.py),
    all null where it names none. Coordinates must fit int16."""
    named = pd.DataFrame([_die_named(t) for t in text], columns=FEATURE_KEY, index=text.index, dtype=object)
    found = named.astype({"lot_id": "str", "wafer_id": "str"})
    x, y = (pd.to_numeric(found[c], errors="coerce") for c in ("x_coord", "y_coord"))
    bad = ~(x.abs() < 32768) | ~(y.abs() < 32768)  # also drops -32768, STDF's "no coordinate"
    found.loc[bad, FEATURE_KEY] = None
    found["x_coord"], found["y_coord"] = x.where(~bad), y.where(~bad)
    return found


def _die_named(text: object) -> tuple[str, str, int, int] | tuple[None, None, None, None]:
    try:
        return parse_part_txt(text) if isinstance(text, str) else (None,) * 4
    except ValueError:
        return (None,) * 4


LABEL_TYPES = {
    "lot_id": "str",
    "wafer_id": "str",
    "x_coord": "int16",
    "y_coord": "int16",
    "ft_failed": "boolean",
}


def empty_labels() -> pd.DataFrame:
    """Labels with no rows (no final test landed yet), typed as `final_test_labels` gives them."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in LABEL_TYPES.items()})


def join_labels(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Features with `ft_failed` (pandas boolean; null: no final-test result for the die yet)."""
    joined = features.merge(
        labels[[*FEATURE_KEY, "ft_failed"]], on=FEATURE_KEY, how="left", validate="many_to_one"
    )
    joined["ft_failed"] = joined["ft_failed"].astype("boolean")
    return joined
