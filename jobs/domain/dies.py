"""What identifies a die and which of its tests counts, for every workflow. No Luigi here.

DIE_KEY             the columns that name a die everywhere (parts, features, predictions, reports)
last_tests(parts)   each die's last test: the status and results that count
"""

from __future__ import annotations

import pandas as pd

DIE_KEY = ["lot_id", "wafer_id", "x_coord", "y_coord"]


def last_tests(parts: pd.DataFrame, order: str = "part_key") -> pd.DataFrame:
    """Each die's last test: its row with the highest `retest`, ties to the highest `order` (the
    part tested later). Rows keep their index and come in (retest, order) order; parts without
    coordinates all share one key per wafer, so callers that place dies drop them first."""
    return parts.sort_values(["retest", order], kind="stable").drop_duplicates(DIE_KEY, keep="last")
