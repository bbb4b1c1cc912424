"""Baselines for the side-by-side comparison at a fixed number of model calls.

Each baseline runs a host library's own estimator directly on a masked value function (bool
masks (m, n) -> (m,)) and returns a :class:`BaselineResult` whose ``predict`` turns the estimate
into a surrogate of the value function, so that every method gets the same held-out R^2:

- SHAP ``PermutationExplainer`` and Captum ``KernelShap``: Shapley values phi, surrogate
  f(empty) + sum_i phi_i x_i;
- SHAP ``PartitionExplainer``: Owen values phi over a balanced binary tree of contiguous
  feature positions (the text-like default: neighbouring features are merged first), with the
  same additive surrogate;
- Captum ``Lime``: the weighted linear model Lime fits to its samples, surrogate
  intercept + sum_i coef_i x_i;
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

from .runtime import row_keys

__all__ = ["BASELINES", "BaselineResult", "CallCounter", "contiguous_clustering", "r2_score",
           "run_baseline"]


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


def _shap_partition(f: CallCounter, n: int, budget: int, seed: int, max_order: int):
    import shap

    masker = shap.maskers.Partition(np.zeros((1, n)), max_samples=1,
                                    clustering=contiguous_clustering(n))
    explainer = shap.PartitionExplainer(f, masker)
    # PartitionExplainer takes no seed: it breaks ties in its work queue with numpy's global
    # generator. Its max_evals counts f(empty) and f(full) and the queue is checked before
    # each pair of masks is added, so it may ask for max_evals + 1 masks (CallCounter reports
    # what it asked for).
    np.random.seed(seed)
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


def _captum_lime(f: CallCounter, n: int, budget: int, seed: int, max_order: int):
    import torch
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import Lime

    try:  # checked here: Captum imports scikit-learn only to fit, after every model call
        import sklearn.linear_model  # noqa: F401
    except ImportError as error:
        raise ImportError(f"its Lime surrogate needs scikit-learn ({error})") from error
    torch.manual_seed(seed)

    def forward(x):
        return torch.as_tensor(f(x.detach().cpu().numpy()))

    # Captum's default interpretable model, SkLearnLasso(alpha=0.01), has its penalty in the
    # units of the output: on value functions of scale ~0.01 (cosine similarities, logits of
    # one class) it zeroes every coefficient. Ridge's penalty does not depend on the output
    # scale but still shrinks the coefficients at small budgets, so this fits (kernel-weighted)
    # least squares, which the binary interpretable features (the masks themselves) make
    # well posed once budget > n (the minimum-norm solution below that).
    lime = Lime(forward, interpretable_model=SkLearnLinearRegression())
    coefficients = lime.attribute(torch.ones((1, n), dtype=torch.float64), baselines=0.0,
                                  n_samples=budget, perturbations_per_eval=64,
                                  return_input_shape=False)
    intercept = lime.interpretable_model.bias()
    if intercept is None:
        raise RuntimeError("Captum's Lime surrogate was fitted without an intercept")
    return _additive(float(intercept.reshape(-1)[0]),
                     coefficients.detach().cpu().numpy().reshape(-1))


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
    "SHAP PartitionExplainer": ("shap", _shap_partition),
    "Captum KernelShap": ("captum", _captum_kernel_shap),
    "Captum Lime": ("captum", _captum_lime),
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
