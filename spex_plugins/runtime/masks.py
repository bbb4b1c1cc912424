"""Boolean masks: validation, row keys and exact de-duplication (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["as_masks", "row_keys", "unique_masks", "unique_rows"]


def as_masks(masks, n: int | None = None) -> np.ndarray:
    """Validate masks as a bool (m, n) array; a single (n,) mask becomes (1, n).

    ``n`` (when given) is the number of features every mask must have. 0/1 integers and floats
    are accepted; anything else raises ``ValueError``.
    """
    masks = np.asarray(masks)
    if masks.ndim == 1:
        masks = masks[None, :]
    if masks.ndim != 2 or (n is not None and masks.shape[1] != n):
        raise ValueError(f"masks must have shape (m, {'n' if n is None else n}), "
                         f"got {masks.shape}")
    if masks.dtype != bool:
        if masks.size and not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (or 0/1), True = feature kept")
        masks = masks.astype(bool)
    return masks


def row_keys(bits: np.ndarray) -> np.ndarray:
    """One opaque, hashable and sortable key per row of a bool (m, n) array (packed bytes)."""
    packed = np.ascontiguousarray(np.packbits(bits, axis=1))
    return packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a 2-D array (m, w): ``first`` (u,) row indices, one per distinct row,
    and ``inverse`` (m,) with ``rows[first][inverse] == rows``.

    Rows are compared as bytes. Each row is hashed to one uint64 (multiply-xor over its 8-byte
    words), the hashes are sorted, and the grouping is then checked against the rows
    themselves, falling back to a byte-wise sort on a hash collision, so the result is exact.
    The order of ``first`` is deterministic but unspecified.
    """
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), -1)
    width = -(-raw.shape[1] // 8) * 8
    if width != raw.shape[1]:
        raw = np.hstack([raw, np.zeros((len(raw), width - raw.shape[1]), np.uint8)])
    words = raw.view(np.uint64)
    key = words[:, 0].copy()
    for column in words.T[1:]:
        key *= _MIX
        key ^= column
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if words.shape[1] > 1 and not np.array_equal(words[first][inverse], words):
        void = np.ascontiguousarray(raw).view(np.dtype((np.void, width))).reshape(-1)
        _, first, inverse = np.unique(void, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


def unique_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a bool (N, n) mask matrix, in order of first appearance, and the
    index of each row among them (``distinct[inverse] == masks``)."""
    if len(masks) == 0:
        return masks, np.zeros(0, np.int64)
    first, inverse = unique_rows(np.packbits(masks, axis=1))
    order = np.argsort(first)  # keep first-appearance order (design order)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return masks[first[order]], rank[inverse]
