"""The STDF writer: every record type read back identically by pystdf 1.4 and stdf-convert."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stdf_convert
from pystdf import V4

from jobs.stdf.records import ARRAY_COUNTS, KNOWN_RECORD_TYPES, LAYOUTS, RECORD_CODES
from jobs.stdf.writer import (
    PackedRecords,
    StdfEncodeError,
    StdfWriter,
    encode_record,
    interleave,
    pack_ftrs,
    pack_pirs,
    pack_prrs,
    pack_ptrs,
    pack_records,
    record_offsets,
)
from tests.helpers import read_pystdf

# One record of every type, with values in every field (arrays non-empty, strings non-empty).
SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("ATR", dict(MOD_TIM=1_790_000_000, CMD_LINE="filter -x")),
    ("VUR", dict(UPD_NAM=["V4-2007", "Scan:2007.1"])),
    ("MIR", dict(SETUP_T=1, START_T=2, STAT_NUM=3, MODE_COD="P", RTST_COD="N", PROT_COD=" ", BURN_TIM=60,
                 CMOD_COD=" ", LOT_ID="LOT1", PART_TYP="PMX7", NODE_NAM="T1", TSTR_TYP="J750", JOB_NAM="j",
                 JOB_REV="r", SBLOT_ID="s", OPER_NAM="o", EXEC_TYP="IG-XL", EXEC_VER="3.6", TEST_COD="WS1",
                 TST_TEMP="25", USER_TXT="u", AUX_FILE="a", PKG_TYP="p", FAMLY_ID="f", DATE_COD="d",
                 FACIL_ID="F1", FLOOR_ID="fl", PROC_ID="C40", OPER_FRQ="of", SPEC_NAM="sn", SPEC_VER="sv",
                 FLOW_ID="fi", SETUP_ID="si", DSGN_REV="dr", ENG_ID="e", ROM_COD="rc", SERL_NUM="sr",
                 SUPR_NAM="sp")),
    ("SDR", dict(HEAD_NUM=1, SITE_GRP=1, SITE_NUM=[1, 2, 3, 4], HAND_TYP="h", HAND_ID="hi", CARD_TYP="c",
                 CARD_ID="ci", LOAD_TYP="l", LOAD_ID="li", DIB_TYP="d", DIB_ID="di", CABL_TYP="c",
                 CABL_ID="ci", CONT_TYP="ct", CONT_ID="co", LASR_TYP="l", LASR_ID="la", EXTR_TYP="e",
                 EXTR_ID="ei")),
    ("PMR", dict(PMR_INDX=7, CHAN_TYP=2, CHAN_NAM="ch", PHY_NAM="ph", LOG_NAM="lo", HEAD_NUM=1, SITE_NUM=2)),
    ("PGR", dict(GRP_INDX=32768, GRP_NAM="grp", PMR_INDX=[7, 8])),
    ("PLR", dict(GRP_INDX=[32768], GRP_MODE=[0x20], GRP_RADX=[2], PGM_CHAR=["H"], RTN_CHAR=["L"],
                 PGM_CHAL=["0"], RTN_CHAL=["1"])),
    ("RDR", dict(RTST_BIN=[2, 5])),
    ("PSR", dict(CONT_FLG=0, PSR_INDX=1, PSR_NAM="pat", OPT_FLG=1, TOTP_CNT=1, PAT_BGN=[10], PAT_END=[20],
                 PAT_FILE=["f.pat"], PAT_LBL=["lbl"], FILE_UID=["uid"], ATPG_DSC=["dsc"], SRC_ID=["src"])),
    ("NMR", dict(CONT_FLG=0, TOTM_CNT=2, PMR_INDX=[7, 8], ATPG_NAM=["a", "b"])),
    ("CNR", dict(CHN_NUM=3, BIT_POS=70_000, CELL_NAM="cell/a")),
    ("SSR", dict(SSR_NAM="ssr", CHN_LIST=[1, 2, 3])),
    ("CDR", dict(CONT_FLG=0, CDR_INDX=1, CHN_NAM="chain", CHN_LEN=128, SIN_PIN=7, SOUT_PIN=8, M_CLKS=[1],
                 S_CLKS=[2, 3], INV_VAL=1, CELL_LST=["c0", "c1"])),
    ("WCR", dict(WAFR_SIZ=300.0, DIE_HT=6.25, DIE_WID=6.5, WF_UNITS=3, WF_FLAT="D", CENTER_X=0, CENTER_Y=-1,
                 POS_X="R", POS_Y="U")),
    ("WIR", dict(HEAD_NUM=1, SITE_GRP=255, START_T=1_790_000_100, WAFER_ID="03")),
    ("PIR", dict(HEAD_NUM=1, SITE_NUM=2)),
    ("PTR", dict(TEST_NUM=10001, HEAD_NUM=1, SITE_NUM=2, TEST_FLG=0x80, PARM_FLG=0x08, RESULT=1.25,
                 TEST_TXT="VOH_CLK", ALARM_ID="al", OPT_FLAG=0x02, RES_SCAL=-3, LLM_SCAL=-3, HLM_SCAL=-3,
                 LO_LIMIT=0.5, HI_LIMIT=1.0, UNITS="V", C_RESFMT="%7.3f", C_LLMFMT="%7.3f", C_HLMFMT="%7.3f",
                 LO_SPEC=0.25, HI_SPEC=1.5)),
    ("MPR", dict(TEST_NUM=20001, HEAD_NUM=1, SITE_NUM=2, TEST_FLG=0, PARM_FLG=0, RTN_STAT=[1, 2, 3],
                 RTN_RSLT=[0.5, 1.5, 2.5], TEST_TXT="mpr", ALARM_ID="", OPT_FLAG=0x02, RES_SCAL=0, LLM_SCAL=0,
                 HLM_SCAL=0, LO_LIMIT=0.0, HI_LIMIT=3.0, START_IN=0.25, INCR_IN=0.125, RTN_INDX=[7, 8, 9],
                 UNITS="V", UNITS_IN="V", C_RESFMT="%f", C_LLMFMT="%f", C_HLMFMT="%f", LO_SPEC=-1.0,
                 HI_SPEC=4.0)),
    ("FTR", dict(TEST_NUM=40001, HEAD_NUM=1, SITE_NUM=2, TEST_FLG=0x80, OPT_FLAG=0xC0, CYCL_CNT=1000,
                 REL_VADR=12, REPT_CNT=1, NUM_FAIL=2, XFAIL_AD=-3, YFAIL_AD=4, VECT_OFF=-5, RTN_INDX=[7, 8],
                 RTN_STAT=[1, 15], PGM_INDX=[9], PGM_STAT=[4], FAIL_PIN=(3, b"\x05"), VECT_NAM="v",
                 TIME_SET="ts", OP_CODE="op", TEST_TXT="SCAN", ALARM_ID="al", PROG_TXT="pt", RSLT_TXT="rt",
                 PATG_NUM=2, SPIN_MAP=b"\x01\x02")),
    ("STR", dict(CONT_FLG=0, TEST_NUM=40002, HEAD_NUM=1, SITE_NUM=2, PSR_REF=1, TEST_FLG=0, LOG_TYP="log",
                 TEST_TXT="str", CYC_SIZE=4, PMR_SIZE=2, CHN_SIZE=1, PAT_SIZE=8, BIT_SIZE=1, U1_SIZE=1,
                 U2_SIZE=2, U3_SIZE=4, UTX_SIZE=3, LIM_INDX=[1], LIM_SPEC=[2], COND_LST=["c"],
                 CYC_OFST=[100, 70_000], PMR_INDX=[7], CHN_NUM=[3], EXP_DATA=[1], CAP_DATA=[0], NEW_DATA=[1],
                 PAT_NUM=[5], BIT_POS=[6], USR1=[1], USR2=[2], USR3=[3], USER_TXT=["ab ", "cde"])),
    ("BPS", dict(SEQ_NAME="seq")),
    ("GDR", dict(GEN_DATA=[(1, 5), (10, "hi"), (7, 1.5), (5, -3)])),
    ("DTR", dict(TEXT_DAT="datalog text")),
    ("EPS", dict()),
    ("PRR", dict(HEAD_NUM=1, SITE_NUM=2, PART_FLG=0x02, NUM_TEST=110, HARD_BIN=1, SOFT_BIN=1, X_COORD=-12,
                 Y_COORD=7, TEST_T=604, PART_ID="17", PART_TXT="lot=L;wafer=03;x=-12;y=7",
                 PART_FIX=b"\x01\x02")),
    ("WRR", dict(HEAD_NUM=1, SITE_GRP=255, FINISH_T=1_790_000_900, PART_CNT=1500, RTST_CNT=20, ABRT_CNT=0,
                 GOOD_CNT=1400, FUNC_CNT=1450, WAFER_ID="03", FABWF_ID="fw", FRAME_ID="fr", MASK_ID="m",
                 USR_DESC="ud", EXC_DESC="ed")),
    ("TSR", dict(HEAD_NUM=255, SITE_NUM=255, TEST_TYP="P", TEST_NUM=10001, EXEC_CNT=1500, FAIL_CNT=3,
                 ALRM_CNT=0, TEST_NAM="VOH_CLK", SEQ_NAME="DC", TEST_LBL="l", OPT_FLAG=0xC8, TEST_TIM=0.002,
                 TEST_MIN=0.5, TEST_MAX=1.5, TST_SUMS=1500.25, TST_SQRS=1800.5)),
    ("HBR", dict(HEAD_NUM=255, SITE_NUM=255, HBIN_NUM=1, HBIN_CNT=1400, HBIN_PF="P", HBIN_NAM="PASS")),
    ("SBR", dict(HEAD_NUM=1, SITE_NUM=2, SBIN_NUM=50, SBIN_CNT=7, SBIN_PF="F", SBIN_NAM="CONTINUITY")),
    ("PCR", dict(HEAD_NUM=255, SITE_NUM=255, PART_CNT=1500, RTST_CNT=20, ABRT_CNT=0, GOOD_CNT=1400,
                 FUNC_CNT=1450)),
    ("MRR", dict(FINISH_T=1_790_001_000, DISP_COD="A", USR_DESC="user", EXC_DESC="exec")),
]  # fmt: skip


def canonical(record: str, field: str, value: Any) -> Any:
    """One representation for a written value, a pystdf value and a stdf-convert value."""
    stdf_type = dict(LAYOUTS[record])[field]
    if stdf_type.startswith("kx"):
        item = stdf_type[2:]
        if item == "N1":
            return list(value)
        return [canonical_item(item, v) for v in value]
    if stdf_type == "Vn":  # written as (code, value), stdf-convert gives {"TYPE": "U1", "U1": value, ...}
        return [v[1] if isinstance(v, tuple) else v[v["TYPE"]] if isinstance(v, dict) else v for v in value]
    return canonical_item(stdf_type, value)


def canonical_item(stdf_type: str, value: Any) -> Any:
    if stdf_type == "R4":
        return float(np.float32(value))
    if stdf_type == "B1":
        return value[0] if isinstance(value, bytes) else int(value)
    if stdf_type == "Bn":
        return bytes(value)
    if stdf_type == "Dn":
        if isinstance(value, dict):
            return value["bit_count"], value["bit_data"]
        return value if isinstance(value, tuple) else (8 * len(value), bytes(value))
    return value


def read_convert(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for name, table in stdf_convert.tables(path).items():
        for row in table.to_pylist():
            rows.append((row.pop("sequence_number"), name, {k: v for k, v in row.items() if k.isupper()}))
    return [(name, row) for _, name, row in sorted(rows, key=lambda r: r[0])]


def nibbles(packed: list[int], count: int) -> list[int]:
    """pystdf returns N1 arrays as the packed bytes."""
    return [b >> shift & 0x0F for b in packed for shift in (0, 4)][:count]


def test_layouts_match_the_readers() -> None:
    for name, layout in LAYOUTS.items():
        schema = stdf_convert.schema(name)
        theirs = [(f.name, f.metadata[b"stdf_type"].decode().replace("Kx", "kx")) for f in list(schema)[5:]]
        assert theirs == layout, name
        for array, count in ARRAY_COUNTS.get(name, {}).items():
            names = [f for f, _ in layout]
            assert names.index(count) < names.index(array)
    for record in V4.records:
        name = type(record).__name__.upper()
        assert RECORD_CODES[name] == (record.typ, record.sub)
        assert [f for f, _ in record.fieldMap] == [f for f, _ in LAYOUTS[name] if f != "FLD_CNT"]
    assert set(KNOWN_RECORD_TYPES.values()) == set(LAYOUTS)
    assert KNOWN_RECORD_TYPES[(0, 10)] == "FAR" and KNOWN_RECORD_TYPES[(15, 10)] == "PTR"


@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("suffix", [".stdf", ".stdf.gz", ".stdf.bz2"])
def test_every_record_round_trips(tmp_path: Path, byte_order: str, suffix: str) -> None:
    path = tmp_path / f"all{suffix}"
    with StdfWriter(path, byte_order) as writer:
        for name, fields in SAMPLES:
            writer.write(name, **fields)

    far = {"CPU_TYPE": 2 if byte_order == "<" else 1, "STDF_VER": 4}
    expected = [("FAR", far), *SAMPLES]
    converted = read_convert(path)
    assert [name for name, _ in converted] == [name for name, _ in expected]
    for (name, fields), (_, row) in zip(expected, converted, strict=True):
        for field, value in fields.items():
            assert canonical(name, field, row[field]) == canonical(name, field, value), (name, field)

    known = {type(r).__name__.upper() for r in V4.records}
    parsed = read_pystdf(path)
    assert [name for name, _ in parsed] == [name for name, _ in expected if name in known]
    for (name, fields), (_, row) in zip([e for e in expected if e[0] in known], parsed, strict=True):
        for field, value in fields.items():
            if field == "FLD_CNT":
                continue
            got = row[field]
            stdf_type = dict(LAYOUTS[name])[field]
            if stdf_type == "kxN1":
                got = nibbles(got, len(value))
            elif stdf_type == "Dn":
                got = (value[0], bytes(got)) if isinstance(value, tuple) else bytes(got)
            assert canonical(name, field, got) == canonical(name, field, value), (name, field)


def test_shortened_records_and_missing_defaults(tmp_path: Path) -> None:
    path = tmp_path / "short.stdf"
    with StdfWriter(path) as writer:
        writer.write("MIR", SETUP_T=1, START_T=2, STAT_NUM=3, LOT_ID="L")  # stops after LOT_ID
        writer.write("PIR", HEAD_NUM=1, SITE_NUM=1)
        writer.write("PTR", TEST_NUM=1, HEAD_NUM=1, SITE_NUM=1, TEST_FLG=0, PARM_FLG=0, RESULT=2.5)
        writer.write("PRR", HEAD_NUM=1, SITE_NUM=1, PART_FLG=0, NUM_TEST=1, HARD_BIN=1, Y_COORD=7)
        writer.write("MRR", FINISH_T=3)
    data = path.read_bytes()
    offsets = record_offsets(data)
    assert struct.unpack_from("<H", data, offsets[3])[0] == 12  # PTR: only the fields up to RESULT

    ptr = dict(read_pystdf(path))["PTR"]
    assert ptr["RESULT"] == 2.5 and ptr["TEST_TXT"] is None and ptr["LO_LIMIT"] is None
    tables = stdf_convert.tables(path)
    assert tables["PTR"]["OPT_FLAG"].to_pylist() == [None]
    assert tables["MIR"]["LOT_ID"].to_pylist() == ["L"]
    assert tables["MIR"]["MODE_COD"].to_pylist() == [" "]  # missing C1 is a space
    assert tables["MIR"]["BURN_TIM"].to_pylist() == [65535]  # the spec's missing value
    prr = tables["PRR"].to_pylist()[0]
    assert (prr["SOFT_BIN"], prr["X_COORD"], prr["Y_COORD"]) == (65535, -32768, 7)
    assert dict(read_pystdf(path))["PRR"]["TEST_T"] is None  # after Y_COORD: omitted


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_bulk_packers_equal_single_records(byte_order: str) -> None:
    rng = np.random.default_rng(3)
    n = 500
    test = rng.integers(1, 100_000, n).astype(np.uint32)
    site = rng.integers(1, 5, n).astype(np.uint8)
    flg = rng.choice([0, 0x80], n).astype(np.uint8)
    result = rng.normal(size=n).astype(np.float32)
    one_by_one = b"".join(
        encode_record("PTR", byte_order, TEST_NUM=int(t), HEAD_NUM=1, SITE_NUM=int(s), TEST_FLG=int(f),
                      PARM_FLG=0, RESULT=float(r), TEST_TXT="", ALARM_ID="")
        for t, s, f, r in zip(test, site, flg, result, strict=True)
    )  # fmt: skip
    packed = pack_ptrs(test, 1, site, flg, 0, result, byte_order)
    assert packed == one_by_one and len(packed) == 18 * n

    assert pack_pirs(1, site, byte_order) == b"".join(
        encode_record("PIR", byte_order, HEAD_NUM=1, SITE_NUM=int(s)) for s in site
    )
    ftrs = pack_ftrs(test[:3], 1, site[:3], flg[:3], byte_order, num_fail=[0, 1, 2])
    assert len(ftrs) == 3 * 42
    part_txt = ["", "lot=L;wafer=01;x=1;y=-2", "x" * 255]
    prrs = pack_prrs(1, site[:3], 0, 110, 1, [1, 50, 65535], [-1, 0, 1], [5, 6, -32768], 100,
                     part_id=["1", "22", "333"], part_txt=part_txt, byte_order=byte_order)  # fmt: skip
    soft, x, y = [1, 50, 65535], [-1, 0, 1], [5, 6, -32768]
    assert prrs == b"".join(
        encode_record("PRR", byte_order, HEAD_NUM=1, SITE_NUM=int(site[i]), PART_FLG=0, NUM_TEST=110,
                      HARD_BIN=1, SOFT_BIN=soft[i], X_COORD=x[i], Y_COORD=y[i], TEST_T=100,
                      PART_ID=["1", "22", "333"][i], PART_TXT=part_txt[i])
        for i in range(3)
    )  # fmt: skip


def test_interleave_puts_blocks_in_file_order() -> None:
    pirs = PackedRecords.uniform(pack_pirs(1, [1, 2]), 2)
    ptrs = PackedRecords.uniform(pack_ptrs([7, 7, 8], 1, [1, 2, 1], 0, 0, [1.0, 2.0, 3.0]), 3)
    prrs = pack_records(
        "PRR", HEAD_NUM=1, SITE_NUM=[1, 2], PART_FLG=0, NUM_TEST=2, HARD_BIN=1, PART_ID=["a", "bb"]
    )
    kinds = np.array([0, 0, 1, 1, 1, 2, 2])
    data = interleave(kinds, [pirs, ptrs, prrs])
    expected = pirs.data + ptrs.data + prrs.data
    assert data == expected
    mixed = interleave(np.array([0, 1, 2, 0, 1, 1, 2]), [pirs, ptrs, prrs])
    pir, ptr, prr = (
        [b.data[a:z] for a, z in zip(b.offsets[:-1], b.offsets[1:], strict=True)] for b in (pirs, ptrs, prrs)
    )
    assert mixed == pir[0] + ptr[0] + prr[0] + pir[1] + ptr[1] + ptr[2] + prr[1]
    assert record_offsets(mixed).tolist() == [0, 6, 24, 47, 53, 71, 89]
    with pytest.raises(ValueError, match="block 1"):
        interleave(np.array([0, 0, 1, 2, 2]), [pirs, ptrs, prrs])


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "broken.stdf.gz"
    with pytest.raises(RuntimeError), StdfWriter(path) as writer:
        writer.write("MIR", SETUP_T=1, START_T=1, STAT_NUM=1)
        assert not path.exists()  # in progress: only a hidden temporary file
        raise RuntimeError("tester crashed")
    assert list(tmp_path.iterdir()) == []


def test_bad_values_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(StdfEncodeError, match="not ASCII"):
        encode_record("MIR", LOT_ID="Löt")
    with pytest.raises(StdfEncodeError, match="not ASCII"):
        pack_records("PRR", HEAD_NUM=1, SITE_NUM=[1, 2], PART_ID=["ok", "µ"])
    with pytest.raises(StdfEncodeError, match="U1"):
        encode_record("PIR", HEAD_NUM=256, SITE_NUM=1)
    with pytest.raises(StdfEncodeError, match="outside"):
        pack_pirs(1, [1, 300])
    with pytest.raises(StdfEncodeError, match="at most 255"):
        encode_record("DTR", TEXT_DAT="x" * 256)
    with pytest.raises(StdfEncodeError, match="no field"):
        encode_record("PIR", HEAD_NUM=1, SITE=1)
    with pytest.raises(StdfEncodeError, match="items but"):
        encode_record("SDR", HEAD_NUM=1, SITE_GRP=1, SITE_CNT=3, SITE_NUM=[1, 2])
    path = tmp_path / "x.stdf"
    with pytest.raises(StdfEncodeError), StdfWriter(path) as writer:
        writer.write("MIR", SETUP_T=1, START_T=1, STAT_NUM=1, LOT_ID="Löt")
    assert not path.exists()


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "x.stdf.gz", tmp_path / "b" / "x.stdf.gz"]
    for path in paths:
        path.parent.mkdir()
        with StdfWriter(path, ">", compresslevel=1) as writer:
            writer.write("MIR", SETUP_T=1, START_T=2, STAT_NUM=3, LOT_ID="L")
            writer.write_bytes(pack_ptrs(np.arange(1000), 1, 1, 0, 0, np.arange(1000) / 7, ">"))
            assert writer.bytes_written == 6 + 21 + 18 * 1000
    first, second = (p.read_bytes() for p in paths)
    assert first == second
    assert struct.unpack_from("<I", first, 4)[0] == 0  # gzip header mtime
    assert gzip.decompress(first)[:6] == bytes([0, 2, 0, 10, 1, 4])  # big-endian FAR, CPU_TYPE 1
