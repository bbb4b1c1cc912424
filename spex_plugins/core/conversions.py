"""Conversions of a sparse Fourier spectrum into Möbius coefficients and interaction indices.

Conventions (see the project's algorithm notes, sections 1 and 4):

* ``n`` players ``0..n-1``; a coalition ``T`` is the set of *present* players (mask bit 1).
* Fourier expansion ``f(T) = sum_K F(K) (-1)^{|T ∩ K|}``.
* Möbius expansion ``f(T) = sum_{S ⊆ T} a(S)`` with ``a(S) = (-2)^{|S|} sum_{K ⊇ S} F(K)``.

A sparse set function is a pair of arrays:

* ``locations``: ``int64`` array of shape ``(s, d)``, ``d >= 1``. Row ``r`` lists the players of
  one set in ascending order, padded on the right with ``-1`` (the empty set is an all ``-1``
  row).
* ``values``: ``float64`` array of shape ``(s, K)``, one column per model output (``K >= 1``).

Every index below is linear in the spectrum and, for a set ``S``, only depends on the Fourier
coefficients of supersets ``K ⊇ S`` through a weight ``W(|K|, |S|)``. All conversions are
therefore one "superset transform": each coefficient is spread over its ``2^{|K|}`` subsets,
then equal sets are merged. Cost is ``O(s * 2^{max degree})``; nothing dense in ``n`` (or in
``C(n, k)``) is ever built. The weight tables are computed in exact rational arithmetic so that
weights that vanish mathematically are exactly zero.

Empty-set conventions of :func:`interaction_values` (value put on ``S = ∅``):

* ``Fourier``: ``F(∅)``; ``Moebius``: ``a(∅) = f(∅)``; ``BII``: ``F(∅) = E_T[f(T)]``.
* ``SII``: Grabisch's SII of the empty set, ``sum_T a(T)/(|T|+1)`` (shapiq omits this entry).
* ``FBII``: the intercept of the best degree-``order`` approximation, ``sum_{|K|<=order} F(K)``
  (shapiq's value as well).
* ``FSII``, ``STII``, ``k-SII``, ``SV``: ``a(∅) = f(∅)`` (shapiq's baseline / empty entry).
* ``BV``: the order-1 Faith-Banzhaf intercept ``F(∅) + sum_i F({i})``, which is what shapiq
  1.4.1 stores for ``BV`` (it computes BV as FBII of order 1). shapiq >= 1.5 computes BV as
  order-1 BII instead: the same Banzhaf values, no empty-set entry, ``f(∅)`` as baseline.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from fractions import Fraction
from itertools import combinations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "INDICES",
    "banzhaf_values",
    "canonicalise",
    "fourier_to_moebius",
    "interaction_values",
    "moebius_to_fourier",
    "shapley_values",
]

INDICES: tuple[str, ...] = (
    "Fourier",
    "Moebius",
    "BII",
    "SII",
    "k-SII",
    "FBII",
    "FSII",
    "STII",
    "SV",
    "BV",
)
"""Canonical names of the indices accepted by :func:`interaction_values`."""

_ALIASES: dict[str, str] = {name.casefold(): name for name in INDICES}
_ALIASES.update({"mobius": "Moebius", "möbius": "Moebius", "ksii": "k-SII", "k_sii": "k-SII"})

# Indices for which ``order = 0`` is meaningful (only the empty set is returned).
_ORDER_ZERO_OK = frozenset({"Fourier", "Moebius", "BII", "SII", "FBII"})

_PAD = -1
_BIG = np.iinfo(np.int64).max

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# input handling and canonical form
# --------------------------------------------------------------------------------------------


def _as_arrays(locations: ArrayLike, values: ArrayLike) -> tuple[IntArray, FloatArray]:
    """Validate shapes and dtypes; return ``(int64 (s, d), float64 (s, K))`` arrays."""
    locs = np.asarray(locations)
    vals = np.asarray(values, dtype=np.float64)
    if locs.ndim != 2:
        raise ValueError(f"locations must be a 2-D array (s, d), got shape {locs.shape}")
    if vals.ndim != 2:
        raise ValueError(f"values must be a 2-D array (s, K), got shape {vals.shape}")
    if locs.shape[0] != vals.shape[0]:
        raise ValueError(
            f"locations and values disagree on the number of sets: "
            f"{locs.shape[0]} != {vals.shape[0]}"
        )
    integral = np.issubdtype(locs.dtype, np.integer)
    if locs.size and not integral and not np.all(np.equal(np.mod(locs, 1), 0)):
        raise ValueError("locations must hold integer player indices")
    locs = locs.astype(np.int64, copy=False)
    if locs.size and locs.min() < _PAD:
        raise ValueError("locations may only hold player indices >= 0 and -1 padding")
    return locs, vals


def _sort_rows(locs: IntArray) -> IntArray:
    """Sort every row ascending with the ``-1`` padding moved to the right."""
    if locs.shape[1] <= 1:
        return locs.copy()
    keyed = np.where(locs < 0, _BIG, locs)
    keyed.sort(axis=1)
    if np.any((keyed[:, 1:] == keyed[:, :-1]) & (keyed[:, 1:] != _BIG)):
        raise ValueError("a row of locations lists the same player twice")
    keyed[keyed == _BIG] = _PAD
    return keyed


def _merge(locs: IntArray, vals: FloatArray) -> tuple[IntArray, FloatArray]:
    """Merge equal rows (rows already sorted), drop all-zero rows, trim padding, order rows.

    Rows are ordered by degree, then lexicographically.
    """
    n_out = vals.shape[1]
    if locs.shape[0] == 0:
        return np.full((0, 1), _PAD, dtype=np.int64), np.zeros((0, n_out))
    degree = np.count_nonzero(locs >= 0, axis=1)
    keys = [locs[:, j] for j in range(locs.shape[1] - 1, -1, -1)]
    order = np.lexsort([*keys, degree])
    locs = locs[order]
    vals = vals[order]
    degree = degree[order]
    new_group = np.ones(locs.shape[0], dtype=bool)
    new_group[1:] = np.any(locs[1:] != locs[:-1], axis=1)
    starts = np.flatnonzero(new_group)
    vals = np.add.reduceat(vals, starts, axis=0)
    locs = locs[starts]
    degree = degree[starts]
    keep = np.any(vals != 0, axis=1)
    locs, vals, degree = locs[keep], vals[keep], degree[keep]
    width = max(int(degree.max()) if degree.size else 0, 1)
    if width <= locs.shape[1]:
        locs = locs[:, :width]
    else:
        locs = np.pad(locs, ((0, 0), (0, width - locs.shape[1])), constant_values=_PAD)
    return np.ascontiguousarray(locs), np.ascontiguousarray(vals)


def canonicalise(locations: ArrayLike, values: ArrayLike) -> tuple[IntArray, FloatArray]:
    """Bring a sparse set function into canonical form.

    Sorts each row, merges duplicate sets by summing their values, drops sets whose values are
    all exactly zero, trims the padding to the largest degree (at least one column) and orders
    the rows by (degree, lexicographic).

    Args:
        locations: ``(s, d)`` integer array of sorted player indices padded with ``-1``.
        values: ``(s, K)`` float array.

    Returns:
        ``(locations, values)`` with shapes ``(s', d')`` (int64) and ``(s', K)`` (float64).
    """
    locs, vals = _as_arrays(locations, values)
    if locs.shape[1] == 0:
        locs = np.full((locs.shape[0], 1), _PAD, dtype=np.int64)
    return _merge(_sort_rows(locs), vals)


def _degrees(locs: IntArray) -> NDArray[np.intp]:
    return np.count_nonzero(locs >= 0, axis=1)


def _check_players(locs: IntArray, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if locs.size and locs.max() >= n:
        raise ValueError(f"locations hold player {int(locs.max())} but n = {n}")


# --------------------------------------------------------------------------------------------
# the superset transform
# --------------------------------------------------------------------------------------------


def _superset_transform(
    locs: IntArray, vals: FloatArray, table: NDArray[np.float64]
) -> tuple[IntArray, FloatArray]:
    """``out(S) = sum_{K ⊇ S} table[|K|, |S|] * vals(K)`` for ``|S| < table.shape[1]``.

    ``locs`` must have sorted rows (padding on the right); ``table`` has one row per degree
    ``0..max degree``. Only subsets whose weight is non-zero are generated. Returns the
    canonical form of the result.
    """
    n_out = vals.shape[1]
    max_size = table.shape[1] - 1
    width = max(max_size, 1)
    degree = _degrees(locs)
    out_locs: list[IntArray] = []
    out_vals: list[FloatArray] = []
    for g in np.unique(degree).tolist():
        in_group = degree == g
        rows = locs[in_group, :g]
        group_vals = vals[in_group]
        for k in range(min(g, max_size) + 1):
            weight = float(table[g, k])
            if weight == 0.0:
                continue
            subsets = list(combinations(range(g), k))
            n_sub = len(subsets)
            picks = np.array(subsets, dtype=np.intp).reshape(n_sub, k)
            children = rows[:, picks].reshape(rows.shape[0] * n_sub, k)
            block = np.full((children.shape[0], width), _PAD, dtype=np.int64)
            block[:, :k] = children
            out_locs.append(block)
            out_vals.append(np.repeat(group_vals * weight, n_sub, axis=0))
    if not out_locs:
        return np.full((0, 1), _PAD, dtype=np.int64), np.zeros((0, n_out))
    return _merge(np.concatenate(out_locs), np.concatenate(out_vals))


def _fourier_table(
    max_degree: int, max_size: int, weight: Callable[[int, int], Fraction | int]
) -> NDArray[np.float64]:
    """Tabulate ``weight(|K|, |S|)`` for ``|K| <= max_degree`` and ``|S| <= max_size``."""
    table = np.zeros((max_degree + 1, max_size + 1))
    for g in range(max_degree + 1):
        for k in range(min(g, max_size) + 1):
            table[g, k] = float(weight(g, k))
    return table


def _via_moebius(
    moebius_weight: Callable[[int, int], Fraction | int],
) -> Callable[[int, int], Fraction]:
    """Turn a Möbius-domain weight ``w(|T|, |S|)`` into the equivalent Fourier-domain weight.

    If ``I(S) = sum_{T ⊇ S} w(|T|, |S|) a(T)`` and ``a(T) = (-2)^{|T|} sum_{K ⊇ T} F(K)``,
    then ``I(S) = sum_{K ⊇ S} W(|K|, |S|) F(K)`` with
    ``W(g, k) = sum_{t=k}^{g} C(g-k, t-k) (-2)^t w(t, k)`` (exact rational arithmetic).
    """

    def weight(g: int, k: int) -> Fraction:
        return sum(
            (
                Fraction(math.comb(g - k, t - k) * (-2) ** t) * moebius_weight(t, k)
                for t in range(k, g + 1)
            ),
            Fraction(0),
        )

    return weight


# --------------------------------------------------------------------------------------------
# Fourier <-> Möbius
# --------------------------------------------------------------------------------------------


def fourier_to_moebius(
    locations: ArrayLike, coefficients: ArrayLike
) -> tuple[IntArray, FloatArray]:
    """Möbius coefficients ``a(S) = (-2)^{|S|} sum_{K ⊇ S} F(K)`` of a sparse Fourier spectrum.

    Args:
        locations: ``(s, d)`` Fourier support (sorted rows, ``-1`` padded).
        coefficients: ``(s, K)`` Fourier coefficients.

    Returns:
        Canonical ``(locations (s', d'), values (s', K))`` of the non-zero Möbius coefficients.
    """
    locs, vals = canonicalise(locations, coefficients)
    max_degree = int(_degrees(locs).max(initial=0))
    table = _fourier_table(max_degree, max_degree, lambda g, k: (-2) ** k)
    return _superset_transform(locs, vals, table)


def moebius_to_fourier(locations: ArrayLike, values: ArrayLike) -> tuple[IntArray, FloatArray]:
    """Fourier coefficients ``F(K) = (-1)^{|K|} sum_{S ⊇ K} a(S) / 2^{|S|}``.

    Args:
        locations: ``(s, d)`` Möbius support (sorted rows, ``-1`` padded).
        values: ``(s, K)`` Möbius coefficients.

    Returns:
        Canonical ``(locations (s', d'), coefficients (s', K))`` of the non-zero Fourier terms.
    """
    locs, vals = canonicalise(locations, values)
    max_degree = int(_degrees(locs).max(initial=0))
    table = _fourier_table(max_degree, max_degree, lambda g, k: Fraction((-1) ** k, 2**g))
    return _superset_transform(locs, vals, table)


# --------------------------------------------------------------------------------------------
# values (dense, one row per player)
# --------------------------------------------------------------------------------------------


def shapley_values(locations: ArrayLike, coefficients: ArrayLike, n: int) -> FloatArray:
    """Shapley values ``phi_i = -2 sum_{K ∋ i, |K| odd} F(K) / |K|`` from a Fourier spectrum.

    Args:
        locations: ``(s, d)`` Fourier support; coefficients: ``(s, K)``; n: number of players.

    Returns:
        ``(n, K)`` float64 array.
    """
    locs, vals = canonicalise(locations, coefficients)
    _check_players(locs, n)
    out = np.zeros((n, vals.shape[1]))
    degree = _degrees(locs)
    for g in np.unique(degree).tolist():
        if g % 2 == 0:
            continue
        in_group = degree == g
        players = locs[in_group, :g].ravel()
        share = np.repeat(vals[in_group] * (-2.0 / g), g, axis=0)
        np.add.at(out, players, share)
    return out


def banzhaf_values(locations: ArrayLike, coefficients: ArrayLike, n: int) -> FloatArray:
    """Banzhaf values ``beta_i = -2 F({i})`` from a Fourier spectrum.

    Args:
        locations: ``(s, d)`` Fourier support; coefficients: ``(s, K)``; n: number of players.

    Returns:
        ``(n, K)`` float64 array.
    """
    locs, vals = canonicalise(locations, coefficients)
    _check_players(locs, n)
    out = np.zeros((n, vals.shape[1]))
    single = _degrees(locs) == 1
    np.add.at(out, locs[single, 0], -2.0 * vals[single])
    return out


# --------------------------------------------------------------------------------------------
# interaction indices
# --------------------------------------------------------------------------------------------


def _bernoulli(m: int) -> list[Fraction]:
    """Bernoulli numbers ``B_0..B_m`` with ``B_1 = -1/2``."""
    numbers = [Fraction(1)]
    for i in range(1, m + 1):
        total = sum((math.comb(i + 1, j) * numbers[j] for j in range(i)), Fraction(0))
        numbers.append(-total / (i + 1))
    return numbers


def _sii_moebius(t: int, k: int) -> Fraction:
    return Fraction(1, t - k + 1)


def _fsii_moebius(order: int) -> Callable[[int, int], Fraction]:
    def weight(t: int, k: int) -> Fraction:
        if k == 0 or t <= order:
            return Fraction(int(t == k))
        sign = (-1) ** (order - k)
        return (
            sign
            * Fraction(k, order + k)
            * Fraction(
                math.comb(order, k) * math.comb(t - 1, order),
                math.comb(t + order - 1, order + k),
            )
        )

    return weight


def _stii_moebius(order: int) -> Callable[[int, int], Fraction]:
    def weight(t: int, k: int) -> Fraction:
        if k < order:
            return Fraction(int(t == k))
        return Fraction(1, math.comb(t, order))

    return weight


def _ksii_moebius(order: int, max_degree: int) -> Callable[[int, int], Fraction]:
    bernoulli = _bernoulli(min(order, max_degree))  # B_j is only needed for j <= |K| - |S|

    def weight(t: int, k: int) -> Fraction:
        if k == 0:
            return Fraction(int(t == 0))
        m = t - k
        return sum(
            (
                bernoulli[j] * Fraction(math.comb(m, j), m - j + 1)
                for j in range(min(m, order - k) + 1)
            ),
            Fraction(0),
        )

    return weight


def _index_weight(name: str, order: int, max_degree: int) -> Callable[[int, int], Fraction | int]:
    """Fourier-domain weight ``W(|K|, |S|)`` of index ``name`` at ``order``."""
    if name == "Fourier":
        return lambda g, k: int(g == k)
    if name == "Moebius":
        return lambda g, k: (-2) ** k
    if name == "BII":
        return lambda g, k: (-2) ** k if g == k else 0
    if name == "FBII":  # Möbius transform of the degree-<=order truncation
        return lambda g, k: (-2) ** k if g <= order else 0
    if name == "SII":
        return _via_moebius(_sii_moebius)
    if name == "FSII":
        return _via_moebius(_fsii_moebius(order))
    if name == "STII":
        return _via_moebius(_stii_moebius(order))
    if name == "k-SII":
        return _via_moebius(_ksii_moebius(order, max_degree))
    raise AssertionError(name)  # pragma: no cover


def _resolve_index(index: str) -> str:
    if isinstance(index, str):
        key = unicodedata.normalize("NFC", index.strip()).casefold()
        if key in _ALIASES:
            return _ALIASES[key]
    raise ValueError(
        f"unknown interaction index {index!r}; supported: {', '.join(INDICES)} "
        f"(case-insensitive; 'Mobius'/'Möbius' are accepted for 'Moebius')"
    )


def interaction_values(
    locations: ArrayLike,
    coefficients: ArrayLike,
    n: int,
    index: str,
    order: int | None = None,
) -> tuple[IntArray, FloatArray]:
    """Index ``index`` of every set ``S`` with ``|S| <= order``, from a Fourier spectrum.

    Supported indices (case-insensitive, see :data:`INDICES`): ``Fourier``, ``Moebius``
    (``Mobius``, ``Möbius``), ``BII``, ``SII`` (all restricted to ``|S| <= order``),
    ``FBII``, ``FSII``, ``STII``, ``k-SII`` (indices *of* order ``order``), ``SV`` and ``BV``
    (order-1 sets; ``order`` is ignored). The value on the empty set follows the module
    docstring; ``k-SII``, ``FSII``, ``STII``, ``FBII`` and ``BV`` match shapiq 1.4.1's
    ``MoebiusConverter`` including its empty-set entry.

    Args:
        locations: ``(s, d)`` Fourier support (sorted rows, ``-1`` padded).
        coefficients: ``(s, K)`` Fourier coefficients.
        n: number of players (all entries of ``locations`` must be ``< n``).
        index: name of the index.
        order: maximal set size / explanation order; ``None`` means ``n``. Must be ``>= 1``
            (``>= 0`` for ``Fourier``, ``Moebius``, ``BII``, ``SII`` and ``FBII``).

    Returns:
        Canonical ``(locations (s', d'), values (s', K))`` holding the non-zero values only.

    Raises:
        ValueError: unknown index, invalid order, or players outside ``0..n-1``.
    """
    name = _resolve_index(index)
    if order is None:
        order = n
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"order must be an integer, got {order!r}")
    order = int(order)
    minimum = 0 if name in _ORDER_ZERO_OK else 1
    if order < minimum:
        raise ValueError(f"order must be >= {minimum} for index {name!r}, got {order}")
    locs, vals = canonicalise(locations, coefficients)
    _check_players(locs, n)
    if name == "SV":
        name, order = "k-SII", 1  # SII of order 1; empty set a(∅) = f(∅)
    elif name == "BV":
        name, order = "FBII", 1  # as shapiq: BV = FBII of order 1
    max_degree = int(_degrees(locs).max(initial=0))
    table = _fourier_table(
        max_degree, min(order, max_degree), _index_weight(name, order, max_degree)
    )
    return _superset_transform(locs, vals, table)
