"""A floor whose testers write no PIR (the simulator's `no_pir` fault), with a truncated wafer file,
through the wafer-yield and fab-merge workflows: every part is read by its PRR, the truncated
file's complete parts are used by both workflows (never quarantined), and it is flagged.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register
from luigi.tools.range import RangeHourly

from jobs.fab_merge import FabHour, FabMergeHourly
from jobs.files import read_json
from jobs.ops import quarantine
from jobs.ops.alerts import read_alerts
from jobs.simulation.simulate import main as simulate
from jobs.wafer_yield import IngestFab, QualityGate, Score, WaferYieldDaily
from tests.helpers import luigi_settings

FIRST = dt.date(2026, 11, 10)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(3)]
CUT = DAYS[2]  # the day of the truncated file


def run(*tasks: luigi.Task) -> LuigiStatusCode:
    Register.clear_instance_cache()
    return luigi.build(
        list(tasks), local_scheduler=True, workers=2, log_level="WARNING", detailed_summary=True
    ).status


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("no_pir")
    faults = f"no_pir:fab1:{DAYS[0]}..{DAYS[-1]},truncated:fab1:{CUT}"
    args = ["--root", str(root), "--start", str(FIRST), "--days", str(len(DAYS)), "--fabs", "fab1"]
    assert simulate([*args, "--lots", "1", "--wafers", "2", "--faults", faults, "--quiet"]) == 0
    (root / "none.csv").write_text("fab,start,end,offset_hours,reason\n")
    settings = luigi_settings(
        paths={"root": root},
        wafer_yield={"fabs": "fab1", "min_devices": 1000},
        merge={"fabs": "fab1", "clock_corrections": root / "none.csv"},
        models={"auto_approve": True},
    )
    with settings:
        start = dt.datetime.combine(CUT, dt.time())
        hours = RangeHourly(
            of=FabMergeHourly, param_name="hour", start=start, stop=start + dt.timedelta(days=1)
        )
        assert run(*(WaferYieldDaily(date=d) for d in DAYS), hours) == LuigiStatusCode.SUCCESS
        yield root


def truncated_entry(root: Path) -> dict:
    faults = json.loads((root / "truth" / "faults.json").read_text())["faults"]
    return next(f for f in faults if f["kind"] == "truncated")


def test_every_part_of_a_no_pir_floor_is_read(floor: Path) -> None:
    for day in DAYS:
        ingest = IngestFab(fab="fab1", date=day).manifest()
        wafers = [f for f in ingest["files"] if f["flow"] == "wafer_sort"]
        assert wafers and ingest["quarantined"] == []
        for f in wafers:
            assert f["structure"]["parts_without_pir"] == f["parts"] > 0
        assert ingest["rows"]["dies"] > 1000
    gate = QualityGate(date=DAYS[0]).manifest()
    assert gate["passed"] and "fab1: files" in gate["warnings"]  # the structure is reported, not fatal
    assert Score(date=DAYS[-1]).manifest()["status"] == "scored"


def test_the_truncated_file_is_kept_by_every_workflow_and_flagged(floor: Path) -> None:
    name = Path(truncated_entry(floor)["file"]).name
    assert (floor / "landing" / "fab1" / str(CUT) / name).exists() and not quarantine.held()
    ingest = IngestFab(fab="fab1", date=CUT).manifest()
    entry = next(f for f in ingest["files"] if f["file"] == name)
    assert entry["verdict"] == "truncated" and entry["parts_kept"] == entry["parts"] > 0
    assert entry["parts_lost"] >= 1 and ingest["truncated_files"] == [name]
    dies = pd.read_parquet(IngestFab(fab="fab1", date=CUT).folder() / "dies.parquet")
    assert (dies["source_sha256"] == entry["sha256"]).sum() == entry["parts"]
    gate = read_json(QualityGate(date=CUT).folder() / "report.json")
    files = next(c for c in gate["checks"] if c["name"] == "fab1: files")
    assert files["figures"]["truncated_files"] == 1 and files["figures"]["parts_lost"] == entry["parts_lost"]
    merged = [
        FabHour(fab="fab1", hour=dt.datetime.combine(CUT, dt.time(h))).folder() / "dies.parquet"
        for h in range(24)
    ]
    merged_shas = pd.concat([pd.read_parquet(p, columns=["source_sha256"]) for p in merged if p.exists()])
    assert (merged_shas["source_sha256"] == entry["sha256"]).sum() > 0  # the fab merge uses its parts too
    alerts = [a for a in read_alerts(floor / "alerts" / "alerts.jsonl") if a["message"].startswith(name)]
    assert {a["workflow"] for a in alerts} == {"wafer_yield", "fab_merge"}
    assert all(f"{entry['parts_lost']} lost" in a["message"] for a in alerts)
