"""The hourly fab merge under Luigi, on small simulated floors (2 fabs, 2 wafers a fab-day).

Two floors of the same seed and days: `clean`, and `faulty`, where fab2's testers ran on local
time (UTC+8) both days and wrote its own program dialect (other names and units) on the second.
Merged correctly, both give the same feature store: that is the test of the UTC correction, the
name mapping and the unit harmonization.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register
from luigi.tools.range import RangeHourly

from jobs.fab_merge import FabHour, FabMergeHourly, FeatureStore, Normalize
from jobs.ops.alerts import read_alerts
from jobs.pipeline.stages import stage_dir
from jobs.simulation.simulate import main as simulate
from tests.helpers import luigi_settings

DAY0, DAY1 = dt.date(2026, 11, 10), dt.date(2026, 11, 11)
FIRST_HOUR = dt.datetime(2026, 11, 11, 0)
CORRECTION = "fab,start,end,offset_hours,reason\nfab2,2026-11-01,2026-11-20,8,clocks on local time\n"
NO_CORRECTION = "fab,start,end,offset_hours,reason\n"


def run(*tasks: luigi.Task, workers: int = 2) -> LuigiStatusCode:
    Register.clear_instance_cache()  # as a new command line would: no cached Range requirements
    result = luigi.build(
        list(tasks), local_scheduler=True, workers=workers, log_level="WARNING", detailed_summary=True
    )
    return result.status


def day_range(day: dt.date = DAY1) -> RangeHourly:
    start = dt.datetime.combine(day, dt.time())
    return RangeHourly(of=FabMergeHourly, param_name="hour", start=start, stop=start + dt.timedelta(days=1))


def floor(root: Path, faults: str = "") -> Path:
    args = ["--root", str(root), "--start", str(DAY0), "--days", "2", "--fabs", "fab1,fab2", "--lots", "1"]
    assert simulate([*args, "--wafers", "2", "--quiet", *(["--faults", faults] if faults else [])]) == 0
    return root


def settings(root: Path, corrections: Path, **merge: object) -> luigi_settings:
    """luigi.cfg pointed at a floor: its root, its two fabs, a corrections file, [fab_merge] extras."""
    settings = {"fabs": "fab1,fab2", "clock_corrections": corrections, **merge}
    return luigi_settings(paths={"root": root}, merge=settings)


def store(root: Path) -> pd.DataFrame:
    """The feature store of DAY1 as one table, in a fixed order."""
    table = pd.read_parquet(stage_dir("feature_store"))
    table["hour"] = table["hour"].astype(int)
    return table.sort_values(["fab", "lot_id", "wafer_id", "x_coord", "y_coord"]).reset_index(drop=True)


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def floors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("merge")
    (base / "none.csv").write_text(NO_CORRECTION)
    (base / "fab2.csv").write_text(CORRECTION)
    clean = floor(base / "clean")
    faulty = floor(base / "faulty", f"localtime:fab2:{DAY0}..{DAY1}:8,dialect:fab2:{DAY1}")
    with settings(clean, base / "none.csv"):
        assert run(day_range()) == LuigiStatusCode.SUCCESS
    yield {"base": base, "clean": clean, "faulty": faulty}


def test_an_hour_with_all_fabs(floors: dict[str, Path]) -> None:
    with settings(floors["clean"], floors["base"] / "none.csv"):
        table = store(floors["clean"])
        assert set(table["fab"]) == {"fab1", "fab2"}
        # every die of the day's wafer-sort files, once (a retested die: its last test)
        assert len(table) == len(table.drop_duplicates(["lot_id", "wafer_id", "x_coord", "y_coord"]))
        per_hour = table.groupby(["hour", "fab"]).size()
        assert per_hour.sum() == len(table) and len(per_hour) >= 2
        hour = per_hour.index[0][0]
        assert (table.loc[table["hour"] == hour, "test_start_utc"].dt.hour == hour).all()
        manifest = FabMergeHourly(hour=FIRST_HOUR.replace(hour=hour)).manifest()
        assert manifest["missing_fabs"] == [] and sum(manifest["rows"].values()) == per_hour.loc[hour].sum()
        assert {"IDD_ACT1", "IDD_ACT1_z", "FMAX_RO1", "VOH_CLK"} <= set(table.columns)
        assert table["IDD_ACT1_z"].abs().median() < 1.5  # z against the fab's own reference


def test_a_clock_fix_is_one_version_bump_and_reruns_nothing_upstream(floors: dict[str, Path]) -> None:
    faulty = floors["faulty"]
    with settings(faulty, floors["base"] / "none.csv"):
        assert run(day_range()) == LuigiStatusCode.SUCCESS
        wrong = store(faulty)
        upstream = {stage: mtimes(stage_dir(stage)) for stage in ("convert", "fab_hour", "reference")}
        old_store = stage_dir("feature_store")
    clean = store_of(floors["clean"], floors["base"] / "none.csv")

    def fab2_hours(table: pd.DataFrame) -> dict[int, int]:
        return table[table["fab"] == "fab2"].groupby("hour").size().to_dict()

    assert fab2_hours(wrong) != fab2_hours(clean)  # local time put fab2's dies in the wrong hours
    assert wrong[wrong["fab"] == "fab1"]["hour"].tolist() == clean[clean["fab"] == "fab1"]["hour"].tolist()

    with settings(faulty, floors["base"] / "fab2.csv"), luigi_settings(versions={"normalize": 2}):
        assert stage_dir("feature_store") != old_store
        assert run(day_range()) == LuigiStatusCode.SUCCESS
        fixed = store(faulty)
        for stage, files in upstream.items():  # nothing upstream redone (FabHours of the recorded
            now = mtimes(stage_dir(stage))  # hours the correction points at are added)
            assert {name: now[name] for name in files} == files
    key = ["fab", "lot_id", "wafer_id", "x_coord", "y_coord"]
    compare = [*key, "hour", "test_start_utc", "IDD_ACT1", "VOH_CLK", "IIH_VDD", "FMAX_RO1", "VTH_N_PM1"]
    assert len(fixed) == len(clean)
    pd.testing.assert_frame_equal(fixed[compare], clean[compare], check_exact=False, rtol=1e-6)
    # the dialect day's z-scores use a reference from a day in the standard dialect: same scale
    z = ["IDD_ACT1_z", "VOH_CLK_z", "FMAX_RO1_z"]
    pd.testing.assert_frame_equal(fixed[z], clean[z], check_exact=False, atol=1e-4)


def store_of(root: Path, corrections: Path) -> pd.DataFrame:
    with settings(root, corrections):
        return store(root)


def test_the_store_reads_in_one_line_with_pandas_pyarrow_and_duckdb(floors: dict[str, Path]) -> None:
    import duckdb
    import pyarrow.dataset as ds

    with settings(floors["clean"], floors["base"] / "none.csv"):
        path = stage_dir("feature_store")
    by_pandas = pd.read_parquet(path)
    by_arrow = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    by_duckdb = duckdb.sql(f"SELECT * FROM read_parquet('{path}/**/*.parquet', hive_partitioning=true)").df()
    assert len(by_pandas) == by_arrow.num_rows == len(by_duckdb) > 1000
    assert {"date", "hour", "fab"} <= set(by_arrow.column_names) and {"date", "hour", "fab"} <= set(by_duckdb)
    fab2 = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{path}/**/*.parquet', hive_partitioning=true) WHERE fab = 'fab2'"
    )
    assert fab2.fetchall()[0][0] == (by_pandas["fab"] == "fab2").sum()


def test_reruns_are_no_ops(floors: dict[str, Path]) -> None:
    with settings(floors["clean"], floors["base"] / "none.csv"):
        before = mtimes(floors["clean"])
        hours = [FIRST_HOUR + dt.timedelta(hours=h) for h in range(24)]
        assert FabMergeHourly.bulk_complete(hours) == hours
        assert run(day_range()) == LuigiStatusCode.SUCCESS
        assert mtimes(floors["clean"]) == before


def test_a_missing_fab_waits_until_the_deadline_then_is_merged_late(
    floors: dict[str, Path], tmp_path: Path
) -> None:
    root = floor(tmp_path / "offline", f"offline:fab2:{DAY1}")
    hour = busiest_hour(floors)
    with settings(root, floors["base"] / "none.csv", deadline_hours=1e6):
        assert run(FabMergeHourly(hour=hour)) == LuigiStatusCode.MISSING_EXT  # waits for fab2
        assert not FeatureStore(hour=hour).complete()
    with settings(root, floors["base"] / "none.csv", deadline_hours=0):
        assert run(FabMergeHourly(hour=hour)) == LuigiStatusCode.SUCCESS
        merged = FabMergeHourly(hour=hour).manifest()
        assert merged["missing_fabs"] == ["fab2"] and merged["fabs"] == ["fab1"]
        assert any(
            "fab2 had not delivered" in a["message"] for a in read_alerts(root / "alerts" / "alerts.jsonl")
        )
        # fab2 delivers late: the hour reopens and the next run merges it
        shutil.copytree(
            floors["clean"] / "landing" / "fab2" / str(DAY1), root / "landing" / "fab2" / str(DAY1)
        )
        assert not FabMergeHourly(hour=hour).complete() and not Normalize(hour=hour).complete()
        assert FabHour(fab="fab1", hour=hour).complete()  # what was there is not redone
        assert run(FabMergeHourly(hour=hour)) == LuigiStatusCode.SUCCESS
        late = FabMergeHourly(hour=hour).manifest()
        assert late["missing_fabs"] == [] and late["rows"].get("fab2", 0) > 0


def busiest_hour(floors: dict[str, Path]) -> dt.datetime:
    """The hour of DAY1 in which fab2 tested the most dies (on the clean floor)."""
    with settings(floors["clean"], floors["base"] / "none.csv"):
        table = store(floors["clean"])
    hour = int(table[table["fab"] == "fab2"].groupby("hour").size().idxmax())
    return FIRST_HOUR.replace(hour=hour)
