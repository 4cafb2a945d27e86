"""The fab merge's computations (jobs/fab_merge.py wires them): plain functions on DataFrames and
converted folders, no Luigi. A conversion is (its folder, its manifest) as ConvertFile wrote them.

    hour_of_files(conversions, start)     -> one fab's dies of a recorded hour, their PTRs, catalogues
    reference_stats(conversions, fab, n)  -> per canonical test: median and robust sigma
    harmonized_file(folder, fab, names)   -> a converted file's final-test PTRs, canonical names/units
    fab_hour_offsets(corrections, fab, h) -> which recorded hours can hold a UTC hour
    normalize_hour(fabs, start, ...)      -> every fab's dies of a UTC hour, values and robust z
    store_tables(table, fabs, names)      -> the feature store's table of each fab

STDF records times per wafer (WIR/WRR, MIR/MRR), not per die: a die's test start is placed
between its file's start and finish in the order its parts were tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.domain import harmonize
from jobs.domain.conversion import Conversion, distinct
from jobs.domain.damage import estimated_finish
from jobs.domain.dies import DIE_KEY, last_tests

HOUR = pd.Timedelta(hours=1)
DIE_COLUMNS = [*DIE_KEY, "part_key", "retest", "passed", "hard_bin", "soft_bin", "test_time_ms"]
DIE_FRAME = {
    "part_index": "int32", "lot_id": "str", "wafer_id": "str", "x_coord": "int16", "y_coord": "int16",
    "retest": "int16", "passed": "bool", "hard_bin": "float64", "soft_bin": "float64",
    "test_time_ms": "float64", "recorded_start": "datetime64[ns, UTC]", "source_sha256": "str",
}  # fmt: skip
RESULT_FRAME = {"part_index": "int32", "test_num": "uint32", "result": "float32", "source_sha256": "str"}
TEST_FRAME = {"test_num": "uint32", "test_txt": "str", "units": "str", "source_sha256": "str"}
NO_VALUES = ["part_key", "test", "value"]


# --- one fab's recorded hour ------------------------------------------------------------------------


def hour_of_files(
    conversions: list[Conversion], start: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """The dies (last test of each die) whose recorded test start is in [start, start + 1 h),
    their PTR results, their files' test catalogues, and the paths of the unreadable files.
    Resent files (same sha256) count once."""
    dies, results, tests, unreadable = [], [], [], []
    seen: set[str] = set()
    for conversion in conversions:
        if not conversion.readable:
            unreadable.append(conversion.manifest["input"]["path"])
            continue
        sha, facts, folder = conversion.sha256, conversion.facts, conversion.folder
        if conversion.manifest.get("truncated") and not facts["finish_time_utc"]:  # lost: estimated
            finish = estimated_finish(facts, pd.read_parquet(folder / "parts.parquet"))
            facts = {**facts, "finish_time_utc": finish}
        if sha in seen or not facts["wafers"] or not overlaps(facts, start):
            continue
        seen.add(sha)
        parts = pd.read_parquet(folder / "parts.parquet")
        parts["recorded_start"] = part_starts(parts, facts)
        last = last_tests(parts.dropna(subset=["x_coord", "y_coord"]), "part_index")
        mine = last[(last["recorded_start"] >= start) & (last["recorded_start"] < start + HOUR)]
        if mine.empty:
            continue
        ptr = ptr_results(folder, mine["part_index"])
        dies.append(mine.assign(source_sha256=sha))
        results.append(ptr.assign(source_sha256=sha))
        catalogue = pd.read_parquet(folder / "tests.parquet", columns=["test_num", "test_txt", "units"])
        tests.append(catalogue.assign(source_sha256=sha))
    return _concat(dies, DIE_FRAME), _concat(results, RESULT_FRAME), _concat(tests, TEST_FRAME), unreadable


def _concat(frames: list[pd.DataFrame], empty: dict[str, str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in empty.items()})
    return pd.concat(frames, ignore_index=True)[list(empty)]


def overlaps(facts: dict[str, Any], start: pd.Timestamp) -> bool:
    """Whether a file's recorded test period [start, finish] meets the hour."""
    first, last = pd.Timestamp(facts["start_time_utc"]), pd.Timestamp(facts["finish_time_utc"])
    return first < start + HOUR and last >= start


def part_starts(parts: pd.DataFrame, facts: dict[str, Any]) -> pd.Series:
    """Each part's estimated test start: spread over the file's recorded test period in the
    order the parts were tested (STDF keeps times per wafer, not per part)."""
    first, last = pd.Timestamp(facts["start_time_utc"]), pd.Timestamp(facts["finish_time_utc"])
    order = parts["part_index"].rank(method="first").to_numpy() - 1
    share = order / max(len(parts), 1)
    return pd.Series(first + (last - first) * share, index=parts.index)


def ptr_results(folder: Path, parts: pd.Series) -> pd.DataFrame:
    """A converted file's PTR results of the given parts: part_index, test_num, result."""
    results = pd.read_parquet(
        folder / "results.parquet", columns=["part_index", "kind", "test_num", "result"]
    )
    return results[(results["kind"] == "PTR") & results["part_index"].isin(parts)].drop(columns="kind")


# --- the reference of robust z-scores ---------------------------------------------------------------


def harmonized_file(folder: Path, fab: str, names: pd.DataFrame) -> pd.DataFrame:
    """A converted file's final-test PTR results in canonical names and units (`names`: the
    test-name mapping): part_key (the part_index), test, value."""
    parts = pd.read_parquet(folder / "parts.parquet", columns=["part_index", *DIE_KEY, "retest"])
    last = last_tests(parts.dropna(subset=["x_coord", "y_coord"]), "part_index")
    results = ptr_results(folder, last["part_index"])
    catalogue = pd.read_parquet(folder / "tests.parquet", columns=["test_num", "test_txt", "units"])
    return harmonize.harmonize(results.rename(columns={"part_index": "part_key"}), catalogue, fab, names)


def reference_stats(conversions: list[Conversion], fab: str, names: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per canonical test, the median and robust sigma of the fab's wafer-sort files (a resent
    file once); and how many files that is."""
    longs = [harmonized_file(c.folder, fab, names) for c in distinct(conversions) if c.facts["wafers"]]
    long = pd.concat(longs, ignore_index=True) if longs else pd.DataFrame({"test": [], "value": []})
    return harmonize.robust_stats(long), len(longs)


# --- the UTC hour of every fab ------------------------------------------------------------------------


def fab_hour_offsets(corrections: pd.DataFrame, fab: str, start: pd.Timestamp) -> list[float]:
    """The shifts (hours) from the UTC hour starting at `start` to the recorded hours that can
    hold it: 0, and each clock correction of the fab within a day of it."""
    return sorted(
        harmonize.clock_offsets(corrections, fab, start - pd.Timedelta(days=1), start + pd.Timedelta(days=1))
    )


def normalize_hour(
    fab_hours: dict[str, list[Path]],
    stats: dict[str, pd.DataFrame],
    start: pd.Timestamp,
    names: pd.DataFrame,
    corrections: pd.DataFrame,
) -> pd.DataFrame:
    """Every fab's dies of the UTC hour starting at `start` (fab -> its FabHour folders, fab -> its
    reference stats): one row per die, its values in canonical units and their robust z."""
    frames = [
        normalize_fab(fab, folders, start, stats[fab], names, corrections)
        for fab, folders in fab_hours.items()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def normalize_fab(
    fab: str,
    folders: list[Path],
    start: pd.Timestamp,
    stats: pd.DataFrame,
    names: pd.DataFrame,
    corrections: pd.DataFrame,
) -> pd.DataFrame:
    """One fab's dies of the UTC hour starting at `start`, from its FabHour folders."""
    dies = pd.concat([pd.read_parquet(f / "dies.parquet") for f in folders], ignore_index=True)
    dies["test_start_utc"] = harmonize.to_utc(corrections, fab, dies["recorded_start"])
    inside = (dies["test_start_utc"] >= start) & (dies["test_start_utc"] < start + HOUR)
    dies = dies[inside].reset_index(drop=True)
    dies["part_key"] = np.arange(len(dies), dtype=np.int64)
    values = [_harmonized(dies, folder, fab, names) for folder in folders]
    long = pd.concat(values, ignore_index=True) if values else pd.DataFrame(columns=NO_VALUES)
    long["z"] = harmonize.zscores(long, stats)
    wide = long.pivot_table(index="part_key", columns="test", values=["value", "z"], aggfunc="last")
    columns = {}
    for test in harmonize.canonical_tests(names):
        columns[test] = wide["value"][test] if ("value", test) in wide.columns else np.nan
        columns[f"{test}_z"] = wide["z"][test] if ("z", test) in wide.columns else np.nan
    measured = pd.DataFrame(columns, index=wide.index).reindex(dies["part_key"])
    out = dies[[*DIE_COLUMNS, "recorded_start", "test_start_utc", "source_sha256"]].assign(fab=fab)
    return pd.concat([out.reset_index(drop=True), measured.reset_index(drop=True).astype("float32")], axis=1)


def _harmonized(dies: pd.DataFrame, folder: Path, fab: str, names: pd.DataFrame) -> pd.DataFrame:
    """The PTR results of `dies` found in one FabHour folder, harmonized file by file."""
    results = pd.read_parquet(folder / "results.parquet")
    catalogue = pd.read_parquet(folder / "tests.parquet")
    keys = dies[["source_sha256", "part_index", "part_key"]]
    joined = results.merge(keys, on=["source_sha256", "part_index"])
    frames = [
        harmonize.harmonize(group, catalogue[catalogue["source_sha256"] == sha], fab, names)
        for sha, group in joined.groupby("source_sha256")
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=NO_VALUES)


# --- the feature store -----------------------------------------------------------------------------


def store_tables(table: pd.DataFrame, fabs: list[str], names: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The store's table of each fab that delivered: its rows of the normalized hour, or an empty
    table with the same columns when it tested nothing that hour."""
    return {
        fab: table[table["fab"] == fab].drop(columns=["fab"]) if len(table) else store_frame(names)
        for fab in fabs
    }


def store_frame(names: pd.DataFrame) -> pd.DataFrame:
    """An empty store table with the columns every fab's file has."""
    columns = {c: pd.Series(dtype=t) for c, t in DIE_FRAME.items() if c in DIE_COLUMNS}
    columns |= {
        "part_key": pd.Series(dtype="int64"),
        "recorded_start": pd.Series(dtype="datetime64[ns, UTC]"),
    }
    columns |= {
        "test_start_utc": pd.Series(dtype="datetime64[ns, UTC]"),
        "source_sha256": pd.Series(dtype="str"),
    }
    for test in harmonize.canonical_tests(names):
        columns |= {test: pd.Series(dtype="float32"), f"{test}_z": pd.Series(dtype="float32")}
    return pd.DataFrame(columns)
