"""Data-quality checks as plain functions on the tables of a fab's day (no Luigi).

Each check returns a `Check`: its name, whether it passed, how serious a failure is, the
figures it measured and a one-line message. `gate` runs them all over every fab of a day; the
day passes when no check of severity "error" failed. Checks that only warn (a truncated or
resent file that ingest already handled) are reported but do not stop training.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.domain import results
from jobs.domain.dies import DIE_KEY, last_tests
from jobs.domain.results import PANDAS_TYPES, Source, TestIndex, widened

REQUIRED_COLUMNS: dict[str, dict[str, str]] = {
    # table -> column -> numpy dtype kind(s) it must have ("O" also covers pandas strings)
    "dies": {
        "part_key": "i",
        "lot_id": "OU",
        "wafer_id": "OU",
        "x_coord": "i",
        "y_coord": "i",
        "retest": "i",
        "passed": "b",
        "hard_bin": "iu",
        "test_time_ms": "iuf",
        "job": "OU",
    },
    "results": {"part_key": "i", "kind": "OU", "test_num": "iu", "result": "f", "failed": "b"},
}


@dataclass(frozen=True)
class Thresholds:
    min_completeness: float = 0.98
    max_duplicate_die_share: float = 0.001
    max_nonfinite_share: float = 0.001
    max_abs_coord: int = 500
    max_test_time_ms: int = 600_000


@dataclass(frozen=True)
class DriftLimits:
    psi: float = 0.25
    lot_sigmas: float = 4.0
    ks_alpha: float = 0.01


@dataclass
class Check:
    name: str
    passed: bool
    severity: str  # "error" fails the gate, "warning" is reported only
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _problems(name: str, problems: list[str], fine: str) -> Check:
    """An error check that passes when nothing is wrong; its message lists what is."""
    return Check(name, not problems, "error", "; ".join(problems) or fine, {"problems": problems})


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return dtype.categories.dtype.kind
    if pd.api.types.is_string_dtype(dtype):
        return "O"
    if pd.api.types.is_bool_dtype(dtype):
        return "b"
    return np.dtype(dtype).kind if not hasattr(dtype, "numpy_dtype") else dtype.numpy_dtype.kind


def check_schema(fab: str, tables: dict[str, pd.DataFrame]) -> Check:
    """Every required column is there with the right kind of type."""
    problems = []
    for table, columns in REQUIRED_COLUMNS.items():
        frame = tables[table]
        for column, kinds in columns.items():
            if column not in frame.columns:
                problems.append(f"{table}.{column} missing")
            elif _kind(frame[column]) not in kinds:
                problems.append(f"{table}.{column} has type {frame[column].dtype}")
    return _problems(f"{fab}: schema", problems, "all required columns present with the expected types")


def check_value_ranges(fab: str, dies: pd.DataFrame, limits: Thresholds) -> Check:
    """Die coordinates on a plausible wafer, test times positive and bounded, a bin for every die."""
    x, y = dies["x_coord"].astype("float64"), dies["y_coord"].astype("float64")
    bad_coord = (
        x.isna() | y.isna() | (x.abs() > limits.max_abs_coord) | (y.abs() > limits.max_abs_coord)
    ).sum()
    time_ms = dies["test_time_ms"].astype("float64")
    bad_time = (time_ms.isna() | (time_ms <= 0) | (time_ms > limits.max_test_time_ms)).sum()
    no_bin = dies["hard_bin"].isna().sum()
    bad = int(bad_coord + bad_time + no_bin)
    figures = {"bad_coordinates": int(bad_coord), "bad_test_times": int(bad_time), "no_hard_bin": int(no_bin)}
    message = (
        "coordinates, test times and bins within range"
        if not bad
        else ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in figures.items() if v)
    )
    return Check(f"{fab}: value ranges", not bad, "error", message, figures)


@dataclass
class ResultFigures:
    """What the gate needs of a fab-day's results, gathered a batch at a time (a realistic day's
    results do not fit in memory): their columns and types, how many there are and how many are
    NaN or infinite, and which tests each part ran."""

    columns: pd.DataFrame  # no rows: the results' columns and types
    rows: int
    nonfinite: int
    tested: np.ndarray  # bool (part_key, test): the part ran the test

    def tests_ran(self, keys: np.ndarray) -> np.ndarray:
        """How many distinct tests each part ran."""
        return self.tested[keys].sum(axis=1)

    def catalogue(self, keys: np.ndarray) -> int:
        """How many distinct tests these parts ran between them."""
        return int(self.tested[keys].any(axis=0).sum())


def result_figures(
    batches: Iterable[pa.Table], parts: int, columns: pd.DataFrame, tests: Sequence[int] | np.ndarray = ()
) -> ResultFigures:
    """ResultFigures of results in Arrow batches (part_key, test_num, result, ...), `parts` the
    day's part count (a result of no part is left out: it belongs to no die); `columns` stands
    for the results' types when there is no batch; `tests` (the test numbers expected) sizes
    the matrix once."""
    index = TestIndex(tests)
    tested = np.zeros((parts, len(index)), bool, order="F")
    rows = nonfinite = 0
    for batch in batches:
        columns = batch.slice(0, 0).to_pandas(types_mapper=PANDAS_TYPES) if rows == 0 else columns
        rows, nonfinite = rows + batch.num_rows, nonfinite + count_nonfinite(batch["result"])
        keys = batch["part_key"].to_numpy()
        known = keys < parts
        test = index.columns(batch["test_num"].to_numpy()[known])
        tested = widened(tested, len(index), False)
        tested[keys[known], test] = True
    return ResultFigures(columns, rows, nonfinite, tested[:, : len(index)])


def fab_tables(dies: pd.DataFrame, sources: Sequence[Source], ingest: dict[str, Any]) -> dict[str, Any]:
    """What `check_fab` takes of a fab-day: its dies, the figures of its results (read from the
    conversions a row group at a time) and the ingest manifest."""
    columns = [c for c in REQUIRED_COLUMNS["results"] if c != "part_key"]
    parts = int(dies["part_key"].max()) + 1 if len(dies) else 0
    empty = results.read_all([], columns)
    figures = result_figures(results.batches(sources, columns), parts, empty, results.tests_of(sources))
    return {"dies": dies, "results": figures, "ingest": ingest}


def count_nonfinite(values: pa.Array | pa.ChunkedArray) -> int:
    """NaN or infinite values; a null (STDF's "no value") is not one."""
    bad = pc.or_(pc.is_nan(values), pc.is_inf(values))
    return int(pc.sum(bad.fill_null(False)).as_py() or 0)


def check_finite_results(fab: str, nonfinite: int, rows: int, limits: Thresholds) -> Check:
    """Parametric results are numbers: NaN or infinity (not the STDF 'no value', which is null)."""
    share = nonfinite / max(rows, 1)
    return Check(
        f"{fab}: finite results",
        share <= limits.max_nonfinite_share,
        "error",
        f"{nonfinite} NaN/infinite results ({share:.4%}, limit {limits.max_nonfinite_share:.4%})",
        {"nonfinite": nonfinite, "share": share},
    )


def check_completeness(fab: str, dies: pd.DataFrame, figures: ResultFigures, limits: Thresholds) -> Check:
    """A die that passed ran its test program's whole catalogue (every test number the day's
    files of that program executed); a passing die with tests missing was not fully tested."""
    last = last_tests(dies)
    passing = last.loc[last["passed"].fillna(False).astype(bool), ["part_key", "job"]]
    if passing.empty:
        return Check(f"{fab}: completeness", False, "error", "no passing die to check", {"passing_dies": 0})
    catalogue = {
        job: figures.catalogue(keys.to_numpy())
        for job, keys in dies.groupby("job", observed=True)["part_key"]
    }
    catalogue = {job: size for job, size in catalogue.items() if size}  # a program that ran no test
    ran = figures.tests_ran(passing["part_key"].to_numpy())
    needed = passing["job"].map(catalogue).to_numpy(dtype="float64", na_value=np.nan)
    complete = ran >= needed  # False where the program has no catalogue
    share = float(complete.mean())
    return Check(
        f"{fab}: completeness",
        share >= limits.min_completeness,
        "error",
        f"{share:.2%} of {len(passing)} passing dies ran the whole catalogue "
        f"(limit {limits.min_completeness:.0%})",
        {"passing_dies": len(passing), "complete_share": share, "catalogue_sizes": catalogue},
    )


def check_duplicate_dies(fab: str, dies: pd.DataFrame, limits: Thresholds) -> Check:
    """The same die tested twice with the same retest index: data sent twice, or a wrong map."""
    counts = dies.groupby([*DIE_KEY, "retest"], observed=True).size()
    duplicated = int((counts > 1).sum())
    total = int(last_tests(dies).shape[0])
    share = duplicated / max(total, 1)
    return Check(
        f"{fab}: duplicate dies",
        share <= limits.max_duplicate_die_share,
        "error",
        f"{duplicated} of {total} dies appear twice outside retests ({share:.3%})",
        {"duplicate_dies": duplicated, "dies": total, "share": share},
    )


def check_files(fab: str, ingest: dict[str, Any]) -> Check:
    """What ingest already set aside: resent files (same sha256, read once), truncated files
    (complete parts kept) and quarantined ones. Reported, never fatal."""
    figures = {
        "duplicate_files": len(ingest.get("duplicate_files", [])),
        "truncated_files": len(ingest.get("truncated_files", [])),
        "quarantined_files": len(ingest.get("quarantined", [])),
        "parts_lost": sum(f.get("parts_lost", 0) for f in ingest.get("files", [])),
        "unusual_structure_files": sum(bool(f.get("structure")) for f in ingest.get("files", [])),
    }
    trouble = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in figures.items() if v)
    return Check(
        f"{fab}: files", not trouble, "warning", trouble or "every landed file read whole once", figures
    )


def check_any_data(fabs: dict[str, pd.DataFrame]) -> Check:
    dies = {fab: len(d) for fab, d in fabs.items()}
    total = sum(dies.values())
    return Check("day: data present", total > 0, "error", f"{total} die tests from {len(fabs)} fab(s)", dies)


def check_fab(fab: str, tables: dict[str, Any], limits: Thresholds) -> list[Check]:
    """All checks of one fab's day; `tables` holds dies, the ResultFigures of its results
    ("results") and the ingest manifest."""
    schema = check_schema(fab, {"dies": tables["dies"], "results": tables["results"].columns})
    checks = [schema, check_files(fab, tables["ingest"])]
    if not schema.passed or tables["dies"].empty:
        return checks
    dies, figures = tables["dies"], tables["results"]
    return [
        *checks,
        check_value_ranges(fab, dies, limits),
        check_finite_results(fab, figures.nonfinite, figures.rows, limits),
        check_completeness(fab, dies, figures, limits),
        check_duplicate_dies(fab, dies, limits),
    ]


def gate(fabs: dict[str, dict[str, Any]], limits: Thresholds) -> dict[str, Any]:
    """Run every check over the fabs present on a day. Returns the report: `passed`, the
    failed error checks by name, and every check with its figures."""
    checks = [check_any_data({fab: t["dies"] for fab, t in fabs.items()})]
    for fab, tables in sorted(fabs.items()):
        checks.extend(check_fab(fab, tables, limits))
    return report(checks)


def failures(report: dict[str, Any]) -> str:
    """What went wrong, not only the checks' names: "day: data present failed (0 die tests ...)"."""
    failed = [c for c in report["checks"] if c["name"] in report["failed"]]
    return "; ".join(f"{c['name']} failed ({c['message']})" for c in failed)


def report(checks: Iterable[Check]) -> dict[str, Any]:
    checks = list(checks)
    failed = [c.name for c in checks if not c.passed and c.severity == "error"]
    warnings = [c.name for c in checks if not c.passed and c.severity == "warning"]
    return {
        "passed": not failed,
        "failed": failed,
        "warnings": warnings,
        "checks": [c.as_dict() for c in checks],
    }


# --- file checks of the quality monitor ---------------------------------------------------------


def check_record_structure(name: str, facts: dict[str, Any]) -> Check:
    """STDF's frame: one FAR, MIR and MRR, MIR right after FAR, MRR last. A truncated file lacks
    its end (the damaged-file policy keeps its complete parts: jobs/domain/damage.py), and parts
    without PIR are a structure testers write: both are reported by `damage.check_damage`."""
    counts = facts.get("record_counts", {})
    order = facts.get("record_order", {})
    framing = ("FAR", "MIR") if facts.get("truncated") else ("FAR", "MIR", "MRR")
    problems = [f"{counts.get(t, 0)} {t} records" for t in framing if counts.get(t, 0) != 1]
    if not order.get("mir_second"):
        problems.append("MIR is not the second record")
    if counts.get("MRR") and not order.get("mrr_last"):
        problems.append(f"the last record is {order.get('last_record')}, not MRR")
    return _problems(f"{name}: record structure", problems, "FAR, MIR ... MRR")


def check_catalogue(name: str, tests: pd.DataFrame, catalogue: pd.DataFrame | None) -> Check:
    """The file's test program against its product's catalogue (the tests the product's files
    ran over the reference window): a missing parameter fails, a new or renamed test warns."""
    if catalogue is None or catalogue.empty:
        return Check(
            f"{name}: test program", False, "warning", "no catalogue for this product yet: not checked", {}
        )
    known = set(catalogue["test_num"].astype(int))
    ran = set(tests["test_num"].astype(int))
    missing = sorted(known - ran)
    names = catalogue.drop_duplicates("test_num").set_index("test_num")["test_txt"]
    figures = {
        "catalogue_tests": len(known),
        "missing": [f"{n} {names.get(n, '')}".strip() for n in missing],
        "new": sorted(ran - known),
    }
    message = (
        f"{len(missing)} of {len(known)} catalogue tests missing: {', '.join(figures['missing'][:5])}"
        if missing
        else f"all {len(known)} catalogue tests present"
        + (f"; {len(figures['new'])} new" if figures["new"] else "")
    )
    return Check(f"{name}: test program", not missing, "error", message, figures)


def check_physical_bounds(name: str, values: pd.DataFrame, bounds: pd.DataFrame) -> Check:
    """Values no device can produce (configured per test, wider than any spec limit): a broken
    measurement or a wrong unit. `values`: test, value (canonical units); `bounds`: test (a glob
    pattern), min, max, in the same units."""
    if values.empty:
        return Check(f"{name}: physical bounds", False, "warning", "no parametric values to check", {})
    rules = list(zip(bounds["test"], bounds["min"].astype(float), bounds["max"].astype(float), strict=True))
    codes, names = pd.factorize(values["test"])  # match the hundred or so names, not every value
    limits = {}
    for test in names:
        rule = next((r for r in rules if fnmatch.fnmatchcase(test, r[0])), None)
        limits[test] = (rule[1], rule[2]) if rule else (-np.inf, np.inf)
    low = np.array([limits[t][0] for t in names])[codes]
    high = np.array([limits[t][1] for t in names])[codes]
    covered = np.isfinite(low) | np.isfinite(high)
    v = values["value"].to_numpy(dtype=float)
    outside = covered & np.isfinite(v) & ((v < low) | (v > high))
    worst = values[outside].groupby("test")["value"].agg(["size", "min", "max"]) if outside.any() else None
    figures = {
        "values": len(v),
        "outside": int(outside.sum()),
        "unbounded_tests": sorted(t for t, (lo, hi) in limits.items() if np.isinf(lo) and np.isinf(hi)),
    }
    if worst is not None:
        figures["tests"] = {
            t: {"count": int(r["size"]), "min": float(r["min"]), "max": float(r["max"])}
            for t, r in worst.iterrows()
        }
    message = (
        f"{int(outside.sum())} values outside physical bounds on {', '.join(figures['tests'])}"
        if worst is not None
        else f"{len(v)} values within physical bounds"
    )
    return Check(f"{name}: physical bounds", worst is None, "error", message, figures)


def check_duplicate_file(name: str, sha256: str, landed_before: dict[str, str]) -> Check:
    """The same bytes landed earlier under another name (`landed_before`: sha256 -> file)."""
    twin = landed_before.get(sha256)
    message = f"same bytes as {twin}" if twin else "no earlier file with the same sha256"
    return Check(
        f"{name}: duplicate file", twin is None, "error", message, {"sha256": sha256, "same_as": twin}
    )


def check_window_yield(dies: pd.DataFrame, floor: float) -> Check:
    """The window's wafer-sort yield (each die's last test) against a floor: a collapse means a
    broken probe card or tester, or a bad lot."""
    last = last_tests(dies) if len(dies) else dies
    share = float(last["passed"].fillna(False).astype(bool).mean()) if len(last) else float("nan")
    figures = {"dies": len(last), "yield": share, "floor": floor}
    if not len(last):
        return Check("window: yield", False, "warning", "no dies in the window", figures)
    return Check(
        "window: yield",
        share >= floor,
        "error",
        f"yield {share:.1%} over {len(last)} dies (floor {floor:.0%})",
        figures,
    )


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, over the reference's deciles
    (shares floored at 1e-4 so an empty bin counts, not divides by zero)."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(
        reference
    )
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(
        current
    )
    expected, actual = np.maximum(expected, 1e-4), np.maximum(actual, 1e-4)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def check_drift(
    name: str,
    test: str,
    reference: np.ndarray,
    current: np.ndarray,
    lot_medians: np.ndarray,
    limits: DriftLimits,
) -> Check:
    """A key parameter's distribution in the window against the reference window.

    PSI above `limits.psi` says the distribution moved; the KS test says how surely. But with a
    lot or so a day, lots differ by more than PSI tolerates: an ordinary lot alone passes 0.25
    now and then. So a drift also needs the window's median beyond `limits.lot_sigmas` standard
    deviations of the reference days' medians: outside what lot-to-lot variation does."""
    from scipy.stats import ks_2samp

    if len(reference) < 100 or len(current) < 50 or len(lot_medians) < 3:
        figures = {"reference": len(reference), "current": len(current), "reference_days": len(lot_medians)}
        return Check(f"{name}: drift {test}", False, "warning", "too little reference to compare", figures)
    index = psi(reference, current)
    ks = ks_2samp(reference, current)
    spread = max(float(np.std(lot_medians, ddof=1)), 1e-12)
    lot_z = (float(np.median(current)) - float(np.mean(lot_medians))) / spread
    figures = {
        "psi": index,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "lot_z": lot_z,
        "reference_median": float(np.median(reference)),
        "current_median": float(np.median(current)),
        "reference": len(reference),
        "current": len(current),
    }
    drifted = index > limits.psi and abs(lot_z) > limits.lot_sigmas and ks.pvalue < limits.ks_alpha
    message = (
        f"PSI {index:.3f} (limit {limits.psi}), median {lot_z:+.1f} lot sigmas (limit {limits.lot_sigmas}), "
        f"KS D={ks.statistic:.3f} p={ks.pvalue:.2g}"
    )
    return Check(f"{name}: drift {test}", not drifted, "error", message, figures)
