"""STDF V4 record layouts, as the specification lists them (plus the V4-2007 additions).

Field names and order are the specification's, and the same as stdf-convert's column names.
Field types are the specification's codes without the asterisk:

======  ==============================================================================
U1..U8  unsigned integer of 1, 2, 4 or 8 bytes       I1..I8  signed integer
R4, R8  IEEE float of 4 or 8 bytes                   C1      one character
Cn      string, one length byte then up to 255 bytes Sn      string with a 2-byte length (V4-2007)
B1      one byte of flags                            Bn      bytes, one length byte first
Dn      bit field, a 2-byte bit count first          N1      a nibble (only in arrays)
Vn      GDR's typed values                           kxT     array of T (e.g. kxU2)
kxUf    array of unsigned ints whose width (1, 2, 4, 8 bytes) is given by another field (STR)
kxCf    array of fixed-width strings whose width is given by another field (STR)
======  ==============================================================================

An array's element count is an earlier field of the same record: `ARRAY_COUNTS` names it,
e.g. ``ARRAY_COUNTS["MPR"]["RTN_STAT"] == "RTN_ICNT"``. `MISSING` gives the value the
specification defines as "missing/invalid" for each optional field; other fields default to
zero, an empty string, a space (C1) or an empty array.
"""

from __future__ import annotations

from typing import Any

# (REC_TYP, REC_SUB) -> record name, for every V4 record and the V4-2007 additions.
KNOWN_RECORD_TYPES: dict[tuple[int, int], str] = {
    (0, 10): "FAR",
    (0, 20): "ATR",
    (0, 30): "VUR",  # V4-2007
    (1, 10): "MIR",
    (1, 20): "MRR",
    (1, 30): "PCR",
    (1, 40): "HBR",
    (1, 50): "SBR",
    (1, 60): "PMR",
    (1, 62): "PGR",
    (1, 63): "PLR",
    (1, 70): "RDR",
    (1, 80): "SDR",
    (1, 90): "PSR",  # V4-2007
    (1, 91): "NMR",  # V4-2007
    (1, 92): "CNR",  # V4-2007
    (1, 93): "SSR",  # V4-2007
    (1, 94): "CDR",  # V4-2007
    (2, 10): "WIR",
    (2, 20): "WRR",
    (2, 30): "WCR",
    (5, 10): "PIR",
    (5, 20): "PRR",
    (10, 30): "TSR",
    (15, 10): "PTR",
    (15, 15): "MPR",
    (15, 20): "FTR",
    (15, 30): "STR",  # V4-2007
    (20, 10): "BPS",
    (20, 20): "EPS",
    (50, 10): "GDR",
    (50, 30): "DTR",
}

# Record name -> (REC_TYP, REC_SUB).
RECORD_CODES: dict[str, tuple[int, int]] = {name: code for code, name in KNOWN_RECORD_TYPES.items()}

# Record name -> [(field name, STDF type)], in file order (the header REC_LEN/REC_TYP/REC_SUB excluded).
LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "FAR": [("CPU_TYPE", "U1"), ("STDF_VER", "U1")],
    "ATR": [("MOD_TIM", "U4"), ("CMD_LINE", "Cn")],
    # The count-and-array form of VUR (V4-2007's errata), as stdf-convert reads it.
    "VUR": [("UPD_CNT", "U1"), ("UPD_NAM", "kxCn")],
    "MIR": [
        ("SETUP_T", "U4"),
        ("START_T", "U4"),
        ("STAT_NUM", "U1"),
        ("MODE_COD", "C1"),
        ("RTST_COD", "C1"),
        ("PROT_COD", "C1"),
        ("BURN_TIM", "U2"),
        ("CMOD_COD", "C1"),
        ("LOT_ID", "Cn"),
        ("PART_TYP", "Cn"),
        ("NODE_NAM", "Cn"),
        ("TSTR_TYP", "Cn"),
        ("JOB_NAM", "Cn"),
        ("JOB_REV", "Cn"),
        ("SBLOT_ID", "Cn"),
        ("OPER_NAM", "Cn"),
        ("EXEC_TYP", "Cn"),
        ("EXEC_VER", "Cn"),
        ("TEST_COD", "Cn"),
        ("TST_TEMP", "Cn"),
        ("USER_TXT", "Cn"),
        ("AUX_FILE", "Cn"),
        ("PKG_TYP", "Cn"),
        ("FAMLY_ID", "Cn"),
        ("DATE_COD", "Cn"),
        ("FACIL_ID", "Cn"),
        ("FLOOR_ID", "Cn"),
        ("PROC_ID", "Cn"),
        ("OPER_FRQ", "Cn"),
        ("SPEC_NAM", "Cn"),
        ("SPEC_VER", "Cn"),
        ("FLOW_ID", "Cn"),
        ("SETUP_ID", "Cn"),
        ("DSGN_REV", "Cn"),
        ("ENG_ID", "Cn"),
        ("ROM_COD", "Cn"),
        ("SERL_NUM", "Cn"),
        ("SUPR_NAM", "Cn"),
    ],
    "MRR": [("FINISH_T", "U4"), ("DISP_COD", "C1"), ("USR_DESC", "Cn"), ("EXC_DESC", "Cn")],
    "PCR": [
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("PART_CNT", "U4"),
        ("RTST_CNT", "U4"),
        ("ABRT_CNT", "U4"),
        ("GOOD_CNT", "U4"),
        ("FUNC_CNT", "U4"),
    ],
    "HBR": [
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("HBIN_NUM", "U2"),
        ("HBIN_CNT", "U4"),
        ("HBIN_PF", "C1"),
        ("HBIN_NAM", "Cn"),
    ],
    "SBR": [
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("SBIN_NUM", "U2"),
        ("SBIN_CNT", "U4"),
        ("SBIN_PF", "C1"),
        ("SBIN_NAM", "Cn"),
    ],
    "PMR": [
        ("PMR_INDX", "U2"),
        ("CHAN_TYP", "U2"),
        ("CHAN_NAM", "Cn"),
        ("PHY_NAM", "Cn"),
        ("LOG_NAM", "Cn"),
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
    ],
    "PGR": [("GRP_INDX", "U2"), ("GRP_NAM", "Cn"), ("INDX_CNT", "U2"), ("PMR_INDX", "kxU2")],
    "PLR": [
        ("GRP_CNT", "U2"),
        ("GRP_INDX", "kxU2"),
        ("GRP_MODE", "kxU2"),
        ("GRP_RADX", "kxU1"),
        ("PGM_CHAR", "kxCn"),
        ("RTN_CHAR", "kxCn"),
        ("PGM_CHAL", "kxCn"),
        ("RTN_CHAL", "kxCn"),
    ],
    "RDR": [("NUM_BINS", "U2"), ("RTST_BIN", "kxU2")],
    "SDR": [
        ("HEAD_NUM", "U1"),
        ("SITE_GRP", "U1"),
        ("SITE_CNT", "U1"),
        ("SITE_NUM", "kxU1"),
        ("HAND_TYP", "Cn"),
        ("HAND_ID", "Cn"),
        ("CARD_TYP", "Cn"),
        ("CARD_ID", "Cn"),
        ("LOAD_TYP", "Cn"),
        ("LOAD_ID", "Cn"),
        ("DIB_TYP", "Cn"),
        ("DIB_ID", "Cn"),
        ("CABL_TYP", "Cn"),
        ("CABL_ID", "Cn"),
        ("CONT_TYP", "Cn"),
        ("CONT_ID", "Cn"),
        ("LASR_TYP", "Cn"),
        ("LASR_ID", "Cn"),
        ("EXTR_TYP", "Cn"),
        ("EXTR_ID", "Cn"),
    ],
    "PSR": [
        ("CONT_FLG", "B1"),
        ("PSR_INDX", "U2"),
        ("PSR_NAM", "Cn"),
        ("OPT_FLG", "B1"),
        ("TOTP_CNT", "U2"),
        ("LOCP_CNT", "U2"),
        ("PAT_BGN", "kxU8"),
        ("PAT_END", "kxU8"),
        ("PAT_FILE", "kxCn"),
        ("PAT_LBL", "kxCn"),
        ("FILE_UID", "kxCn"),
        ("ATPG_DSC", "kxCn"),
        ("SRC_ID", "kxCn"),
    ],
    "NMR": [
        ("CONT_FLG", "B1"),
        ("TOTM_CNT", "U2"),
        ("LOCM_CNT", "U2"),
        ("PMR_INDX", "kxU2"),
        ("ATPG_NAM", "kxCn"),
    ],
    "CNR": [("CHN_NUM", "U2"), ("BIT_POS", "U4"), ("CELL_NAM", "Sn")],
    "SSR": [("SSR_NAM", "Cn"), ("CHN_CNT", "U2"), ("CHN_LIST", "kxU2")],
    "CDR": [
        ("CONT_FLG", "B1"),
        ("CDR_INDX", "U2"),
        ("CHN_NAM", "Cn"),
        ("CHN_LEN", "U4"),
        ("SIN_PIN", "U2"),
        ("SOUT_PIN", "U2"),
        ("MSTR_CNT", "U1"),
        ("M_CLKS", "kxU2"),
        ("SLAV_CNT", "U1"),
        ("S_CLKS", "kxU2"),
        ("INV_VAL", "U1"),
        ("LST_CNT", "U2"),
        ("CELL_LST", "kxSn"),
    ],
    "WIR": [("HEAD_NUM", "U1"), ("SITE_GRP", "U1"), ("START_T", "U4"), ("WAFER_ID", "Cn")],
    "WRR": [
        ("HEAD_NUM", "U1"),
        ("SITE_GRP", "U1"),
        ("FINISH_T", "U4"),
        ("PART_CNT", "U4"),
        ("RTST_CNT", "U4"),
        ("ABRT_CNT", "U4"),
        ("GOOD_CNT", "U4"),
        ("FUNC_CNT", "U4"),
        ("WAFER_ID", "Cn"),
        ("FABWF_ID", "Cn"),
        ("FRAME_ID", "Cn"),
        ("MASK_ID", "Cn"),
        ("USR_DESC", "Cn"),
        ("EXC_DESC", "Cn"),
    ],
    "WCR": [
        ("WAFR_SIZ", "R4"),
        ("DIE_HT", "R4"),
        ("DIE_WID", "R4"),
        ("WF_UNITS", "U1"),
        ("WF_FLAT", "C1"),
        ("CENTER_X", "I2"),
        ("CENTER_Y", "I2"),
        ("POS_X", "C1"),
        ("POS_Y", "C1"),
    ],
    "PIR": [("HEAD_NUM", "U1"), ("SITE_NUM", "U1")],
    "PRR": [
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("PART_FLG", "B1"),
        ("NUM_TEST", "U2"),
        ("HARD_BIN", "U2"),
        ("SOFT_BIN", "U2"),
        ("X_COORD", "I2"),
        ("Y_COORD", "I2"),
        ("TEST_T", "U4"),
        ("PART_ID", "Cn"),
        ("PART_TXT", "Cn"),
        ("PART_FIX", "Bn"),
    ],
    "TSR": [
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("TEST_TYP", "C1"),
        ("TEST_NUM", "U4"),
        ("EXEC_CNT", "U4"),
        ("FAIL_CNT", "U4"),
        ("ALRM_CNT", "U4"),
        ("TEST_NAM", "Cn"),
        ("SEQ_NAME", "Cn"),
        ("TEST_LBL", "Cn"),
        ("OPT_FLAG", "B1"),
        ("TEST_TIM", "R4"),
        ("TEST_MIN", "R4"),
        ("TEST_MAX", "R4"),
        ("TST_SUMS", "R4"),
        ("TST_SQRS", "R4"),
    ],
    "PTR": [
        ("TEST_NUM", "U4"),
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("TEST_FLG", "B1"),
        ("PARM_FLG", "B1"),
        ("RESULT", "R4"),
        ("TEST_TXT", "Cn"),
        ("ALARM_ID", "Cn"),
        ("OPT_FLAG", "B1"),
        ("RES_SCAL", "I1"),
        ("LLM_SCAL", "I1"),
        ("HLM_SCAL", "I1"),
        ("LO_LIMIT", "R4"),
        ("HI_LIMIT", "R4"),
        ("UNITS", "Cn"),
        ("C_RESFMT", "Cn"),
        ("C_LLMFMT", "Cn"),
        ("C_HLMFMT", "Cn"),
        ("LO_SPEC", "R4"),
        ("HI_SPEC", "R4"),
    ],
    "MPR": [
        ("TEST_NUM", "U4"),
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("TEST_FLG", "B1"),
        ("PARM_FLG", "B1"),
        ("RTN_ICNT", "U2"),
        ("RSLT_CNT", "U2"),
        ("RTN_STAT", "kxN1"),
        ("RTN_RSLT", "kxR4"),
        ("TEST_TXT", "Cn"),
        ("ALARM_ID", "Cn"),
        ("OPT_FLAG", "B1"),
        ("RES_SCAL", "I1"),
        ("LLM_SCAL", "I1"),
        ("HLM_SCAL", "I1"),
        ("LO_LIMIT", "R4"),
        ("HI_LIMIT", "R4"),
        ("START_IN", "R4"),
        ("INCR_IN", "R4"),
        ("RTN_INDX", "kxU2"),
        ("UNITS", "Cn"),
        ("UNITS_IN", "Cn"),
        ("C_RESFMT", "Cn"),
        ("C_LLMFMT", "Cn"),
        ("C_HLMFMT", "Cn"),
        ("LO_SPEC", "R4"),
        ("HI_SPEC", "R4"),
    ],
    "FTR": [
        ("TEST_NUM", "U4"),
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("TEST_FLG", "B1"),
        ("OPT_FLAG", "B1"),
        ("CYCL_CNT", "U4"),
        ("REL_VADR", "U4"),
        ("REPT_CNT", "U4"),
        ("NUM_FAIL", "U4"),
        ("XFAIL_AD", "I4"),
        ("YFAIL_AD", "I4"),
        ("VECT_OFF", "I2"),
        ("RTN_ICNT", "U2"),
        ("PGM_ICNT", "U2"),
        ("RTN_INDX", "kxU2"),
        ("RTN_STAT", "kxN1"),
        ("PGM_INDX", "kxU2"),
        ("PGM_STAT", "kxN1"),
        ("FAIL_PIN", "Dn"),
        ("VECT_NAM", "Cn"),
        ("TIME_SET", "Cn"),
        ("OP_CODE", "Cn"),
        ("TEST_TXT", "Cn"),
        ("ALARM_ID", "Cn"),
        ("PROG_TXT", "Cn"),
        ("RSLT_TXT", "Cn"),
        ("PATG_NUM", "U1"),
        ("SPIN_MAP", "Dn"),
    ],
    "STR": [
        ("CONT_FLG", "B1"),
        ("TEST_NUM", "U4"),
        ("HEAD_NUM", "U1"),
        ("SITE_NUM", "U1"),
        ("PSR_REF", "U2"),
        ("TEST_FLG", "B1"),
        ("LOG_TYP", "Cn"),
        ("TEST_TXT", "Cn"),
        ("ALARM_ID", "Cn"),
        ("PROG_TXT", "Cn"),
        ("RSLT_TXT", "Cn"),
        ("Z_VAL", "U1"),
        ("FMU_FLG", "B1"),
        ("MASK_MAP", "Dn"),
        ("FAL_MAP", "Dn"),
        ("CYC_CNT_T", "U8"),
        ("TOTF_CNT", "U4"),
        ("TOTL_CNT", "U4"),
        ("CYC_BASE", "U8"),
        ("BIT_BASE", "U4"),
        ("COND_CNT", "U2"),
        ("LIM_CNT", "U2"),
        ("CYC_SIZE", "U1"),
        ("PMR_SIZE", "U1"),
        ("CHN_SIZE", "U1"),
        ("PAT_SIZE", "U1"),
        ("BIT_SIZE", "U1"),
        ("U1_SIZE", "U1"),
        ("U2_SIZE", "U1"),
        ("U3_SIZE", "U1"),
        ("UTX_SIZE", "U1"),
        ("CAP_BGN", "U2"),
        ("LIM_INDX", "kxU2"),
        ("LIM_SPEC", "kxU4"),
        ("COND_LST", "kxCn"),
        ("CYC_CNT", "U2"),
        ("CYC_OFST", "kxUf"),
        ("PMR_CNT", "U2"),
        ("PMR_INDX", "kxUf"),
        ("CHN_CNT", "U2"),
        ("CHN_NUM", "kxUf"),
        ("EXP_CNT", "U2"),
        ("EXP_DATA", "kxU1"),
        ("CAP_CNT", "U2"),
        ("CAP_DATA", "kxU1"),
        ("NEW_CNT", "U2"),
        ("NEW_DATA", "kxU1"),
        ("PAT_CNT", "U2"),
        ("PAT_NUM", "kxUf"),
        ("BPOS_CNT", "U2"),
        ("BIT_POS", "kxUf"),
        ("USR1_CNT", "U2"),
        ("USR1", "kxUf"),
        ("USR2_CNT", "U2"),
        ("USR2", "kxUf"),
        ("USR3_CNT", "U2"),
        ("USR3", "kxUf"),
        ("TXT_CNT", "U2"),
        ("USER_TXT", "kxCf"),
    ],
    "BPS": [("SEQ_NAME", "Cn")],
    "EPS": [],
    # GEN_DATA holds FLD_CNT values, each a type code byte and the value (see the writer).
    "GDR": [("FLD_CNT", "U2"), ("GEN_DATA", "Vn")],
    "DTR": [("TEXT_DAT", "Cn")],
}

# Record name -> {array field -> the earlier field that holds its element count}.
ARRAY_COUNTS: dict[str, dict[str, str]] = {
    "VUR": {"UPD_NAM": "UPD_CNT"},
    "PGR": {"PMR_INDX": "INDX_CNT"},
    "PLR": {
        f: "GRP_CNT"
        for f in ("GRP_INDX", "GRP_MODE", "GRP_RADX", "PGM_CHAR", "RTN_CHAR", "PGM_CHAL", "RTN_CHAL")
    },
    "RDR": {"RTST_BIN": "NUM_BINS"},
    "SDR": {"SITE_NUM": "SITE_CNT"},
    "PSR": {
        f: "LOCP_CNT" for f in ("PAT_BGN", "PAT_END", "PAT_FILE", "PAT_LBL", "FILE_UID", "ATPG_DSC", "SRC_ID")
    },
    "NMR": {"PMR_INDX": "LOCM_CNT", "ATPG_NAM": "LOCM_CNT"},
    "SSR": {"CHN_LIST": "CHN_CNT"},
    "CDR": {"M_CLKS": "MSTR_CNT", "S_CLKS": "SLAV_CNT", "CELL_LST": "LST_CNT"},
    "MPR": {"RTN_STAT": "RTN_ICNT", "RTN_RSLT": "RSLT_CNT", "RTN_INDX": "RTN_ICNT"},
    "FTR": {"RTN_INDX": "RTN_ICNT", "RTN_STAT": "RTN_ICNT", "PGM_INDX": "PGM_ICNT", "PGM_STAT": "PGM_ICNT"},
    "STR": {
        "LIM_INDX": "LIM_CNT",
        "LIM_SPEC": "LIM_CNT",
        "COND_LST": "COND_CNT",
        "CYC_OFST": "CYC_CNT",
        "PMR_INDX": "PMR_CNT",
        "CHN_NUM": "CHN_CNT",
        "EXP_DATA": "EXP_CNT",
        "CAP_DATA": "CAP_CNT",
        "NEW_DATA": "NEW_CNT",
        "PAT_NUM": "PAT_CNT",
        "BIT_POS": "BPOS_CNT",
        "USR1": "USR1_CNT",
        "USR2": "USR2_CNT",
        "USR3": "USR3_CNT",
        "USER_TXT": "TXT_CNT",
    },
    "GDR": {"GEN_DATA": "FLD_CNT"},
}

# STR only: record name -> {kxUf / kxCf field -> the field holding its element width in bytes}.
ELEMENT_WIDTHS: dict[str, dict[str, str]] = {
    "STR": {
        "CYC_OFST": "CYC_SIZE",
        "PMR_INDX": "PMR_SIZE",
        "CHN_NUM": "CHN_SIZE",
        "PAT_NUM": "PAT_SIZE",
        "BIT_POS": "BIT_SIZE",
        "USR1": "U1_SIZE",
        "USR2": "U2_SIZE",
        "USR3": "U3_SIZE",
        "USER_TXT": "UTX_SIZE",
    }
}

_U4_MISSING = 4_294_967_295
_ALL_INVALID = 0xFF  # OPT_FLAG with every "invalid"/"no limit" bit and the reserved bits set

# Record name -> {field -> the specification's missing/invalid value}. Fields not listed here
# default by type (see `default_value`).
MISSING: dict[str, dict[str, Any]] = {
    "MIR": {"BURN_TIM": 65535},
    "PCR": {
        "RTST_CNT": _U4_MISSING,
        "ABRT_CNT": _U4_MISSING,
        "GOOD_CNT": _U4_MISSING,
        "FUNC_CNT": _U4_MISSING,
    },
    "PMR": {"HEAD_NUM": 1, "SITE_NUM": 1},
    "SDR": {"SITE_GRP": 1},
    "WIR": {"SITE_GRP": 255},
    "WRR": {
        "SITE_GRP": 255,
        "RTST_CNT": _U4_MISSING,
        "ABRT_CNT": _U4_MISSING,
        "GOOD_CNT": _U4_MISSING,
        "FUNC_CNT": _U4_MISSING,
    },
    "WCR": {"CENTER_X": -32768, "CENTER_Y": -32768},
    "PRR": {"SOFT_BIN": 65535, "X_COORD": -32768, "Y_COORD": -32768},
    "TSR": {
        "EXEC_CNT": _U4_MISSING,
        "FAIL_CNT": _U4_MISSING,
        "ALRM_CNT": _U4_MISSING,
        "OPT_FLAG": _ALL_INVALID,
    },
    "PTR": {"OPT_FLAG": _ALL_INVALID},
    "MPR": {"OPT_FLAG": _ALL_INVALID},
    "FTR": {"OPT_FLAG": _ALL_INVALID, "PATG_NUM": 255},
}

_TYPE_DEFAULTS: dict[str, Any] = {"C1": " ", "Cn": "", "Sn": "", "Bn": b"", "Dn": b""}


def default_value(record: str, field: str, stdf_type: str) -> Any:
    """The value a writer puts in a field the caller left out (the spec's missing value)."""
    if field in MISSING.get(record, {}):
        return MISSING[record][field]
    if stdf_type.startswith("kx") or stdf_type == "Vn":
        return []
    if stdf_type in _TYPE_DEFAULTS:
        return _TYPE_DEFAULTS[stdf_type]
    if stdf_type[0] == "R":
        return 0.0
    return 0


def field_type(record: str, field: str) -> str:
    """The STDF type of one field, e.g. ``field_type("PTR", "RESULT") == "R4"``."""
    for name, stdf_type in LAYOUTS[record]:
        if name == field:
            return stdf_type
    raise KeyError(f"{record} has no field {field}")


_WIDTHS = {"U1": 1, "U2": 2, "U4": 4, "U8": 8, "I1": 1, "I2": 2, "I4": 4, "I8": 8, "R4": 4, "R8": 8,
           "B1": 1, "C1": 1, "N1": 1, "Cn": 256, "Bn": 256, "Dn": 8194}  # fmt: skip


def max_length(record: str) -> int | None:
    """The longest REC_LEN a record of this type can have (each Cn/Bn at 255 bytes); None when
    it holds arrays, whose length only their counts bound. A longer record is junk."""
    widths = [_WIDTHS.get(stdf_type) for _, stdf_type in LAYOUTS.get(record, [("", "kx")])]
    return None if None in widths else sum(widths)
