"""Batched, validated evaluation of a value function on boolean masks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["ValueFunction", "evaluate_masks", "row_keys", "unique_masks", "unique_rows"]

ValueFunction = Callable[[np.ndarray], np.ndarray]
"""``value_function(masks: bool (m, n)) -> (m,) or (m, k)``; True = feature kept."""


def row_keys(bits: np.ndarray) -> np.ndarray:
    """One opaque, sortable key per row of a bool (m, n) array (bit-packed bytes)."""
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
    index of each row among them."""
    first, inverse = unique_rows(np.packbits(masks, axis=1))
    order = np.argsort(first)  # keep first-appearance order (design order)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return masks[first[order]], rank[inverse]


def _describe(mask: np.ndarray, limit: int = 12) -> str:
    kept = np.flatnonzero(mask)
    shown = ", ".join(map(str, kept[:limit])) + (", ..." if len(kept) > limit else "")
    return f"{len(kept)} of {len(mask)} kept: [{shown}]"


def _check_batch(values, masks: np.ndarray, start: int, n_outputs: int | None) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64) if values is not None else None
    m = len(masks)
    if out is None or out.ndim == 0 or out.ndim > 2 or out.shape[0] != m:
        got = None if out is None else out.shape
        raise ValueError(
            f"value_function must return an array of shape ({m},) or ({m}, k) for a batch of "
            f"{m} masks, got shape {got}"
        )
    out = out.reshape(m, -1)
    if n_outputs is not None and out.shape[1] != n_outputs:
        raise ValueError(
            f"value_function returned {out.shape[1]} outputs per mask for masks {start}..."
            f"{start + m - 1}, but {n_outputs} before"
        )
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        first = rows[0]
        raise ValueError(
            f"value_function returned non-finite values (NaN or inf) for {len(rows)} of {m} "
            f"masks in the batch starting at mask {start} (mask rows {(rows[:10] + start).tolist()}"
            f"{', ...' if len(rows) > 10 else ''}); first offending mask: "
            f"{_describe(masks[first])}, output {out[first]}"
        )
    return out


def evaluate_masks(
    value_function: ValueFunction,
    masks: np.ndarray,
    batch_size: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, float, bool]:
    """Evaluate ``value_function`` on bool masks (m, n) in batches.

    Returns ``(values (m, k), seconds spent inside value_function, flat)`` where ``flat`` says
    the value function answered with 1-D arrays (m,). Every batch is checked:
    shape (b,) or (b, k) with a constant k, all values finite — a clear ValueError otherwise.
    A tqdm progress bar is shown when ``progress`` and tqdm is installed.
    """
    m = len(masks)
    size = m if batch_size is None else max(1, int(batch_size))
    starts = range(0, m, size)
    bar = None
    if progress and m:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=m, desc="SPEX model calls", unit="mask", leave=False)
        except ImportError:
            bar = None
    outputs, spent, n_outputs, flat = [], 0.0, None, True
    try:
        for start in starts:
            batch = masks[start:start + size]
            began = time.perf_counter()
            values = value_function(batch)
            spent += time.perf_counter() - began
            flat = flat and np.ndim(values) == 1
            out = _check_batch(values, batch, start, n_outputs)
            n_outputs = out.shape[1]
            outputs.append(out)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if not outputs:
        return np.zeros((0, 1)), spent, flat
    return np.vstack(outputs), spent, flat
