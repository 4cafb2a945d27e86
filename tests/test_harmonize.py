"""Names, units, clocks and z-scores across fabs (jobs/domain/harmonize.py), on small hand-made tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.domain import harmonize

MAPPING = """# a comment
canonical,unit,fab,test_txt
IDD_ACT1,mA,*,IDD_ACT1
IDD_ACT1,mA,fab2,IDD_ACTIVE_1
VOH_CLK,V,*,VOH_CLK
"""


@pytest.fixture()
def mapping(tmp_path: Path) -> pd.DataFrame:
    (tmp_path / "names.csv").write_text(MAPPING)
    return harmonize.read_test_names(tmp_path / "names.csv")


@pytest.mark.parametrize(
    ("unit", "to", "factor"),
    [
        ("uA", "A", 1e-6),
        ("mA", "A", 1e-3),
        ("A", "mA", 1e3),
        ("V", "mV", 1e3),
        ("nA", "uA", 1e-3),
        ("MHz", "Hz", 1e6),
    ],
)
def test_unit_factors(unit: str, to: str, factor: float) -> None:
    assert harmonize.unit_factor(unit, to) == pytest.approx(factor)


def test_units_of_different_quantities_do_not_convert() -> None:
    with pytest.raises(ValueError, match="cannot convert 'mA' to 'V'"):
        harmonize.unit_factor("mA", "V")
    with pytest.raises(ValueError, match="unknown unit 'furlong'"):
        harmonize.unit_factor("furlong", "V")


def test_a_fab_with_its_own_names_and_units_is_harmonized(mapping: pd.DataFrame) -> None:
    results = pd.DataFrame(
        {"part_key": [0, 0, 1, 1, 1], "test_num": [1, 2, 1, 2, 3], "result": [0.014, 3.0, 0.015, 3.1, 9.0]}
    )
    dialect = pd.DataFrame(
        {
            "test_num": [1, 2, 3],
            "test_txt": ["IDD_ACTIVE_1", "VOH_CLK", "NOT_MAPPED"],
            "units": ["A", "V", "V"],
        }
    )
    long = harmonize.harmonize(results, dialect, "fab2", mapping)
    assert long["test"].tolist() == ["IDD_ACT1", "VOH_CLK", "IDD_ACT1", "VOH_CLK"]  # unmapped test dropped
    assert long["value"].tolist() == pytest.approx([14.0, 3.0, 15.0, 3.1])  # A -> mA
    # the same fab with the common names still maps (a fab may switch programs)
    common = dialect.assign(test_txt=["IDD_ACT1", "VOH_CLK", "X"], units=["mA", "V", "V"])
    results_ma = results.assign(result=[14.0, 3.0, 15.0, 3.1, 9.0])
    assert harmonize.harmonize(results_ma, common, "fab2", mapping)["value"].tolist() == pytest.approx(
        [14, 3, 15, 3.1]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("canonical,unit,fab\nA,V,*\n", "missing column"),
        ("canonical,unit,fab,test_txt\nA,V,*,A\nB,V,*,A\n", "mapped twice"),
        ("canonical,unit,fab,test_txt\nA,V,*,A\nB,parsec,*,B\n", "line 3: unknown unit 'parsec'"),
    ],
)
def test_a_bad_mapping_file_names_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(harmonize.MappingError, match=message) as error:
        harmonize.read_test_names(tmp_path / "bad.csv")
    assert str(tmp_path / "bad.csv") in str(error.value)


def corrections(tmp_path: Path) -> pd.DataFrame:
    (tmp_path / "clocks.csv").write_text(
        "fab,start,end,offset_hours,reason\nfab2,2026-08-01,2026-10-30,8,tester clocks on local time\n"
    )
    return harmonize.read_corrections(tmp_path / "clocks.csv")


def test_recorded_times_are_corrected_to_utc_inside_the_period_only(tmp_path: Path) -> None:
    table = corrections(tmp_path)
    recorded = pd.Series(pd.to_datetime(["2026-09-01 10:30", "2026-11-01 10:30"], utc=True))
    fixed = harmonize.to_utc(table, "fab2", recorded)
    assert fixed.tolist() == [
        pd.Timestamp("2026-09-01 02:30", tz="UTC"),
        pd.Timestamp("2026-11-01 10:30", tz="UTC"),
    ]
    assert harmonize.to_utc(table, "fab1", recorded).tolist() == recorded.tolist()
    near = (dt.datetime(2026, 9, 1, tzinfo=dt.UTC), dt.datetime(2026, 9, 2, tzinfo=dt.UTC))
    assert harmonize.clock_offsets(table, "fab2", *near) == {0.0, 8.0}
    assert harmonize.clock_offsets(table, "fab1", *near) == {0.0}


def test_a_correction_that_ends_before_it_starts_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clocks.csv").write_text("fab,start,end,offset_hours\nfab2,2026-10-30,2026-08-01,8\n")
    with pytest.raises(harmonize.MappingError, match="line 2: end is not after start"):
        harmonize.read_corrections(tmp_path / "clocks.csv")


def test_robust_z_scores_against_a_reference() -> None:
    reference = pd.DataFrame({"test": ["A"] * 5 + ["B"] * 3, "value": [1, 2, 3, 4, 100, 5, 5, 5]})
    stats = harmonize.robust_stats(reference).set_index("test")
    assert stats.loc["A", "median"] == 3 and stats.loc["A", "sigma"] == pytest.approx(
        1.4826
    )  # the 100 is ignored
    assert stats.loc["B", "sigma"] == 1.0  # no spread at all: z is the plain difference
    values = pd.DataFrame({"test": ["A", "B", "C"], "value": [3 + 2 * 1.4826, 6.0, 1.0]})
    z = harmonize.zscores(values, stats.reset_index())
    assert z[:2] == pytest.approx([2.0, 1.0]) and np.isnan(z[2])  # C has no reference
