"""Baselines for the side-by-side comparison at a fixed number of model calls.

Each baseline runs a host library's own estimator directly on a masked value function (bool
masks (m, n) -> (m,)) and returns a :class:`BaselineResult` whose ``predict`` turns the estimate
into a surrogate of the value function, so that every method gets the same held-out R^2:

- SHAP ``PermutationExplainer`` and Captum ``KernelShap``: Shapley values phi, surrogate
  f(empty) + sum_i phi_i x_i;
- shapiq ``RegressionFBII`` (order 1, Faith-Banzhaf) and shapiq ``SPEX`` (FBII of order t,
  hard decoding where selectable, to keep the demo within minutes): faithful interaction
  indices, surrogate sum_S v_S prod_{i in S} x_i.

A baseline whose host library is not installed reports ``available = False`` with the reason.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core.evaluation import row_keys

__all__ = ["BASELINES", "BaselineResult", "CallCounter", "r2_score", "run_baseline"]


def r2_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination of ``predicted`` against ``truth`` (both (m,))."""
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    total = float(((truth - truth.mean()) ** 2).sum())
    return 1.0 - float(((truth - predicted) ** 2).sum()) / total if total > 0 else float("nan")


class CallCounter:
    """Counts the distinct masks a method asks for and the time spent answering them."""

    def __init__(self, value_function: Callable[[np.ndarray], np.ndarray]):
        self.value_function = value_function
        self.seen: set[bytes] = set()
        self.seconds = 0.0

    @property
    def calls(self) -> int:
        return len(self.seen)

    def __call__(self, masks) -> np.ndarray:
        masks = np.asarray(masks) > 0.5
        self.seen.update(row_keys(masks).tolist())
        began = time.perf_counter()
        out = np.asarray(self.value_function(masks), dtype=np.float64).reshape(len(masks))
        self.seconds += time.perf_counter() - began
        return out


@dataclass
class BaselineResult:
    name: str
    available: bool
    reason: str = ""
    calls: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    predict: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)


def _additive(empty: float, phi: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    phi = np.asarray(phi, dtype=np.float64).reshape(-1)
    return lambda masks: empty + np.asarray(masks, dtype=np.float64) @ phi


def _and_basis(values) -> Callable[[np.ndarray], np.ndarray]:
    """Surrogate sum_S v_S [S subset of kept] from a shapiq InteractionValues."""
    terms = [(tuple(key), float(values.values[pos]))
             for key, pos in values.interaction_lookup.items()]
    if not any(len(key) == 0 for key, _ in terms):
        terms.append(((), float(values.baseline_value)))

    def predict(masks):
        masks = np.asarray(masks, dtype=bool)
        out = np.zeros(len(masks))
        for key, value in terms:
            out += value * (masks[:, list(key)].all(axis=1) if key else 1.0)
        return out

    return predict


def _shap_permutation(f: CallCounter, n: int, budget: int, seed: int, max_order: int):
    import shap

    masker = shap.maskers.Independent(np.zeros((1, n)), max_samples=1)
    explainer = shap.PermutationExplainer(f, masker, seed=seed)
    result = explainer(np.ones((1, n)), max_evals=budget, batch_size=64, silent=True)
    return _additive(float(np.ravel(result.base_values)[0]), result.values[0])


def _captum_kernel_shap(f: CallCounter, n: int, budget: int, seed: int, max_order: int):
    import torch
    from captum.attr import KernelShap

    torch.manual_seed(seed)

    def forward(x):
        return torch.as_tensor(f(x.detach().cpu().numpy()))

    phi = KernelShap(forward).attribute(torch.ones((1, n), dtype=torch.float64),
                                        baselines=0.0, n_samples=budget,
                                        perturbations_per_eval=64)
    return _additive(float(f(np.zeros((1, n)))[0]), phi.numpy())


def _shapiq_fbii(f: CallCounter, n: int, budget: int, seed: int, max_order: int):
    import shapiq

    approximator = shapiq.approximator.RegressionFBII(n, max_order=1, random_state=seed)
    return _and_basis(approximator.approximate(budget, f))


def _shapiq_spex(f: CallCounter, n: int, budget: int, seed: int, max_order: int):
    import shapiq

    np.random.seed(seed)  # shapiq's SPEX draws its design from numpy's global generator
    options = {}
    if "decoder_type" in inspect.signature(shapiq.approximator.SPEX).parameters:
        # its soft (Chase) decoding runs galois' BCH decoder per candidate: 100-400 s at
        # n = 153 on 2 cores, against about 95 s for hard decoding
        options["decoder_type"] = "hard"
    approximator = shapiq.approximator.SPEX(n=n, index="FBII", max_order=max_order,
                                            degree_parameter=max_order, random_state=seed,
                                            **options)
    return _and_basis(approximator.approximate(budget, f))


BASELINES = {
    "SHAP PermutationExplainer": ("shap", _shap_permutation),
    "Captum KernelShap": ("captum", _captum_kernel_shap),
    "shapiq RegressionFBII (Faith-Banzhaf, order 1)": ("shapiq", _shapiq_fbii),
    "shapiq SPEX (FBII, hard decoding)": ("shapiq", _shapiq_spex),
}


def run_baseline(name: str, value_function: Callable[[np.ndarray], np.ndarray], n: int,
                 budget: int, seed: int = 0, max_order: int = 3) -> BaselineResult:
    """Run the baseline ``name`` (a key of :data:`BASELINES`) with ``budget`` model calls;
    ``max_order`` is the degree of the interaction methods (shapiq's SPEX)."""
    module, method = BASELINES[name]
    if importlib.util.find_spec(module) is None:
        return BaselineResult(name, False, f"{module} is not installed")
    counter = CallCounter(value_function)
    began = time.perf_counter()
    try:
        predict = method(counter, n, budget, seed, max_order)
    except ImportError as error:
        return BaselineResult(name, False, f"{module} could not be imported: {error}")
    seconds = time.perf_counter() - began
    return BaselineResult(name, True, calls=counter.calls, seconds=seconds,
                          model_seconds=counter.seconds, predict=predict)
