"""Choosing the surrogate by its error on held-out masks, never by its fit on the samples.

Every candidate is a set of Fourier columns (the constant first): the first-order model, the
peeled support, the tree-proxy support, their unions and, for small n, every set up to a
degree. For one candidate and one ridge penalty a single Cholesky factor ``A = L L^T`` of the
penalised normal equations gives the fit of *every prefix* of its columns at once: the prefix
``j`` solves ``L_j L_j^T beta = r_j`` with ``L_j`` the leading block of ``L``, so with
``z = L^-1 r`` and ``W = X_val L^-T`` its held-out predictions are ``cumsum(W * z)[:, j - 1]``
(``PREFIX_GRID`` of them are compared).
Columns are ranked by the magnitude of their coefficient in the candidate's whole fit at a
middle penalty, so the prefixes drop the weakest terms first: spurious terms of a noisy
recovery do not survive, because the held-out error decides how many stay.

Held-out masks (rather than K-fold cross-validation or GCV) because they cost no refits, stay
exact for the design rows (whose normal equations come from the bins; see
:mod:`spex_plugins.core.refit`) and give users an honest R^2 of the chosen surrogate
(``FourierExplanation.validation_r2``) on masks it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import linalg

__all__ = ["PENALTIES", "TOLERANCE", "Candidate", "Selection", "ridge_solve", "select"]

PENALTIES = (1e-9, 1e-3, 1e-2, 1e-1, 1.0)
"""Ridge penalties tried, in units of the number of training rows (a penalty of 1 shrinks an
isolated character's coefficient by half)."""
RANKING_PENALTY = 1e-2
"""Penalty of the fit whose coefficient magnitudes order a candidate's columns."""
PREFIX_GRID = 24
"""Prefix sizes tried per candidate and penalty: a geometric grid from 1 to all columns. Fewer
choices than every prefix keep the held-out choice from overfitting the held-out masks
(measured, R^2 on 1,000 fresh masks: VADER on 253 words at 500 / 1,000 calls 0.125 / 0.124 with
every prefix, 0.138 / 0.179 with 24; within 0.003 on VADER-45, digits and breast cancer)."""
TOLERANCE = 1e-3
"""A fit within this relative held-out error of the best, with fewer columns, is preferred."""


@dataclass(frozen=True)
class Candidate:
    """A named set of columns: indices into the column table, the constant (0) first.

    ``ranking``: how the prefixes drop columns: "fit" by the magnitude of the candidate's
    coefficients at ``RANKING_PENALTY``; "marginal" by the magnitude of each column's own
    correlation with the targets (sure independence screening: more stable than a joint fit
    when there are about as many columns as rows)."""

    name: str
    columns: np.ndarray
    ranking: Literal["fit", "marginal"] = "fit"


@dataclass(frozen=True)
class Selection:
    """The fit chosen for one output: its candidate, columns (indices into the table), ridge
    penalty (in units of training rows) and held-out R^2."""

    candidate: str
    columns: np.ndarray
    penalty: float
    validation_r2: float


def select(gram: np.ndarray, xty: np.ndarray, n_rows: int, validation: np.ndarray,
           targets: np.ndarray, candidates: list[Candidate]) -> Selection:
    """Choose the candidate, prefix and penalty with the smallest held-out squared error.

    ``gram`` (p, p) and ``xty`` (p,): normal equations of the training rows over the column
    table; ``n_rows``: training rows; ``validation`` (V, p): characters of the held-out masks;
    ``targets`` (V,): their model outputs. Among fits within ``TOLERANCE`` of the smallest
    error the one with the fewest columns wins.
    """
    sst = float(((targets - targets.mean()) ** 2).sum())
    floor = 1e-12 * max(sst, float((targets ** 2).sum()), np.finfo(float).tiny)
    trials = []  # (error, size, order, candidate, penalty)
    for candidate in candidates:
        cols = candidate.columns
        g, r, v = gram[np.ix_(cols, cols)], xty[cols], validation[:, cols]
        weights = np.ones(len(cols))
        weights[0] = 0.0  # the constant is not penalised
        if candidate.ranking == "marginal":
            ranking = r / np.sqrt(np.maximum(np.diag(g), 1e-300))
        else:
            ranking = _solve(g, r, weights, RANKING_PENALTY * n_rows)
        order = np.concatenate([[0], 1 + np.argsort(-np.abs(ranking[1:]), kind="stable")])
        g, r, v = g[np.ix_(order, order)], r[order], v[:, order]
        for penalty in PENALTIES:
            factor = _cholesky(g, weights * penalty * n_rows)
            if factor is None:
                continue
            z = linalg.solve_triangular(factor, r, lower=True)
            w = linalg.solve_triangular(factor, v.T, lower=True).T  # X_val L^-T
            residual = targets[:, None] - np.cumsum(w * z, axis=1)
            errors = (residual ** 2).sum(axis=0)  # (p,): one per prefix
            grid = np.unique(np.geomspace(1, len(errors), PREFIX_GRID).round().astype(int))
            errors = np.where(np.isin(np.arange(1, len(errors) + 1), grid), errors, np.inf)
            size = int(np.argmin(errors))
            trials.append((float(errors[size]), errors, cols[order], candidate.name, penalty))
    best = min(trial[0] for trial in trials)
    limit = best * (1 + TOLERANCE) + floor
    chosen = None
    for _, errors, cols, name, penalty in trials:
        fits = np.flatnonzero(errors <= limit)
        if len(fits) and (chosen is None or fits[0] + 1 < len(chosen[0])
                          or (fits[0] + 1 == len(chosen[0]) and errors[fits[0]] < chosen[3])):
            chosen = (cols[: fits[0] + 1], name, penalty, float(errors[fits[0]]))
    columns, name, penalty, error = chosen
    r2 = 1.0 - error / sst if sst > floor else (1.0 if error <= floor else -np.inf)
    return Selection(name, columns, penalty, float(r2))


def ridge_solve(gram: np.ndarray, xty: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Minimise ``beta^T G beta - 2 beta^T r + sum(weights * beta^2)``: ``gram`` (p, p),
    ``xty`` (p,), ``weights`` (p,) per-column penalties."""
    return _solve(gram, xty, weights, 1.0)


def _cholesky(matrix: np.ndarray, diagonal: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of ``matrix + diag(diagonal)`` (a tiny jitter keeps it definite);
    None when it is numerically singular."""
    jitter = 1e-10 * max(1.0, float(np.diag(matrix).max(initial=1.0)))
    try:
        return np.linalg.cholesky(matrix + np.diag(diagonal + jitter))
    except np.linalg.LinAlgError:
        return None


def _solve(matrix: np.ndarray, rhs: np.ndarray, weights: np.ndarray,
           penalty: float) -> np.ndarray:
    factor = _cholesky(matrix, weights * penalty)
    if factor is None:
        return np.linalg.lstsq(matrix + np.diag(weights * penalty), rhs, rcond=None)[0]
    return linalg.cho_solve((factor, True), rhs)
