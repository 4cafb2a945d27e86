"""The daily yield report: its tables on small known inputs, and YieldReport on a simulated floor
(1 fab, 3 days, 3 wafers a day: the third day is scored by a model and has the second's final test)."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import luigi
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from jobs.domain import report_page, wafer_export
from jobs.domain import yield_views as views
from jobs.files import read_json
from jobs.ops import dashboard
from jobs.simulation.simulate import main as simulate
from jobs.stdf import convert_stdf
from jobs.wafer_yield import Features, IngestFab, Score, WaferYieldDaily, YieldReport
from tests.helpers import luigi_settings, read_pystdf

DAYS = [dt.date(2026, 11, 10) + dt.timedelta(days=i) for i in range(3)]
SETTINGS = {"wafer_yield": {"fabs": "fab1", "min_devices": 1000}, "models": {"auto_approve": True}}
CHROMIUM = Path("/usr/bin/chromium")
BROWSER = [
    *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
    *("--window-size=1400,1000", "--virtual-time-budget=10000"),
]


# --- the tables on known inputs ----------------------------------------------------------------


def parts(rows: list[tuple[str, int, int, int, bool, int]], fab: str = "fab1") -> pd.DataFrame:
    """(wafer, x, y, soft bin, passed, retest) per part, in test order."""
    frame = pd.DataFrame(rows, columns=["wafer_id", "x_coord", "y_coord", "soft_bin", "passed", "retest"])
    return frame.assign(
        fab=fab,
        lot_id="L1",
        hard_bin=np.where(frame["passed"], 1, 5),
        part_key=np.arange(len(frame)),
        x_coord=frame["x_coord"].astype(np.int16),
        y_coord=frame["y_coord"].astype(np.int16),
    )


def test_the_last_test_of_a_die_wins_and_its_first_pass_is_kept() -> None:
    table = parts([("01", 0, 0, 50, False, 0), ("01", 1, 0, 1, True, 0), ("01", 0, 0, 1, True, 1)])
    dies = views.die_table(table)
    die = dies.set_index(["x_coord", "y_coord"]).loc[(0, 0)]
    assert len(dies) == 2 and die["soft_bin"] == 1 and die["passed"] and die["retested"]
    assert die["first_soft_bin"] == 50 and not die["first_passed"]
    recovery = views.retest_recovery(dies)
    assert recovery.to_dict("records") == [
        {"bin": 50, "name": "", "failed": 1, "retested": 1, "recovered": 1}
    ]
    wafer = views.wafer_yields(dies).iloc[0]
    assert (wafer["first_pass_yield"], wafer["final_yield"], wafer["recovered"]) == (0.5, 1.0, 1)


def test_cpk_matches_a_hand_computation() -> None:
    values = pd.DataFrame(
        {"fab": ["f1"] * 5 + ["f2"] * 4, "test": "T", "result": [1.0, 2, 3, 4, 5, 4, 5, 6, 9]}
    )
    limits = pd.DataFrame({"test": ["T"], "units": ["V"], "lo_limit": [0.0], "hi_limit": [10.0]})
    stats = views.test_statistics(values, limits).set_index("fab")
    # f1: mean 3, sample sigma sqrt(2.5); the nearer limit is lo = 0, 3 away: 3 / (3 sqrt(2.5))
    assert stats.at["f1", "cpk"] == pytest.approx(3 / (3 * np.sqrt(2.5)))
    # f2: mean 6, sigma sqrt(14/3); hi = 10 is nearer, 4 away
    assert stats.at["f2", "cpk"] == pytest.approx(4 / (3 * np.sqrt(14 / 3)))
    assert stats["below_target"].all() and stats.at["f1", "n"] == 5
    assert views.cpk(np.array([1.0, 3.0]), None, 5.0) == pytest.approx(3 / (3 * np.sqrt(2)))  # one-sided
    assert np.isnan(views.cpk(np.array([1.0, 3.0]), None, None))


def test_first_failing_test_is_the_first_failed_result_of_the_last_test() -> None:
    dies = views.die_table(
        parts([("01", 0, 0, 30, False, 0), ("01", 1, 0, 30, False, 0), ("01", 2, 0, 1, True, 0)])
    )
    results = pd.DataFrame(
        {
            "fab": "fab1",
            "part_key": [0, 0, 1],
            "test_num": [10, 20, 20],
            "test_txt": ["IDDQ", "LEAK", "LEAK"],
            "failed": [True, True, True],
        }
    )
    tests = views.first_failing_tests(dies, results)
    assert tests[["test", "dies"]].values.tolist() == [["IDDQ (10)", 1], ["LEAK (20)", 1]]
    assert tests["cum_share"].iloc[-1] == pytest.approx(1.0)


# --- one known simulated wafer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def wafer(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One simulated wafer, converted, and its PRRs as pystdf reads them (the reference)."""
    root = tmp_path_factory.mktemp("wafer")
    args = ["--root", str(root), "--start", "2026-11-18", "--days", "1", "--fabs", "fab1"]
    assert simulate([*args, "--lots", "1", "--wafers", "1", "--quiet", "--jobs", "1"]) == 0
    (path,) = [p for p in (root / "landing").glob("fab1/*/*.stdf.gz") if not p.name.startswith("FT_")]
    tables = convert_stdf(path, root / "converted")
    prrs = [fields for kind, fields in read_pystdf(path) if kind == "PRR"]
    last = {}  # a retest (PART_FLG bit 0 or 1) supersedes the die's earlier part
    for prr in prrs:
        last[(prr["X_COORD"], prr["Y_COORD"])] = prr
    table = pd.read_parquet(root / "converted" / "parts.parquet").assign(
        fab="fab1", part_key=lambda t: t["part_index"]
    )
    return {"dies": views.die_table(table), "prrs": last, "tables": tables, "root": root}


def test_a_wafer_map_has_every_die_and_its_bin(wafer: dict) -> None:
    dies, prrs = wafer["dies"], wafer["prrs"]
    bins = sorted(dies["soft_bin"].unique())
    index = report_page.bin_index_grid(dies, bins)
    maps = report_page.MapFigure([report_page.bin_panel(bins, {}, "soft bin")])
    maps.draw("wafer", [index])
    behind = np.ma.filled(maps.images[0].get_array().astype(float), np.nan)  # the array the image shows
    assert np.array_equal(behind, index.values, equal_nan=True)
    assert index.dies() == len(prrs) == len(dies)  # one cell per die, every die once
    some = list(prrs.items())[:: max(len(prrs) // 25, 1)]
    for (x, y), prr in some:
        assert bins[int(index.at(x, y))] == prr["SOFT_BIN"]
    x, y = next(iter(prrs))
    assert views.grid(dies, "soft_bin").at(x, y) == prrs[(x, y)]["SOFT_BIN"]
    assert np.isnan(index.values).sum() == index.values.size - len(prrs)  # the corners hold no die


def test_a_stacked_map_shows_an_injected_edge_ring(wafer: dict) -> None:
    one = wafer["dies"]
    stack = pd.concat([one.assign(wafer_id=f"{w:02d}") for w in range(1, 6)], ignore_index=True)
    radius = np.hypot(stack["x_coord"], stack["y_coord"])
    ring = radius >= radius.max() - 2  # two die pitches at the edge fail on every wafer
    rng = np.random.default_rng(1)
    stack["failed"] = ring | (rng.random(len(stack)) < 0.05)
    grid = views.stacked(stack, "failed")
    on_ring = stack.loc[ring, ["x_coord", "y_coord"]].drop_duplicates()
    inside = stack.loc[radius < radius.max() - 4, ["x_coord", "y_coord"]].drop_duplicates()
    assert all(grid.at(x, y) == 1.0 for x, y in on_ring.itertuples(index=False))
    assert np.mean([grid.at(x, y) for x, y in inside.itertuples(index=False)]) < 0.15


def test_the_sinf_export_round_trips_every_die(wafer: dict) -> None:
    dies = wafer["dies"]
    text = wafer_export.sinf_text("fab1", "L1", "01", dies, [1])
    header, back = wafer_export.read_sinf(text)
    assert header["LOT"] == "L1" and header["BCEQU"] == "01"
    merged = dies.merge(back, on=["x_coord", "y_coord"], suffixes=("", "_sinf"), validate="one_to_one")
    assert len(merged) == len(dies) == len(back)
    assert (merged["soft_bin"] == merged["soft_bin_sinf"]).all()
    with pytest.raises(wafer_export.ExportError, match="soft bin 300 > 255"):
        wafer_export.sinf_text("fab1", "L1", "01", dies.assign(soft_bin=300), [1])


# --- YieldReport on a simulated floor ------------------------------------------------------------


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("floor")
    args = ["--root", str(root), "--start", str(DAYS[0]), "--days", str(len(DAYS)), "--fabs", "fab1"]
    assert simulate([*args, "--lots", "1", "--wafers", "3", "--quiet"]) == 0
    with luigi_settings(paths={"root": root}, **SETTINGS):
        assert luigi.build(
            [WaferYieldDaily(date=d) for d in DAYS], local_scheduler=True, workers=2, log_level="WARNING"
        )
        yield root


def test_the_report_of_a_scored_day(floor: Path) -> None:
    day = DAYS[-1]
    folder = YieldReport(date=day).folder()
    manifest = YieldReport(date=day).manifest()
    dies = Features(date=day).manifest()["rows"]["dies"]
    assert Score(date=day).manifest()["status"] == "scored"
    assert manifest["rows"] == {"dies": dies, "wafers": 3, "previous_day_wafers": 3}
    assert (
        len(list((folder / "maps").glob("*.png"))) == 3
        and len(list((folder / "outcomes").glob("*.png"))) == 3
    )
    assert {p.name for p in (folder / "stacks").glob("*.png")} == {
        "fab1_lot_" + lot + ".png" for lot in lots(day)
    } | {"fab1_all_lots.png"}
    assert read_json(Path(WaferYieldDaily(date=day).output().path))["report"] == str(folder / "index.html")


def lots(day: dt.date) -> set[str]:
    return set(pd.read_parquet(Features(date=day).folder() / "features.parquet")["lot_id"])


def test_the_paretos_add_up_to_the_dies_of_the_day(floor: Path) -> None:
    day = DAYS[-1]
    page = (YieldReport(date=day).folder() / "index.html").read_text()
    dies = Features(date=day).manifest()["rows"]["dies"]
    parts = pd.read_parquet(IngestFab(fab="fab1", date=day).folder() / "dies.parquet").assign(fab="fab1")
    table = views.die_table(parts)
    for column in ("soft_bin", "hard_bin"):
        pareto = views.bin_pareto(table, column)
        assert pareto["dies"].sum() == dies and pareto["cum_share"].iloc[-1] == pytest.approx(1.0)
        assert pareto["dies"].is_monotonic_decreasing
    failing = int((~table["passed"]).sum())
    body = re.search(r"<td>1</td><td>PASS</td><td>True</td><td>(\d+)</td>", page)
    assert body and int(body.group(1)) == dies - failing


def test_the_exports_hold_every_die(floor: Path) -> None:
    day = DAYS[-1]
    exports = YieldReport(date=day).folder() / "exports"
    parts = pd.read_parquet(IngestFab(fab="fab1", date=day).folder() / "dies.parquet").assign(fab="fab1")
    table = views.die_table(parts)
    maps = sorted((exports / "sinf").glob("*.sinf"))
    assert len(maps) == 3
    for path in maps:
        header, back = wafer_export.read_sinf(path.read_text())
        mine = table[table["wafer_id"] == header["WAFER"]]
        merged = mine.merge(back, on=["x_coord", "y_coord"], suffixes=("", "_sinf"), validate="one_to_one")
        assert len(merged) == len(mine) == len(back) and (merged["soft_bin"] == merged["soft_bin_sinf"]).all()
    csv = pd.read_csv(exports / "dies.csv", dtype={"wafer_id": str})
    assert list(csv.columns) == wafer_export.CSV_COLUMNS
    today, before = csv[csv["date"] == str(day)], csv[csv["date"] == str(DAYS[-2])]
    assert len(today) == len(table) and today["ft_failed"].isna().all()  # final test lands tomorrow
    passed_before = before[before["soft_bin"] == 1]
    assert (
        passed_before["ft_failed"].notna().all()
        and before.loc[before["soft_bin"] != 1, "ft_failed"].isna().all()
    )
    assert Score(date=DAYS[-2]).manifest()["status"] == "no production model"  # the first model came later
    assert before["p_fail"].isna().all() and today.loc[today["soft_bin"] == 1, "p_fail"].notna().all()


def test_the_page_is_self_contained_and_opens_in_chromium(floor: Path, tmp_path: Path) -> None:
    page = YieldReport(date=DAYS[-1]).folder() / "index.html"
    text = page.read_text()
    assert "<script" not in text and "<link" not in text and "url(" not in text
    sources = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(sources) == 3 + 3 + 2 + 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium")
    screenshot = tmp_path / "report.png"
    browser = [
        str(CHROMIUM),
        *BROWSER,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
    ]
    subprocess.run([*browser, page.as_uri()], check=True, capture_output=True, timeout=90)
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (1000, 1400) and pixels.std() > 0.05  # drawn, not one flat colour


def test_the_dashboard_links_the_newest_report(floor: Path, tmp_path: Path) -> None:
    newest = report_page.newest_report(floor)
    assert newest == YieldReport(date=DAYS[-1]).folder() / "index.html"
    page = dashboard.render(floor, days=30)[-1]
    (link,) = re.findall(r'Newest yield report: <a href="([^"]+)">', page.read_text())
    assert (page.parent / link).resolve() == newest.resolve()
