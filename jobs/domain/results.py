"""A fab-day's test results, read where the conversions stored them (each file's results.parquet)
rather than copied into one table: file by file and row group by row group, so memory holds one
row group whatever the size of the day. Each result carries `part_key`, its part's key across the
day's files (the file's offset plus the part's index in the file). No Luigi here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.stdf.tables import PARTS_SCHEMA, RESULTS_SCHEMA

RESULT_COLUMNS = ["kind", "test_num", "test_txt", "pin_index", "result", "failed", "alarm", "unreliable"]
# a flag with nulls (`failed`: no pass/fail indication) reads as pandas "boolean", never object
PANDAS_TYPES = {pa.bool_(): pd.BooleanDtype()}.get


class Source(NamedTuple):
    """A conversion folder and the offset that turns its part_index into the day's part_key."""

    folder: Path
    offset: int


def read_parts(folders: Sequence[Path]) -> tuple[pd.DataFrame, list[Source]]:
    """The parts of several converted files with a `part_key` unique across them, and the files
    as result sources. `part_key` (int64) replaces `part_index`: the folder's offset (parts read
    so far) plus the part's index, so keys follow the order of `folders`. Parts gain
    `source_sha256`, the folder name (conversions are stored by content hash). A folder given
    twice is read once."""
    tables, sources, offset = [], [], 0
    for folder in dict.fromkeys(Path(f) for f in folders):
        parts = pq.read_table(folder / "parts.parquet")
        size = int(pc.max(parts["part_index"]).as_py() or 0) + 1 if parts.num_rows else 0
        name = pa.array([folder.name] * parts.num_rows, pa.string())
        tables.append(_keyed(parts, offset).append_column("source_sha256", name))
        sources.append(Source(folder, offset))
        offset += size
    if not tables:  # a day whose files were all set aside: no rows, same columns
        no_parts = _keyed(PARTS_SCHEMA.empty_table(), 0)
        tables = [no_parts.append_column("source_sha256", pa.array([], pa.string()))]
    return pa.concat_tables(tables).to_pandas(), sources


def batches(
    sources: Iterable[Source],
    columns: Sequence[str],
    kinds: Sequence[str] | None = None,
    where: pc.Expression | None = None,
) -> Iterator[pa.Table]:
    """The results of `sources`, one row group at a time, as Arrow tables (where a NaN result
    and a null one, STDF's "no value", stay apart): `part_key` and `columns`, only the records
    of `kinds` (e.g. ["PTR"]) when given, only the rows `where` keeps (on `columns`) when given."""
    wanted = list(dict.fromkeys(["part_index", *columns, *(["kind"] if kinds else [])]))
    for source in sources:
        file = pq.ParquetFile(source.folder / "results.parquet")
        for group in range(file.num_row_groups):
            table = file.read_row_group(group, columns=wanted)
            if kinds:
                table = table.filter(of_kinds(table, kinds))
            if where is not None:
                table = table.filter(where)
            yield _keyed(table.select(["part_index", *columns]), source.offset)


def of_kinds(table: pa.Table, kinds: Sequence[str]) -> pa.ChunkedArray:
    """Which rows are records of `kinds` (PTR, MPR, FTR)."""
    return pc.is_in(table["kind"].cast(pa.string()), pa.array(list(kinds)))


def read_all(
    sources: Iterable[Source], columns: Sequence[str] = RESULT_COLUMNS, filters: list | None = None
) -> pd.DataFrame:
    """The results of `sources` that pass the pyarrow `filters` (on `columns`) in one table, read
    a row group at a time: for small days, and for the few results a report reads."""
    where = pq.filters_to_expression(filters) if filters else None
    tables = [_decoded(t) for t in batches(sources, columns, where=where)]
    if not tables:
        tables = [_decoded(_keyed(RESULTS_SCHEMA.empty_table().select(["part_index", *columns]), 0))]
    table = pa.concat_tables(tables)
    names = [c for c in ("kind", "test_txt") if c in table.column_names]
    for name in names:  # categoricals again, as stored
        table = table.set_column(table.column_names.index(name), name, pc.dictionary_encode(table[name]))
    return table.combine_chunks().to_pandas(types_mapper=PANDAS_TYPES)


def _decoded(table: pa.Table) -> pa.Table:
    """`table` with its dictionary columns as plain values: a few rows kept of a row group would
    otherwise each keep the whole dictionary (11,000 test names at bench scale)."""
    plain = [
        pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(plain))


def tests_of(sources: Iterable[Source], kinds: Sequence[str] | None = None) -> np.ndarray:
    """The test numbers the sources' catalogues (tests.parquet) list, of `kinds` when given, sorted."""
    numbers = [np.array([], np.uint32)]
    for source in sources:
        tests = pq.read_table(source.folder / "tests.parquet", columns=["test_num", "kind"])
        if kinds:
            tests = tests.filter(of_kinds(tests, kinds))
        numbers.append(tests["test_num"].to_numpy())
    return np.unique(np.concatenate(numbers))


def row_count(sources: Iterable[Source]) -> int:
    """How many results the sources hold (from the files' footers)."""
    return sum(pq.ParquetFile(s.folder / "results.parquet").metadata.num_rows for s in sources)


def _keyed(table: pa.Table, offset: int) -> pa.Table:
    key = pa.array(table["part_index"].to_numpy().astype(np.int64) + offset)
    return table.drop_columns(["part_index"]).add_column(0, "part_key", key)


class TestIndex:
    """Test numbers to matrix columns, given in the order the tests first appear, so a matrix of
    (parts, tests) can be filled batch by batch without knowing the tests beforehand."""

    def __init__(self, numbers: Sequence[int] | np.ndarray = ()) -> None:
        self._index = pd.Index(np.asarray(numbers, dtype=np.uint32))  # unique: the first columns

    def __len__(self) -> int:
        return len(self._index)

    @property
    def numbers(self) -> np.ndarray:
        return self._index.to_numpy()

    def columns(self, numbers: np.ndarray) -> np.ndarray:
        """The column of each test number, new numbers getting the next columns."""
        at = self._index.get_indexer(numbers)
        if (at < 0).any():
            self._index = self._index.append(pd.Index(pd.unique(numbers[at < 0])))
            at = self._index.get_indexer(numbers)
        return at


def widened(matrix: np.ndarray, columns: int, fill: float | bool) -> np.ndarray:
    """`matrix` with at least `columns` columns (new ones `fill`), growing by doubling; column-major,
    so each column is one contiguous array."""
    if columns <= matrix.shape[1]:
        return matrix
    grown = np.full((matrix.shape[0], max(columns, 2 * matrix.shape[1])), fill, matrix.dtype, order="F")
    grown[:, : matrix.shape[1]] = matrix
    return grown
