"""Making fabs comparable: test names, units, clocks and robust z-scores. No Luigi here.

read_test_names(path)              -> the mapping file: canonical test, its unit, each fab's name
unit_factor(unit, to)              -> the factor from one unit to another (uA -> A: 1e-6)
harmonize(results, tests, fab, m)  -> long table (part_key, test, value) in canonical names/units
read_corrections(path)             -> clock corrections: fab, period, hours the clock was off UTC
clock_offsets(c, fab, start, end)  -> the offsets (hours) that apply to a fab in a period
to_utc(c, fab, recorded)           -> recorded tester times corrected to UTC
robust_stats(long)                 -> per test: median and MAD-based sigma (a reference window)
zscores(long, stats)               -> the robust z of every value against the reference
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.domain.robust import robust_centre

PREFIXES = {"p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}
BASE_UNITS = ("V", "A", "Hz", "s", "ohm", "W", "F")


class MappingError(ValueError):
    """A mapping or correction file that cannot be used; the message names the file and line."""


# --- test names and units ------------------------------------------------------------------------


def read_test_names(path: Path) -> pd.DataFrame:
    """The test-name mapping: one row per (canonical test, fab) with the name that fab's
    program gives the test; fab `*` is the name every fab uses unless it has a row of its own.
    Columns: canonical, unit (the canonical unit), fab, test_txt."""
    table = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    missing = {"canonical", "unit", "fab", "test_txt"} - set(table.columns)
    if missing:
        raise MappingError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    for i, row in table.iterrows():
        try:
            unit_factor(row["unit"], row["unit"])
        except ValueError as error:
            raise MappingError(f"{path}: line {int(i) + 2}: {error}") from None
    duplicated = table.duplicated(["fab", "test_txt"], keep=False)
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise MappingError(f"{path}: {first['fab']} test {first['test_txt']!r} is mapped twice")
    return table


def canonical_tests(mapping: pd.DataFrame) -> list[str]:
    return sorted(mapping["canonical"].unique())


def names_for(mapping: pd.DataFrame, fab: str) -> pd.DataFrame:
    """(test_txt -> canonical, unit) for one fab: its own rows, then the `*` rows for names it
    does not map itself. Both stay valid, so a fab may switch programs: a file with the common
    names and a file with the fab's own names map to the same canonical tests."""
    own = mapping[mapping["fab"] == fab]
    default = mapping[(mapping["fab"] == "*") & ~mapping["test_txt"].isin(own["test_txt"])]
    return pd.concat([own, default]).set_index("test_txt")[["canonical", "unit"]]


def _split_unit(unit: str) -> tuple[float, str]:
    unit = unit.strip()
    for base in BASE_UNITS:
        if unit.endswith(base) and unit[: -len(base)] in PREFIXES:
            return PREFIXES[unit[: -len(base)]], base
    if unit == "":
        return 1.0, ""
    raise ValueError(f"unknown unit {unit!r} (known: an SI prefix and one of {', '.join(BASE_UNITS)})")


def unit_factor(unit: str, to: str) -> float:
    """What a value in `unit` is multiplied by to be in `to` (uA -> A: 1e-6). Raises ValueError
    for units of different quantities (mA -> V)."""
    scale, base = _split_unit(unit)
    target_scale, target_base = _split_unit(to)
    if base != target_base:
        raise ValueError(f"cannot convert {unit!r} to {to!r}")
    return scale / target_scale


def harmonize(results: pd.DataFrame, tests: pd.DataFrame, fab: str, mapping: pd.DataFrame) -> pd.DataFrame:
    """Parametric results in canonical names and units: (part_key, test, value), float64.

    `results` has part_key, test_num, result (PTR only); `tests` is the fab's catalogue (test_num,
    test_txt, units). Tests the mapping does not know are dropped (the caller counts them)."""
    names = names_for(mapping, fab)
    catalogue = tests.drop_duplicates("test_num").set_index("test_num")[["test_txt", "units"]]
    catalogue = catalogue[catalogue["test_txt"].isin(names.index)].sort_index()
    mapped = names.loc[catalogue["test_txt"]]
    factors = np.array(
        [unit_factor(unit or to, to) for unit, to in zip(catalogue["units"], mapped["unit"], strict=True)]
    )
    canonical, codes = np.unique(mapped["canonical"].to_numpy(dtype=str), return_inverse=True)
    # results -> catalogue rows by binary search on the test numbers: a million rows, no index lookups
    numbers = catalogue.index.to_numpy()
    wanted = results["test_num"].to_numpy()
    at = np.minimum(np.searchsorted(numbers, wanted), max(len(numbers) - 1, 0))
    known = numbers[at] == wanted if len(numbers) else np.zeros(len(wanted), dtype=bool)
    at = at[known]
    return pd.DataFrame(
        {
            "part_key": results["part_key"].to_numpy()[known],
            "test": pd.Categorical.from_codes(codes[at], categories=canonical),
            "value": results["result"].to_numpy(dtype="float64")[known] * factors[at],
        }
    )


# --- clocks ---------------------------------------------------------------------------------------


def read_corrections(path: Path) -> pd.DataFrame:
    """Clock corrections: fab, start, end (recorded tester time, end exclusive, ISO dates or
    times), offset_hours (how far the tester clock was ahead of UTC), reason."""
    table = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    missing = {"fab", "start", "end", "offset_hours"} - set(table.columns)
    if missing:
        raise MappingError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    try:
        table["start"] = pd.to_datetime(table["start"], utc=True)
        table["end"] = pd.to_datetime(table["end"], utc=True)
        table["offset_hours"] = table["offset_hours"].astype(float)
    except (ValueError, TypeError) as error:
        raise MappingError(f"{path}: {error}") from None
    bad = table[table["end"] <= table["start"]]
    if len(bad):
        raise MappingError(f"{path}: line {int(bad.index[0]) + 2}: end is not after start")
    return table


def clock_offsets(corrections: pd.DataFrame, fab: str, start: dt.datetime, end: dt.datetime) -> set[float]:
    """Offsets (hours) of the corrections of `fab` whose periods overlap [start, end), plus 0."""
    mine = corrections[corrections["fab"] == fab]
    overlap = mine[(mine["start"] < pd.Timestamp(end)) & (mine["end"] > pd.Timestamp(start))]
    return {0.0, *overlap["offset_hours"].tolist()}


def to_utc(corrections: pd.DataFrame, fab: str, recorded: pd.Series) -> pd.Series:
    """Recorded tester times (tz-aware) corrected to UTC: minus the offset of the correction
    whose period holds the recorded time; unchanged outside every period."""
    offset = np.zeros(len(recorded))
    for row in corrections[corrections["fab"] == fab].itertuples():
        inside = ((recorded >= row.start) & (recorded < row.end)).to_numpy()
        offset[inside] = row.offset_hours
    return recorded - pd.to_timedelta(offset, unit="h")


# --- comparable values ---------------------------------------------------------------------------


def robust_stats(long: pd.DataFrame) -> pd.DataFrame:
    """Per test: median, sigma = 1.4826 MAD (IQR/1.349 when the MAD is 0, else 1), count."""
    grouped = long.groupby("test", observed=True)["value"]
    median = grouped.median()
    spread = [float(robust_centre(values.to_numpy(dtype=float))[1]) for _, values in grouped]
    sigma = pd.Series(spread, index=median.index, dtype="float64")
    return pd.DataFrame({"median": median, "sigma": sigma, "count": grouped.count()}).reset_index()


def zscores(long: pd.DataFrame, stats: pd.DataFrame) -> np.ndarray:
    """Robust z of each value against its test's reference (NaN for a test with no reference)."""
    reference = stats.set_index("test")
    median = long["test"].map(reference["median"]).to_numpy(dtype=float)
    sigma = long["test"].map(reference["sigma"]).to_numpy(dtype=float)
    return (long["value"].to_numpy(dtype=float) - median) / sigma
