"""The simulated test floor: layout, determinism, STDF content, truth, oracle AUC and faults."""

from __future__ import annotations

import calendar
import datetime as dt
import fnmatch
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import stdf_convert
from sklearn.metrics import roc_auc_score

from jobs.domain.part_text import format_part_txt, parse_part_txt
from jobs.simulation.faults import FAULT_GRAMMAR, parse_faults
from jobs.simulation.floor import FABS, Scale, lot_id
from jobs.simulation.programs import dialect_of, wafer_sort_program
from jobs.simulation.run import Run, simulate
from jobs.simulation.simulate import _faults_help, main
from jobs.stdf import read_stdf
from jobs.stdf.records import KNOWN_RECORD_TYPES
from tests.helpers import read_pystdf

DAYS = ["2026-11-16", "2026-11-17", "2026-11-18"]
SMALL = ["--start", DAYS[0], "--days", "3", "--fabs", "fab1,fab2", "--lots", "1", "--wafers", "3", "--quiet"]
FAULTS = ",".join(
    [
        "truncated:fab1:2026-11-16",
        "corrupted:fab1:2026-11-16",
        "offline:fab1:2026-11-17",
        "duplicated:fab2:2026-11-17",
        "localtime:fab2:2026-11-17..2026-11-30",
    ]
)


def run(root: Path, *args: str) -> Path:
    assert main(["--root", str(root), *args]) == 0
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("clean"), *SMALL, "--jobs", "1")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("faulty"), *SMALL, "--faults", FAULTS)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def epoch(day: str) -> int:
    return calendar.timegm(dt.date.fromisoformat(day).timetuple())


def wafer_files(root: Path, fab: str, day: str) -> list[Path]:
    return sorted(p for p in (root / "landing" / fab / day).glob("F?A*_??.stdf.gz"))


def fault(root: Path, kind: str) -> dict:
    entries = [
        e for e in json.loads((root / "truth" / "faults.json").read_text())["faults"] if e["kind"] == kind
    ]
    assert len(entries) == 1, entries
    return entries[0]


def test_landing_and_truth_layout(clean: Path) -> None:
    for fab in ("fab1", "fab2"):
        for i, day in enumerate(DAYS):
            folder = clean / "landing" / fab / day
            names = sorted(p.name for p in folder.iterdir())
            lot = lot_id(fab, dt.date.fromisoformat(day), 0)
            expected_ws = [f"{lot}_{w:02d}.stdf.gz" for w in (1, 2, 3)]
            expected_ft = (
                [] if i == 0 else [f"FT_{lot_id(fab, dt.date.fromisoformat(DAYS[i - 1]), 0)}.stdf.gz"]
            )
            assert names == sorted(expected_ws + expected_ft + ["_READY"])
            assert (folder / "_READY").stat().st_size == 0
            assert (folder / "_READY").stat().st_mtime >= max(p.stat().st_mtime for p in folder.iterdir())
            truth = pd.read_parquet(clean / "truth" / fab / f"{day}.parquet")
            assert list(truth.columns) == [
                "lot_id",
                "wafer_id",
                "x_coord",
                "y_coord",
                "p_fail_true",
                "ft_failed",
            ]
            assert [str(t) for t in truth.dtypes] in (
                ["object", "object", "int16", "int16", "float64", "bool"],
                ["str", "str", "int16", "int16", "float64", "bool"],
            )
            assert set(truth.wafer_id) == {"01", "02", "03"} and set(truth.lot_id) == {lot}
        # The last day's final test lands the day after, without a _READY (that day was not simulated).
        after = clean / "landing" / fab / "2026-11-19"
        assert [p.name for p in after.iterdir()] == [f"FT_{lot_id(fab, dt.date(2026, 11, 18), 0)}.stdf.gz"]
    oracle = json.loads((clean / "truth" / "oracle.json").read_text())
    assert sorted(oracle["days"]) == DAYS
    assert "localtime" not in (clean / "truth" / "README.md").read_text().split("## Faults applied")[1]


def test_same_arguments_give_identical_files(clean: Path, tmp_path: Path) -> None:
    again = run(tmp_path / "again", *SMALL, "--jobs", "2")  # in parallel this time
    assert files(again) == files(clean)
    landing = [p for p in files(clean) if p.startswith("landing/")]
    assert [(again / p).stat().st_mtime for p in landing] == [(clean / p).stat().st_mtime for p in landing]


def test_days_do_not_depend_on_the_run(clean: Path, tmp_path: Path) -> None:
    """Simulating day by day into one root gives the same files as one run (oracle.json merges)."""
    root = tmp_path / "split"
    for day in DAYS:
        run(
            root,
            "--start",
            day,
            "--days",
            "1",
            "--fabs",
            "fab1,fab2",
            "--lots",
            "1",
            "--wafers",
            "3",
            "--quiet",
        )
    assert files(root) == files(clean)


def test_wafer_sort_file_content(clean: Path) -> None:
    orders = set()
    for path in wafer_files(clean, "fab1", DAYS[1]) + wafer_files(clean, "fab2", DAYS[1]):
        t = stdf_convert.tables(path)
        mir, mrr = t["MIR"].to_pylist()[0], t["MRR"].to_pylist()[0]
        tester = next(x for f in FABS.values() for x in f.testers if x.node == mir["NODE_NAM"])
        assert t["FAR"]["CPU_TYPE"].to_pylist() == [2 if tester.byte_order == "<" else 1]
        orders.add(tester.byte_order)
        assert epoch(DAYS[1]) <= mir["START_T"] < mrr["FINISH_T"] < epoch(DAYS[1]) + 86_400
        assert t["WIR"]["START_T"].to_pylist() == [mir["START_T"]]
        assert t["WRR"]["FINISH_T"].to_pylist() == [mrr["FINISH_T"]] == [int(path.stat().st_mtime)]
        lot, wafer = path.name.removesuffix(".stdf.gz").split("_")
        assert mir["LOT_ID"] == lot and t["WIR"]["WAFER_ID"].to_pylist() == [wafer]

        prr = t["PRR"].to_pandas()
        assert prr.X_COORD.dtype == np.int16 and np.hypot(prr.X_COORD, prr.Y_COORD).max() < 23
        assert set(prr.SITE_NUM) == set(range(1, tester.sites + 1))
        retest = prr.PART_FLG.map(lambda b: b[0] & 0x02 > 0)
        assert 0 < retest.sum() < 0.1 * len(prr)
        assert retest.iloc[-retest.sum() :].all()  # retests come last ...
        first = set(zip(prr.X_COORD[~retest], prr.Y_COORD[~retest], strict=True))
        assert set(zip(prr.X_COORD[retest], prr.Y_COORD[retest], strict=True)) <= first  # ... on tested dies
        assert len(first) == (~retest).sum()
        passed = prr.SOFT_BIN == 1
        assert ((prr.HARD_BIN == 1) == passed).all() and 0.85 < passed[~retest].mean() < 0.99
        assert (prr.PART_FLG.map(lambda b: b[0] & 0x08 > 0) == ~passed).all()

        ptr = t["PTR"].to_pandas()
        first_ptr = ~ptr.TEST_NUM.duplicated()
        assert (ptr.TEST_TXT[first_ptr] != "").all() and (ptr.UNITS[first_ptr] != "").all()
        assert ptr.OPT_FLAG[first_ptr].notna().all() and ptr.HI_LIMIT[first_ptr].notna().all()
        assert (ptr.TEST_TXT[~first_ptr] == "").all() and ptr.OPT_FLAG[~first_ptr].isna().all()
        assert ptr.TEST_NUM.nunique() == 100 and t["FTR"].to_pandas().TEST_NUM.nunique() == 10
        assert set(ptr.UNITS[first_ptr]) >= {"V", "mA", "uA", "ns", "MHz"}

        hbr = t["HBR"].to_pandas()
        assert hbr[hbr.HEAD_NUM == 255].HBIN_CNT.sum() == len(prr)
        assert t["PCR"].to_pandas().query("HEAD_NUM == 255").PART_CNT.tolist() == [len(prr)]
        assert t["TSR"].num_rows == 110
    assert orders == {"<", ">"}


def test_parts_bracket_their_results(tmp_path: Path) -> None:
    """PIRs of a touchdown's sites, then their results, then their PRRs (read with pystdf)."""
    tiny = Scale(lots=1, wafers=1, wafer_radius=6.5, n_ptr=20, compresslevel=1)
    simulate(Run(tmp_path, (dt.date(2026, 11, 16),), ("fab1",), tiny), progress=False)
    path = wafer_files(tmp_path, "fab1", DAYS[0])[0]
    records = read_pystdf(path)
    assert [name for name, _ in records[:3]] == ["FAR", "MIR", "SDR"]
    assert records[-1][0] == "MRR"
    open_sites: set[int] = set()
    started = False  # results seen since the last PIR
    touchdown_sizes = []
    for name, fields in records:
        if name == "PIR":
            assert fields["SITE_NUM"] not in open_sites and not started
            open_sites.add(fields["SITE_NUM"])
        elif name in ("PTR", "FTR"):
            assert fields["SITE_NUM"] in open_sites
            started = True
        elif name == "PRR":
            if started:
                touchdown_sizes.append(len(open_sites))
            started = False
            open_sites.remove(fields["SITE_NUM"])
    assert not open_sites and max(touchdown_sizes) > 1
    converted = stdf_convert.tables(path)
    assert len(converted["PTR"]) == sum(name == "PTR" for name, _ in records)


def test_final_test_files_and_truth(clean: Path) -> None:
    for fab in ("fab1", "fab2"):
        for ws_day, ft_day in zip(DAYS, [*DAYS[1:], "2026-11-19"], strict=True):
            lot = lot_id(fab, dt.date.fromisoformat(ws_day), 0)
            t = stdf_convert.tables(clean / "landing" / fab / ft_day / f"FT_{lot}.stdf.gz")
            assert "WIR" not in t and "WRR" not in t
            assert t["MIR"]["LOT_ID"].to_pylist() == [lot] and t["MIR"]["TEST_COD"].to_pylist() == ["FT1"]
            prr = t["PRR"].to_pandas()
            assert (prr.X_COORD == -32768).all() and (prr.Y_COORD == -32768).all()
            keys = [parse_part_txt(s) for s in prr.PART_TXT]
            ft = pd.DataFrame(keys, columns=["lot_id", "wafer_id", "x_coord", "y_coord"])
            ft["ft_failed"] = (prr.HARD_BIN != 1).to_numpy()
            truth = pd.read_parquet(clean / "truth" / fab / f"{ws_day}.parquet")
            merged = truth.merge(ft, on=["lot_id", "wafer_id", "x_coord", "y_coord"], validate="1:1")
            assert len(merged) == len(truth) == len(prr)
            assert (merged.ft_failed_x == merged.ft_failed_y).all()
            assert 0.03 < truth.ft_failed.mean() < 0.12

            # Final test gets exactly the dies whose last wafer-sort result passed.
            good = set()
            for path in wafer_files(clean, fab, ws_day):
                ws = stdf_convert.tables(path, ["PRR", "WIR"])
                last = ws["PRR"].to_pandas().drop_duplicates(["X_COORD", "Y_COORD"], keep="last")
                wafer = ws["WIR"]["WAFER_ID"][0].as_py()
                good |= {
                    (wafer, x, y)
                    for x, y in zip(
                        last.X_COORD[last.SOFT_BIN == 1], last.Y_COORD[last.SOFT_BIN == 1], strict=True
                    )
                }
            assert set(zip(truth.wafer_id, truth.x_coord, truth.y_coord, strict=True)) == good


def test_part_txt_round_trip() -> None:
    texts = format_part_txt("F1A26327A01", np.array(["03", "25"]), np.array([12, -21]), np.array([-7, 0]))
    assert texts.tolist() == ["lot=F1A26327A01;wafer=03;x=12;y=-7", "lot=F1A26327A01;wafer=25;x=-21;y=0"]
    assert [parse_part_txt(s) for s in texts] == [
        ("F1A26327A01", "03", 12, -7),
        ("F1A26327A01", "25", -21, 0),
    ]
    for bad in ("", "lot=A;wafer=01;x=1", "lot=A;wafer=01;x=one;y=2", "serial 17"):
        with pytest.raises(ValueError, match="PART_TXT"):
            parse_part_txt(bad)


def test_oracle_auc(clean: Path) -> None:
    oracle = json.loads((clean / "truth" / "oracle.json").read_text())
    for day in DAYS:
        truth = pd.concat(
            [pd.read_parquet(clean / "truth" / fab / f"{day}.parquet") for fab in ("fab1", "fab2")]
        )
        auc = roc_auc_score(truth.ft_failed, truth.p_fail_true)
        assert 0.85 <= auc <= 0.92
        assert oracle["days"][day]["auc"] == pytest.approx(auc, abs=1e-4)
        assert oracle["days"][day]["dies"] == len(truth)
        assert set(oracle["days"][day]["fabs"]) == {"fab1", "fab2"}


def test_lot_ids_are_unique_across_fabs_and_days() -> None:
    ids = {
        lot_id(f, dt.date(2026, 1, 1) + dt.timedelta(days=d), i)
        for f in FABS
        for d in range(400)
        for i in range(3)
    }
    assert len(ids) == len(FABS) * 400 * 3
    assert lot_id("fab1", dt.date(2026, 11, 23), 0) == "F1A26327A01"


def unzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def test_truncated_file(clean: Path, faulty: Path) -> None:
    entry = fault(faulty, "truncated")
    path = faulty / entry["file"]
    with pytest.raises(stdf_convert.StdfError):
        stdf_convert.tables(path)
    cut, original = unzip(path), unzip(clean / entry["file"])
    assert len(cut) == entry["byte_offset"]
    assert 0.4 * len(original) < entry["byte_offset"] < 0.6 * len(original)
    assert original.startswith(cut) and entry["original_size"] == len(original)
    record = entry["record_offset"]
    size = 4 + int.from_bytes(original[record : record + 2], "little" if original[4] == 2 else "big")
    assert record < entry["byte_offset"] < record + size  # inside the record
    assert (original[record + 2], original[record + 3]) == (15, 10)  # a PTR: inside a part


def test_corrupted_file(clean: Path, faulty: Path) -> None:
    entry = fault(faulty, "corrupted")
    bad, good = unzip(faulty / entry["file"]), unzip(clean / entry["file"])
    offset = entry["byte_offset"]
    assert len(bad) == len(good) and bad[offset : offset + 64] != good[offset : offset + 64]
    assert bad[:offset] == good[:offset] and bad[offset + 64 :] == good[offset + 64 :]
    assert KNOWN_RECORD_TYPES[(good[offset + 2], good[offset + 3])] == entry["record_type"]
    order = "little" if good[4] == 2 else "big"
    offsets, pos = [], 0
    while pos < offset:
        offsets.append(pos)
        pos += 4 + int.from_bytes(good[pos : pos + 2], order)
    assert pos == offset  # the overwrite starts exactly at a record header
    assert entry["file"] != fault(faulty, "truncated")["file"]


def test_duplicated_file(faulty: Path) -> None:
    entry = fault(faulty, "duplicated")
    original, copy = faulty / entry["file"], faulty / entry["copy"]
    assert copy != original and copy.parent == original.parent and copy.name.endswith(".stdf.gz")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == hashlib.sha256(original.read_bytes()).hexdigest()
    assert entry["sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
    assert copy.stat().st_mtime > original.stat().st_mtime


def test_offline_fab_day(clean: Path, faulty: Path) -> None:
    entry = fault(faulty, "offline")
    assert (entry["fab"], entry["date"], entry["file"]) == ("fab1", "2026-11-17", None)
    folder = faulty / "landing" / "fab1" / "2026-11-17"
    assert not folder.exists() or not any(folder.iterdir())
    assert not (faulty / "truth" / "fab1" / "2026-11-17.parquet").exists()
    # The final test due that day lands the next day, before that day's _READY.
    late = faulty / "landing" / "fab1" / "2026-11-18" / "FT_F1A26320A01.stdf.gz"
    assert late.exists() and (late.parent / "_READY").exists()
    assert unzip(late) != b"" and (clean / "landing" / "fab1" / "2026-11-17" / late.name).exists()
    oracle = json.loads((faulty / "truth" / "oracle.json").read_text())
    assert list(oracle["days"]["2026-11-17"]["fabs"]) == ["fab2"]


def test_localtime_shift(clean: Path, faulty: Path) -> None:
    faults = json.loads((faulty / "truth" / "faults.json").read_text())["faults"]
    entries = [e for e in faults if e["kind"] == "localtime"]
    assert {e["fab"] for e in entries} == {"fab2"} and {e["offset_hours"] for e in entries} == {8}
    shifted = {f for e in entries for f in e["files"]}
    lots = {d: lot_id("fab2", dt.date.fromisoformat(d), 0) for d in DAYS}
    expected = {f"landing/fab2/{d}/{lots[d]}_{w:02d}.stdf.gz" for d in DAYS[1:] for w in (1, 2, 3)}
    expected |= {
        f"landing/fab2/{ft}/FT_{lots[ws]}.stdf.gz"
        for ws, ft in zip(DAYS, [*DAYS[1:], "2026-11-19"], strict=True)
    }
    assert shifted == expected  # tested from the 17th on: wafers of the 17th and 18th, FT landing 17th..19th
    for name in shifted:
        before, after = stdf_convert.tables(clean / name), stdf_convert.tables(faulty / name)
        for record, field in (("MIR", "SETUP_T"), ("MIR", "START_T"), ("MRR", "FINISH_T")):
            assert after[record][field][0].as_py() - before[record][field][0].as_py() == 8 * 3600
        if "WIR" in before:
            assert after["WIR"]["START_T"][0].as_py() - before["WIR"]["START_T"][0].as_py() == 8 * 3600
            assert after["PTR"].equals(before["PTR"])
        assert (faulty / name).stat().st_mtime == (clean / name).stat().st_mtime  # uploads stay UTC
    for name in files(faulty):
        if name.startswith("landing/fab2/2026-11-16/F2"):
            assert (faulty / name).read_bytes() == (clean / name).read_bytes()
    assert "localtime UTC+8 h" in (faulty / "truth" / "README.md").read_text()


def test_faults_leave_other_files_alone(clean: Path, faulty: Path) -> None:
    damaged = {e.get("file") for e in json.loads((faulty / "truth" / "faults.json").read_text())["faults"]}
    for name, data in files(faulty).items():
        if (
            name.startswith("landing/fab1/")
            and name not in damaged
            and "2026-11-17" not in name
            and "FT_" not in name
        ):
            assert data == (clean / name).read_bytes(), name


def test_fault_grammar() -> None:
    faults = parse_faults("offline:fab2:2026-11-18, localtime:fab2:2026-11-01..2026-11-30:+5.5")
    assert [(f.kind, f.fab, f.first, f.last, f.param) for f in faults] == [
        ("offline", "fab2", dt.date(2026, 11, 18), dt.date(2026, 11, 18), None),
        ("localtime", "fab2", dt.date(2026, 11, 1), dt.date(2026, 11, 30), 5.5),
    ]
    for bad, message in [
        ("melted:fab1:2026-11-18", "unknown kind"),
        ("offline:fab9:2026-11-18", "unknown fab"),
        ("offline:fab1:2026-11-31", "bad date"),
        ("offline:fab1", "expected"),
        ("truncated:fab1:2026-11-18:3", "takes no parameter"),
        ("dialect:fab1:2026-11-18:b", "takes no parameter"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_faults(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-02-30", "--days", "1"], "bad date"),
        (["--start", "2026-11-16", "--days", "1", "--faults", "melted:fab1:2026-11-16"], "unknown kind"),
        (["--start", "2026-11-16", "--days", "1", "--fabs", "fab1,fab7"], "unknown fab"),
        (["--start", "2026-11-16", "--days", "1", "--wafers", "26"], "at most 25"),
        (["--start", "2026-11-16", "--days", "0"], "at least 1"),
    ],
)
def test_command_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--root", str(tmp_path), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The dialect fault: a fab's own names and units for the same tests


def test_dialect_of() -> None:
    assert dialect_of("IDD_ACT1", "mA") == ("IDD_ACTIVE_1", "A", 0.001)
    assert dialect_of("IDD_ACT2_C1", "mA") == ("IDD_ACTIVE_2_C1", "A", 0.001)
    assert dialect_of("VOH_CLK", "V") == ("VOH_CLK", "mV", 1000.0)
    assert dialect_of("VOL_GPIO3_C1", "V") == ("VOL_GPIO3_C1", "mV", 1000.0)
    assert dialect_of("IIH_SDA", "uA") == ("IIH_SDA", "nA", 1000.0)
    assert dialect_of("IIL_TDI", "uA") == ("IIL_TDI", "nA", 1000.0)
    assert dialect_of("FMAX_RO2_C1", "MHz") == ("RO_FMAX_2_C1", "MHz", 1.0)
    assert dialect_of("VTH_N_PM3", "V") == ("VTN_PM_3", "V", 1.0)
    for unchanged in [("IDDQ_V1", "uA"), ("VREF_BG1", "V"), ("SCAN_CHAIN", ""), ("VOH_CLK", "mV")]:
        assert dialect_of(*unchanged) == (*unchanged, 1.0)  # other tests, or not in the rule's units
    program = wafer_sort_program(100)
    dialect = [dialect_of(n, u) for n, u in zip(program.names, program.units, strict=True)]
    assert len({name for name, _, _ in dialect}) == len(program)  # names stay unique
    assert {u for _, u, f in dialect if f != 1.0} == {"A", "mV", "nA"}


DIALECT_DAY = dt.date(2026, 11, 16)
DIALECT_SCALE = Scale(lots=1, wafers=2, wafer_radius=9.5, n_ptr=100, compresslevel=1)


@pytest.fixture(scope="module")
def dialect_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same small fab-day without and with the dialect fault."""
    roots = []
    for name, spec in (("standard", ""), ("dialect", f"dialect:fab1:{DIALECT_DAY}")):
        root = tmp_path_factory.mktemp(name)
        faults = tuple(parse_faults(spec))
        simulate(Run(root, (DIALECT_DAY,), ("fab1",), DIALECT_SCALE, faults=faults), progress=False, jobs=1)
        roots.append(root)
    return roots[0], roots[1]


def test_dialect_tables(dialect_pair: tuple[Path, Path]) -> None:
    standard, dialect = dialect_pair
    paths = wafer_files(dialect, "fab1", str(DIALECT_DAY))
    assert len(paths) == 2
    for path in paths:
        before, after = read_stdf(standard / path.relative_to(dialect)), read_stdf(path)
        assert after.parts.drop_columns("source_file").equals(before.parts.drop_columns("source_file"))

        # The catalogue: same test numbers, the dialect's names and units, limits scaled.
        old, new = before.tests.to_pandas(), after.tests.to_pandas()
        both = old.merge(new, on=["test_num", "kind"], suffixes=("", "_d"), validate="1:1")
        assert len(both) == len(old) == len(new) == 110
        expected = [dialect_of(t, u) for t, u in zip(both.test_txt, both.units, strict=True)]
        factor = np.array([f for _, _, f in expected])
        assert both.test_txt_d.tolist() == [n for n, _, _ in expected]
        assert both.units_d.tolist() == [u for _, u, _ in expected]
        assert (both.executions_d == both.executions).all() and both.res_scal_d.equals(both.res_scal)
        for limit in ("lo_limit", "hi_limit"):
            assert (both[limit].isna() == both[f"{limit}_d"].isna()).all()
            np.testing.assert_allclose(both[f"{limit}_d"] / factor, both[limit], rtol=2e-7)
        units = dict(zip(new.test_txt, new.units, strict=True))
        assert units["IDD_ACTIVE_1"] == "A" and units["VOH_CLK"] == units["VOL_CLK"] == "mV"
        assert units["IIH_CLK"] == units["IIL_CLK"] == "nA" and units["RO_FMAX_1"] == "MHz"
        assert {"IDD_ACT1", "FMAX_RO1", "VTH_N_PM1"}.isdisjoint(units) and "VTN_PM_1" in units

        # The results: by part and test number, the dialect's value / factor is the standard one.
        key = ["part_index", "test_num", "kind", "pin_index"]
        old_r, new_r = before.results.to_pandas(), after.results.to_pandas()
        results = old_r.merge(new_r, on=key, suffixes=("", "_d"), validate="1:1")
        assert len(results) == len(old_r) == len(new_r)
        f = results.test_txt.astype(str).map(dict(zip(both.test_txt, factor, strict=True)))
        assert (
            results.test_txt_d.astype(str) == results.test_txt.astype(str).map(lambda t: dialect_of(t, "")[0])
        ).all()
        for flag in ("failed", "alarm", "unreliable"):
            assert results[flag].equals(results[f"{flag}_d"])
        ptr = results.kind == "PTR"
        np.testing.assert_allclose(
            results.result_d[ptr].astype(float) / f[ptr], results.result[ptr].astype(float), rtol=2e-7
        )
        scaled = ptr & (f != 1.0)
        assert scaled.sum() > 1000 and (results.result_d[scaled] != results.result[scaled]).all()
        assert (results.result_d[ptr & (f == 1.0)] == results.result[ptr & (f == 1.0)]).all()
        voh = results.test_txt_d.astype(str).str.startswith("VOH_") & ~results.failed
        assert results.result_d[voh].between(2900, 3300).all()  # mV

        # The TSRs (not in the tables) use the same names and scaled statistics.
        tsr_old, tsr_new = (
            stdf_convert.tables(p, ["TSR"])["TSR"].to_pandas()
            for p in (standard / path.relative_to(dialect), path)
        )
        assert tsr_new.TEST_NUM.tolist() == tsr_old.TEST_NUM.tolist()
        standard_units = dict(zip(old.test_txt, old.units.fillna(""), strict=True))
        tsr = [dialect_of(n, standard_units[n]) for n in tsr_old.TEST_NAM]
        assert tsr_new.TEST_NAM.tolist() == [n for n, _, _ in tsr]
        tsr_factor = np.array([f for _, _, f in tsr])
        for column in ("TEST_MIN", "TEST_MAX", "TST_SUMS"):
            np.testing.assert_allclose(tsr_new[column] / tsr_factor, tsr_old[column], rtol=1e-6)


def test_dialect_leaves_truth_and_final_test_alone(dialect_pair: tuple[Path, Path]) -> None:
    standard, dialect = dialect_pair
    same = [n for n in files(standard) if not n.startswith("landing/fab1/2026-11-16/F1")]
    assert "truth/fab1/2026-11-16.parquet" in same and "truth/oracle.json" in same
    assert any(n.startswith("landing/fab1/2026-11-17/FT_") for n in same)
    for name in same:
        if name not in ("truth/faults.json", "truth/README.md"):
            assert (dialect / name).read_bytes() == (standard / name).read_bytes(), name
    changed = [n for n in files(dialect) if n not in same]
    assert len(changed) == 2 and all(
        (dialect / n).read_bytes() != (standard / n).read_bytes() for n in changed
    )
    assert "dialect in 2 wafer-sort file(s)" in (dialect / "truth" / "README.md").read_text()


def test_dialect_fault_entry_maps_back(dialect_pair: tuple[Path, Path]) -> None:
    """faults.json says enough to turn the dialect's catalogue back into the standard one."""
    standard, dialect = dialect_pair
    entry = fault(dialect, "dialect")
    assert (entry["fab"], entry["date"], entry["file"]) == ("fab1", "2026-11-16", None)
    assert entry["files"] == [
        p.relative_to(dialect).as_posix() for p in wafer_files(dialect, "fab1", "2026-11-16")
    ]
    assert entry["units"] == {
        "IDD_ACT*": ["mA", "A", 0.001],
        "VOH_*": ["V", "mV", 1000.0],
        "VOL_*": ["V", "mV", 1000.0],
        "IIH_*": ["uA", "nA", 1000.0],
        "IIL_*": ["uA", "nA", 1000.0],
    }
    renames = entry["renames"]
    assert renames["IDD_ACT1"] == "IDD_ACTIVE_1" and renames["FMAX_RO2_C1"] == "RO_FMAX_2_C1"
    assert renames["VTH_N_PM3"] == "VTN_PM_3" and len(renames) == 14
    standard_name = {v: k for k, v in renames.items()}
    for path in entry["files"]:
        back = read_stdf(dialect / path).tests.to_pandas()
        for i, row in back.iterrows():
            name = standard_name.get(row.test_txt, row.test_txt)
            for pattern, (unit, dialect_unit, factor) in entry["units"].items():
                if fnmatch.fnmatchcase(name, pattern) and row.units == dialect_unit:
                    back.loc[i, ["units", "lo_limit", "hi_limit"]] = [
                        unit,
                        row.lo_limit / factor,
                        row.hi_limit / factor,
                    ]
            back.loc[i, "test_txt"] = name
        original = read_stdf(standard / path).tests.to_pandas()
        pd.testing.assert_frame_equal(back, original, check_exact=False, rtol=2e-7)
    assert json.loads((dialect / "truth" / "oracle.json").read_text()) == json.loads(
        (standard / "truth" / "oracle.json").read_text()
    )


# ---------------------------------------------------------------------------------------------
# Results faults: missing tests, impossible outliers, a measurement drift (checked against the
# standard day of `dialect_pair`, simulated without faults)

RESULTS_FAULTS = {
    "missing": f"missing:fab1:{DIALECT_DAY}:25",
    "outlier": f"outlier:fab1:{DIALECT_DAY}:12",
    "drift": f"drift:fab1:{DIALECT_DAY}",
}
DIE_RESULT = ["x_coord", "y_coord", "retest", "test_num", "kind", "pin_index"]  # one result, in any file


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The day of `dialect_pair` with each results fault alone."""
    roots = {}
    for kind, spec in RESULTS_FAULTS.items():
        roots[kind] = tmp_path_factory.mktemp(kind)
        run = Run(roots[kind], (DIALECT_DAY,), ("fab1",), DIALECT_SCALE, faults=tuple(parse_faults(spec)))
        simulate(run, progress=False, jobs=1)
    return roots


def tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Parts, results, tests and TSRs of a wafer-sort file."""
    t = read_stdf(path)
    parts = t.parts.to_pandas().drop(columns="source_file")
    results = t.results.to_pandas()
    results["test_txt"] = results.test_txt.astype(str)
    results = results.merge(parts[["part_index", "x_coord", "y_coord", "retest"]], on="part_index")
    tsr = stdf_convert.tables(path, ["TSR"])["TSR"].to_pandas()
    return parts, results, t.tests.to_pandas(), tsr


def equal(a: pd.Series, b: pd.Series) -> bool:
    """Equal values, NaN (functional tests' results) equal to NaN."""
    return bool(np.array_equal(a.to_numpy(dtype=float), b.to_numpy(dtype=float), equal_nan=True))


def compare(results: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
    """The results of a damaged file next to the clean file's (`_b`), by die, pass and test."""
    both = results.merge(before, on=DIE_RESULT, how="outer", suffixes=("", "_b"), indicator=True)
    return both.rename(columns={"_merge": "present"})


def final_bins(parts: pd.DataFrame) -> pd.Series:
    """Each die's soft bin after its retest, by (x, y)."""
    return (
        parts.drop_duplicates(["x_coord", "y_coord"], keep="last")
        .set_index(["x_coord", "y_coord"])
        .soft_bin.sort_index()
    )


def assert_binned_by_its_results(parts: pd.DataFrame, results: pd.DataFrame) -> None:
    """Each part ran its tests in flow order (TEST_NUM order) up to its first failure, and is
    binned by it."""
    results = results.sort_values(["part_index", "test_num"], kind="stable")
    by_part = results.groupby("part_index")
    assert (by_part.size() == parts.set_index("part_index").num_test).all()
    assert (by_part.failed.any() == ~parts.set_index("part_index").passed).all()
    last = results.drop_duplicates("part_index", keep="last").set_index("part_index").sort_index()
    assert (last.failed == ~parts.set_index("part_index").passed).all()  # stops at the first failure


def assert_truth_and_final_test_alone(standard: Path, root: Path) -> None:
    same = [n for n in files(standard) if not n.startswith(f"landing/fab1/{DIALECT_DAY}/F1")]
    assert f"truth/fab1/{DIALECT_DAY}.parquet" in same and "truth/oracle.json" in same
    assert any(n.startswith("landing/fab1/2026-11-17/FT_") for n in same)
    for name in same:
        if name not in ("truth/faults.json", "truth/README.md"):
            assert (root / name).read_bytes() == (standard / name).read_bytes(), name


def test_missing_tests(dialect_pair: tuple[Path, Path], damaged: dict[str, Path]) -> None:
    standard, root = dialect_pair[0], damaged["missing"]
    entry = fault(root, "missing")
    assert (entry["spec"], entry["fab"], entry["date"]) == (
        RESULTS_FAULTS["missing"],
        "fab1",
        str(DIALECT_DAY),
    )
    paths = [p.relative_to(root).as_posix() for p in wafer_files(root, "fab1", str(DIALECT_DAY))]
    assert entry["file"] in paths and len(paths) == 2
    assert len(entry["tests"]) == len(set(entry["tests"])) == len(entry["test_nums"]) == 25
    dropped = set(entry["test_nums"])
    for name in paths:
        if name != entry["file"]:
            assert (root / name).read_bytes() == (standard / name).read_bytes()
    parts_b, results_b, tests_b, tsr_b = tables(standard / entry["file"])
    parts, results, tests, tsr = tables(root / entry["file"])

    # The tests the entry names are gone from the catalogue, the results and the TSRs; nothing else is.
    catalogue = tests_b.set_index("test_num")
    assert catalogue.loc[entry["test_nums"], "test_txt"].tolist() == entry["tests"]
    assert (catalogue.loc[entry["test_nums"], "kind"] == "PTR").all()
    assert sorted(tests.test_num) == sorted(set(tests_b.test_num) - dropped) and len(tests) == 85
    columns = ["test_num", "kind", "test_txt", "units", "lo_limit", "hi_limit"]
    pd.testing.assert_frame_equal(
        tests[columns].reset_index(drop=True),
        tests_b[~tests_b.test_num.isin(dropped)][columns].reset_index(drop=True),
    )
    assert dropped.isdisjoint(results.test_num) and dropped <= set(results_b.test_num)
    assert dropped.isdisjoint(tsr.TEST_NUM) and tsr.TEST_NUM.tolist() == sorted(set(tsr_b.TEST_NUM) - dropped)

    # The same dies measuring the same values; binned by the remaining tests.
    assert_binned_by_its_results(parts, results)
    first = parts.retest == 0
    assert parts[first][["x_coord", "y_coord"]].equals(parts_b[parts_b.retest == 0][["x_coord", "y_coord"]])
    both = compare(results, results_b)
    die = ["x_coord", "y_coord", "retest"]
    stopped = results_b.sort_values("test_num").groupby(die).test_num.last()  # the clean flow's last test
    # New results: of dies that had failed a dropped test and now run on.
    new = both[both.present == "left_only"].set_index(die).index
    assert len(new) > 0 and stopped.loc[new].isin(dropped).all()
    # Results gone: the dropped tests', and those of retests no longer needed.
    gone = both[both.present == "right_only"]
    retests = set(parts[parts.retest == 1].set_index(["x_coord", "y_coord"]).index)
    no_retest = np.array([(x, y) not in retests for x, y in zip(gone.x_coord, gone.y_coord, strict=True)])
    assert (gone.test_num.isin(dropped) | ((gone.retest == 1) & no_retest)).all()
    same = both[both.present == "both"]
    assert len(same) > 0.9 * len(results) and equal(same.result, same.result_b)
    assert (same.failed == same.failed_b).all()
    rebinned = (final_bins(parts) != final_bins(parts_b)).sum()
    assert rebinned == entry["rebinned_dies"] and 0 < rebinned < 0.1 * first.sum()
    assert (final_bins(parts) == 1).sum() >= (final_bins(parts_b) == 1).sum()  # only failures go
    assert_truth_and_final_test_alone(standard, root)
    assert f"missing 25 test(s) in {entry['file']}: " in (root / "truth" / "README.md").read_text()


def test_outlier_dies(dialect_pair: tuple[Path, Path], damaged: dict[str, Path]) -> None:
    standard, root = dialect_pair[0], damaged["outlier"]
    entry = fault(root, "outlier")
    assert entry["dies"] == len(entry["xy"]) == 12 == entry["rebinned_dies"]
    for name in (p.relative_to(root).as_posix() for p in wafer_files(root, "fab1", str(DIALECT_DAY))):
        if name != entry["file"]:
            assert (root / name).read_bytes() == (standard / name).read_bytes()
    parts_b, results_b, _, _ = tables(standard / entry["file"])
    parts, results, tests, tsr = tables(root / entry["file"])

    test = tests.set_index("test_num").loc[entry["test_num"]]
    assert (test.test_txt, test.units, test.kind) == (entry["test"], entry["units"], "PTR")
    assert (float(test.lo_limit), float(test.hi_limit)) == pytest.approx(
        (entry["lo_limit"], entry["hi_limit"])
    )
    value = np.float32(entry["value"])
    assert value == entry["value"] and not entry["lo_limit"] <= value <= entry["hi_limit"]
    assert abs(value) >= 1e6 * max(abs(entry["lo_limit"]), abs(entry["hi_limit"]))  # impossible

    # Exactly the recorded dies read the value, once each, fail the test there and get its bin.
    hits = results[(results.test_num == entry["test_num"]) & (results.result == value)]
    assert len(hits) == 12 and hits.failed.all() and hits.part_index.is_unique
    assert not (results.result.abs() >= abs(value)).drop(hits.index).any()
    hit_parts = parts.set_index("part_index").loc[hits.part_index]
    assert sorted(zip(hit_parts.x_coord, hit_parts.y_coord, strict=True)) == sorted(map(tuple, entry["xy"]))
    assert (hit_parts.retest == 0).all() and not hit_parts.passed.any()
    assert (hit_parts.soft_bin == entry["soft_bin"]).all() and (hit_parts.hard_bin == entry["hard_bin"]).all()
    assert (results[results.part_index.isin(hits.part_index)].test_num <= entry["test_num"]).all()  # stopped
    assert_binned_by_its_results(parts, results)
    assert (
        float(tsr.set_index("TEST_NUM").loc[entry["test_num"], "TEST_MAX" if value > 0 else "TEST_MIN"])
        == value
    )

    # Those dies passed in the clean file; every other part and result is the same.
    before = final_bins(parts_b)
    assert (before.loc[[tuple(xy) for xy in entry["xy"]]] == 1).all()
    others = ~parts.part_index.isin(hits.part_index)
    assert parts[others].reset_index(drop=True).equals(parts_b[others].reset_index(drop=True))
    both = compare(results, results_b)
    assert not (both.present == "left_only").any()
    not_run = both[both.present == "right_only"]  # the hit dies' tests after the outlier
    assert len(not_run) > 0 and not_run.part_index_b.isin(hits.part_index).all()
    both = both[both.present == "both"]
    hit = both.part_index.isin(hits.part_index) & (both.test_num == entry["test_num"])
    assert hit.sum() == 12 and (both.result_b[hit] != value).all() and not both.failed_b[hit].any()
    assert equal(both.result[~hit], both.result_b[~hit]) and (both.failed[~hit] == both.failed_b[~hit]).all()
    assert_truth_and_final_test_alone(standard, root)
    assert f"outlier {entry['test']} = " in (root / "truth" / "README.md").read_text()


def test_drift(dialect_pair: tuple[Path, Path], damaged: dict[str, Path]) -> None:
    standard, root = dialect_pair[0], damaged["drift"]
    entry = fault(root, "drift")
    paths = [p.relative_to(root).as_posix() for p in wafer_files(root, "fab1", str(DIALECT_DAY))]
    assert entry["file"] is None and entry["files"] == paths and len(entry["rebinned_dies"]) == 2
    assert (entry["family"], entry["units"], entry["shift_sigmas"]) == ("VTH_N_PM", "V", 1.5)
    assert entry["tests"] == ["VTH_N_PM1", "VTH_N_PM2", "VTH_N_PM3"]
    assert entry["sigma"] == 0.012 and entry["shift"] == pytest.approx(1.5 * 0.012)
    for name, rebinned in zip(paths, entry["rebinned_dies"], strict=True):
        parts_b, results_b, tests_b, _ = tables(standard / name)
        parts, results, tests, _ = tables(root / name)
        assert tests.drop(columns="executions").equals(tests_b.drop(columns="executions"))
        assert (tests.test_num.isin(entry["test_nums"]) == tests.test_txt.str.startswith("VTH_N_PM")).all()
        both = compare(results, results_b)
        assert (both.present == "both").mean() > 0.97  # the rest: tests after a (new or gone) failure
        both = both[both.present == "both"]
        family = both.test_num.isin(entry["test_nums"])
        diff = both.result[family].astype(float) - both.result_b[family].astype(float)
        assert family.sum() > 300 and abs(diff.median() - entry["shift"]) < 1e-6
        assert np.allclose(diff, entry["shift"], atol=1e-6)  # every reading, not just on average
        assert equal(both.result[~family], both.result_b[~family])
        assert (both.failed[~family] == both.failed_b[~family]).all()
        limits = tests.set_index("test_num").loc[both.test_num[family]]
        outside = (
            ~both.result[family].between(limits.lo_limit.to_numpy(), limits.hi_limit.to_numpy()).to_numpy()
        )
        assert (both.failed[family].to_numpy() == outside).all()
        assert_binned_by_its_results(parts, results)
        assert (final_bins(parts) != final_bins(parts_b)).sum() == rebinned < 0.05 * len(final_bins(parts))
        assert (final_bins(parts) == 1).mean() > (final_bins(parts_b) == 1).mean() - 0.05  # most still pass
    assert_truth_and_final_test_alone(standard, root)
    assert "drift VTH_N_PM* +1.5 sigma in 2 wafer-sort file(s)" in (root / "truth" / "README.md").read_text()


def test_results_faults_compose_with_the_dialect(tmp_path: Path, dialect_pair: tuple[Path, Path]) -> None:
    """All three and the dialect on one fab-day: the entries give the dialect's names, missing and
    outlier hit different files, and the truth and final test stay the clean run's."""
    spec = f"dialect:fab1:{DIALECT_DAY},drift:fab1:{DIALECT_DAY}:-2,missing:fab1:{DIALECT_DAY},"
    spec += f"outlier:fab1:{DIALECT_DAY}"  # the default counts: 3 tests, 20 dies
    simulate(
        Run(tmp_path, (DIALECT_DAY,), ("fab1",), DIALECT_SCALE, faults=tuple(parse_faults(spec))),
        progress=False,
        jobs=1,
    )
    drift, missing, outlier = (fault(tmp_path, kind) for kind in ("drift", "missing", "outlier"))
    assert drift["tests"] == ["VTN_PM_1", "VTN_PM_2", "VTN_PM_3"] and drift["shift"] == pytest.approx(-0.024)
    assert len(missing["tests"]) == 3 and missing["file"] != outlier["file"] and outlier["dies"] == 20
    for entry in (missing, outlier):
        parts, results, tests, _ = tables(tmp_path / entry["file"])
        names = dict(zip(tests.test_num, tests.test_txt, strict=True))
        assert_binned_by_its_results(parts, results)
        if entry is missing:
            assert set(entry["test_nums"]).isdisjoint(names)
        else:
            assert names[entry["test_num"]] == entry["test"]
            hits = results[
                (results.test_num == entry["test_num"]) & (results.result == np.float32(entry["value"]))
            ]
            assert len(hits) == 20 and hits.failed.all()
    assert_truth_and_final_test_alone(dialect_pair[0], tmp_path)


def test_results_fault_grammar() -> None:
    faults = parse_faults(
        "missing:fab1:2026-11-18..2026-11-19:5,outlier:fab2:2026-11-18,drift:fab3:2026-11-18:-2.5"
    )
    assert [(f.kind, f.fab, f.last, f.param) for f in faults] == [
        ("missing", "fab1", dt.date(2026, 11, 19), 5.0),
        ("outlier", "fab2", dt.date(2026, 11, 18), None),
        ("drift", "fab3", dt.date(2026, 11, 18), -2.5),
    ]
    for bad, message in [
        ("missing:fab1:2026-11-18:0", "whole number"),
        ("missing:fab1:2026-11-18:2.5", "whole number"),
        ("outlier:fab1:2026-11-18:-3", "whole number"),
        ("outlier:fab1:2026-11-18:many", "not a number"),
        ("drift:fab1:2026-11-18:0", "other than 0"),
        ("drift:fab1:2026-11-18:inf", "finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_faults(bad)
    for kind in ("missing", "outlier", "drift"):
        assert kind in FAULT_GRAMMAR and f"\n  {kind} " in _faults_help()
