"""The structures real testers write, each in a small file by our writer, read by both engines.

Every file is read by `arrow` (stdf-convert, with the part walker) and by `pystdf` (the
reference), and the two must give the same tables: the differential test of the rules in
jobs/stdf/README.md. Implausible content (zeros, junk) is refused early with a reason.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.stdf import TABLES, StdfReadError, read_stdf
from jobs.stdf.plausibility import Plausibility
from jobs.stdf.writer import StdfWriter, encode_record, record_offsets
from tests.helpers import canonical

T0 = 1_700_000_000
MIR = dict(SETUP_T=T0, START_T=T0, STAT_NUM=1, LOT_ID="LOT7", PART_TYP="P", NODE_NAM="n", TSTR_TYP="93K",
           JOB_NAM="prog", JOB_REV="1")  # fmt: skip
FTR_COUNTS = dict(OPT_FLAG=0xFF, CYCL_CNT=0, REL_VADR=0, REPT_CNT=0, NUM_FAIL=0, XFAIL_AD=0, YFAIL_AD=0,
                  VECT_OFF=0, RTN_ICNT=0, PGM_ICNT=0)  # fmt: skip


class Floor:
    """A tiny tester: writes parts in the order a test names, with distinct results per part."""

    def __init__(self, writer: StdfWriter) -> None:
        self.w = writer
        self.value = 0.0

    def pir(self, head: int, site: int) -> None:
        self.w.write("PIR", HEAD_NUM=head, SITE_NUM=site)

    def results(self, head: int, site: int, n: int = 2) -> None:
        for test in range(n):
            self.value += 1
            self.w.write("PTR", TEST_NUM=100 + test, HEAD_NUM=head, SITE_NUM=site, TEST_FLG=0, PARM_FLG=0,
                         RESULT=self.value, TEST_TXT=f"T{test}")  # fmt: skip
        self.w.write("FTR", TEST_NUM=900, HEAD_NUM=head, SITE_NUM=site, TEST_FLG=0, **FTR_COUNTS)

    def prr(self, head: int, site: int, x: int, y: int, failed: bool = False) -> None:
        self.w.write("PRR", HEAD_NUM=head, SITE_NUM=site, PART_FLG=0x08 if failed else 0, NUM_TEST=3,
                     HARD_BIN=2 if failed else 1, SOFT_BIN=2 if failed else 1, X_COORD=x, Y_COORD=y,
                     TEST_T=100, PART_ID=f"{head}.{site}.{x}.{y}")  # fmt: skip


def write_file(path: Path, body: Callable[[Floor], None], wafer: bool = True, summary: bool = True) -> Path:
    with StdfWriter(path, "<") as w:
        w.write("MIR", **MIR)
        if wafer:
            w.write("WIR", HEAD_NUM=255, SITE_GRP=255, START_T=T0, WAFER_ID="W1")
        body(Floor(w))
        if wafer:
            w.write("WRR", HEAD_NUM=255, SITE_GRP=255, FINISH_T=T0 + 60, PART_CNT=4, WAFER_ID="W1")
        if summary:
            for head, site in ((1, 0), (1, 1), (255, 0)):  # per site, then all heads (SITE_NUM ignored)
                w.write(
                    "HBR", HEAD_NUM=head, SITE_NUM=site, HBIN_NUM=1, HBIN_CNT=2, HBIN_PF="P", HBIN_NAM="OK"
                )
            w.write("TSR", HEAD_NUM=255, SITE_NUM=255, TEST_TYP="P", TEST_NUM=100, EXEC_CNT=4, TEST_NAM="T0")
            w.write("PCR", HEAD_NUM=255, SITE_NUM=255, PART_CNT=4)
        w.write("MRR", FINISH_T=T0 + 100)
    return path


def no_pir(f: Floor) -> None:  # a part is its results followed by its PRR
    for x in range(3):
        f.results(1, 0)
        f.prr(1, 0, x, 0, failed=x == 1)


def results_before_pir(f: Floor) -> None:  # two sites; each site's results come before its PIR
    for x in range(2):
        f.results(1, 0)
        f.results(1, 1)
        f.pir(1, 0)
        f.pir(1, 1)
        f.results(1, 0, n=1)
        f.prr(1, 0, x, 0)
        f.prr(1, 1, x, 1)


def interleaved_heads_and_retests(f: Floor) -> None:  # PIR PIR ... PRR PRR on two heads; die (0,0) twice
    for touchdown in range(2):
        for head in (1, 2):
            f.pir(head, 0)
        for head in (2, 1):
            f.results(head, 0)
        for head in (2, 1):  # closed in another order than opened
            f.prr(head, 0, 0, head, failed=touchdown == 0)


def never_closed(f: Floor) -> None:  # the last part's results and an open PIR, never closed
    f.pir(1, 0)
    f.results(1, 0)
    f.prr(1, 0, 0, 0)
    f.results(1, 1)
    f.pir(1, 0)
    f.results(1, 0)


def v4_2007(f: Floor) -> None:  # V4-2007 records among the parts
    f.w.write("VUR", UPD_NAM=["Scan:2007.1"])
    f.w.write("PSR", CONT_FLG=0, PSR_INDX=1, PSR_NAM="pat", OPT_FLG=0, TOTP_CNT=0, LOCP_CNT=0)
    f.w.write("NMR", CONT_FLG=0, TOTM_CNT=1, LOCM_CNT=1, PMR_INDX=[1], ATPG_NAM=["n1"])
    f.w.write("CNR", CHN_NUM=1, BIT_POS=0, CELL_NAM="c")
    f.w.write("SSR", SSR_NAM="s", CHN_CNT=0)
    f.w.write("CDR", CONT_FLG=0, CDR_INDX=1, CHN_NAM="ch")
    f.pir(1, 0)
    f.results(1, 0)
    f.w.write("STR", CONT_FLG=0, TEST_NUM=5, HEAD_NUM=1, SITE_NUM=0, PSR_REF=1, TEST_FLG=0)
    f.prr(1, 0, 0, 0)


STRUCTURES = {
    "no_pir": (no_pir, {"parts_without_pir": 3, "results_in_parts_without_pir": 9}),
    "results_before_pir": (results_before_pir, {"results_before_pir": 12, "parts_without_pir": 0}),
    "interleaved_heads_and_retests": (interleaved_heads_and_retests, {"parts_without_pir": 0}),
    "never_closed": (never_closed, {"results_never_closed": 6, "pirs_never_closed": 1, "parts_lost": 2}),
    "v4_2007": (v4_2007, {}),
}


def both_engines(path: Path) -> tuple:
    arrow, reference = read_stdf(path, engine="arrow"), read_stdf(path, engine="pystdf")
    for table in TABLES:
        assert canonical(getattr(arrow, table)).equals(canonical(getattr(reference, table))), table
    assert arrow.file["structure"] == reference.file["structure"]
    return arrow, reference


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_engines_agree_on_every_structure(tmp_path: Path, name: str) -> None:
    body, expected = STRUCTURES[name]
    arrow, _ = both_engines(write_file(tmp_path / f"{name}.stdf", body))
    structure = arrow.file["structure"]
    assert {k: structure[k] for k in expected} == expected
    assert arrow.parts["part_index"].to_pylist() == list(range(arrow.parts.num_rows))


def test_a_part_without_pir_holds_the_results_since_the_previous_prr(tmp_path: Path) -> None:
    arrow, _ = both_engines(write_file(tmp_path / "no_pir.stdf.gz", no_pir))
    parts = arrow.parts.to_pylist()
    assert [(p["x_coord"], p["passed"], p["wafer_id"]) for p in parts] == [(0, True, "W1"), (1, False, "W1"),
                                                                          (2, True, "W1")]  # fmt: skip
    ptr = arrow.results.to_pandas().query("kind == 'PTR'")
    assert ptr.groupby("part_index")["result"].apply(list).tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_results_before_their_pir_belong_to_the_next_prr_on_their_site(tmp_path: Path) -> None:
    arrow, _ = both_engines(write_file(tmp_path / "before.stdf", results_before_pir))
    parts = arrow.parts.to_pandas().set_index("part_index")
    ptr = arrow.results.to_pandas().query("kind == 'PTR'")
    by_part = ptr.groupby("part_index")["result"].apply(list)
    site0 = parts.index[parts["site_num"] == 0]
    assert [by_part[p] for p in site0] == [[1.0, 2.0, 5.0], [6.0, 7.0, 10.0]]  # before and after the PIR
    assert arrow.file["open_parts_dropped"] == 0


def test_interleaved_heads_keep_their_parts_and_retests(tmp_path: Path) -> None:
    arrow, _ = both_engines(write_file(tmp_path / "heads.stdf", interleaved_heads_and_retests))
    parts = arrow.parts.to_pylist()
    assert [(p["head_num"], p["y_coord"], p["passed"], p["retest"]) for p in parts] == [
        (2, 2, False, 0), (1, 1, False, 0), (2, 2, True, 1), (1, 1, True, 1)
    ]  # fmt: skip
    ptr = arrow.results.to_pandas().query("kind == 'PTR'")
    assert ptr.groupby("part_index")["result"].apply(list).tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_summary_records_for_all_heads_follow_the_spec(tmp_path: Path) -> None:
    arrow, _ = both_engines(write_file(tmp_path / "summary.stdf", no_pir))
    bins = arrow.bins.to_pylist()
    assert [(b["head_num"], b["site_num"]) for b in bins] == [(1, 0), (1, 1), (255, 255)]  # SITE_NUM ignored
    assert arrow.file["structure"]["summary_records"] == {
        "all_heads": 3,
        "all_sites_of_a_head": 0,
        "one_site": 2,
    }


def test_v4_2007_records_are_skipped_with_a_count(tmp_path: Path) -> None:
    arrow, _ = both_engines(write_file(tmp_path / "v2007.stdf", v4_2007))
    skipped = arrow.file["structure"]["skipped_records"]
    assert {t: skipped.get(t) for t in ("VUR", "PSR", "NMR", "CNR", "SSR", "CDR", "STR")} == dict.fromkeys(
        ("VUR", "PSR", "NMR", "CNR", "SSR", "CDR", "STR"), 1
    )
    assert arrow.parts.num_rows == 1 and arrow.results.num_rows == 3


def test_a_stub_without_mir_is_refused_in_plain_words(tmp_path: Path) -> None:
    path = tmp_path / "stub.stdf"
    wir = encode_record("WIR", "<", HEAD_NUM=1, SITE_GRP=255, START_T=T0, WAFER_ID="W1234567890")
    path.write_bytes(encode_record("FAR", "<", CPU_TYPE=2, STDF_VER=4) + wir)
    for engine in ("arrow", "pystdf"):
        with pytest.raises(StdfReadError, match=r"no MIR \(the Master Information Record.*1 FAR, 1 WIR"):
            read_stdf(path, engine=engine)


def zeros_after_mir(path: Path, megabytes: int) -> Path:
    head = encode_record("FAR", "<", CPU_TYPE=2, STDF_VER=4) + encode_record("MIR", "<", **MIR)
    with gzip.open(path, "wb") as f:
        f.write(head)
        f.write(bytes(megabytes << 20))
    return path


@pytest.mark.parametrize("engine", ["arrow", "pystdf"])
def test_zeros_after_a_valid_mir_are_refused_early(tmp_path: Path, engine: str) -> None:
    path = zeros_after_mir(tmp_path / "zeros.stdf.gz", 4)
    with pytest.raises(StdfReadError, match=r"implausible content: \d+ of the first \d+ records") as e:
        read_stdf(path, engine=engine)
    assert e.value.offset < 2 << 20  # stopped long before the end


def test_no_parts_after_the_configured_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no_parts.stdf"
    with StdfWriter(path, "<") as w:
        w.write("MIR", **MIR)
        for i in range(3000):
            w.write("DTR", TEXT_DAT=f"tester log line {i} " + "x" * 200)
    limits = Plausibility(max_bytes_without_parts=100_000)
    with pytest.raises(StdfReadError, match=r"no part \(PIR, PRR or test result\) in the first \d+ bytes"):
        read_stdf(path, plausibility=limits)
    assert read_stdf(path).parts.num_rows == 0  # under the default limit: a file with no parts


def test_a_junk_record_mid_file_never_becomes_a_result(tmp_path: Path) -> None:
    path = write_file(tmp_path / "clean.stdf", no_pir)
    data = path.read_bytes()
    junk = (65000).to_bytes(2, "little") + bytes([15, 10]) + bytes(range(256)) * 253 + bytes(232)
    cut = int(record_offsets(data, "<")[4])  # among the first part's results
    damaged = tmp_path / "junk.stdf"
    damaged.write_bytes(data[:cut] + junk + data[cut:])
    clean, arrow = read_stdf(path), read_stdf(damaged)
    assert arrow.file["structure"]["implausible_records"] == {"PTR": 1}
    assert canonical(arrow.results).equals(canonical(clean.results))
    assert arrow.results.schema.field("failed").type == "bool"
    with pytest.raises(StdfReadError, match="pystdf engine cannot read this file"):  # its text is not ASCII
        read_stdf(damaged, engine="pystdf")


def test_engines_agree_on_every_shared_file(shared_stdf: Path) -> None:
    """Every real file: the same tables and structure notes, or pystdf says it cannot read it."""
    names = sorted(p.name for p in shared_stdf.iterdir() if p.name != "README.md")
    unreadable_by_pystdf = []
    for name in names:
        try:
            both_engines(shared_stdf / name)
        except StdfReadError as error:
            assert "pystdf engine cannot read this file" in str(error), name
            unreadable_by_pystdf.append(name)
    assert unreadable_by_pystdf == ["libstdf_v42007_3head.stdf.bz2"]  # pystdf 1.4 lacks V4-2007 records


def inspect_cli(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.stdf", "inspect", str(path)], capture_output=True, text=True
    )


def test_inspect_summarizes_a_readable_and_a_truncated_file(tmp_path: Path) -> None:
    path = write_file(tmp_path / "nopir.stdf.gz", results_before_pir)
    shown = inspect_cli(path)
    assert shown.returncode == 0 and shown.stderr == ""
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("nopir.stdf.gz: ") and "gzip, little-endian" in lines[0]
    assert lines[1].startswith("tester 93K node n, program prog rev 1, lot LOT7")
    assert "4 PRR" in lines[2] and "4 PIR" in lines[2]
    assert lines[3] == "parts by head/site: 1/0: 2, 1/1: 2"
    assert "results before pir 12" in shown.stdout and lines[-1] == "verdict: readable: 4 parts, 16 results"
    data = gzip.decompress(path.read_bytes())
    cut = tmp_path / "cut.stdf"
    cut.write_bytes(data[: int(record_offsets(data, "<")[-6]) + 3])  # inside a record before the summaries
    shown = inspect_cli(cut)
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) < 25
    assert re.search(r"verdict: TRUNCATED at byte \d+ .*: 4 complete parts kept, 0 lost", shown.stdout)


@pytest.mark.parametrize("kind", ["zeros", "stub", "not stdf", "missing"])
def test_inspect_of_an_unreadable_file_says_why_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.stdf"
    if kind == "zeros":
        path = zeros_after_mir(tmp_path / "bad.stdf.gz", 2)
    elif kind == "stub":
        path.write_bytes(
            encode_record("FAR", "<", CPU_TYPE=2, STDF_VER=4) + encode_record("WIR", "<", HEAD_NUM=1)
        )
    elif kind == "not stdf":
        path.write_bytes(b"hello, tester")
    shown = inspect_cli(path)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert len(shown.stderr.splitlines()) == 1 and shown.stderr.startswith(f"error: {path}: ")
    expected = {"zeros": "implausible content", "stub": "no MIR", "not stdf": "not an STDF file",
                "missing": "no such file"}[kind]  # fmt: skip
    assert expected in shown.stderr
    if kind in ("zeros", "stub"):  # still a summary of what is there
        assert "verdict: UNREADABLE" in shown.stdout and "records: " in shown.stdout


def test_a_result_without_verdict_reaches_the_gate_as_a_boolean(tmp_path: Path) -> None:
    """TEST_FLG bit 6 (no pass/fail indication) makes `failed` null: the day's results keep a
    nullable boolean column, so the gate's schema check passes (it once read "type object")."""
    from jobs.domain import quality
    from jobs.domain.results import read_all, read_parts
    from jobs.stdf import convert_stdf

    def no_verdict(f: Floor) -> None:
        f.w.write("PTR", TEST_NUM=1, HEAD_NUM=1, SITE_NUM=0, TEST_FLG=0x40, PARM_FLG=0, RESULT=1.0)
        f.results(1, 0)
        f.prr(1, 0, 0, 0)

    convert_stdf(write_file(tmp_path / "nv.stdf", no_verdict), tmp_path / "out")
    results = read_all(read_parts([tmp_path / "out"])[1])
    assert results["failed"].isna().sum() == 1 and str(results["failed"].dtype) == "boolean"
    assert quality._kind(results["failed"]) == "b"


def test_engines_agree_on_a_simulated_no_pir_wafer(tmp_path: Path) -> None:
    from jobs.simulation.simulate import main as simulate

    args = ["--root", str(tmp_path), "--start", "2026-11-10", "--days", "1", "--fabs", "fab1", "--lots", "1"]
    assert simulate([*args, "--wafers", "1", "--faults", "no_pir:fab1:2026-11-10", "--quiet"]) == 0
    wafer = next((tmp_path / "landing" / "fab1" / "2026-11-10").glob("*_01.stdf.gz"))
    arrow, _ = both_engines(wafer)
    assert arrow.file["record_counts"].get("PIR", 0) == 0
    assert arrow.file["structure"]["parts_without_pir"] == arrow.parts.num_rows > 1000
    assert arrow.file["structure"]["results_never_closed"] == 0
