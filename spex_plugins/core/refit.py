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

__all__ = ["RefitResult", "refit_columns", "ridge_refit"]


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


def ridge_refit(bins: np.ndarray, design: SubsampleDesign, columns: np.ndarray) -> RefitResult:
    """Ridge regression of the design samples on the characters of ``columns``.

    ``bins``: (C, P, 2^b, K) untouched WHT bins of the samples. The penalty is chosen per output
    by empirical Bayes: lambda = sigma^2 / tau^2, with sigma^2 the residual variance of the
    least-squares fit and tau^2 the mean squared non-constant coefficient less its sampling
    variance (so a noiseless fit gets lambda = 0, i.e. plain least squares). The constant is
    not penalised. If the penalised fit's residual sum of squares on the samples exceeds that
    of the first-order least-squares fit (constant + all n features), the penalty is divided
    by 10 until it does not, so the refit is never worse on the samples than a first-order
    linear model.
    """
    n_groups, n_shifts, n_bins, n_out = bins.shape
    n_samples = n_groups * n_shifts * n_bins
    n_features = design.n
    signatures = design.signatures(columns)  # (p, P)
    targets = design.bins(columns)  # (C, p)
    same_bin = np.zeros((len(columns), len(columns)))
    xty = np.zeros((len(columns), n_out))
    for c in range(n_groups):
        same_bin += targets[c][:, None] == targets[c][None, :]
        xty += np.einsum("ap,apk->ak", signatures, bins[c][:, targets[c], :].transpose(1, 0, 2))
    gram = n_bins * (signatures @ signatures.T) * same_bin
    xty *= n_bins
    yty = n_bins * (bins ** 2).sum(axis=(0, 1, 2))  # Parseval: sum of squared samples
    jitter = 1e-12 * n_samples
    penalised = np.ones(len(columns))
    penalised[0] = 0.0
    first = slice(0, n_features + 1)

    def solve(penalty: float, k: int, cols: slice = slice(None)) -> tuple[np.ndarray, float]:
        g = gram[cols, cols]
        diag = jitter + penalty * penalised[cols]
        beta = np.linalg.solve(g + np.diag(diag), xty[cols, k])
        rss = yty[k] - 2 * beta @ xty[cols, k] + beta @ g @ beta
        return beta, float(rss)

    coefficients = np.zeros((len(columns), n_out))
    penalties = np.zeros(n_out)
    for k in range(n_out):
        _, rss_first = solve(0.0, k, first)
        beta, rss = solve(0.0, k)
        dof = n_samples - len(columns)
        penalty = 0.0
        if dof > 0 and len(columns) > 1:
            sigma2 = max(rss, 0.0) / dof
            tau2 = float(np.mean(beta[1:] ** 2)) - sigma2 / n_samples
            if sigma2 > 0 and tau2 > 0:
                penalty = sigma2 / tau2
        while penalty > 0:
            candidate, rss_pen = solve(penalty, k)
            if rss_pen <= rss_first * (1 + 1e-12):
                beta = candidate
                break
            penalty = penalty / 10 if penalty > jitter else 0.0
        coefficients[:, k] = beta
        penalties[k] = penalty
    return RefitResult(columns, coefficients, penalties)
