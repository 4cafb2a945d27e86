"""The tables behind the daily yield report: die grids, stacked maps, Paretos, Cpk, retests. No Luigi.

    die_table(parts, predictions, labels)  -> one row per die: final bins (last test wins), first
                                              pass, p_fail (wafer-sort passing dies), ft_failed
    grid(dies, column, extent)             -> Grid: a 2-D array over die positions (NaN: no die)
    stacked(dies, column, extent)          -> Grid of the mean of `column` per position over wafers
    bin_pareto(dies, column, names)        -> bins by count, share and cumulative share
    first_failing_tests(dies, results)     -> tests by the dies whose first failure they are
    wafer_yields(dies, forecasts)          -> first-pass and final yield, forecast, per wafer
    test_statistics(values, limits)        -> n, mean, sigma, Cpk per test and fab
    retest_recovery(dies, names)           -> per first-pass soft bin: failed, retested, recovered

`parts` are the wafer-sort parts of a day as ingested (every test of every die, with `fab`);
`part_key` is unique within a fab-day only, so results join dies on (fab, part_key).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.domain.dies import DIE_KEY, last_tests
from jobs.domain.features import WAFER_KEY
from jobs.domain.results import Source, read_all

WAFER = ["fab", *WAFER_KEY]
NO_FAILING_TEST = "(no failing test recorded)"
CPK_TARGET = 1.33  # the usual capability floor: the spec spans at least 4 sigma each side of the mean


# --- dies ------------------------------------------------------------------------------------------


def die_table(
    parts: pd.DataFrame, predictions: pd.DataFrame | None = None, labels: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per die (DIE_KEY): `hard_bin`, `soft_bin`, `passed`, `part_key` of its last test
    (highest retest, ties to the last part), `retested`, `first_soft_bin` and `first_passed` of
    its first test, `p_fail` (null where not scored) and `ft_failed` (null: no final-test result)."""
    placed = parts.dropna(subset=["x_coord", "y_coord"]).astype({"x_coord": np.int16, "y_coord": np.int16})
    last = last_tests(placed)
    first = placed.sort_values(["retest", "part_key"], kind="stable").drop_duplicates(DIE_KEY, keep="first")
    first = first[[*DIE_KEY, "soft_bin", "passed"]]
    first = first.rename(columns={"soft_bin": "first_soft_bin", "passed": "first_passed"})
    dies = last[["fab", *DIE_KEY, "hard_bin", "soft_bin", "passed", "retest", "part_key"]].merge(
        first, on=DIE_KEY
    )
    dies["passed"] = dies["passed"].fillna(False).astype(bool)  # an invalid pass/fail flag fails
    dies["first_passed"] = dies["first_passed"].fillna(False).astype(bool)
    dies["retested"] = dies["retest"] > 0
    dies = dies.drop(columns="retest")
    if predictions is not None and len(predictions):
        dies = dies.merge(predictions[[*DIE_KEY, "p_fail"]], on=DIE_KEY, how="left", validate="one_to_one")
    else:
        dies["p_fail"] = np.nan
    if labels is not None and len(labels):
        dies = dies.merge(labels[[*DIE_KEY, "ft_failed"]], on=DIE_KEY, how="left", validate="one_to_one")
        dies["ft_failed"] = dies["ft_failed"].astype("boolean")
    else:
        dies["ft_failed"] = pd.array([pd.NA] * len(dies), dtype="boolean")
    return dies.sort_values(["fab", *DIE_KEY], ignore_index=True)


def wafers(dies: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """The day's wafers in (fab, lot, wafer) order, each with its dies."""
    return [(key, group) for key, group in dies.groupby(WAFER, sort=True, observed=True)]


# --- grids -----------------------------------------------------------------------------------------

Extent = tuple[int, int, int, int]  # x min, x max, y min, y max (die coordinates, inclusive)


@dataclass
class Grid:
    """Values on die positions: `values[row, col]` is the die at x = x0 + col, y = y0 + row."""

    values: np.ndarray
    x0: int
    y0: int

    def at(self, x: int, y: int) -> float:
        return float(self.values[y - self.y0, x - self.x0])

    def dies(self) -> int:
        return int(np.isfinite(self.values).sum())

    def extent(self) -> tuple[float, float, float, float]:
        """For imshow: cell edges, half a pitch around each die position."""
        rows, cols = self.values.shape
        return (self.x0 - 0.5, self.x0 + cols - 0.5, self.y0 - 0.5, self.y0 + rows - 0.5)


def extent_of(dies: pd.DataFrame) -> Extent:
    if dies.empty:
        return (0, 0, 0, 0)
    x, y = dies["x_coord"], dies["y_coord"]
    return (int(x.min()), int(x.max()), int(y.min()), int(y.max()))


def grid(dies: pd.DataFrame, column: str, extent: Extent | None = None) -> Grid:
    """`column` of each die at its position (one die per position: a wafer's dies)."""
    return _grid(
        dies["x_coord"].to_numpy(),
        dies["y_coord"].to_numpy(),
        dies[column].to_numpy(float),
        extent or extent_of(dies),
    )


def stacked(dies: pd.DataFrame, column: str, extent: Extent | None = None) -> Grid:
    """The mean of `column` per die position over every wafer in `dies` (NaNs left out): with
    `column` a failure flag, the fail share per position, where edge rings and spots show."""
    values = dies.assign(_v=dies[column].astype(float)).groupby(["x_coord", "y_coord"])["_v"].mean()
    x, y = values.index.get_level_values(0).to_numpy(), values.index.get_level_values(1).to_numpy()
    return _grid(x, y, values.to_numpy(float), extent or extent_of(dies))


def _grid(x: np.ndarray, y: np.ndarray, values: np.ndarray, extent: Extent) -> Grid:
    x_min, x_max, y_min, y_max = extent
    out = np.full((y_max - y_min + 1, x_max - x_min + 1), np.nan)
    out[y.astype(int) - y_min, x.astype(int) - x_min] = values
    return Grid(out, x_min, y_min)


def stack_groups(dies: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The stacks of the day: every lot ('fab lot') and every fab-day ('fab, all lots')."""
    lots = [
        (f"{fab} lot {lot}", g) for (fab, lot), g in dies.groupby(["fab", "lot_id"], sort=True, observed=True)
    ]
    fabs = [(f"{fab}, all lots", g) for fab, g in dies.groupby("fab", sort=True, observed=True)]
    return lots + fabs


# --- Paretos ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinInfo:
    name: str
    passing: bool


def bin_names(bins: pd.DataFrame) -> dict[str, dict[int, BinInfo]]:
    """{'hard'|'soft': {bin: BinInfo}} from the HBR/SBR tables of the day's files (BINS_SCHEMA):
    the first name given; a bin counts as passing when its record says P."""
    out: dict[str, dict[int, BinInfo]] = {"hard": {}, "soft": {}}
    if bins.empty:  # a day whose wafer-sort files were all set aside
        return out
    named = bins.sort_values(["bin_type", "bin_num"], kind="stable")
    for kind, number, name, flag in named[["bin_type", "bin_num", "bin_name", "pass_fail"]].itertuples(
        index=False
    ):
        known = out.setdefault(kind, {}).get(int(number))
        if known is None or (not known.name and isinstance(name, str)):
            out[kind][int(number)] = BinInfo(name if isinstance(name, str) else "", flag == "P")
    return out


def bin_pareto(dies: pd.DataFrame, column: str, names: Mapping[int, BinInfo] | None = None) -> pd.DataFrame:
    """Every bin of `column` ('soft_bin', 'hard_bin') with its dies, largest first: columns bin,
    name, passing, dies, share, cum_share. The dies add up to the dies of the table."""
    names = names or {}
    counts = dies[column].value_counts().rename_axis("bin").reset_index(name="dies")
    counts["bin"] = counts["bin"].astype(int)
    counts = counts.sort_values(["dies", "bin"], ascending=[False, True], ignore_index=True)
    passing = dies.groupby(column)["passed"].any()
    counts["name"] = [names[b].name if b in names else "" for b in counts["bin"]]
    counts["passing"] = [
        names[b].passing if b in names else bool(passing.get(b, False)) for b in counts["bin"]
    ]
    total = max(int(counts["dies"].sum()), 1)
    counts["share"] = counts["dies"] / total
    counts["cum_share"] = counts["share"].cumsum()
    return counts[["bin", "name", "passing", "dies", "share", "cum_share"]]


def first_failing_tests(dies: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Tests by the failing dies whose first failed result (in test order, on the die's last
    test) they are: columns test, dies, share (of the failing dies), cum_share. `results` has
    fab, part_key, test_num, test_txt and failed; dies failing without a failed result count
    under NO_FAILING_TEST."""
    failing = dies.loc[~dies["passed"], ["fab", "part_key"]]
    failed = results.loc[
        results["failed"].fillna(False).astype(bool), ["fab", "part_key", "test_num", "test_txt"]
    ]
    failed = failed.merge(failing, on=["fab", "part_key"]).drop_duplicates(["fab", "part_key"], keep="first")
    names = [
        f"{t} ({n})" if isinstance(t, str) and t else f"test {n}"
        for t, n in zip(failed["test_txt"], failed["test_num"], strict=True)
    ]
    named = pd.Series(names + [NO_FAILING_TEST] * (len(failing) - len(failed)), dtype=object)
    counts = named.value_counts().rename_axis("test").reset_index(name="dies")
    counts = counts.sort_values(["dies", "test"], ascending=[False, True], ignore_index=True)
    counts["share"] = counts["dies"] / max(len(failing), 1)
    counts["cum_share"] = counts["share"].cumsum()
    return counts


# --- yield -----------------------------------------------------------------------------------------


def wafer_yields(dies: pd.DataFrame, forecasts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per wafer: dies, first_pass_yield, final_yield (after retest) and forecast_yield (the
    model's final-test yield forecast, null where not scored)."""
    grouped = dies.groupby(WAFER, sort=True, observed=True)
    table = pd.DataFrame(
        {
            "dies": grouped.size(),
            "first_pass_yield": grouped["first_passed"].mean(),
            "final_yield": grouped["passed"].mean(),
            "recovered": grouped.apply(
                lambda g: int((g["passed"] & ~g["first_passed"]).sum()), include_groups=False
            ),
        }
    ).reset_index()
    if forecasts is not None and len(forecasts):
        table = table.merge(forecasts[[*WAFER, "forecast_yield"]], on=WAFER, how="left")
    else:
        table["forecast_yield"] = np.nan
    return table


def yield_trend(days: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Wafer-sort yield per day and fab: {date: frame with fab and ws_passed} -> date, fab, dies,
    ws_yield."""
    rows = [
        (pd.Timestamp(day), fab, len(g), float(g["ws_passed"].mean()))
        for day, frame in sorted(days.items())
        for fab, g in frame.groupby("fab", sort=True, observed=True)
    ]
    return pd.DataFrame(rows, columns=["date", "fab", "dies", "ws_yield"])


# --- per-test statistics ---------------------------------------------------------------------------


def cpk(values: np.ndarray, lo: float | None, hi: float | None) -> float:
    """Process capability: min(hi - mean, mean - lo) / (3 sigma), sigma the sample standard
    deviation; one-sided with one limit, NaN with none or fewer than two values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    limits = [(lo, 1.0), (hi, -1.0)]  # distance to the limit: (mean - lo), (hi - mean)
    given = [(limit, sign) for limit, sign in limits if limit is not None and np.isfinite(limit)]
    if len(values) < 2 or not given:
        return float("nan")
    mean, sigma = values.mean(), values.std(ddof=1)
    nearest = min(sign * (mean - limit) for limit, sign in given)
    return float(nearest / (3 * sigma)) if sigma > 0 else float("inf")


def key_test_values(dies: pd.DataFrame, results: pd.DataFrame, tests: Sequence[str]) -> pd.DataFrame:
    """The PTR results of `tests` (by test_txt) on each die's last test: fab, test, result."""
    ptr = results[(results["kind"] == "PTR") & results["test_txt"].isin(list(tests))]
    mine = ptr.merge(dies[["fab", "part_key"]], on=["fab", "part_key"])
    return pd.DataFrame(
        {
            "fab": mine["fab"].astype(str),
            "test": mine["test_txt"].astype(str),
            "result": mine["result"].astype(float),
        }
    )


def test_limits(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per test name (TESTS_SCHEMA tables of the day's files): units, lo_limit, hi_limit
    as the first file that gives them."""
    if tests.empty:
        return pd.DataFrame(columns=["test", "units", "lo_limit", "hi_limit"])
    ptr = tests[tests["kind"] == "PTR"].dropna(subset=["test_txt"])
    return (
        ptr.drop_duplicates("test_txt")[["test_txt", "units", "lo_limit", "hi_limit"]]
        .rename(columns={"test_txt": "test"})
        .reset_index(drop=True)
    )


def test_statistics(values: pd.DataFrame, limits: pd.DataFrame) -> pd.DataFrame:
    """Per test and fab: n, mean, sigma, lo_limit, hi_limit, cpk, below_target (Cpk < CPK_TARGET)."""
    limit = limits.set_index("test")
    rows = []
    for (test, fab), group in values.groupby(["test", "fab"], sort=True):
        lo = float(limit.at[test, "lo_limit"]) if test in limit.index else np.nan
        hi = float(limit.at[test, "hi_limit"]) if test in limit.index else np.nan
        result = group["result"].to_numpy(float)
        with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
            rows.append(
                (test, fab, len(result), result.mean(), result.std(ddof=1), lo, hi, cpk(result, lo, hi))
            )
    table = pd.DataFrame(rows, columns=["test", "fab", "n", "mean", "sigma", "lo_limit", "hi_limit", "cpk"])
    table["below_target"] = table["cpk"] < CPK_TARGET
    return table


# --- retests ---------------------------------------------------------------------------------------


def retest_recovery(dies: pd.DataFrame, names: Mapping[int, BinInfo] | None = None) -> pd.DataFrame:
    """Per soft bin of the first pass, the dies that failed there: failed, retested, recovered
    (passing on their last test), most recovered first."""
    names = names or {}
    first_fail = dies[~dies["first_passed"]]
    grouped = first_fail.groupby("first_soft_bin")
    table = pd.DataFrame(
        {
            "failed": grouped.size(),
            "retested": grouped["retested"].sum(),
            "recovered": grouped["passed"].sum(),
        }
    ).astype(int)
    table.index = table.index.astype(int).rename("bin")
    table = table.reset_index()
    table.insert(1, "name", [names[b].name if b in names else "" for b in table["bin"]])
    return table.sort_values(
        ["recovered", "failed", "bin"], ascending=[False, False, True], ignore_index=True
    )


def read_day(
    days: Mapping[str, tuple[pd.DataFrame, Sequence[Source]]], key_tests: Sequence[str]
) -> tuple[pd.DataFrame, ...]:
    """(parts, results, bins, tests) of a day: per fab, its dies and its wafer-sort result sources.
    Parts and results gain `fab`; only the results the report reads (failed ones and the key
    tests') are read."""
    parts, found, bins, tests = [], [], [], []
    wanted = [[("failed", "==", True)], *([[("test_txt", "in", list(key_tests))]] if key_tests else [])]
    columns = ["kind", "test_num", "test_txt", "result", "failed"]
    for fab, (dies, sources) in days.items():
        parts.append(dies.assign(fab=fab))
        found.append(read_all(sources, columns, filters=wanted).assign(fab=fab))
        for source in sources:
            bins.append(pd.read_parquet(source.folder / "bins.parquet"))
            tests.append(pd.read_parquet(source.folder / "tests.parquet"))
    return tuple(
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for frames in (parts, found, bins, tests)
    )
