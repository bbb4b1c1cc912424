"""The one comparison module: peers at a fixed budget, scored by one set of definitions.

Every side-by-side comparison of the project (the demo's baselines, ``spex_plugins.shapiq``'s
``compare()``, the benchmarks) runs its methods through :func:`run_peer` and scores them with
the functions below. Importing this module imports no host library: each peer imports its host
inside its runner, and a missing host gives ``status="unavailable"`` with an install hint.

Definitions
-----------
- **model calls** (:class:`CallCounter`): distinct masks sent to the value function during one
  run; a mask asked for twice counts once. Every peer's value function is wrapped in one.
- **own seconds**: wall time of the run minus the time spent inside the value function.
- **held-out R^2** (:func:`r2_score`): ``1 - SS_res / SS_tot`` of a surrogate's predictions on
  masks the method never saw (uniform random masks, :func:`uniform_masks`). Non-finite truth
  raises ``ValueError``; constant truth (``SS_tot == 0``) gives ``nan`` (undefined); a
  non-finite prediction gives ``-inf``. Only peers whose estimate *is* a set function get an
  R^2 (``PeerResult.surrogate``): the Fourier/Möbius surrogates of the SPEX family, the
  first-order regressions and LightGBM, Lime's linear fit, Faith-Banzhaf (FBII is the
  least-squares fit in the AND basis) and Shapley/Owen values as the additive game
  ``f(empty) + sum_i phi_i x_i``. Estimates of SII, k-SII and STII are not fits of the game;
  their peers report no surrogate and no R^2.
- **top-k** (:func:`top_interactions`): the ``k`` non-empty sets of largest ``|value|``; ties
  go to the smaller set, then to the lexicographically smaller tuple.
- **index errors** (:func:`index_errors`): over every set of size 1..order in the estimate or
  the exact values (a missing set is 0; the empty set is left out, as its convention differs
  between indices), ``mse``, ``relative_mse = mse / mean(exact^2)`` and precision@k =
  ``|top-k(estimate) & top-k(exact)| / k``.
- **support recovery** (:func:`support_recovery`): recall and precision of the non-empty
  Fourier support of a surrogate against a known support.

Peers (:data:`PEERS`; host in brackets)
--------------------------------------
- ``spex-plugins``: ``SPEX(...).explain`` of this library (or any object with that method,
  ``spex=...``), its Fourier surrogate and every index from it;
- ``ridge``, ``lasso`` [scikit-learn]: first-order ``RidgeCV`` / ``LassoCV`` on uniform masks;
- ``lightgbm`` [lightgbm]: one LightGBM regressor on uniform masks, early stopping on a
  validation split (no grid search);
- ``shapiq-spex``, ``shapiq-proxyspex`` [shapiq]: shapiq's SPEX and ProxySPEX; their Möbius
  transform is the surrogate, and they report the index they were asked for;
- ``shapiq-regression-fbii`` (FBII), ``shapiq-kernelshap`` (SV), ``shapiq-kernelshapiq``
  (k-SII, SII), ``shapiq-permutation-stii`` (STII), ``shapiq-svarmiq`` (SV, SII, k-SII, STII,
  FSII, FBII, BII, BV) [shapiq]: the dense index estimators, for the index they estimate;
- ``shap-permutation``, ``shap-partition`` [shap]: SHAP's Permutation and Partition (Owen
  values over a balanced tree of neighbouring features, :func:`contiguous_clustering`);
- ``captum-kernelshap``, ``captum-lime`` [captum, torch]: Captum's KernelShap and Lime (Lime
  with a least-squares interpretable model and its own intercept).

Host features are detected (``inspect.signature``, ``hasattr``), never by version strings.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .core import FourierExplanation, conversions
from .runtime import evaluate, row_keys, unique_masks

__all__ = [
    "PEERS",
    "CallCounter",
    "IndexErrors",
    "Peer",
    "PeerResult",
    "contiguous_clustering",
    "index_errors",
    "r2_score",
    "run_peer",
    "support_recovery",
    "top_interactions",
    "uniform_masks",
]

Status = Literal["ok", "unavailable", "skipped", "error"]
Interactions = dict[tuple[int, ...], float]

_FIRST_ORDER_INDICES = ("SV", "BV")


# --- definitions ------------------------------------------------------------------------------

def r2_score(truth, predicted) -> float:
    """Coefficient of determination of ``predicted`` against ``truth`` (both (m,)).

    Raises ``ValueError`` when ``truth`` has a non-finite value or the shapes differ. Constant
    ``truth`` gives ``nan`` (R^2 is undefined there); a non-finite prediction gives ``-inf``.
    """
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth has {truth.size} values, the prediction {predicted.size}")
    if not np.isfinite(truth).all():
        raise ValueError(f"the true values contain {int((~np.isfinite(truth)).sum())} "
                         "non-finite entries (NaN or inf): R^2 is not defined")
    if not np.isfinite(predicted).all():
        return -math.inf
    total = float(((truth - truth.mean()) ** 2).sum())
    if total == 0.0:
        return math.nan
    return 1.0 - float(((truth - predicted) ** 2).sum()) / total


class CallCounter:
    """A value function that counts the distinct masks it is asked for.

    ``CallCounter(value_function)(masks)`` evaluates bool (or 0/1) masks (m, n) through the
    runtime (:func:`spex_plugins.runtime.evaluate`: each distinct mask once per call, outputs
    checked finite) and returns (m,). ``calls`` is the number of distinct masks asked for over
    all calls (the project's one definition of model calls), ``seconds`` the wall time spent
    inside the value function (cache look-ups included).
    """

    def __init__(self, value_function: Callable[[np.ndarray], np.ndarray]):
        self.value_function = value_function
        self.seen: set[bytes] = set()
        self.seconds = 0.0

    @property
    def calls(self) -> int:
        return len(self.seen)

    def __call__(self, masks) -> np.ndarray:
        masks = np.asarray(masks)
        if masks.ndim == 1:
            masks = masks[None, :]
        masks = masks > 0.5
        self.seen.update(row_keys(masks).tolist())
        began = time.perf_counter()
        values = evaluate(self.value_function, masks).values
        self.seconds += time.perf_counter() - began
        if values.shape[1] != 1:
            raise ValueError(f"the value function must return one value per mask, got "
                             f"{values.shape[1]}")
        return values[:, 0]


def uniform_masks(n: int, count: int, rng: np.random.Generator | int | None = None
                  ) -> np.ndarray:
    """``count`` distinct uniform random masks (Bernoulli(1/2) per feature), bool (count, n).

    When ``count >= 2^n`` all 2^n masks are returned (in random order). Under one seed a
    smaller ``count`` draws the first rows of a larger one (repeated masks are replaced by
    fresh draws at the end), so nested budgets share their masks and a cache serves them.
    """
    rng = np.random.default_rng(rng)
    if n < 1 or count < 0:
        raise ValueError(f"need n >= 1 and count >= 0, got n={n}, count={count}")
    if n < 63 and count >= 2 ** n:  # small n by construction: enumerate the cube
        codes = rng.permutation(2 ** n)
        return ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    masks = rng.random((count, n)) < 0.5
    while True:
        _, inverse = unique_masks(masks)
        first = np.unique(inverse, return_index=True)[1]  # first occurrence of each mask
        if len(first) == len(masks):
            return masks
        keep = np.zeros(len(masks), bool)
        keep[first] = True
        masks = np.vstack([masks[keep], rng.random((len(masks) - len(first), n)) < 0.5])


def top_interactions(values: Mapping[tuple[int, ...], float], k: int
                     ) -> list[tuple[tuple[int, ...], float]]:
    """The ``k`` non-empty sets of largest ``|value|`` as (set, value), largest first.

    Ties go to the smaller set, then to the lexicographically smaller tuple.
    """
    items = [(tuple(s), float(v)) for s, v in values.items() if len(s)]
    items.sort(key=lambda item: (-abs(item[1]), len(item[0]), item[0]))
    return items[:k]


@dataclass(frozen=True)
class IndexErrors:
    """Errors of estimated interaction values against exact ones (see :func:`index_errors`)."""

    mse: float
    relative_mse: float
    precision_at_k: float
    k: int


def index_errors(estimate: Mapping[tuple[int, ...], float],
                 exact: Mapping[tuple[int, ...], float], order: int, k: int = 5
                 ) -> IndexErrors:
    """MSE, MSE relative to the mean squared exact value, and precision@k of ``estimate``.

    Sets of size 1..``order`` in either mapping count (a missing set is 0; the empty set is
    left out). ``relative_mse`` is ``nan`` when every exact value is 0; precision@k compares
    :func:`top_interactions` of both (k lowered to the number of sets), with values equal up
    to 1e-12 of the largest exact value counted as ties.
    """
    keys = sorted({tuple(s) for s in (*estimate, *exact) if 1 <= len(s) <= order})
    if not keys:
        raise ValueError(f"no sets of size 1..{order} in the estimate or the exact values")
    est = np.array([float(estimate.get(s, 0.0)) for s in keys])
    ref = np.array([float(exact.get(s, 0.0)) for s in keys])
    mse = float(np.mean((est - ref) ** 2))
    scale = float(np.mean(ref ** 2))
    k = min(k, len(keys))
    # values equal up to round-off (1e-12 of the largest exact value) tie, so that an exact
    # estimate ranks zero-valued sets as the exact values do
    grain = 1e-12 * float(np.abs(ref).max())
    if grain > 0:
        est, ref_ranked = np.round(est / grain) * grain, np.round(ref / grain) * grain
    else:
        ref_ranked = ref
    truth = {s for s, _ in top_interactions(dict(zip(keys, ref_ranked, strict=True)), k)}
    found = {s for s, _ in top_interactions(dict(zip(keys, est, strict=True)), k)}
    return IndexErrors(mse=mse, relative_mse=mse / scale if scale > 0 else math.nan,
                       precision_at_k=len(truth & found) / k, k=k)


def support_recovery(explanation: FourierExplanation, support: Iterable[tuple[int, ...]],
                     rtol: float = 1e-8) -> tuple[float, float]:
    """(recall, precision) of the non-empty Fourier support of ``explanation`` against
    ``support``; a coefficient counts as recovered when ``|F(k)| > rtol * max |F|``."""
    true = {tuple(sorted(s)) for s in support if len(s)}
    magnitude = np.abs(explanation.coefficients).max(axis=1)
    keep = magnitude > rtol * magnitude.max(initial=0.0)
    found = {s for s, kept in zip(explanation.support, keep, strict=True) if kept and len(s)}
    hits = len(true & found)
    return (hits / len(true) if true else math.nan, hits / len(found) if found else math.nan)


# --- the result of one run --------------------------------------------------------------------

@dataclass
class PeerResult:
    """What one peer run produced.

    ``status``: "ok", "unavailable" (host not installed), "skipped" (the peer cannot estimate
    what was asked, e.g. an index it does not compute or more unknowns than the budget) or
    "error" (the run raised; ``reason`` holds the error). ``calls``: distinct masks sent to the
    value function; ``seconds``: wall time of the run; ``model_seconds``: time inside the value
    function. ``index``/``order``/``values``: the interaction values the peer reported (None
    when no index was asked of a surrogate peer). ``explanation``: the surrogate as a sparse
    Fourier explanation where it is a polynomial (None otherwise); ``surrogate``: its
    ``predict(masks) -> (m,)`` (None for peers whose estimate is not a set function).
    ``details``: peer-specific facts (design size, chosen penalty, ...).
    """

    peer: str
    status: Status
    reason: str = ""
    calls: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    index: str | None = None
    order: int | None = None
    values: Interactions | None = field(default=None, repr=False)
    explanation: FourierExplanation | None = field(default=None, repr=False)
    surrogate: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def available(self) -> bool:
        """The peer's host is installed (the run may still have been skipped or failed)."""
        return self.status != "unavailable"

    @property
    def own_seconds(self) -> float:
        """Wall time of the run minus the time inside the value function."""
        return self.seconds - self.model_seconds

    def predict(self, masks) -> np.ndarray:
        """The surrogate at bool masks (m, n) -> (m,); ``ValueError`` if there is none."""
        if self.surrogate is None:
            raise ValueError(f"{self.peer} has no surrogate set function "
                             f"({self.reason or 'its estimate is not a fit of the game'})")
        return np.asarray(self.surrogate(np.asarray(masks, dtype=bool)),
                          dtype=np.float64).reshape(-1)

    def r2(self, masks, truth) -> float | None:
        """Held-out :func:`r2_score` of the surrogate at ``masks``; None without a surrogate."""
        return None if self.surrogate is None else r2_score(truth, self.predict(masks))

    def interactions(self, index: str, order: int) -> Interactions:
        """Values of ``index`` for sets up to ``order``: converted from the sparse surrogate
        (any index of :data:`spex_plugins.core.conversions.INDICES`), else the peer's own
        values when it ran for that index and order."""
        order = 1 if index in _FIRST_ORDER_INDICES else int(order)
        if (index, order) == (self.index, self.order) and self.values is not None:
            return self.values
        if self.explanation is not None:
            return {s: float(v) for s, v in self.explanation.interactions(index, order).items()}
        raise ValueError(f"{self.peer} estimated {self.index} of order {self.order}; it has no "
                         f"surrogate to give {index} of order {order}")


# --- peers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Estimate:
    """What a runner returns: a sparse surrogate and/or a predict function, and index values."""

    explanation: FourierExplanation | None = None
    surrogate: Callable[[np.ndarray], np.ndarray] | None = None
    values: Interactions | None = None
    details: dict = field(default_factory=dict)


Runner = Callable[..., _Estimate]


@dataclass(frozen=True)
class Peer:
    """A method :func:`run_peer` can run.

    ``hosts``: modules that must be importable; ``install``: the pip hint when one is missing;
    ``indices``: the interaction indices it estimates (None: any, from its sparse surrogate;
    empty: none); ``surrogate``: whether its estimate is a set function (gets an R^2);
    ``dense_unknowns``: a regression with one unknown per set up to the order (skipped when
    they outnumber the budget).
    """

    name: str
    label: str
    hosts: tuple[str, ...]
    install: str
    runner: Runner = field(repr=False)
    indices: tuple[str, ...] | None = ()
    surrogate: bool = True
    dense_unknowns: bool = False


def _numpy_seeded(seed: int):
    """Seed numpy's global generator for a host that draws from it, then restore it."""
    @contextlib.contextmanager
    def scope():
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)
    return scope()


def _moebius_explanation(n: int, moebius: Mapping[tuple[int, ...], float],
                         calls: int = 0) -> FourierExplanation:
    """The set function sum_S a(S) prod_{i in S} x_i (a Möbius dict) as a Fourier surrogate."""
    terms: dict[tuple[int, ...], float] = {}
    for key, value in moebius.items():
        key = tuple(sorted(int(i) for i in key))
        terms[key] = terms.get(key, 0.0) + float(value)
    terms = {key: value for key, value in terms.items() if value != 0} or {(): 0.0}
    locations = np.full((len(terms), max(1, max(map(len, terms)))), -1, np.int64)
    for row, key in zip(locations, terms, strict=True):
        row[:len(key)] = key
    values = np.fromiter(terms.values(), np.float64, len(terms))[:, None]
    return FourierExplanation(n, *conversions.moebius_to_fourier(locations, values),
                              n_model_calls=calls, metadata={"scalar_output": True})


def _linear_explanation(intercept: float, weights, calls: int = 0) -> FourierExplanation:
    """The additive set function intercept + sum_i w_i x_i as a Fourier surrogate."""
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    return _moebius_explanation(len(weights), {(): float(intercept), **{
        (i,): float(w) for i, w in enumerate(weights)}}, calls)


def _interaction_dict(values) -> Interactions:
    """A shapiq ``InteractionValues`` as {sorted tuple: value}."""
    return {tuple(sorted(int(i) for i in s)): float(v) for s, v in values.interactions.items()}


# runners: (counter, n, budget, *, seed, index, order, **options) -> _Estimate

def _run_spex_plugins(f: CallCounter, n: int, budget: int, *, seed: int, index, order,
                      spex=None, **settings) -> _Estimate:
    if spex is None:
        from .core import SPEX

        spex = SPEX(**{"random_state": seed, **settings})
    elif settings:
        raise ValueError(f"pass SPEX settings {sorted(settings)} to the spex object itself")
    result = spex.explain(f, n, budget, progress=False)
    if getattr(result, "n_outputs", 1) != 1:
        raise ValueError(f"the value function must be scalar, got {result.n_outputs} outputs")
    explanation = result if isinstance(result, FourierExplanation) else FourierExplanation(
        n, result.locations, result.coefficients, n_model_calls=result.n_model_calls,
        n_samples=getattr(result, "n_samples", 0), timings=getattr(result, "timings", None),
        metadata=getattr(result, "metadata", None))
    details = {key: explanation.metadata[key] for key in ("b", "max_order")
               if key in explanation.metadata}
    details["n_terms"] = len(explanation.coefficients)
    validation = getattr(result, "validation_r2", None)
    if validation is not None:
        details["validation_r2"] = float(validation)
    return _Estimate(explanation=explanation, details=details)


def _run_ridge(f: CallCounter, n: int, budget: int, *, seed: int, index, order,
               alphas=None) -> _Estimate:
    from sklearn.linear_model import RidgeCV

    masks = uniform_masks(n, budget, seed)
    model = RidgeCV(alphas=np.logspace(-4, 4, 17) if alphas is None else alphas)
    model.fit(masks.astype(np.float64), f(masks))
    return _Estimate(explanation=_linear_explanation(model.intercept_, model.coef_),
                     details={"alpha": float(model.alpha_)})


def _run_lasso(f: CallCounter, n: int, budget: int, *, seed: int, index, order,
               cv: int = 5, n_alphas: int = 30, max_iter: int = 2000) -> _Estimate:
    from sklearn.linear_model import LassoCV

    masks = uniform_masks(n, budget, seed)
    # a path of n_alphas penalties, 5-fold CV, random coordinate order. The path stops at
    # alpha_max / 1000 when the training folds have at least twice as many masks as features;
    # with fewer it stops at alpha_max / 100, since coordinate descent near the unpenalised,
    # ill-posed end takes tens of minutes at n = 1000 (and that end overfits there).
    # scikit-learn >= 1.7 takes the path length as ``alphas``, older releases as ``n_alphas``.
    path = inspect.signature(LassoCV).parameters["alphas"].default
    length = {"alphas": n_alphas} if isinstance(path, int) else {"n_alphas": n_alphas}
    eps = 1e-3 if budget * (cv - 1) / cv >= 2 * n else 1e-2
    model = LassoCV(cv=cv, eps=eps, max_iter=max_iter, selection="random",
                    random_state=seed, **length)
    model.fit(masks.astype(np.float64), f(masks))
    return _Estimate(explanation=_linear_explanation(model.intercept_, model.coef_),
                     details={"alpha": float(model.alpha_),
                              "nonzero": int(np.count_nonzero(model.coef_))})


def _run_lightgbm(f: CallCounter, n: int, budget: int, *, seed: int, index, order,
                  validation_fraction: float = 0.2, n_estimators: int = 2000,
                  learning_rate: float = 0.05, num_leaves: int = 15, max_depth: int = 5,
                  min_child_samples: int = 5, early_stopping_rounds: int = 50,
                  n_jobs: int = 1) -> _Estimate:
    import lightgbm

    masks = uniform_masks(n, budget, seed)
    y = f(masks)
    order_ = np.random.default_rng(seed).permutation(len(masks))
    n_valid = max(1, int(round(validation_fraction * len(masks))))
    valid, train = order_[:n_valid], order_[n_valid:]
    x = masks.astype(np.float32)
    model = lightgbm.LGBMRegressor(
        n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
        max_depth=max_depth, min_child_samples=min_child_samples, random_state=seed,
        n_jobs=n_jobs, deterministic=True, force_row_wise=True, verbose=-1)
    stop = [lightgbm.early_stopping(early_stopping_rounds, verbose=False)]
    if "eval_X" in inspect.signature(model.fit).parameters:  # lightgbm >= 4.7 spells it so
        model.fit(x[train], y[train], eval_X=(x[valid],), eval_y=(y[valid],), callbacks=stop)
    else:
        model.fit(x[train], y[train], eval_set=[(x[valid], y[valid])], callbacks=stop)
    best = int(model.best_iteration_ or n_estimators)

    def predict(test):
        return model.predict(np.asarray(test, dtype=np.float32), num_iteration=best)

    return _Estimate(surrogate=predict, details={"trees": best})


def _run_shapiq_sparse(kind: str):
    def run(f: CallCounter, n: int, budget: int, *, seed: int, index, order,
            **options) -> _Estimate:
        import shapiq

        cls = shapiq.SPEX if kind == "spex" else shapiq.ProxySPEX
        accepted = inspect.signature(cls.__init__).parameters
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"this shapiq's {cls.__name__} takes no {unknown}")
        approximator = cls(n=n, index=index or "FBII", max_order=order or 1,
                           random_state=seed, **options)
        if not hasattr(approximator, "_process_moebius"):
            raise RuntimeError(f"cannot read the Möbius transform of this shapiq's "
                               f"{cls.__name__}")
        captured: dict = {}
        convert = approximator._process_moebius

        def keep(moebius_transform):  # the full Möbius transform, before the index conversion
            captured.update(moebius_transform)
            return convert(moebius_transform=moebius_transform)

        approximator._process_moebius = keep
        with _numpy_seeded(seed):  # shapiq's SPEX draws its design from numpy's global RNG
            result = approximator.approximate(budget, f)
        explanation = _moebius_explanation(n, captured)
        return _Estimate(explanation=explanation,
                         values=_interaction_dict(result) if index else None,
                         details={"n_terms": len(captured)})
    return run


def _run_shapiq_dense(kind: str):
    def run(f: CallCounter, n: int, budget: int, *, seed: int, index, order,
            **options) -> _Estimate:
        import shapiq

        if kind == "kernelshap":
            approximator = shapiq.KernelSHAP(n, random_state=seed, **options)
        elif kind == "regression-fbii":
            approximator = shapiq.RegressionFBII(n, max_order=order, random_state=seed,
                                                 **options)
        elif kind == "kernelshapiq":
            approximator = shapiq.KernelSHAPIQ(n, max_order=order, index=index,
                                               random_state=seed, **options)
        elif kind == "permutation-stii":
            approximator = shapiq.PermutationSamplingSTII(n, max_order=order,
                                                          random_state=seed, **options)
        else:
            approximator = shapiq.SVARMIQ(n, max_order=order, index=index, random_state=seed,
                                          **options)
        result = approximator.approximate(budget, f)
        values = _interaction_dict(result)
        if kind == "kernelshap":  # the additive game KernelSHAP fits
            phi = np.array([values.get((i,), 0.0) for i in range(n)])
            return _Estimate(explanation=_linear_explanation(result.baseline_value, phi),
                             values=values)
        if kind == "regression-fbii":  # FBII is the least-squares fit in the AND basis
            values.setdefault((), float(result.baseline_value))
            return _Estimate(explanation=_moebius_explanation(n, values), values=values)
        return _Estimate(values=values)
    return run


def contiguous_clustering(n: int) -> np.ndarray:
    """A scipy linkage matrix ((n - 1, 4): left, right, distance, size) of a balanced binary
    tree over the positions 0..n-1 in which every cluster is a contiguous run of positions.

    Runs are halved recursively; a merge's distance is the spread of its positions (last -
    first), the distance complete linkage on the positions gives two adjacent runs, so the
    rows sorted by distance form a valid, monotonic linkage (children before parents)."""
    if n < 2:
        raise ValueError(f"a clustering needs at least 2 features, got n = {n}")
    merges: list[tuple[int, int, int, int]] = []  # (left, right, spread, size); ids < 0: merges

    def build(first: int, stop: int) -> int:
        if stop - first == 1:
            return first
        middle = (first + stop) // 2
        left, right = build(first, middle), build(middle, stop)
        merges.append((left, right, stop - first - 1, stop - first))
        return -len(merges)  # merge k (0-based) is referred to as -(k + 1)

    build(0, n)
    order = sorted(range(len(merges)), key=lambda k: merges[k][2])  # stable: ties keep order
    row_of = {k: row for row, k in enumerate(order)}

    def node(ref: int) -> int:
        return ref if ref >= 0 else n + row_of[-ref - 1]

    return np.array([[node(merges[k][0]), node(merges[k][1]), merges[k][2], merges[k][3]]
                     for k in order], dtype=np.float64)


def _run_shap(kind: str):
    def run(f: CallCounter, n: int, budget: int, *, seed: int, index, order) -> _Estimate:
        import shap

        background = np.zeros((1, n))
        if kind == "permutation":
            masker = shap.maskers.Independent(background, max_samples=1)
            seeded = "seed" in inspect.signature(shap.PermutationExplainer.__init__).parameters
            explainer = shap.PermutationExplainer(f, masker, **({"seed": seed} if seeded else {}))
            scope = contextlib.nullcontext() if seeded else _numpy_seeded(seed)
        else:
            masker = shap.maskers.Partition(background, max_samples=1,
                                            clustering=contiguous_clustering(n))
            explainer = shap.PartitionExplainer(f, masker)
            # PartitionExplainer takes no seed: it breaks ties in its work queue with numpy's
            # global generator. Its max_evals counts f(empty) and f(full) and the queue is
            # checked before each pair of masks is added, so it may ask for max_evals + 1
            # masks (the counter reports what it asked for).
            scope = _numpy_seeded(seed)
        with scope:
            result = explainer(np.ones((1, n)), max_evals=budget, batch_size=64, silent=True)
        return _Estimate(explanation=_linear_explanation(float(np.ravel(result.base_values)[0]),
                                                         result.values[0]))
    return run


def _run_captum(kind: str):
    def run(f: CallCounter, n: int, budget: int, *, seed: int, index, order) -> _Estimate:
        import torch

        if kind == "lime":
            try:  # checked here: Captum imports scikit-learn only to fit, after every call
                import sklearn.linear_model  # noqa: F401
            except ImportError as error:
                raise ImportError(f"its Lime surrogate needs scikit-learn ({error}): "
                                  "pip install scikit-learn") from error
        from captum.attr import KernelShap, Lime

        def forward(x):
            return torch.as_tensor(f(x.detach().cpu().numpy()))

        inputs = torch.ones((1, n), dtype=torch.float64)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if kind == "kernelshap":
                phi = KernelShap(forward).attribute(inputs, baselines=0.0, n_samples=budget,
                                                    perturbations_per_eval=64)
                return _Estimate(explanation=_linear_explanation(
                    float(f(np.zeros((1, n)))[0]), phi.detach().numpy()))
            from captum._utils.models.linear_model import SkLearnLinearRegression

            # Captum's default interpretable model, SkLearnLasso(alpha=0.01), has its penalty
            # in the units of the output: on value functions of scale ~0.01 (cosine
            # similarities, logits of one class) it zeroes every coefficient. This fits
            # (kernel-weighted) least squares instead, well posed once budget > n (the
            # minimum-norm solution below that).
            lime = Lime(forward, interpretable_model=SkLearnLinearRegression())
            coefficients = lime.attribute(inputs, baselines=0.0, n_samples=budget,
                                          perturbations_per_eval=64, return_input_shape=False)
        intercept = lime.interpretable_model.bias()
        if intercept is None:
            raise RuntimeError("Captum's Lime surrogate was fitted without an intercept")
        return _Estimate(explanation=_linear_explanation(
            float(intercept.reshape(-1)[0]), coefficients.detach().cpu().numpy()))
    return run


_SHAPIQ = "pip install 'spex-plugins[shapiq]'"
_MONTE_CARLO_INDICES = ("SV", "SII", "k-SII", "STII", "FSII", "FBII", "BII", "BV")

PEERS: dict[str, Peer] = {peer.name: peer for peer in (
    Peer("spex-plugins", "spex-plugins SPEX", ("numpy",), "pip install spex-plugins",
         _run_spex_plugins, indices=None),
    Peer("ridge", "first-order RidgeCV", ("sklearn",), "pip install scikit-learn",
         _run_ridge),
    Peer("lasso", "first-order LassoCV", ("sklearn",), "pip install scikit-learn",
         _run_lasso),
    Peer("lightgbm", "LightGBM (one fit, early stopping)", ("lightgbm",),
         "pip install lightgbm", _run_lightgbm),
    Peer("shapiq-spex", "shapiq SPEX", ("shapiq",), _SHAPIQ, _run_shapiq_sparse("spex"),
         indices=None),
    Peer("shapiq-proxyspex", "shapiq ProxySPEX", ("shapiq",), _SHAPIQ,
         _run_shapiq_sparse("proxyspex"), indices=None),
    Peer("shapiq-regression-fbii", "shapiq RegressionFBII", ("shapiq",), _SHAPIQ,
         _run_shapiq_dense("regression-fbii"), indices=("FBII",), dense_unknowns=True),
    Peer("shapiq-kernelshap", "shapiq KernelSHAP", ("shapiq",), _SHAPIQ,
         _run_shapiq_dense("kernelshap"), indices=("SV",), dense_unknowns=True),
    Peer("shapiq-kernelshapiq", "shapiq KernelSHAPIQ", ("shapiq",), _SHAPIQ,
         _run_shapiq_dense("kernelshapiq"), indices=("k-SII", "SII"), surrogate=False,
         dense_unknowns=True),
    Peer("shapiq-permutation-stii", "shapiq PermutationSamplingSTII", ("shapiq",), _SHAPIQ,
         _run_shapiq_dense("permutation-stii"), indices=("STII",), surrogate=False),
    Peer("shapiq-svarmiq", "shapiq SVARMIQ", ("shapiq",), _SHAPIQ,
         _run_shapiq_dense("svarmiq"), indices=_MONTE_CARLO_INDICES, surrogate=False),
    Peer("shap-permutation", "SHAP PermutationExplainer", ("shap",), "pip install shap",
         _run_shap("permutation")),
    Peer("shap-partition", "SHAP PartitionExplainer", ("shap",), "pip install shap",
         _run_shap("partition")),
    Peer("captum-kernelshap", "Captum KernelShap", ("captum", "torch"),
         "pip install 'spex-plugins[captum]'", _run_captum("kernelshap")),
    Peer("captum-lime", "Captum Lime", ("captum", "torch", "sklearn"),
         "pip install 'spex-plugins[captum]' scikit-learn", _run_captum("lime")),
)}
"""Every peer :func:`run_peer` knows, by name (see the module docstring)."""


def _missing_host(peer: Peer) -> str | None:
    for host in peer.hosts:
        try:
            found = importlib.util.find_spec(host) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{host} is not installed ({peer.install})"
    return None


def run_peer(name: str, value_function: Callable[[np.ndarray], np.ndarray], n: int,
             budget: int, *, index: str | None = None, order: int | None = None,
             seed: int = 0, options: Mapping[str, Any] | None = None) -> PeerResult:
    """Run peer ``name`` (a key of :data:`PEERS`) on ``value_function`` with ``budget``.

    Args:
        name: the peer.
        value_function: bool masks (m, n), True = feature kept -> (m,) outputs (a shapiq
            ``Game`` works); it is wrapped in a :class:`CallCounter`.
        n: number of features (players).
        budget: the model calls the peer may spend (passed to it as its own budget argument;
            ``calls`` in the result is what it used).
        index: the interaction index to report (e.g. "SV", "FBII", "k-SII", "STII"); None:
            none for a surrogate peer, the peer's own index for an index estimator.
        order: the order of ``index`` (default 2; SV and BV are order 1).
        seed: seeds the peer (and numpy's or torch's global generator inside the run, which
            is restored afterwards, for hosts that draw from it).
        options: keyword arguments of the peer's runner (``spex=SPEX(...)`` or SPEX settings
            for ``spex-plugins``; host constructor arguments for shapiq's estimators, e.g.
            ``{"decoder_type": "hard"}``; fit settings for ``lightgbm``).

    Returns:
        :class:`PeerResult`. A missing host, an index the peer does not estimate, a dense
        regression with more unknowns than ``budget``, and any error the run raises come back
        as its ``status`` and ``reason`` (no model call is made in the first three cases).
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose from {sorted(PEERS)}")
    peer = PEERS[name]
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
    n, budget = int(n), int(budget)
    if index is None and peer.indices:
        index = peer.indices[0]
    if index is not None:
        order = 1 if index in _FIRST_ORDER_INDICES else int(order or 2)
        if not 1 <= order <= n:
            raise ValueError(f"order must be in [1, n={n}], got {order}")
    result = PeerResult(name, "ok", index=index, order=order if index else None)
    missing = _missing_host(peer)
    if missing:
        result.status, result.reason = "unavailable", missing
        return result
    if index is not None and peer.indices is not None and index not in peer.indices:
        result.status = "skipped"
        result.reason = f"{peer.label} estimates {', '.join(peer.indices) or 'no index'}"
        return result
    if peer.dense_unknowns:
        unknowns = sum(math.comb(n, k) for k in range(order + 1))
        if unknowns > budget:
            result.status = "skipped"
            result.reason = f"{unknowns} unknowns (sets up to order {order}) > budget {budget}"
            return result
    counter = CallCounter(value_function)
    began = time.perf_counter()
    try:
        estimate = peer.runner(counter, n, budget, seed=seed, index=index, order=order,
                               **dict(options or {}))
    except ImportError as error:
        result.status, result.reason = "unavailable", f"{error} ({peer.install})"
        return result
    except Exception as error:  # recorded, not raised: one failing peer must not end a run
        result.status, result.reason = "error", f"{type(error).__name__}: {error}"
        result.calls, result.model_seconds = counter.calls, counter.seconds
        result.seconds = time.perf_counter() - began
        return result
    result.seconds = time.perf_counter() - began
    result.calls, result.model_seconds = counter.calls, counter.seconds
    result.details = dict(estimate.details)
    if estimate.explanation is not None:
        estimate.explanation.n_model_calls = counter.calls
        result.explanation = estimate.explanation
    if peer.surrogate:
        result.surrogate = estimate.surrogate or (
            result.explanation.predict if result.explanation is not None else None)
    if index is not None:
        result.values = estimate.values if estimate.values is not None else (
            result.interactions(index, order) if result.explanation is not None else None)
    return result
