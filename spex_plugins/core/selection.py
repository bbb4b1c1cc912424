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

A candidate may instead be fitted by the LASSO (``estimator="lasso"``): its exact penalty
path (:func:`lasso_path`, LARS on the normal equations) is compared on the held-out masks.
Soft thresholding shrinks every kept term, which wins where the signal is weak against what
the low-order terms cannot express (long texts at a few hundred calls: measured on VADER over
253 words at 500 calls, three seeds, R^2 on 1,000 fresh masks 0.11-0.15 for the LASSO against
0.04-0.09 for the best ridge prefix).

The tuned candidates are then weighed by stacking (the "super learner"): the held-out masks
fall in ``CROSS_FOLDS`` folds, each fold is predicted by every candidate's setting tuned on the
other folds, and non-negative least squares on these out-of-fold predictions gives the
weights (normalised to one). A single winner would be chosen among candidates whose held-out
errors differ by less than their noise, and a candidate with 120 settings (five penalties
times 24 prefixes) wins by fitting the held-out masks' noise: on VADER over 253 words at 500
calls the best ridge prefix scored 0.30 on the held-out masks and 0.15 on fresh ones. Measured
(seed 0, R^2 on 1,000 fresh masks, single winner -> stack): VADER-253 at 500 / 1,000 / 2,000
calls 0.157 / 0.273 / 0.358 -> 0.218 / 0.285 / 0.360, the sparse n = 1000 function at 1,000
calls 0.163 -> 0.126 (the one loss), exact recoveries unchanged (weight 1). The reported
``validation_r2`` is the R^2 of the weighted out-of-fold predictions: an estimate for fresh
masks rather than the best of many tries.

Held-out masks (rather than K-fold cross-validation or GCV) because they cost no refits, stay
exact for the design rows (whose normal equations come from the bins; see
:mod:`spex_plugins.core.refit`) and give users an honest R^2 of the chosen surrogate
(``FourierExplanation.validation_r2``) on masks it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import linalg, optimize

__all__ = ["PENALTIES", "TOLERANCE", "Candidate", "Selection", "Surrogate", "final_fit",
           "lasso_cv", "lasso_path", "ridge_solve", "select", "stack"]

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
CROSS_FOLDS = 5
"""Folds of the held-out masks for the out-of-fold predictions that weigh the candidates."""
STACK_MIN_WEIGHT = 0.01
"""Stacking weights below this share are dropped (the rest renormalised)."""
LASSO_PATH = 30
"""Penalties on a LASSO path: geometric from the smallest penalty that zeroes every term."""
LASSO_MAX_SHARE = 0.25
"""The LASSO path stops once it holds this share of the training rows as terms: beyond, its
degrees of freedom approach the rows and the held-out error only rises (and, with more terms
than rows, the path slows down and becomes singular)."""
LASSO_PATIENCE = 2.0
"""The held-out path stops at a penalty this many times below its best knot's."""
LASSO_MIN_RATIO = (1e-3, 1e-2)
"""Smallest penalty of the path over the largest: with at least twice as many training rows as
columns, else (an underdetermined fit, whose unpenalised end overfits and converges slowly)."""


@dataclass(frozen=True)
class Candidate:
    """A named set of columns: indices into the column table, the constant (0) first.

    ``estimator``: "ridge" (a penalty path times the prefixes of its ranked columns) or
    "lasso" (the LASSO path, :func:`lasso_path`; ``ranking`` unused). ``ranking``: how the
    ridge prefixes drop columns: "fit" by the magnitude of the candidate's coefficients at
    ``RANKING_PENALTY``; "marginal" by the magnitude of each column's own correlation with
    the targets (sure independence screening: more stable than a joint fit when there are
    about as many columns as rows); "given" in the order of ``columns`` (e.g. a tree proxy's
    terms, largest |F(k)| first)."""

    name: str
    columns: np.ndarray
    ranking: Literal["fit", "marginal", "given"] = "fit"
    estimator: Literal["ridge", "lasso"] = "ridge"


@dataclass(frozen=True)
class Selection:
    """One candidate's tuned fit: its candidate, columns (indices into the table; for the
    LASSO its nonzero terms), penalty (in units of training rows), the held-out R^2 of its
    out-of-fold predictions, its estimator and columns, and its weight in the surrogate."""

    candidate: str
    columns: np.ndarray
    penalty: float
    validation_r2: float
    estimator: Literal["ridge", "lasso", "fixed"] = "ridge"
    candidate_columns: np.ndarray | None = None
    weight: float = 1.0

    @property
    def fit_columns(self) -> np.ndarray:
        """The columns a refit on other rows solves over (:func:`final_fit`): the chosen ones
        for ridge, the whole candidate for the LASSO (which selects again)."""
        return self.candidate_columns if self.estimator == "lasso" else self.columns


@dataclass(frozen=True)
class Surrogate:
    """The surrogate of one output: tuned candidate fits (heaviest first) whose weights sum to
    one, the held-out R^2 of their weighted out-of-fold predictions, and these predictions
    (V,)."""

    parts: tuple[Selection, ...]
    validation_r2: float
    predictions: np.ndarray


def select(gram: np.ndarray, xty: np.ndarray, n_rows: int, validation: np.ndarray,
           targets: np.ndarray, candidates: list[Candidate], *,
           fixed: dict[str, np.ndarray] | None = None) -> Surrogate:
    """Tune every candidate on the held-out masks and weigh the tuned fits by stacking.

    ``gram`` (p, p) and ``xty`` (p,): normal equations of the training rows over the column
    table; ``n_rows``: training rows; ``validation`` (V, p): characters of the held-out masks;
    ``targets`` (V,): their model outputs; ``fixed``: held-out predictions (V,) of surrogates
    that are not refitted (the tree proxy's own spectrum), by name: they enter the stack as
    they are, as parts with ``estimator="fixed"`` and no columns.

    Each candidate's setting (ridge penalty and prefix, or LASSO penalty) is the one with the
    fewest columns within ``TOLERANCE`` of its smallest held-out error. The held-out masks fall
    in ``CROSS_FOLDS`` folds; each fold is predicted by the setting tuned on the other folds,
    and non-negative least squares on these out-of-fold predictions, normalised to sum to one,
    gives each candidate's weight (stacking, the "super learner"): candidates whose scores are
    indistinguishable share the weight, an exact one takes all of it. ``validation_r2`` is
    the R^2 of the weighted out-of-fold predictions.
    """
    sst, floor = _scale(targets)
    folds = np.arange(len(targets)) % CROSS_FOLDS
    tuned, out_of_fold = [], []
    for candidate in candidates:
        cols = candidate.columns
        g, r, v = gram[np.ix_(cols, cols)], xty[cols], validation[:, cols]
        if candidate.estimator == "lasso":
            penalties, beta = lasso_path(g, r, n_rows, validation=v, targets=targets)
            predictions = v @ beta  # (V, L)
            sizes = np.count_nonzero(beta, axis=0)
            options = [(p, beta[:, i]) for i, p in enumerate(penalties)]
        else:
            predictions, sizes, options = _ridge_prefixes(g, r, v, n_rows, cols,
                                                          candidate.ranking)
            if not options:
                continue
        squares = (targets[:, None] - predictions) ** 2
        errors = _fold_sums(squares, folds)  # (folds, options)
        total = errors.sum(axis=0)
        fits = np.flatnonzero(total <= total.min() * (1 + TOLERANCE) + floor)
        option = int(fits[np.lexsort((total[fits], sizes[fits]))[0]])
        penalty, fit = options[option]
        if candidate.estimator == "lasso":
            columns = cols[np.flatnonzero(fit)]
            if not len(columns) or columns[0] != cols[0]:
                columns = np.concatenate([cols[:1], columns])
        else:
            columns = fit
        others = np.argmin(total[None, :] - errors, axis=1)  # tuned without each fold
        oof = predictions[np.arange(len(targets)), others[folds]]
        score = float(((targets - oof) ** 2).sum())
        r2 = _r2(score, sst, floor)
        tuned.append(Selection(candidate.name, columns, float(penalty), float(r2),
                               candidate.estimator, cols))
        out_of_fold.append(oof)
    for name, predictions in (fixed or {}).items():
        score = float(((targets - predictions) ** 2).sum())
        r2 = _r2(score, sst, floor)
        tuned.append(Selection(name, np.zeros(0, np.int64), 0.0, float(r2), "fixed"))
        out_of_fold.append(np.asarray(predictions, np.float64))
    out_of_fold = np.stack(out_of_fold, axis=1)  # (V, candidates)
    weights, r2 = stack(out_of_fold, targets)
    order = np.argsort(-weights, kind="stable")
    parts = tuple(replace(tuned[i], weight=float(weights[i])) for i in order if weights[i] > 0)
    return Surrogate(parts, r2, out_of_fold @ weights)


def stack(predictions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, float]:
    """Stacking weights (F,) of out-of-fold ``predictions`` (V, F) for ``targets`` (V,):
    non-negative, summing to one (:func:`_stack`), and the R^2 of the weighted predictions."""
    weights = _stack(predictions, targets)
    sst, floor = _scale(targets)
    error = float(((targets - predictions @ weights) ** 2).sum())
    return weights, _r2(error, sst, floor)


def _scale(targets: np.ndarray) -> tuple[float, float]:
    """The targets' total sum of squares and the round-off floor below which it counts as 0."""
    sst = float(((targets - targets.mean()) ** 2).sum())
    return sst, 1e-12 * max(sst, float((targets ** 2).sum()), np.finfo(float).tiny)


def _r2(error: float, sst: float, floor: float) -> float:
    """1 - error / SST; on constant targets 1 for an exact fit, else -inf."""
    if sst > floor:
        return 1.0 - error / sst
    return 1.0 if error <= floor else -np.inf


def _ridge_prefixes(g: np.ndarray, r: np.ndarray, v: np.ndarray, n_rows: int,
                    cols: np.ndarray, ranking: str):
    """Held-out predictions (V, options) of every ridge penalty times every grid prefix of the
    ranked columns, each option's column count, and its (penalty, columns)."""
    weights = np.ones(len(cols))
    weights[0] = 0.0  # the constant is not penalised
    if ranking == "given":
        order = np.arange(len(cols))
    else:
        if ranking == "marginal":
            scores = r / np.sqrt(np.maximum(np.diag(g), 1e-300))
        else:
            scores = _solve(g, r, weights, RANKING_PENALTY * n_rows)
        order = np.concatenate([[0], 1 + np.argsort(-np.abs(scores[1:]), kind="stable")])
    g, r, v = g[np.ix_(order, order)], r[order], v[:, order]
    ranked = cols[order]
    grid = np.unique(np.geomspace(1, len(cols), PREFIX_GRID).round().astype(int))
    predictions, sizes, options = [], [], []
    for penalty in PENALTIES:
        factor = _cholesky(g, weights * penalty * n_rows)
        if factor is None:
            continue
        z = linalg.solve_triangular(factor, r, lower=True)
        w = linalg.solve_triangular(factor, v.T, lower=True).T  # X_val L^-T
        predictions.append(np.cumsum(w * z, axis=1)[:, grid - 1])
        sizes.append(grid)
        options += [(penalty, ranked[:size]) for size in grid]
    if not options:
        return None, None, []
    return np.hstack(predictions), np.concatenate(sizes), options


def _stack(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-negative weights (F,) summing to one of the out-of-fold ``predictions`` (V, F)."""
    weights, _ = optimize.nnls(predictions, targets)
    if not weights.sum() > 0:  # nothing helps: the best single candidate
        weights = np.zeros(predictions.shape[1])
        weights[np.argmin(((targets[:, None] - predictions) ** 2).sum(axis=0))] = 1.0
    weights = np.where(weights >= STACK_MIN_WEIGHT * weights.sum(), weights, 0.0)
    return weights / weights.sum()


def _fold_sums(squares: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Column sums of ``squares`` (V, m) over the rows of each fold: (CROSS_FOLDS, m)."""
    sums = np.zeros((CROSS_FOLDS, squares.shape[1]))
    np.add.at(sums, folds, squares)
    return sums


def lasso_cv(features: np.ndarray, targets: np.ndarray,
             folds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """K-fold cross-validated LASSO (as scikit-learn's ``LassoCV``): one penalty path for all
    folds, the penalty with the smallest error summed over the folds, refitted on every row.

    ``features`` (m, p): characters of the rows, the constant (column 0, unpenalised) first;
    ``targets`` (m,); ``folds``: disjoint row indices, each held out once (rows in no fold
    always train). Returns (coefficients (p,) on all rows, out-of-fold predictions (rows of the
    folds, in their order), penalty per training row)."""
    gram, xty = features.T @ features, features.T @ targets
    penalties, path = lasso_path(gram, xty, len(targets))
    errors, predictions = np.zeros(len(penalties)), []
    for held in folds:
        x, y = features[held], targets[held]
        _, beta = lasso_path(gram - x.T @ x, xty - x.T @ y, len(targets) - len(held),
                             penalties=penalties)
        predictions.append(x @ beta)  # (held, L)
        errors += ((y[:, None] - predictions[-1]) ** 2).sum(axis=0)
    best = int(np.argmin(errors))
    return path[:, best], np.concatenate([p[:, best] for p in predictions]), float(
        penalties[best])


def final_fit(selection: Selection, gram: np.ndarray, xty: np.ndarray,
              n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The chosen fit solved again on other rows at the chosen penalty per row.

    ``gram`` (s, s) and ``xty`` (s,) are the normal equations of ``n_rows`` rows over
    ``selection.fit_columns``. Returns (positions into ``fit_columns`` (q,), coefficients
    (q,)), the constant first: ridge keeps every column, the LASSO its nonzero terms."""
    if selection.estimator == "lasso":
        _, beta = lasso_path(gram, xty, n_rows, penalties=np.array([selection.penalty]))
        keep = np.flatnonzero(beta[:, 0])
        keep = keep if len(keep) and keep[0] == 0 else np.concatenate([[0], keep])
        return keep, beta[keep, 0]
    weights = np.full(len(xty), selection.penalty * n_rows)
    weights[0] = 0.0
    return np.arange(len(xty)), ridge_solve(gram, xty, weights)


def lasso_path(gram: np.ndarray, xty: np.ndarray, n_rows: int, *,
               penalties: np.ndarray | None = None, validation: np.ndarray | None = None,
               targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LASSO fits ``min 1/2 beta^T G beta - beta^T r + lam * n_rows * sum_{j>0} |beta_j|`` along
    a penalty path (column 0, the constant, unpenalised).

    ``gram`` (p, p), ``xty`` (p,); ``penalties`` (L,) per training row (default: ``LASSO_PATH``
    of them, geometric from the smallest that zeroes every term down by ``LASSO_MIN_RATIO``).
    Returns ``(penalties (L,), coefficients (p, L))``. The constant is eliminated exactly
    (Schur complement); the path is then followed exactly by LARS with the LASSO
    modification (Efron et al. 2004): between knots the coefficients are linear in the
    penalty, each knot adds or drops one term, and every step is a few vectorised products
    with the active columns of ``gram``. The path stops early when the active columns become
    singular or hold ``LASSO_MAX_SHARE`` of the rows, or (given held-out ``validation``
    (V, p) characters and their ``targets`` (V,)) once the penalty is ``LASSO_PATIENCE``
    times below the knot with the smallest held-out error and the error is above it; lower
    penalties then get the last knot's fit."""
    p = len(xty)
    g00 = float(gram[0, 0])
    g0 = gram[1:, 0] / g00 if g00 > 0 else np.zeros(p - 1)
    g = gram[1:, 1:] - np.outer(gram[1:, 0], g0)
    r = xty[1:] - g0 * xty[0]
    diag = np.diag(g)
    usable = diag > 1e-9 * max(float(diag.max(initial=0.0)), 1e-300)
    top = float(np.abs(r[usable]).max(initial=0.0))
    if penalties is None:
        ratio = LASSO_MIN_RATIO[0] if n_rows >= 2 * p else LASSO_MIN_RATIO[1]
        penalties = np.geomspace(1.0, ratio, LASSO_PATH) * top / max(n_rows, 1)
    penalties = np.asarray(penalties, np.float64)
    most = max(1, int(LASSO_MAX_SHARE * n_rows))
    held_out = None
    if validation is not None:  # the constant's share eliminated as in the Gram
        held_out = (validation[:, 1:] - np.outer(validation[:, 0], g0),
                    targets - validation[:, 0] * (xty[0] / g00 if g00 > 0 else 0.0))
    knots, betas = _lars_lasso(g, r, usable, top, penalties * n_rows, most, held_out)
    out = np.zeros((p, len(penalties)))
    out[1:] = _interpolate(knots, betas, penalties * n_rows).T
    if g00 > 0:
        out[0] = (xty[0] - gram[0, 1:] @ out[1:]) / g00
    return penalties, out


def _lars_lasso(g: np.ndarray, r: np.ndarray, usable: np.ndarray, top: float,
                grid: np.ndarray, most: int,
                held_out: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the LASSO path from ``top`` (all zero) down to the smallest of the ``grid``
    penalties or past ``most`` active terms (or the held-out stop of :func:`lasso_path`,
    checked at the grid penalties): penalties (m,) decreasing and coefficients (m, p). The
    inverse of the active columns' Gram is kept up to date by the block-inverse formulas
    (O(k^2) per added or dropped term, k active)."""
    p = len(r)
    beta = np.zeros(p)
    knots, betas = [top], [beta.copy()]
    if top <= 0.0:
        return np.array(knots), np.array(betas)
    correlation = r.copy()  # r - g @ beta
    size = min(p, most + 1)
    inverse = np.zeros((size, size))  # its leading k x k block: the active Gram's inverse
    gram_rows = np.empty((size, p))  # g's rows of the active terms, in order
    active: list[int] = []
    signs: list[float] = []
    inside = np.zeros(p, bool)
    lam, tiny = top, 1e-12 * top
    joiner = int(np.flatnonzero(usable)[np.argmax(np.abs(r[usable]))])
    end = float(grid.min())
    checks = np.sort(grid)[::-1].tolist()  # penalties where the held-out error is checked
    if held_out is not None:
        best = (float(held_out[1] @ held_out[1]), top)
    while True:
        if joiner >= 0:  # border the inverse with the joining column
            k = len(active)
            column = g[active, joiner]
            u = inverse[:k, :k] @ column
            pivot = g[joiner, joiner] - column @ u
            if not pivot > 1e-10 * g[joiner, joiner]:  # dependent on the active columns
                break
            inverse[:k, :k] += np.outer(u, u / pivot)
            inverse[:k, k] = inverse[k, :k] = -u / pivot
            inverse[k, k] = 1.0 / pivot
            gram_rows[k] = g[joiner]
            active.append(joiner)
            signs.append(float(np.sign(correlation[joiner])))
            inside[joiner] = True
        if lam <= end or len(active) > most:
            break
        cols = np.array(active)
        direction = inverse[:len(cols), :len(cols)] @ np.array(signs)
        slope = direction @ gram_rows[:len(cols)]  # d correlation / d step (g symmetric)
        free = usable & ~inside
        with np.errstate(divide="ignore", invalid="ignore"):
            joins = np.where(free, (lam - correlation) / (1.0 - slope), np.inf)
            joins = np.where(joins > tiny, joins, np.inf)
            other = np.where(free, (lam + correlation) / (1.0 + slope), np.inf)
            joins = np.minimum(joins, np.where(other > tiny, other, np.inf))
            drops = -beta[cols] / direction
        drops = np.where(drops > tiny, drops, np.inf)
        joiner = int(np.argmin(joins))
        dropper = int(np.argmin(drops))
        step = min(float(joins[joiner]), float(drops[dropper]), lam - end)
        beta[cols] += step * direction
        correlation -= step * slope
        lam -= step
        knots.append(lam)
        betas.append(beta.copy())
        stop = False
        while held_out is not None and checks and checks[0] >= lam:
            at = checks.pop(0)  # the path at ``at``: between the last two knots
            fit = betas[-1] + (betas[-2] - betas[-1]) * ((at - lam) / max(step, 1e-300))
            nonzero = np.flatnonzero(fit)
            error = held_out[1] - held_out[0][:, nonzero] @ fit[nonzero]
            error = float(error @ error)
            if error < best[0]:
                best = (error, at)
            elif at * LASSO_PATIENCE < best[1]:
                stop = True
        if stop:
            break
        if step == drops[dropper]:
            joiner = -1
            beta[active[dropper]] = 0.0
            inside[active.pop(dropper)] = False
            signs.pop(dropper)
            k = len(cols)
            keep = np.arange(k) != dropper
            gram_rows[dropper:k - 1] = gram_rows[dropper + 1:k]
            block = inverse[:k, :k]
            inverse[:k - 1, :k - 1] = block[np.ix_(keep, keep)] - np.outer(
                block[keep, dropper], block[dropper, keep] / block[dropper, dropper])
        elif step != joins[joiner]:  # reached ``end``
            joiner = -1
    return np.array(knots), np.array(betas)


def _interpolate(knots: np.ndarray, betas: np.ndarray, penalties: np.ndarray) -> np.ndarray:
    """The path's coefficients (L, p) at ``penalties``: linear between the knots (decreasing),
    the last knot's below it, zero above the first."""
    ascending, values = knots[::-1], betas[::-1]
    upper = np.clip(np.searchsorted(ascending, penalties), 1, max(len(knots) - 1, 1))
    if len(knots) == 1:
        return np.repeat(values[:1], len(penalties), axis=0)
    low, high = ascending[upper - 1], ascending[upper]
    share = np.clip((penalties - low) / np.maximum(high - low, 1e-300), 0.0, 1.0)[:, None]
    return values[upper - 1] + share * (values[upper] - values[upper - 1])


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
