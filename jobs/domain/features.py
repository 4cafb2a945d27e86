"""Features of the daily yield model, from converted wafer-sort and final-test files: one row per
die (robust-scaled and raw parametric results, position on the wafer, neighbours, wafer yield),
all computed within one fab-day. What each feature is and why: jobs/domain/README.md."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.domain import results
from jobs.domain.dies import DIE_KEY, last_tests
from jobs.domain.part_text import parse_part_txt
from jobs.domain.results import TestIndex, of_kinds, widened
from jobs.domain.robust import robust_centre

FEATURE_KEY = DIE_KEY  # a feature row is one die
WAFER_KEY = ["lot_id", "wafer_id"]
DIE_COLUMNS = [*FEATURE_KEY, "fab", "ws_passed"]  # a die's identity and wafer-sort outcome
TEST_PREFIX = "p_"
RAW_PREFIX = "raw_"
PTR_COLUMNS = ["kind", "test_num", "test_txt", "result"]  # of the results, what the features read
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
# Die keys pack (wafer, x, y) into one int64: x and y are int16, shifted to be non-negative.
_SPAN = 1 << 17
_SHIFT = 1 << 16


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


def build_features(
    parts: pd.DataFrame, results: Iterable[pa.Table], *, fab: str, tests: Sequence[int] | np.ndarray = ()
) -> pa.Table:
    """One row per wafer-sort die of a fab-day (its final test): identifiers, outcome, features.

    `results`: the fab-day's results in Arrow batches (`results.batches`), with part_key and
    PTR_COLUMNS; `tests`: the PTR test numbers expected (see `parametric_matrix`). Columns: fab,
    lot_id, wafer_id, x_coord, y_coord, ws_passed, ws_hard_bin, the `p_*` tests (in test-number
    order), the same `raw_*`, SPATIAL_FEATURES, WAFER_FEATURES. An Arrow table: its test columns
    are the matrices' own memory, not a copy (a realistic fab-day has tens of thousands).
    """
    dies = final_dies(parts)
    out = pd.DataFrame({"fab": pd.Series(fab, index=dies.index, dtype=dies["lot_id"].dtype)})
    out[FEATURE_KEY] = dies[FEATURE_KEY]
    out["ws_passed"] = _passed(dies)
    out["ws_hard_bin"] = dies["hard_bin"]
    tests = parametric_matrix(dies, results, tests)
    rest = pd.concat([spatial_features(dies), wafer_features(dies)], axis=1)
    head, tail = (pa.Table.from_pandas(f, preserve_index=False) for f in (out, rest))
    names = [*head.column_names, *tests.names, *tail.column_names]
    return pa.Table.from_arrays([*head.columns, *tests.arrays(), *tail.columns], names=names)


def fab_features(parts: pd.DataFrame, sources: Sequence[results.Source], *, fab: str) -> pa.Table:
    """build_features of a fab-day's parts and its conversions' results, streamed."""
    stream = results.batches(sources, PTR_COLUMNS, kinds=["PTR"])
    return build_features(parts, stream, fab=fab, tests=results.tests_of(sources, ["PTR"]))


class TestMatrix(NamedTuple):
    """(dies, tests) robust z in test-number order and raw values in the order the tests were
    first seen (`order` puts them in test-number order); float32, column-major."""

    names: list[str]  # p_* of every test then raw_* (in test-number order)
    scaled: np.ndarray
    raw: np.ndarray
    order: np.ndarray

    def arrays(self) -> list[pa.Array]:
        """The p_* then raw_* columns; a NaN (no result) is null, as pandas writes it."""
        scaled = [self.scaled[:, j] for j in range(len(self.order))]
        return [pa.array(c, from_pandas=True) for c in [*scaled, *(self.raw[:, j] for j in self.order)]]


def parametric_matrix(
    dies: pd.DataFrame, results: Iterable[pa.Table], tests: Sequence[int] | np.ndarray = ()
) -> TestMatrix:
    """(dies, PTR tests): robust z of each die's final-test results (`p_<test_txt>`) and the raw
    results (`raw_<test_txt>`), filled batch by batch; only tests with a result on a die are
    columns. `tests`, the test numbers expected (the files' catalogues), sizes the matrix once.
    A repeated result counts its last value."""
    keys = dies["part_key"].to_numpy()  # sorted: final_dies orders by part_key
    index = TestIndex(tests)
    values = np.full((len(keys), len(index)), np.nan, np.float32, order="F")
    seen, first_txt = np.zeros(len(index), bool), {}
    for batch in results:
        ptr = batch.filter(of_kinds(batch, ["PTR"]))
        part = ptr["part_key"].to_numpy()
        at = np.minimum(np.searchsorted(keys, part), max(len(keys) - 1, 0))
        mine = keys[at] == part if len(keys) else np.zeros(len(part), bool)
        test = index.columns(ptr["test_num"].to_numpy()[mine])
        values = widened(values, len(index), np.nan)
        seen = np.concatenate([seen, np.zeros(values.shape[1] - len(seen), bool)])
        values[at[mine], test] = ptr["result"].to_numpy(zero_copy_only=False)[mine]  # null: NaN
        columns, first = np.unique(test, return_index=True)
        new = ~seen[columns]  # a test's name is its first result's
        names = ptr["test_txt"].take(np.flatnonzero(mine)[first[new]]).to_pylist()
        first_txt.update(zip(columns[new].tolist(), names, strict=True))
        seen[columns] = True
    pa.default_memory_pool().release_unused()  # the batches' memory, before the scaled matrix
    kept = np.flatnonzero(seen)
    order = kept[np.argsort(index.numbers[kept], kind="stable")]
    names = _test_names([first_txt[j] for j in order], index.numbers[order])
    return TestMatrix([*names, *(raw_column(n) for n in names)], robust_scale(values, order), values, order)


def raw_column(test: str) -> str:
    """`raw_X` for the test column `p_X`."""
    return RAW_PREFIX + test.removeprefix(TEST_PREFIX)


def _test_names(texts: Sequence[object], numbers: np.ndarray) -> list[str]:
    """`p_<sanitized test_txt>` per test number; `p_<txt>_<num>` where names collide or are empty."""
    raw = [str(t) if pd.notna(t) else "" for t in texts]
    clean = [re.sub(r"[^0-9A-Za-z]+", "_", t).strip("_") for t in raw]
    counts = pd.Series(clean).value_counts()
    return [
        f"{TEST_PREFIX}{c}" if c and counts[c] == 1 else f"{TEST_PREFIX}{c + '_' if c else ''}{n}"
        for c, n in zip(clean, numbers, strict=True)
    ]


def robust_scale(values: np.ndarray, order: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
    """Per column (taken in `order`): (x - median) / (1.4826 MAD), or IQR/1.349, or 1 when that is
    0; clipped to ±CLIP; float32, column-major. Computed in float64 a few columns at a time, so the
    temporaries stay small whatever the matrix."""
    order = np.arange(values.shape[1]) if order is None else order
    scaled = np.empty((values.shape[0], len(order)), np.float32, order="F")
    for start in range(0, len(order), chunk):
        block = values[:, order[start : start + chunk]].astype(np.float64)
        median, spread = robust_centre(block)  # an all-NaN column: no die ran the test
        scaled[:, start : start + chunk] = np.clip((block - median) / spread, -CLIP, CLIP)
    return scaled


def write_day(tables: Iterable[pa.Table], path: Path) -> dict[str, int]:
    """Write a day's fab tables (`build_features`) as one Parquet file, a row group per fab, the
    columns their union in order of appearance (a test a fab lacks is null there); returns the
    rows per fab. Memory holds one fab at a time: fabs with the same columns (one test program)
    stream into one file; a fab with other columns starts a side file, and the sides are merged."""
    sides: list[Path] = []
    writer, rows = None, {}
    for table in tables:
        if writer is None or not table.schema.equals(writer.schema):
            if writer is not None:
                writer.close()
            sides.append(path.with_name(f".{path.stem}-{len(sides)}.parquet"))
            writer = _writer(sides[-1], table.schema)
        writer.write_table(table, row_group_size=max(table.num_rows, 1))
        if table.num_rows:
            rows[table["fab"][0].as_py()] = table.num_rows
        del table  # before the next fab's is built: one fab's matrices in memory, not two
    if writer is None:
        pq.write_table(pa.table({}), path)
    else:
        writer.close()
        _merge(sides, path)
    return dict(sorted(rows.items()))


def _merge(sides: list[Path], path: Path) -> None:
    """One file of the side files (their columns' union), a row group at a time."""
    if len(sides) == 1:
        sides[0].rename(path)
        return
    schema = pa.unify_schemas([pq.read_schema(p) for p in sides], promote_options="permissive")
    with _writer(path, schema) as writer:
        for side in sides:
            file = pq.ParquetFile(side)
            for group in range(file.num_row_groups):
                writer.write_table(_conformed(file.read_row_group(group), schema))
            side.unlink()


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """Measurements (floats) rarely repeat: dictionary-encoding their columns made the writes 3x
    slower and the file a third larger, with a buffer per column (there are ~22,000)."""
    repeating = [f.name for f in schema if not pa.types.is_floating(f.type)]
    return pq.ParquetWriter(path, schema, use_dictionary=repeating)


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    def column(field: pa.Field) -> pa.Array | pa.ChunkedArray:
        if field.name in table.column_names:
            return table[field.name].cast(field.type)
        return pa.nulls(table.num_rows, field.type)

    return pa.Table.from_arrays([column(f) for f in schema], schema=schema)


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
    present = set(pq.read_schema(path).names)
    if columns is None or not present:  # every column; or a day without dies, whose file has none
        return pd.read_parquet(path)
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
