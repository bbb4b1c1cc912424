"""Fast Walsh-Hadamard transform over the subsampled masks."""

from __future__ import annotations

import numpy as np

__all__ = ["fwht"]


def fwht(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Normalised fast Walsh-Hadamard transform along ``axis`` (length 2^b).

    ``out[j] = 2^-b * sum_l values[l] * (-1)^popcount(l & j)``; returns float64 of the same
    shape. One vectorised butterfly per bit; no Python loop over entries.
    """
    x = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    shape = x.shape
    size = shape[-1]
    if size & (size - 1):
        raise ValueError(f"transform length must be a power of two, got {size}")
    x = x.reshape(-1, size)
    half = 1
    while half < size:
        x = x.reshape(len(x), size // (2 * half), 2, half)
        x = np.stack([x[:, :, 0] + x[:, :, 1], x[:, :, 0] - x[:, :, 1]], axis=2)
        half *= 2
    return np.moveaxis(x.reshape(shape) / size, -1, axis)
