"""The robust centre and spread every comparison of test values uses. No Luigi here."""

from __future__ import annotations

import warnings

import numpy as np

MAD_SIGMA = 1.4826  # MAD -> sigma for normal data
IQR_SIGMA = 1.349  # IQR -> sigma for normal data


def robust_centre(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column (axis 0), NaN ignored: the median and sigma = 1.4826 MAD, or IQR/1.349 where the
    MAD is 0, or 1 where that is 0 too (or no value is there): a spread never divides by 0."""
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # an all-NaN column
        median = np.nanmedian(values, axis=0)
        mad = MAD_SIGMA * np.nanmedian(np.abs(values - median), axis=0)
        q25, q75 = np.nanpercentile(values, [25, 75], axis=0)
    iqr = (q75 - q25) / IQR_SIGMA
    return median, np.where(mad > 0, mad, np.where(iqr > 0, iqr, 1.0))
