"""Exports of the daily yield report: a KLA-style SINF bin map per wafer, and a per-die CSV. No Luigi.

SINF (KLA "simplified INF") rather than SEMI E142 XML: inking, die-bank, assembly and map-viewer
tools read SINF almost universally, E142 support is patchier and its schema much larger. The map
written here:

    DEVICE:<fab>            LOT:<lot>          WAFER:<wafer>      FNLOC:0
    ROWCT:<rows>            COLCT:<columns>    BCEQU:<pass bins, 2-digit hex, space-separated>
    REFPX:<x of column 0>   REFPY:<y of row 0> DUTMS:um           XDIES:1   YDIES:1
    RowData:__ 01 1E ...    one line per row, y ascending; each cell the soft bin in 2-digit hex,
                            "__" where there is no die

`read_sinf` parses it back (the round trip is tested for every die).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from jobs.domain.yield_views import extent_of

NO_DIE = "__"
MAX_BIN = 0xFF  # two hex digits a cell


class ExportError(ValueError):
    """A map SINF cannot hold (a bin above 255)."""


def sinf_text(fab: str, lot: str, wafer: str, dies: pd.DataFrame, pass_bins: Iterable[int]) -> str:
    """The SINF map of one wafer's dies (x_coord, y_coord, soft_bin)."""
    if len(dies) and int(dies["soft_bin"].max()) > MAX_BIN:
        raise ExportError(
            f"lot {lot} wafer {wafer}: soft bin {int(dies['soft_bin'].max())} > {MAX_BIN} does not fit SINF"
        )
    x_min, x_max, y_min, y_max = extent_of(dies)
    cells = np.full((y_max - y_min + 1, x_max - x_min + 1), NO_DIE, dtype="<U2")
    codes = np.char.upper(np.char.zfill(np.char.mod("%x", dies["soft_bin"].to_numpy(int)), 2))
    cells[dies["y_coord"].to_numpy(int) - y_min, dies["x_coord"].to_numpy(int) - x_min] = codes
    header = [
        f"DEVICE:{fab}",
        f"LOT:{lot}",
        f"WAFER:{wafer}",
        "FNLOC:0",
        f"ROWCT:{cells.shape[0]}",
        f"COLCT:{cells.shape[1]}",
        "BCEQU:" + " ".join(f"{b:02X}" for b in sorted(set(pass_bins))),
        f"REFPX:{x_min}",
        f"REFPY:{y_min}",
        "DUTMS:um",
        "XDIES:1",
        "YDIES:1",
    ]
    rows = ["RowData:" + " ".join(row) for row in cells]
    return "\n".join(header + rows) + "\n"


def read_sinf(text: str) -> tuple[dict[str, str], pd.DataFrame]:
    """(header fields, dies with x_coord, y_coord, soft_bin) of a map written by `sinf_text`."""
    header: dict[str, str] = {}
    rows: list[list[str]] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "RowData":
            rows.append(value.split())
        elif key:
            header[key] = value
    x0, y0 = int(header["REFPX"]), int(header["REFPY"])
    found = [
        (x0 + col, y0 + row, int(code, 16))
        for row, cells in enumerate(rows)
        for col, code in enumerate(cells)
        if code != NO_DIE
    ]
    dies = pd.DataFrame(found, columns=["x_coord", "y_coord", "soft_bin"])
    return header, dies


def sinf_name(fab: str, lot: str, wafer: str) -> str:
    """A file name for the map: the identifiers with anything but letters, digits, '-' and '.' as '_'."""
    return re.sub(r"[^0-9A-Za-z.-]+", "_", f"{fab}_{lot}_{wafer}") + ".sinf"


CSV_COLUMNS = [
    "date",
    "fab",
    "lot_id",
    "wafer_id",
    "x_coord",
    "y_coord",
    "hard_bin",
    "soft_bin",
    "p_fail",
    "ft_failed",
]


def die_csv(days: dict[str, pd.DataFrame]) -> str:
    """The per-die CSV of {date: die_table(...)}: CSV_COLUMNS, p_fail to 6 decimals, ft_failed
    'true'/'false' or empty where final test has not reported."""
    frames = [dies.assign(date=day) for day, dies in sorted(days.items()) if len(dies)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CSV_COLUMNS)
    out = table[CSV_COLUMNS].copy()
    out["ft_failed"] = out["ft_failed"].map({True: "true", False: "false"}).fillna("")
    return out.to_csv(index=False, float_format="%.6f", lineterminator="\n")
