"""SPEX query design: random linear subsampling (aliasing) plus BCH-coded shifts.

For group ``c``, shift ``p`` and every ``l`` in F2^b the mask is ``x = M_c l XOR d_p`` (True =
feature kept). ``l`` is indexed by the integer whose bit ``q`` is coordinate ``q``; the same
convention indexes the Walsh-Hadamard bins, so frequency ``k`` lands in bin
``j = M_c^T k`` (bit ``q`` of ``j`` = ``<M_c[:, q], k> mod 2``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .bch import BCHCode, bch_code, code_parameters

__all__ = [
    "MIN_B",
    "SubsampleDesign",
    "b_for_budget",
    "min_budget",
    "n_shifts",
    "sample_count",
    "subsample_matrices",
]

MIN_B = 3
"""Smallest number of subsampling bits (2^b bins per group) SPEX accepts."""
MAX_B = 20


def n_shifts(n: int, max_order: int) -> int:
    """P = nc - kc + 1: the zero shift plus one shift per BCH parity bit."""
    _, nc, kc = code_parameters(n, max_order)
    return nc - kc + 1


def sample_count(n: int, max_order: int, n_groups: int, b: int) -> int:
    """N = C * P * 2^b masks in the design (before duplicates are merged)."""
    return n_groups * n_shifts(n, max_order) * (1 << b)


def min_budget(n: int, max_order: int, n_groups: int = 3) -> int:
    """The smallest BCH design: the sample count at b = MIN_B. It is the minimum budget of the
    design-only refits (``refit="ridge"`` / None); the default validated refit needs far less
    (see :meth:`spex_plugins.SPEX.min_budget` and
    :func:`spex_plugins.core.budget.minimum_budget`)."""
    return sample_count(n, max_order, n_groups, MIN_B)


def b_for_budget(n: int, max_order: int, n_groups: int, budget: int,
                 budget_name: str = "budget") -> int:
    """Largest b with ``sample_count(n, max_order, n_groups, b) <= budget`` (closed form).

    Raises ValueError, stating the minimum, when even b = MIN_B does not fit; the message names
    the budget ``budget_name`` (the caller's argument, e.g. ``max_evals``). The degree bound is
    never lowered to make a budget fit.
    """
    per_bin = n_groups * n_shifts(n, max_order)
    lowest = per_bin << MIN_B
    if budget < lowest:
        raise ValueError(
            f"{budget_name}={budget} is below the minimum SPEX budget of {lowest} model calls for "
            f"n={n} features at max_order={max_order} with n_groups={n_groups} "
            f"({n_groups} groups x {per_bin // n_groups} shifts x 2^{MIN_B} masks). Raise the "
            "budget, or lower max_order explicitly."
        )
    b = int(np.floor(np.log2(budget / per_bin)))
    while (per_bin << (b + 1)) <= budget:  # guard against floating-point rounding
        b += 1
    while (per_bin << b) > budget:
        b -= 1
    return min(b, MAX_B)


def subsample_matrices(n: int, b: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """C random n x b subsampling matrices with i.i.d. Bernoulli(1/2) entries, bool (C, n, b)."""
    return rng.random((n_groups, n, b)) < 0.5


@dataclass(frozen=True)
class SubsampleDesign:
    """The complete SPEX query design.

    ``matrices``: (C, n, b) bool subsampling matrices; ``code``: the shift code.
    """

    matrices: np.ndarray
    code: BCHCode

    @classmethod
    def create(cls, n: int, max_order: int, n_groups: int, b: int,
               rng: np.random.Generator) -> SubsampleDesign:
        return cls(subsample_matrices(n, b, n_groups, rng), bch_code(n, max_order))

    def doubled(self, rng: np.random.Generator) -> SubsampleDesign:
        """The design at b + 1 with one new random column per matrix: its masks with
        ``l < 2^b`` (the first half of axis 2 of :meth:`masks`) are this design's."""
        column = subsample_matrices(self.n, 1, self.n_groups, rng)
        return SubsampleDesign(np.concatenate([self.matrices, column], axis=2), self.code)

    @property
    def n(self) -> int:
        return self.matrices.shape[1]

    @property
    def b(self) -> int:
        return self.matrices.shape[2]

    @property
    def n_groups(self) -> int:
        return self.matrices.shape[0]

    @property
    def n_shifts(self) -> int:
        return self.code.n_parity + 1

    @property
    def n_samples(self) -> int:
        return self.n_groups * self.n_shifts * (1 << self.b)

    def shift_matrix(self) -> np.ndarray:
        """D, bool (P, n)."""
        return self.code.shift_matrix()

    def masks(self) -> np.ndarray:
        """All design masks, bool (C, P, 2^b, n)."""
        b = self.b
        ell = ((np.arange(1 << b)[:, None] >> np.arange(b)) & 1).astype(np.float32)  # (2^b, b)
        counts = ell @ self.matrices.transpose(0, 2, 1).astype(np.float32)  # (C, 2^b, n)
        aliased = (counts.astype(np.uint8) & 1).astype(bool)
        return aliased[:, None, :, :] ^ self.shift_matrix()[None, :, None, :]

    @functools.cached_property
    def _bin_codes(self) -> np.ndarray:
        weights = 1 << np.arange(self.b, dtype=np.int64)
        codes = self.matrices.astype(np.int64) @ weights
        return np.concatenate([codes, np.zeros((self.n_groups, 1), np.int64)], axis=1)

    def bin_codes(self) -> np.ndarray:
        """Per-group integer code of each feature's row of M_c, int64 (C, n + 1).

        The extra last column is 0, the code of the padding index -1. Computed once.
        """
        return self._bin_codes

    def bins(self, support: np.ndarray) -> np.ndarray:
        """Bin index ``M_c^T k`` of each frequency in every group, int64 (C, W).

        ``support``: (W, d) feature indices padded with -1.
        """
        codes = self.bin_codes()
        return np.bitwise_xor.reduce(codes[:, support], axis=2)

    def signatures(self, support: np.ndarray) -> np.ndarray:
        """Shift signatures ``(-1)^{<d_p, k>}``, float (W, P); column 0 is always +1."""
        parity = self.code.parity_bits(support)
        out = np.ones((len(parity), parity.shape[1] + 1))
        out[:, 1:] -= 2.0 * parity
        return out
