"""The reader on the simulated floor: both engines agree, and the simulator's faults are caught."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from jobs.domain.part_text import parse_part_txt
from jobs.simulation.simulate import main as simulate
from jobs.stdf import TABLES, StdfReadError, read_stdf
from tests.helpers import canonical

DAY = "2026-11-17"


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("floor")
    faults = f"truncated:fab1:{DAY},corrupted:fab2:{DAY}"
    args = ["--root", str(root), "--start", DAY, "--days", "1", "--fabs", "fab1,fab2,fab3"]
    assert simulate([*args, "--lots", "1", "--wafers", "2", "--faults", faults, "--quiet"]) == 0
    return root


def fault(root: Path, kind: str) -> tuple[Path, dict]:
    entry = next(
        e for e in json.loads((root / "truth" / "faults.json").read_text())["faults"] if e["kind"] == kind
    )
    return root / entry["file"], entry


def wafer_files(root: Path, fab: str) -> list[Path]:
    return sorted(p for p in (root / "landing" / fab / DAY).glob("*.stdf.gz") if not p.name.startswith("FT_"))


def test_engines_agree_on_a_simulated_wafer(floor: Path) -> None:
    path = wafer_files(floor, "fab3")[0]
    arrow, reference = read_stdf(path, engine="arrow"), read_stdf(path, engine="pystdf")
    for table in TABLES:
        assert canonical(getattr(arrow, table)).equals(canonical(getattr(reference, table))), table


def test_simulated_wafer_parts_join_the_truth(floor: Path) -> None:
    tables = [read_stdf(p) for p in wafer_files(floor, "fab3")]
    parts = pd.concat([t.parts.to_pandas() for t in tables])
    assert parts["site_num"].nunique() > 1  # multi-site probe cards
    assert (parts["retest"] > 0).any()  # retested dies keep both tests
    final = parts.sort_values("retest").groupby(["lot_id", "wafer_id", "x_coord", "y_coord"]).tail(1)
    truth = pd.read_parquet(floor / "truth" / "fab3" / f"{DAY}.parquet")
    joined = truth.merge(final, on=["lot_id", "wafer_id", "x_coord", "y_coord"], how="left", validate="1:1")
    assert len(joined) == len(truth) and joined["passed"].all()  # final test gets exactly the good dies
    assert truth["x_coord"].dtype == parts["x_coord"].dtype and truth["lot_id"].dtype == parts["lot_id"].dtype


def test_final_test_file_parts_name_their_die(floor: Path) -> None:
    ft = next((floor / "landing" / "fab3").glob("*/FT_*.stdf.gz"))
    parts = read_stdf(ft).parts
    lot, wafer, x, y = parse_part_txt(parts["part_txt"][0].as_py())
    assert lot == parts["lot_id"][0].as_py() and wafer and isinstance(x, int) and isinstance(y, int)


@pytest.mark.parametrize("engine", ["arrow", "pystdf"])
def test_simulated_truncation_is_salvaged(floor: Path, engine: str) -> None:
    path, entry = fault(floor, "truncated")
    tables = read_stdf(path, engine=engine)
    assert tables.file["truncated"] is True
    assert tables.file["truncated_at"] == entry["record_offset"]
    assert tables.file["open_parts_dropped"] >= 1 and tables.parts.num_rows > 0
    assert set(tables.results["part_index"].to_pylist()) <= set(tables.parts["part_index"].to_pylist())


@pytest.mark.parametrize("engine", ["arrow", "pystdf"])
def test_simulated_corruption_is_an_error_past_the_damage(floor: Path, engine: str) -> None:
    path, entry = fault(floor, "corrupted")
    with pytest.raises(StdfReadError, match="corrupt") as error:
        read_stdf(path, engine=engine)
    assert error.value.offset >= entry["byte_offset"]
    assert str(path) in str(error.value)
