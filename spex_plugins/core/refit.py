"""Ridge refit of the recovered support on all design samples, computed in the bin domain.

The design rows are the masks ``x = M_c l XOR d_p``. For characters ``chi_k(x) = (-1)^<x,k>``
the sums over one (group, shift) block collapse onto the Walsh-Hadamard bins:

    sum_l chi_a(x) chi_b(x) = 2^b [M_c^T a == M_c^T b] s_p(a) s_p(b)
    sum_l chi_a(x) y(x)     = 2^b s_p(a) U[c, p, M_c^T a]

so the Gram matrix ``X^T X`` and ``X^T y`` over all C*P*2^b samples cost O(p^2 P) instead of
O(N p^2), exactly. No sample matrix is materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sampler import SubsampleDesign

__all__ = ["AliasGram", "RefitResult", "design_moments", "refit_columns", "ridge_refit"]

EXACT_FIT = 1e-12
"""A least-squares fit leaving less than this share of the sample energy is exact: no penalty."""
NEGLIGIBLE = 1e-10
"""Refit coefficients below this fraction of the largest are numerical zeros and are dropped."""


@dataclass(frozen=True)
class RefitResult:
    """Coefficients (p, K) for the columns (p, t), and the chosen penalty per output (K,)."""

    support: np.ndarray
    coefficients: np.ndarray
    penalty: np.ndarray


def refit_columns(n: int, t: int, supports: list[np.ndarray]) -> np.ndarray:
    """Columns of the refit: the constant, every first-order term, then the recovered terms.

    Returns (p, t) int64 padded with -1, unique, in that order.
    """
    base = np.full((n + 1, t), -1, np.int64)
    base[1:, 0] = np.arange(n)
    recovered = np.vstack([base[:0]] + [s for s in supports if len(s)])
    if len(recovered):
        degree = (recovered >= 0).sum(axis=1)
        recovered = np.unique(recovered[degree >= 2], axis=0)
    return np.vstack([base, recovered])


class AliasGram:
    """The design's Gram matrix ``X^T X``: ``N * I`` plus the sparse aliasing pairs.

    Two columns a != b meet only where they share a bin in some group; each such meeting adds
    ``2^b <s(a), s(b)>``. Stored as pair lists (rows, cols, values), both triangles.
    """

    def __init__(self, design: SubsampleDesign, columns: np.ndarray):
        signatures = design.signatures(columns)  # (p, P)
        targets = design.bins(columns)  # (C, p)
        n_bins = 1 << design.b
        self.size = len(columns)
        self.diagonal = float(design.n_samples)
        rows, cols = [], []
        for group_bins in targets:
            order = np.argsort(group_bins, kind="stable")
            sorted_bins = group_bins[order]
            offset = 1
            while offset < self.size:  # pairs (i, i + offset) inside one bin of this group
                same = np.flatnonzero(sorted_bins[offset:] == sorted_bins[:-offset])
                if len(same) == 0:
                    break
                rows.append(order[same])
                cols.append(order[same + offset])
                offset += 1
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        values = n_bins * np.einsum("ip,ip->i", signatures[rows], signatures[cols])
        self.rows = np.concatenate([rows, cols])
        self.cols = np.concatenate([cols, rows])
        self.values = np.concatenate([values, values])

    def restricted(self, size: int) -> AliasGram:
        """The Gram matrix of the first ``size`` columns."""
        sub = object.__new__(AliasGram)
        keep = (self.rows < size) & (self.cols < size)
        sub.size, sub.diagonal = size, self.diagonal
        sub.rows, sub.cols, sub.values = self.rows[keep], self.cols[keep], self.values[keep]
        return sub

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        off = np.bincount(self.rows, self.values * x[self.cols], minlength=self.size)
        return self.diagonal * x + off

    def dense(self) -> np.ndarray:
        out = np.diag(np.full(self.size, self.diagonal))
        np.add.at(out, (self.rows, self.cols), self.values)
        return out


def design_moments(bins: np.ndarray, design: SubsampleDesign,
                   columns: np.ndarray) -> tuple[AliasGram, np.ndarray, np.ndarray]:
    """Normal equations of the design samples over the characters of ``columns`` (p, t).

    ``bins``: (C, P, 2^b, K) untouched WHT bins of the samples. Returns the Gram matrix
    ``X^T X`` (an :class:`AliasGram`), ``X^T y`` (p, K) and ``y^T y`` (K,), all exact.
    """
    n_groups, _, n_bins, n_out = bins.shape
    signatures = design.signatures(columns)  # (p, P)
    targets = design.bins(columns)  # (C, p)
    xty = np.zeros((len(columns), n_out))
    for c in range(n_groups):  # per output: the same rounding however many are explained
        for k in range(n_out):
            xty[:, k] += np.einsum("ap,pa->a", signatures, bins[c][:, targets[c], k])
    xty *= n_bins
    yty = n_bins * (bins ** 2).sum(axis=(0, 1, 2))  # Parseval: sum of squared samples
    return AliasGram(design, columns), xty, yty


def ridge_refit(bins: np.ndarray, design: SubsampleDesign, columns: np.ndarray) -> RefitResult:
    """Ridge regression of the design samples on the characters of ``columns``.

    ``bins``: (C, P, 2^b, K) untouched WHT bins of the samples. The penalty is chosen per output
    by empirical Bayes: lambda = sigma^2 / tau^2, with sigma^2 the residual variance of the
    least-squares fit and tau^2 the mean squared non-constant coefficient less its sampling
    variance (so a noiseless, exact fit gets lambda = 0, i.e. plain least squares). The constant is
    not penalised. If the penalised fit's residual sum of squares on the samples exceeds that
    of the first-order least-squares fit (constant + all n features), the penalty is divided
    by 10 until it does not, so the refit is never worse on the samples than a first-order
    linear model. Columns whose coefficients are numerical zeros in every output (below
    ``NEGLIGIBLE`` times the largest; typically first-order columns of an exactly sparse
    function) are left out of the result; the constant is always kept.
    """
    n_out = bins.shape[3]
    n_samples = design.n_samples
    gram, xty, yty = design_moments(bins, design, columns)
    first = gram.restricted(design.n + 1)
    jitter = 1e-12 * n_samples
    penalised = np.ones(len(columns))
    penalised[0] = 0.0

    def solve(g: AliasGram, penalty: float, k: int) -> tuple[np.ndarray, float]:
        rhs = xty[: g.size, k]
        beta = _solve_spd(g, jitter + penalty * penalised[: g.size], rhs)
        rss = yty[k] - 2 * beta @ rhs + beta @ (g @ beta)
        return beta, float(rss)

    coefficients = np.zeros((len(columns), n_out))
    penalties = np.zeros(n_out)
    for k in range(n_out):
        beta, rss = solve(gram, 0.0, k)
        dof = n_samples - len(columns)
        penalty = 0.0
        if dof > 0 and len(columns) > 1 and rss > EXACT_FIT * yty[k]:
            sigma2 = rss / dof
            tau2 = float(np.mean(beta[1:] ** 2)) - sigma2 / n_samples
            if tau2 > 0:
                penalty = sigma2 / tau2
        if penalty > 0:
            _, rss_first = solve(first, 0.0, k)
        while penalty > 0:
            candidate, rss_pen = solve(gram, penalty, k)
            if rss_pen <= rss_first * (1 + 1e-12):
                beta = candidate
                break
            penalty = penalty / 10 if penalty > jitter else 0.0
        coefficients[:, k] = beta
        penalties[k] = penalty
    magnitude = np.abs(coefficients)
    keep = (magnitude > NEGLIGIBLE * magnitude.max(initial=0.0)).any(axis=1)
    keep[0] = True
    return RefitResult(columns[keep], coefficients[keep], penalties)


def _solve_spd(gram: AliasGram, diag: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve (gram + diag(diag)) x = rhs for the symmetric positive (semi)definite gram.

    The design's Gram matrix is N*I plus sparse aliasing terms, so Jacobi-preconditioned
    conjugate gradients converge in a few sparse mat-vecs; a dense direct solve is the fallback
    when they do not reach a relative residual of 1e-13 (an ill-conditioned support).
    """
    system_diag = gram.diagonal + diag
    x = rhs / system_diag
    residual = rhs - (gram @ x + diag * x)
    z = residual / system_diag
    direction = z.copy()
    rz = residual @ z
    target = 1e-13 * np.linalg.norm(rhs)
    for _ in range(300):
        if np.linalg.norm(residual) <= target:
            return x
        q = gram @ direction + diag * direction
        step = rz / (direction @ q)
        x += step * direction
        residual -= step * q
        z = residual / system_diag
        rz, rz_old = residual @ z, rz
        direction = z + (rz / rz_old) * direction
    if np.linalg.norm(residual) <= target:
        return x
    return np.linalg.solve(gram.dense() + np.diag(diag), rhs)
