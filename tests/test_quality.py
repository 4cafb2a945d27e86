"""The quality gate's checks on small hand-made tables: each fails on bad input, passes on good."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from jobs.domain import damage, quality

LIMITS = quality.Thresholds()


def good_day(dies_count: int = 20) -> dict[str, object]:
    """A clean fab day: dies on a line, each passing die ran tests 1..3, one retested die."""
    n = dies_count
    dies = pd.DataFrame(
        {
            "part_key": np.arange(n + 1, dtype="int64"),
            "lot_id": ["L1"] * (n + 1),
            "wafer_id": ["01"] * (n + 1),
            "x_coord": np.r_[np.arange(n), 0].astype("int16"),
            "y_coord": np.zeros(n + 1, dtype="int16"),
            "retest": np.r_[np.zeros(n), 1].astype("int16"),
            "passed": np.r_[[False], np.ones(n, dtype=bool)],  # die 0 failed first, passed on retest
            "hard_bin": np.ones(n + 1, dtype="uint16"),
            "test_time_ms": np.full(n + 1, 120, dtype="uint32"),
            "job": ["PMX7_WS1"] * (n + 1),
        }
    )
    dies["job"] = dies["job"].astype("string")
    keys = np.repeat(dies["part_key"].to_numpy(), 3)
    results = pd.DataFrame(
        {
            "part_key": keys,
            "kind": "PTR",
            "test_num": np.tile(np.array([1, 2, 3], dtype="uint32"), n + 1),
            "result": np.linspace(0, 1, len(keys)).astype("float32"),
            "failed": False,
        }
    )
    return {"dies": dies, "results": results, "ingest": {"quarantined": [], "duplicate_files": []}}


def figures(results: pd.DataFrame, parts: int = 21, batch: int = 7) -> quality.ResultFigures:
    """The gate's figures of `results` streamed in Arrow batches of `batch` rows, as the workflow
    reads them (a NaN result stays NaN; pandas' NA becomes null)."""
    table = pa.table({c: pa.array(results[c], from_pandas=False) for c in results.columns})
    batches = [table.slice(i, batch) for i in range(0, len(results), batch)]
    return quality.result_figures(batches, parts, results.iloc[:0])


def gated(day: dict[str, object]) -> dict[str, object]:
    return {**day, "results": figures(day["results"])}


def test_a_clean_day_passes_every_check() -> None:
    report = quality.gate({"fab1": gated(good_day())}, LIMITS)
    assert report["passed"], report["failed"]
    assert report["warnings"] == []
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "day: data present", "fab1: schema", "fab1: files", "fab1: value ranges",
        "fab1: finite results", "fab1: completeness", "fab1: duplicate dies",
    ]  # fmt: skip


def test_no_data_fails() -> None:
    report = quality.gate({}, LIMITS)
    assert not report["passed"] and report["failed"] == ["day: data present"]


def test_schema_names_missing_and_mistyped_columns() -> None:
    day = good_day()
    day["dies"] = day["dies"].drop(columns=["job"]).assign(x_coord=lambda d: d["x_coord"].astype(str))
    check = quality.check_schema("fab1", day)
    assert not check.passed
    assert "dies.job missing" in check.message and "dies.x_coord has type str" in check.message


@pytest.mark.parametrize(
    ("column", "value", "figure"),
    [("x_coord", 900, "bad_coordinates"), ("test_time_ms", 0, "bad_test_times")],
)
def test_value_ranges(column: str, value: int, figure: str) -> None:
    dies = good_day()["dies"]
    assert quality.check_value_ranges("fab1", dies, LIMITS).passed
    dies.loc[3, column] = value
    check = quality.check_value_ranges("fab1", dies, LIMITS)
    assert not check.passed and check.figures[figure] == 1


def test_nan_results_fail_but_null_results_do_not() -> None:
    results = good_day()["results"]
    results["result"] = results["result"].astype("Float32")
    results.loc[0, "result"] = pd.NA  # STDF's "no value": not a data error
    counted = figures(results)
    assert quality.check_finite_results("fab1", counted.nonfinite, counted.rows, LIMITS).passed
    results = good_day()["results"]
    results.loc[1, "result"] = np.inf
    results.loc[len(results) - 1, "result"] = np.nan  # in the last batch
    counted = figures(results)
    check = quality.check_finite_results("fab1", counted.nonfinite, counted.rows, LIMITS)
    assert not check.passed and check.figures["nonfinite"] == 2 and counted.rows == len(results)
    assert quality.count_nonfinite(pa.array([1.0, None, np.nan, -np.inf], pa.float32())) == 2


def test_completeness_finds_passing_dies_with_tests_missing() -> None:
    day = good_day(dies_count=20)
    assert quality.check_completeness("fab1", day["dies"], figures(day["results"]), LIMITS).passed
    results = day["results"]
    short = results[~((results["part_key"] == 5) & (results["test_num"] == 3))]
    check = quality.check_completeness("fab1", day["dies"], figures(short), LIMITS)
    assert not check.passed and check.figures["complete_share"] == pytest.approx(19 / 20)
    assert check.figures["catalogue_sizes"] == {"PMX7_WS1": 3}
    # a test repeated by a die (another pin, the same number) counts once, across batches too
    repeated = pd.concat([results, results[results["part_key"] == 5]], ignore_index=True)
    assert quality.check_completeness("fab1", day["dies"], figures(repeated, batch=4), LIMITS).passed
    # a die that failed its first test and passed on retest is judged on the retest
    first_of_retested = results[~((results["part_key"] == 0) & (results["test_num"] > 1))]
    assert quality.check_completeness("fab1", day["dies"], figures(first_of_retested), LIMITS).passed
    # a program none of whose dies ran a test has no catalogue: its passing dies are not complete
    check = quality.check_completeness("fab1", day["dies"], figures(results.iloc[:0]), LIMITS)
    assert not check.passed and check.figures["catalogue_sizes"] == {}


def test_duplicate_dies_outside_retests() -> None:
    dies = good_day()["dies"]
    assert quality.check_duplicate_dies("fab1", dies, LIMITS).passed  # die 0's retest is no duplicate
    twice = pd.concat([dies, dies.iloc[[4]].assign(part_key=99)], ignore_index=True)
    check = quality.check_duplicate_dies("fab1", twice, LIMITS)
    assert not check.passed and check.figures["duplicate_dies"] == 1


def test_files_set_aside_by_ingest_warn_without_failing_the_gate() -> None:
    day = good_day()
    day["ingest"] = {"quarantined": [{"file": "a.stdf.gz"}], "duplicate_files": [{"file": "b"}]}
    report = quality.gate({"fab1": gated(day)}, LIMITS)
    assert report["passed"] and report["warnings"] == ["fab1: files"]
    files = next(c for c in report["checks"] if c["name"] == "fab1: files")
    assert files["figures"]["quarantined_files"] == 1 and files["figures"]["duplicate_files"] == 1


# --- the quality monitor's file checks ------------------------------------------------------------

GOOD_FACTS = {
    "record_counts": {"FAR": 1, "MIR": 1, "MRR": 1, "PIR": 10, "PRR": 10},
    "record_order": {"last_record": "MRR", "mir_second": True, "mrr_last": True},
    "truncated": False,
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"record_counts": {**GOOD_FACTS["record_counts"], "MRR": 0}}, "0 MRR records"),
        (
            {"record_order": {"last_record": "PRR", "mir_second": True, "mrr_last": False}},
            "last record is PRR",
        ),
        (
            {"record_order": {"last_record": "MRR", "mir_second": False, "mrr_last": True}},
            "MIR is not the second",
        ),
    ],
)
def test_record_structure(change: dict, problem: str) -> None:
    assert quality.check_record_structure("f", GOOD_FACTS).passed
    check = quality.check_record_structure("f", {**GOOD_FACTS, **change})
    assert not check.passed and problem in check.message


def test_truncation_and_parts_without_pir_are_no_structure_errors() -> None:
    """The damaged-file policy keeps a truncated file's complete parts; it warns instead."""
    counts = {"FAR": 1, "MIR": 1, "PIR": 0, "PRR": 10}  # a cut file of a tester that writes no PIR
    order = {"last_record": "PRR", "mir_second": True, "mrr_last": False}
    facts = {"record_counts": counts, "record_order": order, "truncated": True, "truncated_at": 1234}
    assert quality.check_record_structure("f", facts).passed
    conversion = {"status": "ok", "truncated": True, "file": facts, "rows": {"parts": 10},
                  "structure": {"parts_without_pir": 10, "parts_lost": 1}}  # fmt: skip
    warned = damage.check_damage("f", conversion)
    assert (warned.passed, warned.severity) == (False, "warning")
    assert warned.message == "truncated at byte 1234: 10 complete parts kept, 1 lost; 10 parts without pir"
    assert damage.check_damage("f", {"status": "ok", "truncated": False, "structure": {}}).passed


def test_catalogue_finds_missing_parameters_and_only_warns_without_a_catalogue() -> None:
    catalogue = pd.DataFrame({"test_num": [1, 2, 3], "test_txt": ["A", "B", "C"]})
    assert quality.check_catalogue("f", catalogue, catalogue).passed
    check = quality.check_catalogue("f", catalogue[catalogue["test_num"] != 2], catalogue)
    assert not check.passed and check.figures["missing"] == ["2 B"]
    unknown = quality.check_catalogue("f", catalogue, None)
    assert not unknown.passed and unknown.severity == "warning"  # not checked is not passed


def test_physical_bounds_catch_impossible_values_not_failing_dies() -> None:
    bounds = pd.DataFrame(
        {"test": ["VOH_*", "IDD*"], "unit": ["V", "mA"], "min": [-5.0, 0.0], "max": [10.0, 1e4]}
    )
    values = pd.DataFrame(
        {"test": ["VOH_CLK", "VOH_SDA", "IDD_ACT1", "OTHER"], "value": [2.5, 2.1, 14.0, 1e9]}
    )
    check = quality.check_physical_bounds("f", values, bounds)
    assert check.passed and check.figures["unbounded_tests"] == ["OTHER"]
    broken = values.assign(value=[2.5, 1e6, 14.0, 1e9])
    check = quality.check_physical_bounds("f", broken, bounds)
    assert not check.passed and check.figures["outside"] == 1 and list(check.figures["tests"]) == ["VOH_SDA"]


def test_a_file_resent_under_another_name_is_a_duplicate() -> None:
    assert quality.check_duplicate_file("f", "abc", {"def": "x.stdf"}).passed
    check = quality.check_duplicate_file("f", "abc", {"abc": "x.stdf"})
    assert not check.passed and "x.stdf" in check.message


def test_window_yield_floor() -> None:
    dies = good_day()["dies"]
    assert quality.check_window_yield(dies, 0.5).passed
    collapsed = dies.assign(passed=False)
    check = quality.check_window_yield(collapsed, 0.5)
    assert not check.passed and check.figures["yield"] == 0


def test_drift_needs_psi_and_a_median_beyond_the_lot_to_lot_spread() -> None:
    rng = np.random.default_rng(1)
    lots = rng.normal(0, 0.3, 7)  # seven reference days, each its own lot level
    reference = np.concatenate([rng.normal(level, 1, 3000) for level in lots])
    limits = quality.DriftLimits()
    same = quality.check_drift("fab1", "VTH", reference, rng.normal(0, 1, 2000), lots, limits)
    assert same.passed and same.figures["psi"] < 0.05
    shifted = quality.check_drift("fab1", "VTH", reference, rng.normal(1.5, 1, 2000), lots, limits)
    assert not shifted.passed and shifted.figures["psi"] > 0.25 and shifted.figures["ks_pvalue"] < 1e-6
    # an unusual but ordinary lot: PSI above the limit, yet inside what lots do
    wide = np.array([-0.6, -0.4, 0.0, 0.3, 0.5, 0.7, 0.2])
    ordinary = quality.check_drift("fab1", "VTH", reference, rng.normal(0.6, 1, 2000), wide, limits)
    assert ordinary.figures["psi"] > 0.25 and ordinary.passed
    few = quality.check_drift("fab1", "VTH", reference, reference[:10], lots, limits)
    assert not few.passed and few.severity == "warning"
