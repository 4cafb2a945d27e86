"""The fab merge's domain functions (jobs/domain/merge.py) and the pieces every workflow shares
(jobs/domain/dies.py, robust.py, conversion.py), on conversion folders of a few rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.domain import merge
from jobs.domain.conversion import Conversion, distinct
from jobs.domain.dies import DIE_KEY, last_tests
from jobs.domain.robust import robust_centre

START = pd.Timestamp("2026-11-10 08:00", tz="UTC")
NAMES = pd.DataFrame(
    {
        "canonical": ["VTH", "IDD", "IDD"],
        "unit": ["V", "A", "A"],
        "fab": ["*", "*", "fab2"],
        "test_txt": ["vth", "idd", "IDD_MA"],
    }
)


def parts_frame(rows: list[dict]) -> pd.DataFrame:
    base = dict(lot_id="L1", wafer_id="01", y_coord=0, retest=0, passed=True, hard_bin=1.0, soft_bin=1.0)
    frame = pd.DataFrame([{**base, "test_time_ms": 10.0, **r} for r in rows])
    return frame.astype({"part_index": "int32", "x_coord": "Int16", "y_coord": "Int16", "retest": "int16"})


def conversion(
    root: Path,
    sha: str,
    parts: list[dict],
    results: list[tuple[int, int, float]],
    tests: list[tuple[int, str, str]],
    start: str = "2026-11-10 07:30Z",
    finish: str = "2026-11-10 08:30Z",
) -> Conversion:
    """A converted folder named `sha` with parts, PTR results (part, test_num, result) and tests."""
    folder = root / sha
    folder.mkdir()
    parts_frame(parts).to_parquet(folder / "parts.parquet", index=False)
    pd.DataFrame(
        {
            "part_index": pd.Series([r[0] for r in results], dtype="int32"),
            "kind": "PTR",
            "test_num": pd.Series([r[1] for r in results], dtype="uint32"),
            "result": pd.Series([r[2] for r in results], dtype="float32"),
        }
    ).to_parquet(folder / "results.parquet", index=False)
    catalogue = pd.DataFrame(tests, columns=["test_num", "test_txt", "units"]).astype({"test_num": "uint32"})
    catalogue.to_parquet(folder / "tests.parquet", index=False)
    facts = {"wafers": 1, "job": "PROG", "start_time_utc": start, "finish_time_utc": finish}
    manifest = {"status": "ok", "input": {"path": f"/landing/fab1/2026-11-10/{sha}.stdf", "sha256": sha}}
    return Conversion(root / f"{sha}.stdf", folder, {**manifest, "file": facts})


def unreadable(root: Path, name: str) -> Conversion:
    manifest = {
        "status": "unreadable",
        "error": "bad",
        "byte_offset": 7,
        "input": {"path": name, "sha256": name},
    }
    return Conversion(root / name, root / name, manifest)


def test_the_last_test_of_a_die_is_its_highest_retest_then_its_latest_part() -> None:
    parts = parts_frame(
        [
            dict(part_index=0, x_coord=0, passed=False),
            dict(part_index=1, x_coord=0, passed=True, retest=1),  # the retest counts
            dict(part_index=2, x_coord=1, passed=True),
            dict(part_index=3, x_coord=1, passed=False),  # same retest: the later part counts
        ]
    )
    last = last_tests(parts, "part_index")
    assert last["part_index"].tolist() == [3, 1]  # in (retest, part) order
    assert last.set_index("x_coord")["passed"].to_dict() == {0: True, 1: False}
    assert DIE_KEY == ["lot_id", "wafer_id", "x_coord", "y_coord"]


def test_the_robust_centre_falls_back_from_the_mad_to_the_iqr_to_one() -> None:
    values = np.array([[1.0, 5.0, 4.0], [2.0, 5.0, 4.0], [3.0, 5.0, 4.0], [4.0, 6.0, 4.0], [100.0, 7.0, 4.0]])
    median, sigma = robust_centre(values)
    assert median.tolist() == [3.0, 5.0, 4.0]
    q25, q75 = np.percentile(values[:, 1], [25, 75])
    assert sigma == pytest.approx([1.4826, (q75 - q25) / 1.349, 1.0])  # the 100 does not count
    centre, spread = robust_centre(np.array([np.nan, np.nan]))  # no value at all
    assert np.isnan(centre) and spread == 1.0


def test_a_file_resent_under_another_name_counts_once_and_unreadable_ones_not_at_all(tmp_path: Path) -> None:
    one = conversion(tmp_path, "aaa", [dict(part_index=0, x_coord=0)], [], [])
    twin = one._replace(path=tmp_path / "copy.stdf")
    assert distinct([one, unreadable(tmp_path, "bad"), twin]) == [twin]


def test_part_starts_spread_over_the_file_in_test_order() -> None:
    parts = pd.DataFrame({"part_index": [2, 0, 1, 3]})
    facts = {"start_time_utc": "2026-11-10 08:00Z", "finish_time_utc": "2026-11-10 09:00Z"}
    starts = merge.part_starts(parts, facts)
    assert (starts - START).dt.total_seconds().tolist() == [1800, 0, 900, 2700]
    assert merge.overlaps(facts, START) and merge.overlaps(facts, START + pd.Timedelta(minutes=59))
    assert not merge.overlaps(facts, START - pd.Timedelta(hours=1))
    assert not merge.overlaps(facts, START + pd.Timedelta(hours=1, seconds=1))


def test_an_hour_of_files_keeps_the_last_test_of_the_dies_started_in_it(tmp_path: Path) -> None:
    # 4 parts over 07:30..08:30: starts 07:30, 07:45, 08:00, 08:15; the hour from 08:00 has the last two
    parts = [
        dict(part_index=0, x_coord=0),
        dict(part_index=1, x_coord=1),
        dict(part_index=2, x_coord=1, retest=1),  # the retest of x=1, in the hour
        dict(part_index=3, x_coord=None),  # no place on the wafer: not a die
    ]
    tests = [(7, "vth", "mV")]
    one = conversion(tmp_path, "aaa", parts, [(0, 7, 1.0), (1, 7, 2.0), (2, 7, 3.0)], tests)
    twin = one._replace(path=tmp_path / "twin.stdf")
    dies, results, catalogue, bad = merge.hour_of_files([one, twin, unreadable(tmp_path, "b.stdf")], START)
    assert dies["part_index"].tolist() == [2] and dies["x_coord"].tolist() == [1]
    assert dies["recorded_start"].tolist() == [START]
    assert results[["part_index", "result"]].values.tolist() == [[2, 3.0]]
    assert catalogue["test_txt"].tolist() == ["vth"] and bad == ["b.stdf"]
    assert list(dies.columns) == list(merge.DIE_FRAME) and dies["source_sha256"].tolist() == ["aaa"]
    empty = merge.hour_of_files([], START)
    assert [list(t.columns) for t in empty[:3]] == [
        list(merge.DIE_FRAME),
        list(merge.RESULT_FRAME),
        list(merge.TEST_FRAME),
    ]


def test_the_reference_is_of_final_tests_in_canonical_units(tmp_path: Path) -> None:
    parts = [dict(part_index=i, x_coord=i) for i in range(5)] + [dict(part_index=5, x_coord=0, retest=1)]
    results = [(i, 7, v) for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 100.0, 9.0])]
    one = conversion(tmp_path, "aaa", parts, results, [(7, "vth", "mV")])
    values = merge.harmonized_file(one.folder, "fab1", NAMES)
    assert values["part_key"].tolist() == [1, 2, 3, 4, 5]  # part 0 was retested as part 5
    assert values["value"].tolist() == pytest.approx([0.002, 0.003, 0.004, 0.1, 0.009])  # mV -> V
    stats, files = merge.reference_stats([one, unreadable(tmp_path, "bad")], "fab1", NAMES)
    assert files == 1 and stats["test"].tolist() == ["VTH"]
    assert stats["median"].iloc[0] == pytest.approx(0.004) and stats["count"].iloc[0] == 5


def test_a_clock_correction_adds_the_recorded_hour_it_moves() -> None:
    corrections = pd.DataFrame(
        {
            "fab": ["fab1", "fab1"],
            "start": pd.to_datetime(["2026-11-10", "2026-12-01"], utc=True),
            "end": pd.to_datetime(["2026-11-11", "2026-12-02"], utc=True),
            "offset_hours": [2.0, -1.0],
        }
    )
    assert merge.fab_hour_offsets(corrections, "fab1", START) == [0.0, 2.0]  # December is too far
    assert merge.fab_hour_offsets(corrections, "fab2", START) == [0.0]


def test_the_normalized_hour_has_every_fabs_dies_values_and_z(tmp_path: Path) -> None:
    one = conversion(tmp_path, "aaa", [dict(part_index=0, x_coord=0), dict(part_index=1, x_coord=1)],
                     [(0, 7, 2.0), (1, 7, 4.0), (1, 8, 5.0)], [(7, "vth", "V"), (8, "idd", "mA")],
                     start="2026-11-10 08:00Z", finish="2026-11-10 08:40Z")  # fmt: skip
    dies, results, tests, _ = merge.hour_of_files([one], START)
    hour = tmp_path / "fab_hour"
    hour.mkdir()
    for name, table in (("dies", dies), ("results", results), ("tests", tests)):
        table.to_parquet(hour / f"{name}.parquet", index=False)
    stats = pd.DataFrame({"test": ["VTH", "IDD"], "median": [3.0, 0.0], "sigma": [0.5, 1.0], "count": [9, 9]})
    corrections = pd.DataFrame({"fab": [], "start": [], "end": [], "offset_hours": []})
    table = merge.normalize_hour({"fab1": [hour]}, {"fab1": stats}, START, NAMES, corrections)
    assert table["fab"].tolist() == ["fab1", "fab1"] and table["x_coord"].tolist() == [0, 1]
    assert table["VTH"].tolist() == [2.0, 4.0] and table["VTH_z"].tolist() == [-2.0, 2.0]
    assert np.isnan(table["IDD"].iloc[0]) and table["IDD"].iloc[1] == pytest.approx(0.005)  # mA -> A
    assert (table["test_start_utc"] == table["recorded_start"]).all()  # no correction
    stored = merge.store_tables(table, ["fab1", "fab2"], NAMES)
    assert len(stored["fab1"]) == 2 and "fab" not in stored["fab1"].columns and stored["fab2"].empty
    empty = merge.store_tables(pd.DataFrame(), ["fab1"], NAMES)["fab1"]
    assert sorted(empty.columns) == sorted(stored["fab1"].columns)  # a fab that tested nothing: same columns
