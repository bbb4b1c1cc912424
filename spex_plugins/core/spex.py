"""SPEX: sparse Fourier explanations of a masked-model value function."""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from math import comb

import numpy as np

from ..runtime import ValueFunction, evaluate, unique_masks
from ..runtime.masks import unique_rows
from . import proxy as tree_proxy
from .budget import DOUBLING_MIN_N, EXHAUSTIVE_MAX_N, BudgetPlan, minimum_budget, plan_budget
from .fourier import FourierExplanation, characters
from .peeling import PeelResult, peel
from .refit import design_moments, refit_columns, ridge_refit
from .sampler import MAX_B, MIN_B, SubsampleDesign
from .selection import Candidate, final_fit, lasso_cv, select, stack
from .transforms import fwht

__all__ = ["SPEX", "ProxySPEX"]

DEFAULT_B = 8
"""b of the older refits when neither a budget nor b is given."""
DENSE_MAX_COLUMNS = 1000
"""Largest dense low-order candidate (every set up to a degree) the validated refit tries."""
PROXY_MAX_TERMS = 400
"""Largest number of tree-proxy Fourier terms per output that the regression candidates refit."""
PROXY_TREE_TERMS = 4000
"""Largest number of the proxy's own Fourier terms (its trees' spectrum, largest first) in the
"proxy trees" candidate, which keeps the trees' coefficients as they are (no refit)."""
SHALLOW_PROXY_DEPTH = 3
"""Depth of the second, shallow tree proxy (``"shallow proxy"`` candidate; only where the
degree t is above it). Its trees train ``SHALLOW_PROXY_ROUNDS`` rounds on every training row,
without early stopping: the early-stopped deep trees stop after ~100-250 rounds on a few hundred
rows, before they have split on the weaker low-order interactions, while long-trained shallow
trees propose them and the validated ridge refit (not the trees' values) estimates them.
Measured (seeds 0-2, mean held-out R^2 on 1,000 uniform masks, without -> with): digits CNN
pixels at 500 / 1k / 2k calls 0.862 / 0.944 / 0.965 -> 0.885 / 0.953 / 0.970 (shapiq's
ProxySPEX, whose grid search picks depth 3 there, in the same runs over seeds 0-1: 0.885 /
0.918), intent head 500 0.871 -> 0.873, sparse n = 1000 at 1k 0.127 -> 0.137; VADER-45 at 500
0.947 -> 0.941; 1,000 rounds instead of 300 gave the same within 0.008 at three times the
cost, 100 rounds lost most of the sparse gain (0.130)."""
SHALLOW_PROXY_ROUNDS = 300
"""Boosting rounds of the shallow tree proxy (see ``SHALLOW_PROXY_DEPTH``)."""
SHALLOW_PROXY_MAX_ROWS = 3000
"""Most training rows for which the shallow proxy is fitted: at 5k / 10k calls it changed held-out
R^2 by -0.001 to +0.007 (digits, VADER-253, noisy sparse n = 1000; breast-cancer GBM exact
either way) for 1-2 s more of own work at n = 1000."""
COMPLETION_MAX_N = DOUBLING_MIN_N - 1
"""Largest n whose validated surrogate is completed: its values on all 2^n masks (at most
16,384), the model's own where evaluated, transformed back (see :func:`_complete`)."""
BORDER_SHARE = 0.5
"""Share of the training masks beside the design that, for n <= COMPLETION_MAX_N, enumerate
whole coalition sizes from the border in (sizes 1 and n - 1, then 2 and n - 2, ...), as
KernelSHAP does: Shapley-type indices weigh each mask of size s by 1 / C(n - 1, s), so the
completed surrogate should be exact there. Measured on a sum-of-unanimity game of degree 1-8
(n = 12, mean of 3 seeds, MSE of the Shapley values): 6.0e-3 / 3.1e-6 at 1,000 / 4,000 calls
without border masks, 2.5e-4 / 1.4e-7 with this share (2.5e-4 / 2.8e-8 with all of them)."""
EXTEND_INTERACTIONS = 0.1
"""Smallest share of the output's variance (on the uniform masks) that the interactions
(degree >= 2) peeled from the design must carry for the design to double (see
:func:`extends_design`)."""
EXTEND_UNEXPLAINED = 0.2
"""Smallest share of the variance the peeled terms must leave unexplained for the design to
double. Measured at seed 0, peeled interactions / peeled terms as shares of the variance: the
100-term n = 1000 function 0.39 / 0.57 at 5k calls (doubling: R^2 0.57 -> 1.00), its noisy
version 0.47 / 0.60 at 10k (0.72 -> 0.92 against the noiseless truth), VADER on 253 and 564
words at most 0.04 (doubling lost up to 0.06), VADER on 45 words 0.14 / 0.86 at 2k (lost
0.004), digits, tabular and intent games 0.00-0.22 / 0.58-0.99 (within 0.003 either way)."""
COMMITTEE_FOLDS = 5
"""Fits averaged into the surrogate of a run without a design and with few rows per feature,
and folds of the first-order LASSO it is stacked with (see ``COMMITTEE_ROWS_PER_FEATURE`` and
:meth:`SPEX._committee_fit`)."""
COMMITTEE_ROWS_PER_FEATURE = 4
"""Below this many training rows per feature (and without a design, n > COMPLETION_MAX_N) a
single held-out split of 75-300 masks chooses among candidates whose scores differ by less
than their noise, so the surrogate is the average of ``COMMITTEE_FOLDS`` fits, each held out on
its own fifth of the uniform masks. Measured (seeds 0-2, mean held-out R^2 on the benchmark's
masks, one fit -> committee): the 100-term n = 1000 function at 500 / 1k calls 0.069 / 0.126
-> 0.084 / 0.125 (LASSO 0.090 / 0.130), its noisy version 0.054 / 0.110 -> 0.076 / 0.102
(LASSO 0.074 / 0.109), VADER-253 at 500 / 1k 0.165 / 0.259 -> 0.180 / 0.267, VADER-564
0.015 / 0.018 -> 0.014 / 0.027 (LASSO 0.024 / 0.036). The committee's fits leave out the ridge
fits of the first-order terms and of the union (their Cholesky factors of 1,000+ columns are
most of the cost; with them the results were within 0.006 and the own work 5x, not 2x).
The average is then stacked with a first-order LASSO cross-validated on the same folds (as
LassoCV: one penalty for all folds, chosen by the summed error), because a penalty chosen on
one fold of 100 masks is noisy where first-order terms carry most of what can be learnt.
Committee -> stacked with the LASSO (same seeds and masks): VADER-253 at 500 / 1k 0.180 /
0.267 -> 0.190 / 0.263 (LassoCV 0.195 / 0.236), VADER-564 0.014 / 0.027 -> 0.016 / 0.028
(0.024 / 0.036), the sparse function 0.084 / 0.125 -> 0.089 / 0.127, its noisy version 0.076 /
0.102 -> 0.078 / 0.108 (LassoCV 0.074 / 0.109)."""
REFITS = ("validated", "ridge", None)
RANKED_SOURCES = ("proxy", "shallow proxy")
"""Supports whose ridge prefixes keep the order they come in (the trees' |F(k)|, largest
first) rather than a joint ridge fit's: the fit of ~400 columns on a few hundred rows ranks
them worse than the trees do (seeds 0-2, held-out R^2 at 500 calls: VADER-45 0.941 -> 0.947,
intent head 0.860 -> 0.871, digits 0.860 -> 0.862; within 0.007 either way elsewhere)."""
SUPPORTS = ("auto", "peeling", "proxy")


class SPEX:
    """Spectral Explainer (Kang et al., ICML 2025).

    Treats the model output under feature masking as a set function ``f: {0,1}^n -> R`` and
    recovers its important Walsh-Hadamard coefficients of degree <= ``max_order`` from
    ``n_groups * P * 2^b`` structured masks (random linear subsampling plus BCH-coded shifts),
    then chooses the surrogate on held-out masks (see :mod:`spex_plugins.core.budget` for how a
    budget is spent and :mod:`spex_plugins.core.selection` for the choice).

    Parameters
    ----------
    max_order : int
        Degree bound t: the BCH code corrects t errors, so frequencies with up to t features
        are recoverable. Larger t costs more shifts P (about t log2 n). A bound above the
        number of features n loses nothing (no frequency has more than n features), so it is
        lowered to n; ``metadata["max_order"]`` is the bound used and
        ``metadata["max_order_requested"]`` the one asked for.
    n_groups : int or None
        Number of independent subsampling groups C. None: 3 or 2, whichever lets the budget
        give more bins per group (see :mod:`spex_plugins.core.budget`); 3 for the older refits.
    b : int or None
        log2 of the bins per group. None: the largest b the budget allows.
    decoder : {"soft", "hard"}
        Hard BCH decoding of the parity signs, or soft (Chase) decoding that also tries flips
        of the least reliable parity bits.
    refit : {"validated", "ridge", None}
        "validated" (default): the whole budget is spent (design, uniform training masks and
        held-out masks); the candidates (the first-order fit, the peeled support, the
        tree-proxy support (and, on up to ``SHALLOW_PROXY_MAX_ROWS`` training masks, a
        shallow proxy's: ``metadata["shallow_proxy"]``), their union and (small n) every
        set up to a degree, each over a ridge penalty path and every prefix of its terms,
        and the LASSO paths of the first-order terms and of the union) are tuned on the
        held-out masks and weighted by stacking their out-of-fold predictions
        (``metadata["stack"]``; see
        :func:`spex_plugins.core.selection.select`; the proxy's trees, when they carry weight,
        are refitted on every row with the number of trees early stopping chose); the model's
        own f(empty) and f(full) are
        recorded so that :meth:`FourierExplanation.shapley_values` are efficient for the
        model, and
        ``explanation.validation_r2`` is its held-out R^2. For n <= ``COMPLETION_MAX_N`` half
        of the training masks enumerate the border sizes (see ``BORDER_SHARE``) and the
        surrogate is completed: exact on every evaluated mask (``metadata["completed"]``).
        For larger n the design may double in a second stage when its peeled interactions
        call for more bins (:func:`extends_design`; ``metadata["design_extended"]`` and
        ``["design_evidence"]``, None where the budget leaves no room for it). Without a
        design and with fewer than ``COMMITTEE_ROWS_PER_FEATURE`` training rows per feature the
        surrogate averages ``COMMITTEE_FOLDS`` such fits, each held out on its own fold of the
        uniform masks, and stacks the average with a first-order LASSO cross-validated on the
        same folds (``metadata["committee"]``, ``["committee_stack"]``).
        "ridge": the earlier refit of the peeled support plus all first-order terms on the
        design samples only; None: raw peeled values.
    support : {"auto", "peeling", "proxy"}
        Where the validated refit's interaction terms come from: BCH peeling and, when
        LightGBM is installed (``pip install "spex-plugins[proxy]"``), a gradient-boosted tree
        proxy whose Fourier spectrum is read exactly off its trees ("auto"; without LightGBM
        the proxy is skipped and ``metadata["proxy"]`` says so); peeling only; or the proxy
        only (uniform masks, no BCH design; LightGBM required).
    random_state : int, numpy Generator or None
        Seeds every random choice; equal seeds give identical explanations.
    chase_depth : int or None
        Least reliable parity bits that Chase decoding flips (default 2 * max_order on noisy
        samples, max_order on exact ones; at most 256 flip patterns per word, see
        :func:`spex_plugins.core.bch.chase_plan`).
    n_jobs : int or None
        Threads for the validated refit's tree fits and committee folds, as in scikit-learn:
        None means 1, -1 every CPU, -2 all but one. The work runs in LightGBM and numpy,
        which release the GIL; the explanation is identical for every value (each fit has its
        own seed, drawn in a fixed order). ``timings["own"]`` is wall time; the stage timings
        add the threads' times up. Model calls are not affected (see
        :mod:`spex_plugins.runtime` for parallel model calls).
    """

    def __init__(self, max_order: int = 5, n_groups: int | None = None, b: int | None = None,
                 decoder: str = "soft", refit: str | None = "validated", random_state=None,
                 chase_depth: int | None = None, support: str = "auto",
                 n_jobs: int | None = None):
        self.max_order = max_order
        self.n_groups = n_groups
        self.b = b
        self.decoder = decoder
        self.refit = refit
        self.random_state = random_state
        self.chase_depth = chase_depth
        self.support = support
        self.n_jobs = n_jobs

    def _jobs(self) -> int:
        """Threads for the fits (``n_jobs`` as in scikit-learn: None 1, -1 every CPU)."""
        jobs = self.n_jobs
        if jobs is None:
            return 1
        cpus = os.cpu_count() or 1
        return max(1, cpus + 1 + int(jobs)) if jobs < 0 else int(jobs)

    def _validate(self, n) -> int:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n (number of features) must be an integer >= 1, got {n!r}")
        n = int(n)
        t = self.max_order
        if isinstance(t, bool) or not isinstance(t, int | np.integer) or t < 1:
            raise ValueError(f"max_order must be an integer >= 1, got {t!r}")
        if self.n_groups is not None and (not isinstance(self.n_groups, int | np.integer)
                                          or self.n_groups < 1):
            raise ValueError(f"n_groups must be an integer >= 1, got {self.n_groups!r}")
        if self.decoder not in ("soft", "hard"):
            raise ValueError(f"decoder must be 'soft' or 'hard', got {self.decoder!r}")
        if self.refit not in REFITS:
            raise ValueError(f"refit must be one of {REFITS}, got {self.refit!r}")
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")
        if self.support != "auto" and self.refit != "validated":
            raise ValueError(f"support={self.support!r} needs refit='validated'")
        if self.support == "proxy" and not tree_proxy.proxy_available():
            raise ImportError(tree_proxy.PROXY_MISSING)
        if self.b is not None and not MIN_B <= self.b <= MAX_B:
            raise ValueError(f"b must be in [{MIN_B}, {MAX_B}], got {self.b!r}")
        jobs = self.n_jobs
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int | np.integer)
                                 or jobs == 0):
            raise ValueError(f"n_jobs must be None or a nonzero integer (-1: every CPU), "
                             f"got {jobs!r}")
        return n

    def degree(self, n: int) -> int:
        """The degree bound used for ``n`` features: ``min(max_order, n)``."""
        return min(int(self.max_order), self._validate(n))

    def min_budget(self, n: int) -> int:
        """The smallest budget :meth:`explain` accepts for ``n`` features (see
        :func:`spex_plugins.core.budget.minimum_budget`)."""
        return minimum_budget(n, self.degree(n), self.n_groups, refit=self.refit)

    def plan(self, n: int, budget: int | None = None,
             budget_name: str = "budget") -> BudgetPlan:
        """How :meth:`explain` spends ``budget`` on ``n`` features (ValueError, stating the
        minimum and naming ``budget_name``, when it is too small)."""
        if self.support == "proxy":  # uniform masks only: no design
            return plan_budget(n, self.degree(n), self.n_groups, budget, refit=self.refit,
                               b=None, budget_name=budget_name, use_design=False)
        return plan_budget(n, self.degree(n), self.n_groups, budget, refit=self.refit,
                           b=self.b, default_b=DEFAULT_B, budget_name=budget_name)

    def explain(self, value_function: ValueFunction, n: int, budget: int | None = None, *,
                batch_size: int | None = None, progress: bool = True,
                budget_name: str = "budget") -> FourierExplanation:
        """Explain ``value_function`` over ``n`` features.

        ``value_function(masks)`` receives bool masks (m, n), True = feature kept, and returns
        (m,) or (m, k) outputs; all k outputs are explained from one set of masks, each output
        chosen on its own (explaining outputs together or alone gives the same result).
        ``budget`` is the number of model calls (distinct masks; the minimum is stated in the
        error if it is too small; None with an explicit ``b``: the design at ``b``). Masks go
        through :func:`spex_plugins.runtime.evaluate` once each, in batches of ``batch_size``
        (default: the value function's own ``batch_size``, else 4096); a cached value
        function is evaluated through its cache. ``budget_name`` is the name under which the
        caller received the budget (``max_evals``, ``n_samples``, ...), used in errors.
        """
        n = self._validate(n)
        t = self.degree(n)
        if budget is None and self.b is None and self.refit == "validated":
            from .settings import default_budget

            budget = default_budget(self, n)
        plan = self.plan(n, budget, budget_name)
        began = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        extension = plan.n_extension  # the design may double once its samples are peeled
        samples = _sample(plan, n, t, plan.n_groups, rng, hold_back=extension)
        sampled = time.perf_counter()

        evaluation = evaluate(value_function, samples.distinct, batch_size=batch_size,
                              progress=progress, desc="SPEX model calls")
        model_seconds = evaluation.seconds
        values = evaluation.values[samples.inverse]  # (rows, K)
        peeled, evidence = None, None
        if extension:
            bins = fwht(values[:samples.n_design].reshape(*samples.design_shape, -1), axis=2)
            peeled = [peel(bins[..., k], samples.design, self.decoder, self.chase_depth)
                      for k in range(values.shape[1])]
            extended, evidence = extends_design(peeled, values[samples.n_design:])
            design = samples.design.doubled(rng) if extended else None
            peeled = None if extended else peeled
            final = _second_stage(samples, plan.budget, design, rng)
            known = _lookup(samples.distinct, final.distinct)
            table = np.empty((len(final.distinct), values.shape[1]))
            table[known >= 0] = evaluation.values[known[known >= 0]]
            new = np.flatnonzero(known < 0)
            if len(new):
                more = evaluate(value_function, final.distinct[new], batch_size=batch_size,
                                progress=progress, desc="SPEX model calls (second stage)")
                table[new] = more.values
                model_seconds += more.seconds
            samples, values = final, table[final.inverse]

        if plan.exhaustive:
            fit = _exhaustive_fit(samples.masks, values)
        elif self.refit == "validated" and samples.design is None \
                and n > COMPLETION_MAX_N \
                and samples.n_train_rows < COMMITTEE_ROWS_PER_FEATURE * n:
            fit = self._committee_fit(samples, values, n, t, rng)
        elif self.refit == "validated":
            fit = self._validated_fit(samples, values, n, t, int(rng.integers(2 ** 31)), peeled,
                                      jobs=self._jobs())
        else:
            fit = self._design_fit(samples, values, n, t)
        finished = time.perf_counter()

        timings = {
            "sampling": sampled - began,
            "model": model_seconds,
            "transform": fit.seconds.get("transform", 0.0),
            "decode": fit.seconds.get("decode", 0.0),
            "refit": fit.seconds.get("refit", 0.0),
            "own": (finished - began) - model_seconds,
            "total": finished - began,
        }
        metadata = {
            "method": "SPEX",
            "max_order": t,
            "max_order_requested": int(self.max_order),
            "n_groups": plan.n_groups,
            "b": None if samples.design is None else samples.design.b,
            "decoder": self.decoder,
            "refit": self.refit,
            "support": self.support,
            "exhaustive": plan.exhaustive,
            "budget": plan.budget,
            "n_design_masks": samples.n_design,
            "design_extended": None if not extension else samples.n_design > plan.n_design,
            "design_evidence": evidence,
            "n_uniform_masks": len(samples.masks) - samples.n_design,
            "n_validation_masks": samples.n_validation,
            "random_state": self.random_state if isinstance(self.random_state, int) else None,
            "scalar_output": evaluation.flat,
        } | fit.metadata
        return FourierExplanation(n, fit.locations, fit.coefficients,
                                  n_model_calls=len(samples.distinct),
                                  n_samples=len(samples.masks), timings=timings,
                                  metadata=metadata)

    # --- the fits -----------------------------------------------------------------------
    def _design_fit(self, samples: _Samples, values: np.ndarray, n: int, t: int) -> _Fit:
        """The earlier estimators: peeling on the design, then the bin-domain ridge refit
        (``refit="ridge"``) or the raw peeled values (None)."""
        began = time.perf_counter()
        design = samples.design
        bins = fwht(values.reshape(*samples.design_shape, -1), axis=2)  # (C, P, 2^b, K)
        transformed = time.perf_counter()
        peeled = [peel(bins[..., k], design, self.decoder, self.chase_depth)
                  for k in range(values.shape[1])]
        decoded = time.perf_counter()
        if self.refit == "ridge":
            columns = refit_columns(n, t, [p.support for p in peeled])
            result = ridge_refit(bins, design, columns)
            locations, coefficients = result.support, result.coefficients
            penalties = result.penalty.tolist()
        else:
            locations, coefficients = _stack_outputs([p.support for p in peeled],
                                                     [p.values for p in peeled], t)
            penalties = None
        return _Fit(locations, coefficients,
                    {"transform": transformed - began, "decode": decoded - transformed,
                     "refit": time.perf_counter() - decoded},
                    {"ridge_penalty": penalties,
                     "peeling_iterations": [p.n_iterations for p in peeled]})

    def _committee_fit(self, samples: _Samples, values: np.ndarray, n: int, t: int,
                       rng: np.random.Generator) -> _Fit:
        """``COMMITTEE_FOLDS`` validated fits, averaged, stacked with a cross-validated
        first-order LASSO: the random masks beside the two endpoints fall in that many folds,
        each fit holds out one fold and trains on the rest (the endpoints always train), and
        the same folds cross-validate the LASSO (:func:`lasso_cv`). Non-negative least squares
        on the two out-of-fold predictions weighs the committee's average against the LASSO
        (``metadata["committee_stack"]``); ``validation_r2`` is the R^2 of the weighted
        out-of-fold predictions and ``metadata["committee"]`` every fit's. The other metadata
        are the first fit's. The fits run on ``n_jobs`` threads."""
        start = samples.n_design + 2  # the endpoints stay training rows
        movable = np.arange(start, len(samples.masks))
        folds = np.array_split(movable, COMMITTEE_FOLDS)
        seeds = [int(rng.integers(2 ** 31)) for _ in folds]  # drawn in fold order

        def fold_fit(held: np.ndarray, seed: int) -> _Fit:
            order = np.concatenate([np.arange(start), np.setdiff1d(movable, held), held])
            rotated = replace(samples, masks=samples.masks[order],
                              inverse=samples.inverse[order], n_validation=len(held))
            return self._validated_fit(rotated, values[order], n, t, seed,
                                       first_order_ridge=False)

        mapped = time.perf_counter()
        fits = _map(self._jobs(), fold_fit, folds, seeds)
        began = time.perf_counter()
        first_order = _first_order(n, max(fit.locations.shape[1] for fit in fits))
        features = characters(samples.masks, first_order[:, :1])
        committee_oof = np.concatenate([fit.held_out for fit in fits])  # (movable, K)
        targets = values[movable]
        lasso, weighed, scores = [], [], []
        shares = np.empty(values.shape[1])  # the committee's weight per output
        for k in range(values.shape[1]):
            beta, oof, _ = lasso_cv(features, values[:, k], folds)
            weights, r2 = stack(np.stack([committee_oof[:, k], oof], axis=1), targets[:, k])
            scores.append(r2)
            lasso.append(weights[1] * beta)
            weighed.append([("committee", float(weights[0])),
                          ("first-order lasso cv", float(weights[1]))])
            shares[k] = weights[0]
        locations, inverse = np.unique(np.vstack([_pad(fit.locations, first_order.shape[1])
                                                  for fit in fits] + [first_order]),
                                       axis=0, return_inverse=True)
        coefficients = np.zeros((len(locations), values.shape[1]))
        np.add.at(coefficients, inverse.reshape(-1), np.vstack(
            [fit.coefficients * (shares / len(fits)) for fit in fits] + [np.stack(lasso, axis=1)]))
        keep = np.flatnonzero(np.any(coefficients != 0, axis=1) | (locations[:, 0] < 0))
        seconds = {key: sum(fit.seconds.get(key, 0.0) for fit in fits)
                   for key in ("transform", "decode", "refit")}
        # on threads the fits' stage times overlap: they share out the fits' wall time
        busy = sum(seconds.values())
        if busy > began - mapped > 0:
            seconds = {key: value * (began - mapped) / busy for key, value in seconds.items()}
        seconds["refit"] += time.perf_counter() - began
        meta = fits[0].metadata | {
            "validation_r2": scores, "committee_stack": weighed,
            "committee": [fit.metadata["validation_r2"] for fit in fits]}
        return _Fit(locations[keep], coefficients[keep], seconds, meta)

    def _validated_fit(self, samples: _Samples, values: np.ndarray, n: int, t: int,
                       proxy_seed: int, peeled: list | None = None, *,
                       first_order_ridge: bool = True, jobs: int = 1) -> _Fit:
        """Peeling and the tree proxy propose terms; held-out masks choose the surrogate.
        ``proxy_seed``: the seed of the tree fits; ``jobs``: threads for them;
        ``peeled``: the design's peeling results per output, when already made;
        ``first_order_ridge=False`` leaves out the ridge fits of the first-order terms and of
        the union (see ``COMMITTEE_ROWS_PER_FEATURE``)."""
        began = time.perf_counter()
        n_out = values.shape[1]
        n_design = samples.n_design
        train = slice(0, len(samples.masks) - samples.n_validation)
        held_out = slice(train.stop, None)
        bins = None
        if samples.design is not None:
            bins = fwht(values[:n_design].reshape(*samples.design_shape, -1), axis=2)
        transformed = time.perf_counter()
        if peeled is None:
            peeled = [None] * n_out
            if bins is not None and self.support in ("auto", "peeling"):
                peeled = [peel(bins[..., k], samples.design, self.decoder, self.chase_depth)
                          for k in range(n_out)]
        proxied, proxy_note = [None] * n_out, "off"
        shallow = [None] * n_out
        trees = [None] * n_out
        if self.support in ("auto", "proxy"):
            if train.stop < tree_proxy.MIN_ROWS:
                proxy_note = f"skipped: fewer than {tree_proxy.MIN_ROWS} training masks"
            elif tree_proxy.proxy_available():
                rows = samples.masks[train]
                with_shallow = (t > SHALLOW_PROXY_DEPTH
                                and train.stop <= SHALLOW_PROXY_MAX_ROWS)

                def grow(k: int, shallow_fit: bool) -> tree_proxy.ProxyFit:
                    if shallow_fit:
                        return _strongest(tree_proxy.fit_proxy(
                            rows, values[train, k], max_degree=SHALLOW_PROXY_DEPTH,
                            random_state=proxy_seed, max_terms=PROXY_MAX_TERMS,
                            n_trees=SHALLOW_PROXY_ROUNDS), PROXY_MAX_TERMS)
                    return tree_proxy.fit_proxy(rows, values[train, k], max_degree=t,
                                                random_state=proxy_seed,
                                                max_terms=PROXY_TREE_TERMS)

                tasks = [(k, False) for k in range(n_out)]
                tasks += [(k, True) for k in range(n_out)] if with_shallow else []
                fitted = _map(jobs, grow, *zip(*tasks, strict=True))
                trees = fitted[:n_out]
                proxied = [_strongest(q, PROXY_MAX_TERMS) for q in trees]
                shallow = fitted[n_out:] or shallow
                proxy_note = "lightgbm"
            else:
                proxy_note = "skipped: " + tree_proxy.PROXY_MISSING
        decoded = time.perf_counter()

        table, sources = _column_table(n, t, {
            "peeled": [None if p is None else p.support for p in peeled],
            "proxy": [None if q is None else q.locations for q in proxied],
            "shallow proxy": [None if q is None else q.locations for q in shallow]},
                                       n_train=train.stop)
        # two sets of training rows: all of them, and the uniform ones alone (the design's
        # masks are far from uniform, which biases a misspecified fit; held-out masks decide)
        row_sets = _normal_equations(samples, values[train], bins, table,
                                     [_output_columns(sources, k) for k in range(n_out)])
        validation = characters(samples.masks[held_out], table)
        endpoint_values = values[samples.endpoint_rows]  # (2, K)
        chosen_locations, chosen_coefficients, meta = [], [], _selection_metadata()
        held_out_predictions = []
        for k in range(n_out):
            candidates = _candidates(sources, k, first_order_ridge)
            fixed = {}
            if trees[k] is not None:  # the trees' own spectrum, as a fixed prediction
                fixed["proxy trees"] = tree_proxy.evaluate_spectrum(
                    samples.masks[held_out], trees[k].locations, trees[k].values)
            choices = [(select(gram, xty[:, k], n_rows, validation, values[held_out, k],
                               candidates, fixed=fixed), gram, xty, n_rows, rows)
                       for rows, (gram, xty, n_rows) in row_sets.items()]
            choice, gram, xty, n_rows, rows = max(choices, key=lambda c: c[0].validation_r2)
            held_out_predictions.append(choice.predictions)
            # the final fit uses every row, the held-out ones included; the weighted parts
            # add up over the union of their columns (the constant, table row 0, first)
            refits = [part for part in choice.parts if part.estimator != "fixed"]
            union = np.unique(np.concatenate([[0]] + [part.fit_columns for part in refits]))
            v = validation[:, union]
            full_gram = gram[np.ix_(union, union)] + v.T @ v
            full_xty = xty[union, k] + v.T @ values[held_out, k]
            beta = np.zeros(len(union))
            for part in refits:
                at = np.searchsorted(union, part.fit_columns)
                kept, fit = final_fit(part, full_gram[np.ix_(at, at)], full_xty[at],
                                      n_rows + len(v))
                beta[at[kept]] += part.weight * fit
            keep = np.flatnonzero(beta)
            keep = keep if len(keep) and keep[0] == 0 else np.concatenate([[0], keep])
            locations, beta = table[union[keep]], beta[keep]
            for part in choice.parts:
                if part.estimator == "fixed":  # the proxy's trees, weighted
                    # refitted on every row, held-out ones included, with the number of
                    # trees early stopping chose (seeds 0-2, mean held-out R^2: VADER-253 at
                    # 1k calls 0.221 -> 0.259, VADER-45 and the intent head at 500 +0.009 /
                    # +0.007, VADER-564 at 1k-10k within 0.004 either way)
                    grown = tree_proxy.fit_proxy(
                        samples.masks, values[:, k], max_degree=t, random_state=proxy_seed,
                        max_terms=PROXY_TREE_TERMS, n_trees=trees[k].n_trees)
                    locations, beta = _stack_outputs(
                        [locations, grown.locations], [beta, part.weight * grown.values],
                        table.shape[1])
                    beta = beta.sum(axis=1)
            chosen_locations.append(locations)
            chosen_coefficients.append(beta)
            lead = choice.parts[0]
            meta["candidate"].append(lead.candidate)
            meta["estimator"].append(lead.estimator)
            meta["stack"].append([(part.candidate, part.weight) for part in choice.parts])
            meta["training_rows"].append(rows)
            meta["validation_r2"].append(choice.validation_r2)
            meta["ridge_penalty"].append(lead.penalty)
            meta["n_terms"].append(len(locations))
        locations, coefficients = _stack_outputs(chosen_locations, chosen_coefficients,
                                                 table.shape[1])
        completed = n <= COMPLETION_MAX_N
        if completed:
            locations, coefficients = _complete(n, samples.masks, values, locations,
                                                coefficients)
        meta |= {
            "completed": completed,
            "proxy": proxy_note,
            "shallow_proxy": any(q is not None for q in shallow),
            "peeling_iterations": [p.n_iterations if p is not None else 0 for p in peeled],
            "n_candidate_terms": len(table),
            # the model's own endpoints: Shapley values are made efficient with them
            "model_empty_value": endpoint_values[0].tolist(),
            "model_full_value": endpoint_values[1].tolist(),
        }
        return _Fit(locations, coefficients,
                    {"transform": transformed - began, "decode": decoded - transformed,
                     "refit": time.perf_counter() - decoded}, meta,
                    np.stack(held_out_predictions, axis=1))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(max_order={self.max_order}, n_groups={self.n_groups}, "
                f"b={self.b}, decoder={self.decoder!r}, refit={self.refit!r}, "
                f"support={self.support!r}, random_state={self.random_state!r}, "
                f"n_jobs={self.n_jobs!r})")


class ProxySPEX(SPEX):
    """SPEX with the tree proxy as its only support (ProxySPEX-style; LightGBM required).

    All masks are uniform random; one gradient-boosted tree fit with early stopping proposes
    the terms (its Fourier spectrum read exactly off the trees), on up to
    ``SHALLOW_PROXY_MAX_ROWS`` training masks with a shallow fit beside it, and the held-out
    masks choose among them, the first-order fit and their union, as in :class:`SPEX`. Same
    result object.
    """

    def __init__(self, max_order: int = 5, random_state=None, n_jobs: int | None = None):
        super().__init__(max_order=max_order, random_state=random_state, support="proxy",
                         n_jobs=n_jobs)


# --- sampling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Samples:
    """The run's masks, in row order: the design's C*P*2^b rows (duplicates kept), the uniform
    training rows (the empty and the full mask first), then the ``n_validation`` held-out rows;
    their distinct masks with ``masks == distinct[inverse]``; the rows of the two endpoints."""

    masks: np.ndarray
    distinct: np.ndarray
    inverse: np.ndarray
    design: SubsampleDesign | None
    n_validation: int
    endpoint_rows: np.ndarray

    @property
    def n_design(self) -> int:
        return 0 if self.design is None else self.design.n_samples

    @property
    def design_shape(self) -> tuple[int, int, int]:
        design = self.design
        return design.n_groups, design.n_shifts, 1 << design.b

    @property
    def n_train_rows(self) -> int:
        return len(self.masks) - self.n_validation


def _map(jobs: int, function, *arguments) -> list:
    """``list(map(function, *arguments))``, on ``jobs`` threads when above 1 (the work is in
    LightGBM and numpy, which release the GIL); the results keep the arguments' order."""
    if jobs <= 1:
        return list(map(function, *arguments))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(function, *arguments))


def _sample(plan: BudgetPlan, n: int, t: int, n_groups: int, rng: np.random.Generator,
            hold_back: int = 0) -> _Samples:
    """Draw the masks of ``plan``: the design, then uniform masks distinct from it and from
    each other (the empty and the full mask first), the held-out ones last; ``hold_back``
    masks of the budget are left for :func:`_second_stage`."""
    if plan.exhaustive:
        codes = np.arange(1 << n, dtype=np.int64)
        masks = _code_masks(codes, n)
        return _Samples(masks, masks, np.arange(len(masks)), None, 0,
                        np.array([0, len(masks) - 1]))
    design = None
    parts = []
    if plan.b is not None:
        design = SubsampleDesign.create(n, t, n_groups, plan.b, rng)
        parts.append(design.masks().reshape(-1, n))
    if plan.n_uniform == 0:  # the older refits: the design alone
        masks = parts[0]
        distinct, inverse = unique_masks(masks)
        return _Samples(masks, distinct, inverse, design, 0, np.zeros(0, np.int64))
    endpoints = np.array([np.zeros(n, bool), np.ones(n, bool)])
    parts.append(endpoints)
    if n <= COMPLETION_MAX_N:
        room = plan.budget - plan.n_validation - len(unique_masks(np.vstack(parts))[0])
        parts.append(_border_masks(n, int(BORDER_SHARE * room), np.vstack(parts)))
    taken = np.vstack(parts)
    distinct_taken = len(unique_masks(taken)[0])
    fresh = _fresh_masks(n, plan.budget - hold_back - distinct_taken, taken, rng)
    n_validation = min(plan.n_validation, max(0, len(fresh) - 1))
    masks = np.vstack(parts + [fresh])
    distinct, inverse = unique_masks(masks)
    start = 0 if design is None else design.n_samples
    return _Samples(masks, distinct, inverse, design, n_validation,
                    np.array([start, start + 1]))


def _second_stage(samples: _Samples, budget: int, design: SubsampleDesign | None,
                  rng: np.random.Generator) -> _Samples:
    """The run's final masks once the design is decided: the doubled ``design`` in place of the
    samples' own (None: kept), then their uniform training masks and fresh ones up to
    ``budget`` distinct masks, the held-out masks last."""
    n = samples.masks.shape[1]
    rows = samples.masks[:samples.n_design] if design is None else design.masks().reshape(-1, n)
    training = samples.masks[samples.n_design:samples.n_train_rows]
    held_out = samples.masks[samples.n_train_rows:]
    taken = np.vstack([rows, training, held_out])
    fresh = _fresh_masks(n, budget - len(unique_masks(taken)[0]), taken, rng)
    masks = np.vstack([rows, training, fresh, held_out])
    distinct, inverse = unique_masks(masks)
    return _Samples(masks, distinct, inverse, samples.design if design is None else design,
                    samples.n_validation, np.array([len(rows), len(rows) + 1]))


def _lookup(known: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Row of ``known`` (distinct bool masks) equal to each of ``masks``, -1 where none."""
    _, inverse = unique_masks(np.vstack([known, masks]))
    owner = np.full(len(known) + len(masks), -1)
    owner[inverse[:len(known)]] = np.arange(len(known))
    return owner[inverse[len(known):]]


def extends_design(peeled: list[PeelResult], uniform_values: np.ndarray) -> tuple[bool, dict]:
    """Whether the design doubles (see :mod:`spex_plugins.core.budget`, rule 5): for some
    output the peeled interactions (degree >= 2) carry at least ``EXTEND_INTERACTIONS`` of the
    variance of its values on the uniform masks ``uniform_values`` (m, K) and all peeled terms
    leave at least ``EXTEND_UNEXPLAINED`` of it. Sparse interaction spectra then gain from more
    bins; on spectra spread thin over many small terms (real models, long texts) the uniform
    masks serve the regression better. Returns the decision and the shares per output."""
    variance = uniform_values.var(axis=0)
    shares = {"interactions": [], "peeled": []}
    for k, result in enumerate(peeled):
        degree = (result.support >= 0).sum(axis=1)
        energy = result.values ** 2
        scale = variance[k] if variance[k] > 0 else np.inf
        shares["interactions"].append(float(energy[degree >= 2].sum() / scale))
        shares["peeled"].append(float(energy[degree >= 1].sum() / scale))
    extend = any(i >= EXTEND_INTERACTIONS and p <= 1 - EXTEND_UNEXPLAINED
                 for i, p in zip(shares["interactions"], shares["peeled"], strict=True))
    return extend, shares


def _border_masks(n: int, room: int, taken: np.ndarray) -> np.ndarray:
    """Every mask of the sizes nearest the empty and the full mask (sizes 1 and n - 1, then 2
    and n - 2, ...) not in ``taken``, whole sizes only, at most ``room`` of them."""
    codes = np.arange(1 << n, dtype=np.int64)
    sizes = _code_masks(codes, n).sum(axis=1)
    used = np.zeros(1 << n, bool)
    used[_mask_codes(taken)] = True
    chosen = np.zeros(1 << n, bool)
    for size in range(1, (n + 1) // 2 + 1):
        level = ((sizes == size) | (sizes == n - size)) & ~used
        if chosen.sum() + level.sum() > room:
            break
        chosen |= level
    return _code_masks(codes[chosen], n)


def _mask_codes(masks: np.ndarray) -> np.ndarray:
    """Integer code of each bool mask (m, n): bit q set where feature q is kept (n <= 62)."""
    return masks.astype(np.int64) @ (1 << np.arange(masks.shape[1], dtype=np.int64))


def _code_masks(codes: np.ndarray, n: int) -> np.ndarray:
    """The bool masks (m, n) of integer codes (m,), the inverse of :func:`_mask_codes`."""
    return ((np.asarray(codes, np.int64)[:, None] >> np.arange(n)) & 1).astype(bool)


def _fresh_masks(n: int, count: int, taken: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniform random masks (Bernoulli(1/2) per feature), distinct from each other and
    from ``taken``; fewer when fewer exist."""
    if count <= 0:
        return np.zeros((0, n), bool)
    if n <= EXHAUSTIVE_MAX_N:  # draw codes without replacement from the 2^n masks
        used = np.unique(_mask_codes(taken))
        free = np.setdiff1d(np.arange(1 << n, dtype=np.int64), used, assume_unique=True)
        codes = rng.choice(free, size=min(count, len(free)), replace=False)
        return _code_masks(codes, n)
    out = np.zeros((0, n), bool)
    while len(out) < count:  # collisions are rare for n > 20: one or two rounds
        draw = rng.random((count - len(out), n)) < 0.5
        known = len(taken) + len(out)
        first, _ = unique_rows(np.vstack([taken, out, draw]))
        new = np.sort(first[first >= known]) - known  # the first copy of each new mask
        out = np.vstack([out, draw[new]])
    return out


# --- fits --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Fit:
    locations: np.ndarray
    coefficients: np.ndarray
    seconds: dict
    metadata: dict
    held_out: np.ndarray | None = None
    """Out-of-fold predictions (V, K) of a validated fit on its held-out masks."""


def _exhaustive_fit(masks: np.ndarray, values: np.ndarray) -> _Fit:
    """The exact transform of all 2^n masks (row l = the mask whose bit q is feature q)."""
    began = time.perf_counter()
    locations, coefficients = _table_spectrum(masks.shape[1], values)
    meta = {"candidate": ["exhaustive"] * values.shape[1],
            "validation_r2": [1.0] * values.shape[1], "ridge_penalty": None}
    return _Fit(locations, coefficients, {"transform": time.perf_counter() - began}, meta)


def _table_spectrum(n: int, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero Fourier terms (locations (s, d), coefficients (s, K)) of the values (2^n, K) of
    every mask, row l the mask whose bit q is feature q; the constant always first."""
    spectrum = fwht(table, axis=0)  # (2^n, K)
    keep = np.flatnonzero((np.abs(spectrum) > 1e-12 * np.abs(spectrum).max(initial=0.0))
                          .any(axis=1))
    if not len(keep) or keep[0] != 0:
        keep = np.concatenate([[0], keep])
    bits = _code_masks(keep, n)
    width = max(1, int(bits.sum(axis=1).max()))
    locations = np.full((len(keep), width), -1, np.int64)
    rows, cols = np.nonzero(bits)
    slot = np.arange(len(rows)) - np.searchsorted(rows, rows)
    locations[rows, slot] = cols
    return locations, spectrum[keep]


def _complete(n: int, masks: np.ndarray, values: np.ndarray, locations: np.ndarray,
              coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The surrogate made exact on every evaluated mask (small n, see COMPLETION_MAX_N).

    The surrogate's values on all 2^n masks (one inverse transform of its spectrum), the
    model's own values (rows of ``masks`` (m, n), ``values`` (m, K)) written over them, and
    the transform of that table: the result equals the model on every mask it was evaluated
    at and the surrogate elsewhere, so index values use every model call exactly.
    """
    weights = 1 << np.arange(n, dtype=np.int64)
    codes = np.where(locations >= 0, weights[np.maximum(locations, 0)], 0).sum(axis=1)
    spectrum = np.zeros((1 << n, coefficients.shape[1]))
    np.add.at(spectrum, codes, coefficients)
    table = fwht(spectrum, axis=0) * (1 << n)  # f(x) = sum_k F(k) (-1)^<x,k>
    table[_mask_codes(masks)] = values
    return _table_spectrum(n, table)


def _selection_metadata() -> dict:
    return {"candidate": [], "estimator": [], "stack": [], "training_rows": [],
            "validation_r2": [], "ridge_penalty": [], "n_terms": []}


def _first_order(n: int, width: int) -> np.ndarray:
    """The empty set and the n singletons as locations (n + 1, width), padded with -1."""
    locations = np.full((n + 1, width), -1, np.int64)
    locations[1:, 0] = np.arange(n)
    return locations


def _column_table(n: int, t: int, supports: dict[str, list], *, n_train: int):
    """All candidate columns in one table, and each source's rows in it.

    ``supports``: {source name: [(s, <=t) locations per output, or None]}, in candidate order.
    Returns ``table`` (p, t) (row 0 the constant, rows 1..n the first-order terms) and
    ``sources``: {"n": n, "dense": rows or None, "supports": {name: [rows or None per output]}}.
    """
    blocks = [_first_order(n, t)]
    dense = _dense_columns(n, t, n_train)
    if dense is not None:
        blocks.append(dense)
    start = len(blocks)
    found = [rows for per_output in supports.values() for rows in per_output]
    for rows in found:
        blocks.append(np.zeros((0, t), np.int64) if rows is None or not len(rows)
                      else _pad(rows, t))
    stacked = np.vstack(blocks)
    _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")  # keep first appearances in block order
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    table = stacked[np.sort(first)]
    index = position[inverse]
    offsets = np.cumsum([0] + [len(block) for block in blocks])
    rows = [None if found[i] is None else index[offsets[start + i]:offsets[start + i + 1]]
            for i in range(len(found))]
    k_out = len(found) // max(1, len(supports))
    sources = {"n": n, "dense": None if dense is None else index[offsets[1]:offsets[2]],
               "supports": {name: rows[j * k_out:(j + 1) * k_out]
                            for j, name in enumerate(supports)}}
    return table, sources


def _candidates(sources: dict, k: int, first_order_ridge: bool = True) -> list[Candidate]:
    """The candidates of output ``k`` (column indices into the table, the constant first):
    ridge fits of the first-order terms, each support and their union, and LASSO fits of the
    first-order terms and of the union; without ``first_order_ridge`` the ridge fits of the
    first-order terms and of the union are left out. The ridge prefixes of a tree proxy's
    support follow the trees' own ranking (``RANKED_SOURCES``), the others a joint fit's."""
    n = sources["n"]
    first = np.arange(n + 1)
    out = [Candidate("first-order lasso", first, estimator="lasso")]
    if first_order_ridge:
        out = [Candidate("first-order", first),
               Candidate("first-order screened", first, "marginal")] + out
    union, name = [first], "first-order"
    for source, per_output in sources["supports"].items():
        if per_output[k] is not None:
            ranking = "given" if source in RANKED_SOURCES else "fit"
            out.append(Candidate(source, _join([0], per_output[k]), ranking))
            union, name = union + [per_output[k]], name + "+" + source
    if len(union) > 1:
        if first_order_ridge:
            out.append(Candidate(name, _join(*union)))
        out.append(Candidate(name + " lasso", _join(*union), estimator="lasso"))
    if sources["dense"] is not None:
        out.append(Candidate("dense", _join(first, sources["dense"])))
    return out


def _output_columns(sources: dict, k: int) -> np.ndarray:
    """Output ``k``'s own rows of the column table (every candidate of it draws on these), in
    the order of the table :func:`_column_table` builds for that output alone."""
    parts = [np.arange(sources["n"] + 1)]
    if sources["dense"] is not None:
        parts.append(sources["dense"])
    parts += [rows[k] for rows in sources["supports"].values() if rows[k] is not None]
    return _join(*parts)


def _strongest(fit: tree_proxy.ProxyFit, count: int) -> tree_proxy.ProxyFit:
    """The proxy's ``count`` largest terms (the empty set among them), largest |F(k)| first."""
    keep = tree_proxy.strongest_terms(fit.locations, fit.values, count)
    keep = keep[np.argsort(-np.abs(fit.values[keep]), kind="stable")]
    return replace(fit, locations=fit.locations[keep], values=fit.values[keep])


def _join(*parts) -> np.ndarray:
    """Concatenate index arrays keeping the first occurrence of each, in order."""
    joined = np.concatenate([np.asarray(p, np.int64) for p in parts])
    _, first = np.unique(joined, return_index=True)
    return joined[np.sort(first)]


def _dense_columns(n: int, t: int, n_train: int) -> np.ndarray | None:
    """Every set of 2..d features, for the largest d <= t whose count (with the constant and
    the first-order terms) fits in ``DENSE_MAX_COLUMNS`` and in twice the training rows;
    None when not even the pairs fit."""
    limit = min(DENSE_MAX_COLUMNS, 2 * n_train)
    count, d = 1 + n, 1
    while d < min(t, n):
        more = count + comb(n, d + 1)
        if more > limit:
            break
        count, d = more, d + 1
    if d < 2:
        return None
    rows = [np.array(list(itertools.combinations(range(n), size)), np.int64).reshape(-1, size)
            for size in range(2, d + 1)]
    return np.vstack([_pad(r, t) for r in rows])


def _pad(rows: np.ndarray, width: int) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    if rows.shape[1] >= width:
        return rows[:, :width]
    return np.hstack([rows, np.full((len(rows), width - rows.shape[1]), -1, np.int64)])


def _normal_equations(samples: _Samples, train_values: np.ndarray, bins: np.ndarray | None,
                      table: np.ndarray, columns: list[np.ndarray]
                      ) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """``X^T X`` (p, p), ``X^T y`` (p, K) and the row count of the training rows over the
    table's columns, for the uniform rows alone ("uniform") and, with a design, for all rows
    ("all"). The design rows come from their bins (exact, no sample matrix), the uniform rows
    explicitly (their Gram in float32: sums of +-1 are exact integers there).

    ``X^T y`` of output k is computed over its own ``columns[k]`` only (zero elsewhere), in
    the order of the table it would have alone (:func:`_output_columns`): BLAS rounds each
    entry by its position in the product, so this makes an output explained beside others
    get the fit it gets alone (the selection's tuning turns 1e-14 into visible changes)."""
    n_design = samples.n_design
    uniform = samples.masks[n_design:samples.n_train_rows]
    x = characters(uniform, table, dtype=np.float32)
    gram = (x.T @ x).astype(np.float64)
    xty = np.zeros((len(table), train_values.shape[1]))
    for k, own in enumerate(columns):
        y = np.ascontiguousarray(train_values[n_design:, k])
        xty[own, k] = x[:, own].astype(np.float64).T @ y
    sets = {"uniform": (gram, xty, len(uniform))}
    if bins is not None:
        alias_gram, design_xty, _ = design_moments(bins, samples.design, table)
        sets["all"] = (gram + alias_gram.dense(), xty + design_xty, samples.n_train_rows)
    return sets


def _stack_outputs(supports: list[np.ndarray], values: list[np.ndarray],
                   t: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of per-output supports with a (s, K) coefficient matrix (zeros where absent)."""
    supports = [_pad(s, t) if len(s) else np.zeros((0, t), np.int64) for s in supports]
    union = np.unique(np.vstack([np.full((1, t), -1, np.int64)] + supports), axis=0)
    coefficients = np.zeros((len(union), len(supports)))
    for k, (support, value) in enumerate(zip(supports, values, strict=True)):
        if len(support):
            np.add.at(coefficients[:, k], _row_index(union, support), value)
    return union, coefficients


def _row_index(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Position of each of ``rows`` in the sorted unique ``table``."""
    both, inverse = np.unique(np.vstack([table, rows]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    lookup = np.empty(len(both), np.int64)
    lookup[inverse[: len(table)]] = np.arange(len(table))
    return lookup[inverse[len(table):]]
