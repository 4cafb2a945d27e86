"""The PART_TXT convention of final test: a packaged part's PRR.PART_TXT names the die it came from.

    format_part_txt(lot, wafer, x, y)  -> lot=F1A26327A01;wafer=03;x=12;y=-7 (numpy strings)
    parse_part_txt(text)               -> ("F1A26327A01", "03", 12, -7); fields in any order

The simulator writes it (jobs/simulation) and the yield model's labels read it (jobs/domain/features.py).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

FIELDS = ("lot", "wafer", "x", "y")


def format_part_txt(lot: Any, wafer: Any, x: Any, y: Any) -> np.ndarray:
    """The PART_TXT of each part (numpy broadcasting over the arguments), naming its die."""
    parts = [
        "lot=",
        lot,
        ";wafer=",
        wafer,
        ";x=",
        np.asarray(x).astype(int),
        ";y=",
        np.asarray(y).astype(int),
    ]
    return functools.reduce(np.strings.add, (np.asarray(p).astype(str) for p in parts))


def parse_part_txt(text: str) -> tuple[str, str, int, int]:
    """(lot_id, wafer_id, x, y) from a final-test PART_TXT; ValueError if it is not one."""
    try:
        fields = dict(item.split("=", 1) for item in text.split(";"))
        if set(fields) != set(FIELDS):
            raise ValueError
        return fields["lot"], fields["wafer"], int(fields["x"]), int(fields["y"])
    except ValueError:
        raise ValueError(f"not a final-test PART_TXT (lot=...;wafer=...;x=...;y=...): {text!r}") from None
