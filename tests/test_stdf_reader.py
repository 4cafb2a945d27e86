"""The STDF reader on real tester files: counts, engine agreement, and every kind of bad input."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.stdf import TABLES, StdfReadError, convert_stdf, read_stdf
from jobs.stdf.source import walk_records
from tests.helpers import canonical

# Facts from ../shared/stdf/README.md
EXPECTED = {
    "lot2.stdf.gz": {"parts": 1569, "PTR": 52403, "TSR": 179, "HBR": 10, "SBR": 10, "records": 58020},
    "lot3.stdf.gz": {"parts": 1619, "PTR": 54123},
    "metis_d10_2site.std": {"parts": 22, "PTR": 572},
    "libstdf_v42007_3head.stdf.bz2": {"parts": 1},
}
READABLE_BY_PYSTDF = ["lot2.stdf.gz", "lot3.stdf.gz", "metis_d10_2site.std"]


def record_offsets(data: bytes, order: str = ">") -> list[int]:
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += 4 + struct.unpack(order + "H", data[offset : offset + 2])[0]
    return offsets


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_files_convert_with_arrow_engine(shared_stdf: Path, tmp_path: Path, name: str) -> None:
    manifest = convert_stdf(shared_stdf / name, tmp_path / "out")
    facts = EXPECTED[name]
    assert manifest["rows"]["parts"] == facts["parts"]
    assert manifest["record_counts"]["PRR"] == facts["parts"]
    for record_type in ("PTR", "TSR", "HBR", "SBR"):
        if record_type in facts:
            assert manifest["record_counts"][record_type] == facts[record_type]
    if "records" in facts:
        assert sum(manifest["record_counts"].values()) == facts["records"]
    assert manifest["truncated"] is False
    for table in TABLES:
        assert pq.read_table(tmp_path / "out" / f"{table}.parquet").num_rows == manifest["rows"][table]


@pytest.mark.parametrize("name", READABLE_BY_PYSTDF)
def test_engines_agree_table_for_table(shared_stdf: Path, name: str) -> None:
    arrow = read_stdf(shared_stdf / name, engine="arrow")
    reference = read_stdf(shared_stdf / name, engine="pystdf")
    for table in TABLES:
        assert canonical(getattr(arrow, table)).equals(canonical(getattr(reference, table))), table
    assert arrow.file["record_counts"] == reference.file["record_counts"]


def test_lot2_tables_hold_what_the_tester_wrote(shared_stdf: Path) -> None:
    tables = read_stdf(shared_stdf / "lot2.stdf.gz")
    parts = tables.parts.to_pandas()
    assert set(parts["lot_id"]) == {"GAL-LOT"}
    assert set(parts["wafer_id"]) == {"GAL-LOT-02"}
    assert parts["part_index"].is_unique
    assert (parts["retest"] >= 0).all()
    assert tables.file["byte_order"] == "big-endian" and tables.file["tester_type"] == "A530"
    first = tables.tests.to_pylist()[0]
    assert first["test_num"] == 1000 and first["units"] == "v"
    assert first["lo_limit"] == pytest.approx(-0.9) and first["hi_limit"] == pytest.approx(-0.4)
    # every result belongs to a part that exists
    assert set(tables.results["part_index"].to_pylist()) <= set(parts["part_index"])
    # the parts per hard bin add up to the tester's own HBR summary; bin 1 is the good bin
    hbr = {r["bin_num"]: r["bin_count"] for r in tables.bins.to_pylist() if r["bin_type"] == "hard"}
    assert parts.groupby("hard_bin").size().to_dict() == hbr
    assert (parts["passed"] == (parts["hard_bin"] == 1)).all()


def test_two_site_little_endian_file_keeps_sites_apart(shared_stdf: Path) -> None:
    tables = read_stdf(shared_stdf / "metis_d10_2site.std")
    parts = tables.parts.to_pandas()
    assert tables.file["byte_order"] == "little-endian"
    assert sorted(parts["site_num"].unique()) == [0, 1]
    results = tables.results.to_pandas().merge(parts[["part_index", "site_num"]], on="part_index")
    assert results.groupby("part_index").size().eq(26).all()  # 26 PTRs per part, both sites


def test_v4_2007_three_head_file_and_mpr_pins(shared_stdf: Path) -> None:
    tables = read_stdf(shared_stdf / "libstdf_v42007_3head.stdf.bz2")
    assert tables.file["record_counts"]["VUR"] == 1 and tables.file["record_counts"]["STR"] == 1
    mpr = tables.results.filter(pc.equal(tables.results["kind"], "MPR"))
    assert mpr.num_rows >= 1 and mpr["pin_index"].null_count == 0
    assert tables.file["head_site_mismatches"] > 0  # this synthetic file numbers heads per record


def test_pystdf_engine_fails_clearly_where_pystdf_cannot_read(shared_stdf: Path) -> None:
    with pytest.raises(StdfReadError, match=r"libstdf_v42007_3head.*pystdf engine cannot read.*byte \d+"):
        read_stdf(shared_stdf / "libstdf_v42007_3head.stdf.bz2", engine="pystdf")


def test_wrong_cpu_type_is_overruled_by_far_length(tmp_path: Path, lot2_bytes: bytes) -> None:
    wrong = bytearray(lot2_bytes)
    assert wrong[4] == 1  # big-endian file, CPU_TYPE 1 ...
    wrong[4] = 2  # ... now claiming little-endian
    path = tmp_path / "wrong_cpu.stdf"
    path.write_bytes(wrong)
    tables = read_stdf(path)
    assert tables.file["byte_order"] == "big-endian" and tables.file["cpu_type_agrees"] is False
    assert tables.parts.num_rows == 1569
    with pytest.raises(StdfReadError, match="CPU_TYPE 2 does not match its big-endian FAR"):
        read_stdf(path, engine="pystdf")


@pytest.mark.parametrize("wrap", ["gzip", "bzip2", "zip"])
def test_compressed_inputs_read_like_plain(shared_stdf: Path, tmp_path: Path, wrap: str) -> None:
    plain = (shared_stdf / "metis_d10_2site.std").read_bytes()
    path = tmp_path / "metis.any"  # the magic bytes decide, not the name
    if wrap == "gzip":
        path.write_bytes(gzip.compress(plain))
    elif wrap == "bzip2":
        path.write_bytes(bz2.compress(plain))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("first.std", plain)
            archive.writestr("second.std", b"ignored")
    expected = read_stdf(shared_stdf / "metis_d10_2site.std")
    got = read_stdf(path)
    for table in TABLES:
        assert (
            getattr(got, table)
            .drop_columns(["source_file"] if table == "parts" else [])
            .equals(getattr(expected, table).drop_columns(["source_file"] if table == "parts" else []))
        )


# --- damaged input --------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["arrow", "pystdf"])
@pytest.mark.parametrize("cut", ["mid_record", "mid_header"])
def test_truncated_file_keeps_complete_parts(
    tmp_path: Path, lot2_bytes: bytes, engine: str, cut: str
) -> None:
    offsets = record_offsets(lot2_bytes)
    boundary = offsets[len(offsets) // 2]
    end = boundary + 7 if cut == "mid_record" else boundary + 2
    path = tmp_path / "cut.stdf"
    path.write_bytes(lot2_bytes[:end])
    tables = read_stdf(path, engine=engine)
    whole = read_stdf(_write(tmp_path / "whole.stdf", lot2_bytes))
    assert tables.file["truncated"] is True
    assert tables.file["truncated_at"] == boundary
    # exactly the parts whose PRR lies before the cut, with all of their results
    complete = whole.parts.filter(pc.less(whole.parts["part_index"], tables.parts.num_rows + 1))
    kept = set(tables.parts["part_index"].to_pylist())
    assert kept and kept <= set(complete["part_index"].to_pylist())
    kept_results = whole.results.filter(pc.is_in(whole.results["part_index"], tables.parts["part_index"]))
    assert tables.results.equals(kept_results)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("engine", ["arrow", "pystdf"])
def test_truncated_gzip_stream_is_salvaged(tmp_path: Path, lot2_bytes: bytes, engine: str) -> None:
    packed = gzip.compress(lot2_bytes)
    path = _write(tmp_path / "cut.stdf.gz", packed[: len(packed) // 2])
    tables = read_stdf(path, engine=engine)
    assert tables.file["truncated"] is True and 0 < tables.parts.num_rows < 1569


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"this is not an stdf file at all", "not an STDF file"),
        (b"\x00\x02", "too short"),
    ],
)
@pytest.mark.parametrize("engine", ["arrow", "pystdf"])
def test_junk_and_empty_files_fail_at_byte_zero(
    tmp_path: Path, content: bytes, message: str, engine: str
) -> None:
    path = _write(tmp_path / "bad.stdf", content)
    with pytest.raises(StdfReadError, match=message) as error:
        read_stdf(path, engine=engine)
    assert error.value.offset == 0 and str(path) in str(error.value)


def test_corrupted_record_header_is_an_error_with_offset(tmp_path: Path, lot2_bytes: bytes) -> None:
    offsets = record_offsets(lot2_bytes)
    start = offsets[len(offsets) // 3]
    damaged = bytearray(lot2_bytes)
    damaged[start : start + 64] = bytes((i * 97 + 13) % 251 for i in range(64))  # fixed "random" bytes
    path = _write(tmp_path / "corrupt.stdf", bytes(damaged))
    for engine in ("arrow", "pystdf"):
        with pytest.raises(StdfReadError, match="corrupt") as error:
            read_stdf(path, engine=engine)
        assert error.value.offset is not None and error.value.offset >= start


def test_bit_flip_in_gzip_stream_is_an_error(tmp_path: Path, shared_stdf: Path) -> None:
    packed = bytearray((shared_stdf / "lot2.stdf.gz").read_bytes())
    packed[len(packed) // 2] ^= 0x10
    path = _write(tmp_path / "flipped.stdf.gz", bytes(packed))
    with pytest.raises(StdfReadError, match="decompression failed") as error:
        read_stdf(path)
    assert error.value.offset is not None


def test_unknown_subtype_is_counted_but_foreign_type_is_corruption(tmp_path: Path, lot2_bytes: bytes) -> None:
    offsets = record_offsets(lot2_bytes)
    where = offsets[5]
    vendor = struct.pack(">HBB", 3, 1, 99) + b"abc"  # REC_TYP 1 (per-lot), unknown subtype 99
    path = _write(tmp_path / "vendor.stdf", lot2_bytes[:where] + vendor + lot2_bytes[where:])
    tables = read_stdf(path)
    assert tables.file["record_counts"]["UNKNOWN"] == 1 and tables.parts.num_rows == 1569
    foreign = struct.pack(">HBB", 3, 77, 1) + b"abc"
    path = _write(tmp_path / "foreign.stdf", lot2_bytes[:where] + foreign + lot2_bytes[where:])
    with pytest.raises(StdfReadError, match="REC_TYP 77") as error:
        read_stdf(path)
    assert error.value.offset == where


def test_walk_records_names_the_broken_record(lot2_bytes: bytes, tmp_path: Path) -> None:
    path = _write(tmp_path / "cut.stdf", lot2_bytes[:1001])
    walk = walk_records(path, ">")
    assert walk.truncated and walk.complete_end <= 1001 and walk.stream_end == 1001


# --- command line -------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.stdf", *args], capture_output=True, text=True)


def test_cli_converts_and_writes_manifest(shared_stdf: Path, tmp_path: Path) -> None:
    out = tmp_path / "lot2"
    done = run_cli("convert", str(shared_stdf / "lot2.stdf.gz"), str(out), "--engine", "arrow")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.parquet" for t in TABLES] + ["manifest.json"]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"] == "arrow" and len(manifest["input"]["sha256"]) == 64
    assert manifest["input"]["bytes"] == (shared_stdf / "lot2.stdf.gz").stat().st_size
    assert manifest["record_counts"]["PTR"] == 52403 and manifest["seconds"] > 0
    results = pd.read_parquet(out / "results.parquet")  # what an analyst does first
    assert len(results) == 52403 and results["test_txt"].notna().all()


@pytest.mark.parametrize("content", [b"", b"junk" * 100])
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path / "bad.stdf", content)
    done = run_cli("convert", str(path), str(tmp_path / "out"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "byte 0" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == ["bad.stdf"]  # no temporary folder left behind


def test_cli_missing_file(tmp_path: Path) -> None:
    done = run_cli("convert", str(tmp_path / "nope.stdf"), str(tmp_path / "out"))
    assert done.returncode == 1 and "no such file" in done.stderr and "Traceback" not in done.stderr


def test_conversion_replaces_output_and_clears_abandoned_work(shared_stdf: Path, tmp_path: Path) -> None:
    out = tmp_path / "metis"
    abandoned = tmp_path / ".metis.tmp-killed"  # what a killed conversion leaves behind
    abandoned.mkdir()
    (abandoned / "results.parquet").write_bytes(b"half")
    old = time.time() - 7 * 3600
    for leftover in (abandoned / "results.parquet", abandoned):
        os.utime(leftover, (old, old))
    convert_stdf(shared_stdf / "metis_d10_2site.std", out)
    first = json.loads((out / "manifest.json").read_text())
    convert_stdf(shared_stdf / "metis_d10_2site.std", out)  # a rerun replaces the folder whole
    assert json.loads((out / "manifest.json").read_text())["rows"] == first["rows"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metis"]


# --- written by our writer, read by both engines ------------------------------------------------


FIRST_PTR_FIELDS = dict(TEST_TXT="VDD_LEAK", ALARM_ID="", OPT_FLAG=0x02, RES_SCAL=0, LLM_SCAL=0, HLM_SCAL=0,
                        LO_LIMIT=-1.0, HI_LIMIT=2.0, UNITS="uA")  # fmt: skip


# pystdf 1.4 fails on an FTR cut before its array counts, so the FTR goes up to PGM_ICNT
FTR_COUNTS = dict(OPT_FLAG=0xFF, CYCL_CNT=0, REL_VADR=0, REPT_CNT=0, NUM_FAIL=0, XFAIL_AD=0, YFAIL_AD=0,
                  VECT_OFF=0, RTN_ICNT=0, PGM_ICNT=0)  # fmt: skip


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_writer_round_trip_through_both_engines(tmp_path: Path, byte_order: str) -> None:
    """Two sites, a first PTR with limits and short ones after it, an FTR, a retest.

    (No MPR: pystdf 1.4 cannot read its nibble arrays; the V4-2007 file covers MPR pins.)
    """
    from jobs.stdf.writer import StdfWriter

    path = tmp_path / "written.stdf.gz"
    with StdfWriter(path, byte_order) as w:
        w.write("MIR", SETUP_T=1_700_000_000, START_T=1_700_000_100, STAT_NUM=1, LOT_ID="LOTA",
                PART_TYP="P", NODE_NAM="node1", TSTR_TYP="93K", JOB_NAM="job", JOB_REV="7")  # fmt: skip
        w.write("WIR", HEAD_NUM=1, SITE_GRP=255, START_T=1_700_000_100, WAFER_ID="05")
        for touchdown, (x, y) in enumerate([(3, 4), (3, 4)]):  # the same die twice: a retest
            for site in (0, 1):
                w.write("PIR", HEAD_NUM=1, SITE_NUM=site)
            for site in (0, 1):
                first = touchdown == 0 and site == 0
                limits = FIRST_PTR_FIELDS if first else {}
                w.write("PTR", TEST_NUM=100, HEAD_NUM=1, SITE_NUM=site, TEST_FLG=0x80 if site else 0,
                        PARM_FLG=0, RESULT=0.5 + site, **limits)  # fmt: skip
                w.write("FTR", TEST_NUM=200, HEAD_NUM=1, SITE_NUM=site, TEST_FLG=0, **FTR_COUNTS)
            for site in (0, 1):
                w.write("PRR", HEAD_NUM=1, SITE_NUM=site, PART_FLG=0x08 if site else 0, NUM_TEST=3,
                        HARD_BIN=2 if site else 1, SOFT_BIN=20 if site else 1, X_COORD=x + site,
                        Y_COORD=y, TEST_T=120, PART_ID=f"{touchdown}{site}")  # fmt: skip
        w.write("WRR", HEAD_NUM=1, SITE_GRP=255, FINISH_T=1_700_000_900, PART_CNT=4, WAFER_ID="05")
        w.write("HBR", HEAD_NUM=255, SITE_NUM=255, HBIN_NUM=1, HBIN_CNT=2, HBIN_PF="P", HBIN_NAM="PASS")
        w.write("HBR", HEAD_NUM=255, SITE_NUM=255, HBIN_NUM=2, HBIN_CNT=2, HBIN_PF="F", HBIN_NAM="LEAK")
        w.write("MRR", FINISH_T=1_700_001_000)

    arrow, reference = read_stdf(path, engine="arrow"), read_stdf(path, engine="pystdf")
    for table in TABLES:
        assert canonical(getattr(arrow, table)).equals(canonical(getattr(reference, table))), table
    parts = arrow.parts.to_pylist()
    assert [(p["site_num"], p["x_coord"], p["passed"], p["retest"]) for p in parts] == [
        (0, 3, True, 0), (1, 4, False, 0), (0, 3, True, 1), (1, 4, False, 1)
    ]  # fmt: skip
    assert {p["wafer_id"] for p in parts} == {"05"} and {p["lot_id"] for p in parts} == {"LOTA"}
    tests = {t["test_num"]: t for t in arrow.tests.to_pylist()}
    assert (tests[100]["lo_limit"], tests[100]["hi_limit"], tests[100]["units"]) == (-1.0, 2.0, "uA")
    assert tests[100]["executions"] == 4 and tests[200]["units"] is None
    results = arrow.results.to_pandas()
    ptr = results[results["kind"] == "PTR"]
    assert (ptr["test_txt"] == "VDD_LEAK").all()  # short PTRs take the first one's name
    assert ptr.groupby("part_index")["failed"].first().tolist() == [False, True, False, True]
    assert ptr["result"].tolist() == [0.5, 1.5, 0.5, 1.5]
    assert arrow.file["start_time_utc"] == "2023-11-14T22:15:00Z" and arrow.file["wafers"] == ["05"]


@pytest.mark.parametrize("mistake", ["gives up", "mispredicts"])
def test_part_walker_mistakes_never_reach_the_tables(shared_stdf, monkeypatch, mistake):
    """The arrow engine places results by the PIRs and PRRs it finds between the PTRs; when it
    cannot account for the bytes it hands over to the parser's own, and when its findings are
    wrong the file is normalized again: either way the tables are those of the reference."""
    from jobs.stdf import walker

    path = shared_stdf / "metis_d10_2site.std"
    reference = read_stdf(path, engine="pystdf")
    if mistake == "gives up":  # headers read in the wrong byte order never add up
        monkeypatch.setattr(walker.PartWalker, "__init__", _walker_in_wrong_order(walker.PartWalker))
    else:  # PIRs taken for PRRs and back: parts placed wrongly, caught by the final check
        monkeypatch.setattr(walker, "PART_MARKS", {(5, 10): "PRR", (5, 20): "PIR"})
    arrow = read_stdf(path, engine="arrow")
    for table in TABLES:
        assert canonical(getattr(arrow, table)).equals(canonical(getattr(reference, table))), table


def _walker_in_wrong_order(walker_class):
    init = walker_class.__init__

    def wrong_order(self, window, order):
        init(self, window, ">" if order == "<" else "<")

    return wrong_order
