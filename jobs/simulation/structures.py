"""Part structures of real tester floors, for the simulator's `no_pir` fault.

Some testers write no PIR: a part is its results followed by its PRR (the normalizer's rule for
it is in jobs/stdf/README.md). Applied to a finished stream, so the dies, results and truth are
those of the clean run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PIR_CODE = (5, 10)


def without_pirs(content: bytes, offsets: np.ndarray) -> tuple[bytes, np.ndarray, dict[str, Any]]:
    """The stream with every PIR removed, its record offsets, and what was removed."""
    data = np.frombuffer(content, np.uint8)
    starts = np.asarray(offsets, np.int64)
    sizes = np.diff(np.append(starts, len(data)))
    pir = (data[starts + 2] == PIR_CODE[0]) & (data[starts + 3] == PIR_CODE[1])
    kept = data[np.repeat(~pir, sizes)]
    new_offsets = np.concatenate([[0], np.cumsum(sizes[~pir])[:-1]]).astype(starts.dtype)
    return kept.tobytes(), new_offsets, {"pirs_removed": int(pir.sum())}
