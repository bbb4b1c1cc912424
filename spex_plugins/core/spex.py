"""SPEX: sparse Fourier explanations of a masked-model value function."""

from __future__ import annotations

import time

import numpy as np

from ..runtime import ValueFunction, evaluate, unique_masks
from .fourier import FourierExplanation
from .peeling import peel
from .refit import refit_columns, ridge_refit
from .sampler import MAX_B, MIN_B, SubsampleDesign, b_for_budget, min_budget, sample_count
from .transforms import fwht

__all__ = ["SPEX"]

DEFAULT_B = 8


class SPEX:
    """Spectral Explainer (Kang et al., ICML 2025).

    Treats the model output under feature masking as a set function ``f: {0,1}^n -> R`` and
    recovers its important Walsh-Hadamard coefficients of degree <= ``max_order`` from
    ``n_groups * P * 2^b`` structured masks (random linear subsampling plus BCH-coded shifts).

    Parameters
    ----------
    max_order : int
        Degree bound t: the BCH code corrects t errors, so frequencies with up to t features
        are recoverable. Larger t costs more shifts P (about t log2 n). A bound above the
        number of features n loses nothing (no frequency has more than n features), so it is
        lowered to n; ``metadata["max_order"]`` is the bound used and
        ``metadata["max_order_requested"]`` the one asked for.
    n_groups : int
        Number of independent subsampling groups C.
    b : int or None
        log2 of the bins per group. None: the largest b the ``budget`` allows, or 8.
    decoder : {"soft", "hard"}
        Hard BCH decoding of the parity signs, or soft (Chase) decoding that also tries flips
        of the least reliable parity bits.
    refit : {"ridge", None}
        "ridge": refit the recovered support plus the constant and all n first-order terms on
        all samples (see :func:`spex_plugins.core.refit.ridge_refit`); None: raw peeled values.
    random_state : int, numpy Generator or None
        Seeds the subsampling matrices; equal seeds give identical explanations.
    chase_depth : int or None
        Least reliable parity bits that Chase decoding flips (default 2 * max_order).
    """

    def __init__(self, max_order: int = 5, n_groups: int = 3, b: int | None = None,
                 decoder: str = "soft", refit: str | None = "ridge", random_state=None,
                 chase_depth: int | None = None):
        self.max_order = max_order
        self.n_groups = n_groups
        self.b = b
        self.decoder = decoder
        self.refit = refit
        self.random_state = random_state
        self.chase_depth = chase_depth

    def _validate(self, n) -> int:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n (number of features) must be an integer >= 1, got {n!r}")
        n = int(n)
        t = self.max_order
        if isinstance(t, bool) or not isinstance(t, int | np.integer) or t < 1:
            raise ValueError(f"max_order must be an integer >= 1, got {t!r}")
        if not isinstance(self.n_groups, int | np.integer) or self.n_groups < 1:
            raise ValueError(f"n_groups must be an integer >= 1, got {self.n_groups!r}")
        if self.decoder not in ("soft", "hard"):
            raise ValueError(f"decoder must be 'soft' or 'hard', got {self.decoder!r}")
        if self.refit not in ("ridge", None):
            raise ValueError(f"refit must be 'ridge' or None, got {self.refit!r}")
        if self.b is not None and not MIN_B <= self.b <= MAX_B:
            raise ValueError(f"b must be in [{MIN_B}, {MAX_B}], got {self.b!r}")
        return n

    def degree(self, n: int) -> int:
        """The degree bound used for ``n`` features: ``min(max_order, n)``."""
        return min(int(self.max_order), self._validate(n))

    def min_budget(self, n: int) -> int:
        """The smallest budget :meth:`explain` accepts for ``n`` features."""
        return min_budget(n, self.degree(n), self.n_groups)

    def resolve_b(self, n: int, budget: int | None = None, budget_name: str = "budget") -> int:
        """The b used for ``n`` features under ``budget`` (ValueError if it does not fit;
        ``budget_name`` is the argument the error names, e.g. ``max_evals``)."""
        t = self.degree(n)
        if self.b is None:
            if budget is None:
                return DEFAULT_B
            return b_for_budget(n, t, self.n_groups, int(budget), budget_name=budget_name)
        if budget is not None:
            need = sample_count(n, t, self.n_groups, self.b)
            if need > budget:
                raise ValueError(
                    f"b={self.b} needs {need} model calls for n={n}, max_order={t}, above "
                    f"{budget_name}={budget}; pass b=None to choose b from the budget"
                )
        return self.b

    def explain(self, value_function: ValueFunction, n: int, budget: int | None = None, *,
                batch_size: int | None = None, progress: bool = True,
                budget_name: str = "budget") -> FourierExplanation:
        """Explain ``value_function`` over ``n`` features.

        ``value_function(masks)`` receives bool masks (m, n), True = feature kept, and returns
        (m,) or (m, k) outputs; all k outputs are explained from one set of masks. ``budget``
        caps the design size (model calls); the minimum is stated in the error if it is too
        small. Identical masks are sent once, through :func:`spex_plugins.runtime.evaluate`, in
        batches of ``batch_size`` (default: the value function's own ``batch_size``, else
        4096); a cached value function is evaluated through its cache. ``budget_name`` is the
        name under which the caller received the budget (``max_evals``, ``n_samples``, ...),
        used in error messages.
        """
        n = self._validate(n)
        t = self.degree(n)
        b = self.resolve_b(n, budget, budget_name)
        began = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        design = SubsampleDesign.create(n, t, self.n_groups, b, rng)
        masks = design.masks()  # (C, P, 2^b, n)
        distinct, inverse = unique_masks(masks.reshape(-1, n))
        sampled = time.perf_counter()

        evaluation = evaluate(value_function, distinct, batch_size=batch_size, progress=progress,
                              desc="SPEX model calls")
        values, model_seconds, flat = evaluation.values, evaluation.seconds, evaluation.flat
        evaluated = time.perf_counter()

        n_outputs = values.shape[1]
        samples = values[inverse].reshape(*masks.shape[:3], n_outputs)
        bins = fwht(samples, axis=2)  # (C, P, 2^b, K)
        transformed = time.perf_counter()

        peeled = [peel(bins[..., k], design, self.decoder, self.chase_depth)
                  for k in range(n_outputs)]
        decoded = time.perf_counter()

        if self.refit == "ridge":
            columns = refit_columns(n, t, [p.support for p in peeled])
            fit = ridge_refit(bins, design, columns)
            locations, coefficients = fit.support, fit.coefficients
            penalties = fit.penalty.tolist()
        else:
            locations, coefficients = _stack_outputs(peeled, t)
            penalties = None
        finished = time.perf_counter()

        timings = {
            "sampling": sampled - began,
            "model": model_seconds,
            "transform": transformed - evaluated,
            "decode": decoded - transformed,
            "refit": finished - decoded,
            "own": (finished - began) - model_seconds,
            "total": finished - began,
        }
        metadata = {
            "method": "SPEX",
            "max_order": t,
            "max_order_requested": int(self.max_order),
            "n_groups": self.n_groups,
            "b": b,
            "decoder": self.decoder,
            "refit": self.refit,
            "ridge_penalty": penalties,
            "peeling_iterations": [p.n_iterations for p in peeled],
            "random_state": self.random_state if isinstance(self.random_state, int) else None,
            "scalar_output": flat,
        }
        return FourierExplanation(n, locations, coefficients, n_model_calls=len(distinct),
                                  n_samples=design.n_samples, timings=timings, metadata=metadata)

    def __repr__(self) -> str:
        return (f"SPEX(max_order={self.max_order}, n_groups={self.n_groups}, b={self.b}, "
                f"decoder={self.decoder!r}, refit={self.refit!r}, "
                f"random_state={self.random_state!r})")


def _stack_outputs(peeled, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of per-output supports with a (s, K) coefficient matrix (zeros where absent)."""
    supports = [p.support for p in peeled]
    union = np.unique(np.vstack([np.full((1, t), -1, np.int64)] + supports), axis=0)
    coefficients = np.zeros((len(union), len(peeled)))
    for k, p in enumerate(peeled):
        if len(p.support):
            rows = _row_index(union, p.support)
            coefficients[rows, k] = p.values
    return union, coefficients


def _row_index(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Position of each of ``rows`` in the sorted unique ``table``."""
    both, inverse = np.unique(np.vstack([table, rows]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    lookup = np.empty(len(both), np.int64)
    lookup[inverse[: len(table)]] = np.arange(len(table))
    return lookup[inverse[len(table):]]
