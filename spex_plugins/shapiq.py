"""shapiq adapter: SPEX as a shapiq approximator, and a side-by-side comparison of estimators.

* :class:`SpexApproximator`, a subclass of shapiq's ``Approximator`` with the parameter names and
  defaults of the installed shapiq's own ``SPEX``:
  ``SpexApproximator(n=n, max_order=2, index="k-SII").approximate(budget, game)`` returns
  ``shapiq.InteractionValues`` and plugs into shapiq's explainers
  (``shapiq.TabularExplainer(model, data, approximator=SpexApproximator(n=...))``).
* :func:`to_interaction_values`: any :class:`~spex_plugins.FourierExplanation` as
  ``InteractionValues`` of a shapiq index (converted with shapiq's own ``MoebiusConverter``).
* :func:`compare`: ours, shapiq's SPEX / ProxySPEX, Faith-Banzhaf regression and the
  Shapley-Taylor estimators on one game and budget -> :class:`Comparison` (a list of records).

The indices are those shapiq's ``MoebiusConverter`` computes from Möbius coefficients (SV, BV,
SII, k-SII, STII, FSII, FBII and, from shapiq 1.5, BII) plus the exact conversions of the core
(Moebius, BII on older shapiq, and Fourier where the installed shapiq knows the index).

shapiq is imported with this module (``pip install 'spex-plugins[shapiq]'``);
``import spex_plugins`` itself does not need it.

>>> import numpy as np
>>> from spex_plugins.shapiq import SpexApproximator
>>> def game(coalitions):  # bool (m, 4) -> (m,)
...     return 1.0 * coalitions[:, 0] * coalitions[:, 1] + coalitions[:, 2]
>>> iv = SpexApproximator(n=4, index="SV", max_order=1, random_state=0).approximate(600, game)
>>> [round(iv[(i,)], 6) for i in range(4)]
[0.5, 0.5, 1.0, 0.0]
"""

from __future__ import annotations

import inspect
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

try:
    import shapiq
    from shapiq.approximator.base import Approximator
    from shapiq.game_theory.indices import is_index_valid
    from shapiq.game_theory.moebius_converter import MoebiusConverter
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("spex_plugins.shapiq needs shapiq: pip install 'spex-plugins[shapiq]'"
                      ) from error

from .core import SPEX, FourierExplanation
from .core import conversions as _conv
from .core.settings import engine, option_names

__all__ = [
    "METHODS",
    "Comparison",
    "SpexApproximator",
    "compare",
    "supported_indices",
    "to_interaction_values",
]

METHODS: tuple[str, ...] = (
    "spex-plugins",
    "shapiq-spex",
    "shapiq-proxyspex",
    "shapiq-regression-fbii",
    "shapiq-permutation-stii",
    "shapiq-svarmiq-stii",
)
"""Method names accepted by :func:`compare` (ours first, then shapiq's estimators)."""

_SPARSE_METHODS = ("spex-plugins", "shapiq-spex", "shapiq-proxyspex")
_DENSE_INDEX = {"shapiq-regression-fbii": "FBII", "shapiq-permutation-stii": "STII",
                "shapiq-svarmiq-stii": "STII"}
_FIRST_ORDER = ("SV", "BV")

# The installed shapiq's own SPEX: its parameter names and defaults are ours (shapiq 1.4
# defaults to index="FBII", max_order=None = all orders; 1.5+ to "k-SII" and 2).
_HOST_SPEX = inspect.signature(shapiq.SPEX.__init__).parameters
DEFAULT_INDEX: str = _HOST_SPEX["index"].default
DEFAULT_MAX_ORDER: int | None = _HOST_SPEX["max_order"].default
DecoderType = Literal["soft", "hard"]
_RENAMED = {"decoder": "decoder_type"}
"""Old keyword names of :class:`SpexApproximator` -> shapiq's names (deprecated)."""
_SHAPIQ_NAMED = ("max_order", "decoder", "random_state")
"""SPEX options that :class:`SpexApproximator` takes under shapiq's names instead
(``degree_parameter``, ``decoder_type``, ``random_state``)."""


# --- indices ------------------------------------------------------------------------------------

def _converter_indices() -> tuple[str, ...]:
    """Indices the installed shapiq's ``MoebiusConverter`` computes."""
    return tuple(MoebiusConverter.valid_indices)


def supported_indices() -> tuple[str, ...]:
    """Indices :class:`SpexApproximator` returns with the installed shapiq."""
    core_only = tuple(i for i in ("Moebius", "BII", "Fourier") if is_index_valid(i))
    return tuple(dict.fromkeys(_converter_indices() + core_only))


# --- conversion of a Fourier explanation ------------------------------------------------------

# Empty-set values of the base indices as shapiq's ExactComputer defines them, from the Möbius
# coefficients a(T) (shapiq's MoebiusConverter leaves the empty set out of these indices):
# SII(∅) = sum_T a(T) / (|T| + 1) (Grabisch); BII(∅) = BV(∅) = sum_T a(T) / 2^|T| = E[f].
_EMPTY_SET_WEIGHT: dict[str, Callable[[int], float]] = {
    "SII": lambda size: 1.0 / (size + 1), "BII": lambda size: 0.5**size,
    "BV": lambda size: 0.5**size}


def _moebius_interaction_values(n: int, moebius: dict, calls: int) -> shapiq.InteractionValues:
    """A Möbius dict {tuple: value} as shapiq ``InteractionValues``."""
    moebius = {(): 0.0, **moebius}
    return shapiq.InteractionValues(
        values=np.fromiter(moebius.values(), float, len(moebius)), index="Moebius",
        max_order=max(1, max(map(len, moebius))), min_order=0, n_players=n,
        interaction_lookup={s: i for i, s in enumerate(moebius)}, estimated=True,
        estimation_budget=calls, baseline_value=float(moebius[()]))


def to_interaction_values(explanation: FourierExplanation, index: str = "k-SII",
                          max_order: int = 2, *, top_order: bool = False
                          ) -> shapiq.InteractionValues:
    """A scalar SPEX explanation as ``shapiq.InteractionValues`` of ``index`` up to ``max_order``.

    Indices of shapiq's ``MoebiusConverter`` are computed by it from the explanation's Möbius
    coefficients (the native route); the others (``supported_indices()``) by the core's exact
    conversions. SV and BV are order 1. ``top_order=True`` keeps only sets of size ``max_order``.
    ``estimation_budget`` is the explanation's number of model calls.
    """
    if explanation.n_outputs != 1:
        raise ValueError(f"shapiq interaction values are scalar; the explanation has "
                         f"{explanation.n_outputs} outputs (use explanation.output(k))")
    if index not in supported_indices():
        raise ValueError(f"index {index!r} is not supported; choose from {supported_indices()}")
    order = 1 if index in _FIRST_ORDER else int(max_order)
    if not 1 <= order <= explanation.n:
        raise ValueError(f"max_order must be in [1, n={explanation.n}], got {max_order}")
    if index in _converter_indices():
        moebius = explanation.output(0).moebius()
        converted = MoebiusConverter(_moebius_interaction_values(
            explanation.n, moebius, explanation.n_model_calls))(index, order)
        values = dict(converted.interactions)
        baseline = float(converted.baseline_value)
        if index in _EMPTY_SET_WEIGHT:
            weight = _EMPTY_SET_WEIGHT[index]
            values[()] = float(sum(v * weight(len(s)) for s, v in moebius.items()))
    else:
        values = explanation.output(0).interactions(index, order)
        baseline = float(values.get((), explanation.output(0).empty_value))
    min_order = order if top_order else 0
    values = {s: float(v) for s, v in values.items() if min_order <= len(s) <= order}
    return shapiq.InteractionValues(
        values=np.fromiter(values.values(), float, len(values)), index=index,
        max_order=order, min_order=min_order, n_players=explanation.n,
        interaction_lookup={s: i for i, s in enumerate(values)}, estimated=True,
        estimation_budget=explanation.n_model_calls, baseline_value=baseline,
        target_index=index)


def _value_function(game, n: int) -> Callable[[np.ndarray], np.ndarray]:
    """A shapiq ``Game`` or a callable on bool coalitions (m, n) as a value function."""
    n_players = getattr(game, "n_players", None)
    if n_players is not None and int(n_players) != n:
        raise ValueError(f"the game has {n_players} players, the approximator n = {n}")
    if not callable(game):
        raise TypeError(f"game must be a shapiq Game or a callable, got {type(game).__name__}")
    return lambda masks: game(np.asarray(masks, dtype=bool))


def _calling_explainer(depth: int = 6):
    """The shapiq ``Explainer`` whose ``explain`` is calling this approximator, if any.

    shapiq's explainers hand their approximator only a budget and a game, so the index and
    order they were asked for are read off the caller's frame (nothing is changed there).
    """
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, shapiq.Explainer):
            return owner
        frame = frame.f_back
    return None


# --- the approximator -------------------------------------------------------------------------

class SpexApproximator(Approximator):
    """SPEX (spex-plugins engine) as a shapiq approximator.

    The parameters are those of the installed shapiq's own ``shapiq.SPEX`` (names and defaults):

    - ``n``: number of players;
    - ``max_order``: order of the returned index (default: shapiq's, ``DEFAULT_MAX_ORDER``;
      None means every order up to n); SV and BV are order 1 (another order warns);
    - ``index``: any of :func:`supported_indices` (default: shapiq's, ``DEFAULT_INDEX``);
    - ``top_order``, ``random_state``: as in shapiq;
    - ``decoder_type``: "soft" or "hard" BCH decoding; ``degree_parameter``: the SPEX degree
      bound t (the core's ``max_order``).

    Further SPEX settings: ``spex=SPEX(...)`` and/or the other keyword names of
    :class:`spex_plugins.SPEX` (``n_groups``, ``b``, ``refit``, ``chase_depth``, ...);
    ``batch_size`` coalitions per call of the game. The old name ``decoder`` is accepted with a
    ``DeprecationWarning``.

    ``approximate(budget, game)`` sends at most ``budget`` distinct coalitions to ``game`` (a
    shapiq ``Game`` or a callable on bool coalition matrices (m, n) returning (m,)) and
    returns ``InteractionValues`` with ``estimation_budget`` = model calls used. The
    underlying :class:`~spex_plugins.FourierExplanation` is kept as ``explanation_``. Called by
    a shapiq explainer asked for another index or order, it warns.
    """

    valid_indices = supported_indices()

    def __init__(self, n: int, *, max_order: int | None = DEFAULT_MAX_ORDER,
                 index: str = DEFAULT_INDEX, top_order: bool = False,
                 random_state: int | None = None, decoder_type: DecoderType = "soft",
                 degree_parameter: int = 5, spex: SPEX | None = None,
                 batch_size: int | None = None, **spex_options: Any) -> None:
        for old, new in _RENAMED.items():
            if old in spex_options:
                warnings.warn(f"SpexApproximator({old}=...) is deprecated; use shapiq's name "
                              f"{new}=...", DeprecationWarning, stacklevel=2)
                decoder_type = spex_options.pop(old)
        forwarded = [o for o in option_names() if o not in _SHAPIQ_NAMED]
        unknown = sorted(set(spex_options) - set(forwarded))
        if unknown:
            raise TypeError(f"unknown keyword(s) {unknown}; SpexApproximator takes shapiq's "
                            "names (n, max_order, index, top_order, random_state, "
                            "decoder_type, degree_parameter), spex=SPEX(...), batch_size and "
                            f"the SPEX options {forwarded}")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        n = int(n)
        order = n if max_order is None else int(max_order)
        if index in _FIRST_ORDER:
            if max_order is not None and order not in (1, DEFAULT_MAX_ORDER):
                warnings.warn(f"{index} is an order-1 index: max_order={max_order} is ignored "
                              f"and order-1 values are returned", UserWarning, stacklevel=2)
            order = 1
        if not 1 <= order <= n:
            raise ValueError(f"max_order must be in [1, n={n}], got {max_order}")
        super().__init__(n=n, max_order=order, index=index, top_order=top_order,
                         random_state=random_state, initialize_dict=False,
                         sampling_weights=np.full(n + 1, 1.0 / (n + 1)))
        self.spex = engine(spex, max_order=int(degree_parameter), decoder=decoder_type,
                           random_state=random_state, **spex_options)
        self.decoder_type = decoder_type
        self.degree_parameter = int(degree_parameter)
        self.batch_size = batch_size
        self.explanation_: FourierExplanation | None = None

    def approximate(self, budget: int, game, *args: Any, **kwargs: Any
                    ) -> shapiq.InteractionValues:
        """Explain ``game`` with at most ``budget`` model calls -> ``InteractionValues``."""
        explainer = _calling_explainer()
        if explainer is not None:
            wanted = (getattr(explainer, "index", self.index),
                      getattr(explainer, "_max_order", self.max_order))
            if wanted != (self.index, self.max_order):
                warnings.warn(
                    f"the explainer was asked for {wanted[0]} of order {wanted[1]}, but this "
                    f"SpexApproximator returns {self.index} of order {self.max_order} (shapiq "
                    "explainers use the approximator's index and order): pass "
                    f"SpexApproximator(n={self.n}, index={wanted[0]!r}, "
                    f"max_order={wanted[1]})", UserWarning, stacklevel=3)
        explanation = self.spex.explain(_value_function(game, self.n), self.n, int(budget),
                                        batch_size=self.batch_size, progress=False)
        if explanation.n_outputs != 1:
            raise ValueError(f"the game must return one value per coalition, got "
                             f"{explanation.n_outputs}")
        self.explanation_ = explanation
        return to_interaction_values(explanation, self.index, self.max_order,
                                     top_order=self.top_order)


# --- side-by-side comparison ------------------------------------------------------------------

class _Counted:
    """Wraps a value function; counts the coalitions evaluated and the seconds spent in it."""

    def __init__(self, value_function: Callable[[np.ndarray], np.ndarray]):
        self.value_function = value_function
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        coalitions = np.atleast_2d(np.asarray(coalitions, dtype=bool))
        start = time.perf_counter()
        out = np.asarray(self.value_function(coalitions), dtype=float).reshape(len(coalitions))
        self.seconds += time.perf_counter() - start
        self.calls += len(coalitions)
        return out


def _explanation_from_moebius(n: int, moebius: dict, calls: int) -> FourierExplanation:
    """A Fourier surrogate from a Möbius dict {tuple: value}."""
    keys = [k for k, v in moebius.items() if v != 0] or [()]
    locations = np.full((len(keys), max(1, max(map(len, keys)))), -1, np.int64)
    for row, key in zip(locations, keys, strict=True):
        row[:len(key)] = sorted(key)
    values = np.array([moebius.get(k, 0.0) for k in keys], float)
    return FourierExplanation(n, *_conv.moebius_to_fourier(locations, values[:, None]),
                              n_model_calls=calls, metadata={"scalar_output": True})


def _capture_moebius(approximator) -> dict:
    """Record the Möbius transform a shapiq sparse approximator hands to its converter."""
    if not hasattr(approximator, "_process_moebius"):
        raise RuntimeError(f"cannot read the Möbius transform of {type(approximator).__name__} "
                           "in this shapiq version")
    captured: dict = {}
    original = approximator._process_moebius

    def hook(moebius_transform):
        captured.update({tuple(sorted(int(i) for i in k)): float(v)
                         for k, v in moebius_transform.items()})
        return original(moebius_transform=moebius_transform)

    approximator._process_moebius = hook
    return captured


def _make_peer(method: str, n: int, max_order: int, random_state, options: dict):
    if method == "shapiq-spex":
        kwargs = {"degree_parameter": 5, **options}
        return shapiq.SPEX(n=n, index="FBII", max_order=max_order, random_state=random_state,
                           **kwargs)
    if method == "shapiq-proxyspex":
        return shapiq.ProxySPEX(n=n, index="FBII", max_order=max_order,
                                random_state=random_state, **options)
    if method == "shapiq-regression-fbii":
        return shapiq.RegressionFBII(n=n, max_order=max_order, random_state=random_state,
                                     **options)
    if method == "shapiq-permutation-stii":
        return shapiq.PermutationSamplingSTII(n=n, max_order=max_order,
                                              random_state=random_state, **options)
    return shapiq.SVARMIQ(n=n, max_order=max_order, index="STII", random_state=random_state,
                          **options)


def _run_method(method: str, value_function, n: int, budget: int, indices: Sequence[str],
                max_order: int, random_state, options: dict) -> tuple[dict, FourierExplanation,
                                                                      _Counted, float]:
    """One method on the game: ({index: InteractionValues}, surrogate, counter, wall seconds)."""
    counted = _Counted(value_function)
    if method == "spex-plugins":
        approx = SpexApproximator(n, max_order=max_order, index=indices[0],
                                  random_state=random_state, **options)
        start = time.perf_counter()
        approx.approximate(budget, counted)
        wall = time.perf_counter() - start
        surrogate = approx.explanation_
    elif method in _SPARSE_METHODS:
        approx = _make_peer(method, n, max_order, random_state, options)
        moebius = _capture_moebius(approx)
        state = np.random.get_state()  # shapiq's SPEX draws its design from numpy's global RNG
        np.random.seed(0 if random_state is None else random_state)
        try:
            start = time.perf_counter()
            approx.approximate(budget, counted)
            wall = time.perf_counter() - start
        finally:
            np.random.set_state(state)
        surrogate = _explanation_from_moebius(n, moebius, counted.calls)
    else:
        index = _DENSE_INDEX[method]
        approx = _make_peer(method, n, max_order, random_state, options)
        start = time.perf_counter()
        result = approx.approximate(budget, counted)
        wall = time.perf_counter() - start
        # the estimate read as Möbius coefficients (baseline on the empty set) is its surrogate
        moebius = dict(result.interactions)
        moebius.setdefault((), float(result.baseline_value))
        surrogate = _explanation_from_moebius(n, moebius, counted.calls)
        return {index: result}, surrogate, counted, wall
    surrogate.n_model_calls = counted.calls
    results = {index: to_interaction_values(surrogate, index, max_order) for index in indices}
    return results, surrogate, counted, wall


def _top(values: dict, k: int) -> list[tuple[tuple[int, ...], float]]:
    items = [(s, float(v)) for s, v in values.items() if s]
    items.sort(key=lambda item: (-abs(item[1]), len(item[0]), item[0]))
    return items[:k]


def _errors(estimate: dict, exact: dict, order: int) -> tuple[float, float]:
    """MSE over all sets of size 1..order and precision@5 of the top-5 sets by magnitude."""
    keys = {s for s in (*estimate, *exact) if 1 <= len(s) <= order}
    if not keys:
        return 0.0, 1.0
    diff = np.array([estimate.get(s, 0.0) - exact.get(s, 0.0) for s in keys])
    truth = {s for s, _ in _top({s: exact.get(s, 0.0) for s in keys}, 5)}
    found = {s for s, _ in _top({s: estimate.get(s, 0.0) for s in keys}, 5)}
    return float(np.mean(diff**2)), len(truth & found) / len(truth)


class Comparison(list):
    """Records of :func:`compare`, one per (method, index); ``str()`` gives a table.

    Each record is a dict with ``method``, ``index``, ``status`` ("ok", "skipped: ..." or
    "error: ..."), ``model_calls`` (coalitions evaluated), ``own_s`` (wall time of the method
    minus the time in the game), ``model_s``, ``r2`` (faithfulness of its surrogate on the
    held-out uniform masks), ``top`` (the ``n_top`` largest interactions) and, when exact values
    were computed, ``mse`` and ``precision_at_5``.
    """

    def table(self, n_top: int = 3) -> str:
        """Markdown table of the records with the first ``n_top`` interactions of each."""
        def fmt(value, spec):
            return "-" if value is None else format(value, spec)

        lines = ["| method | index | status | model calls | own work (s) | R^2 | MSE | P@5 "
                 f"| top {n_top} |", "|---|---|---|---|---|---|---|---|---|"]
        for r in self:
            top = ", ".join(f"{s}: {v:.3g}" for s, v in (r.get("top") or [])[:n_top])
            status = r["status"] if len(r["status"]) <= 60 else r["status"][:57] + "..."
            lines.append(
                f"| {r['method']} | {r['index']} | {status} | {fmt(r.get('model_calls'), 'd')}"
                f" | {fmt(r.get('own_s'), '.3f')} | {fmt(r.get('r2'), '.4f')} "
                f"| {fmt(r.get('mse'), '.3g')} | {fmt(r.get('precision_at_5'), '.2f')} | {top} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def compare(game, n: int, budget: int, indices: Sequence[str] = ("FBII", "STII"),
            max_order: int = 2, *, methods: Sequence[str] | None = None, n_test: int = 1000,
            n_top: int = 10, exact: bool | None = None, random_state: int | None = 0,
            options: dict[str, dict] | None = None) -> Comparison:
    """Run several interaction estimators on one game with one budget.

    Args:
        game: a shapiq ``Game`` or a callable on bool coalitions (m, n) returning (m,).
        n: number of players.
        budget: model calls each method may spend.
        indices: shapiq indices to report (``supported_indices()``); the sparse methods
            (ours, shapiq's SPEX and ProxySPEX) report every index from one run, the dense
            estimators only their own (FBII, STII).
        max_order: interaction order.
        methods: subset of :data:`METHODS` (default: all). Dense estimators are skipped when
            they have more unknowns (sets up to ``max_order``) than ``budget``; shapiq's
            ProxySPEX is reported as an error where it cannot be built (e.g. no lightgbm).
        n_test: held-out uniform random masks for the R^2 of each method's surrogate (its
            Möbius coefficients as a set function; dense estimates read as Möbius coefficients).
        n_top: interactions kept per record.
        exact: compare against shapiq's ``ExactComputer`` (default: when n <= 12).
        random_state: seed of every method and of the test masks.
        options: per-method keyword arguments, e.g. ``{"spex-plugins": {"b": 6},
            "shapiq-proxyspex": {"hpo": False}}``.

    Returns:
        :class:`Comparison`, one record per (method, index); wall times exclude the game.
    """
    n, budget = int(n), int(budget)
    methods = tuple(METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    bad = [i for i in indices if i not in supported_indices()]
    if bad or not indices:
        raise ValueError(f"indices {bad or '()'} not supported; choose from "
                         f"{supported_indices()}")
    options = dict(options or {})
    value_function = _value_function(game, n)
    test = np.random.default_rng(random_state).random((n_test, n)) < 0.5
    truth = np.asarray(value_function(test), float).reshape(n_test)
    exact_values = {}
    if n <= 12 if exact is None else exact:
        computer = shapiq.ExactComputer(value_function, n_players=n)
        for index in indices:
            order = 1 if index in _FIRST_ORDER else max_order
            exact_values[index] = dict(computer(index, order).interactions)
    unknowns = sum(math.comb(n, k) for k in range(max_order + 1))

    records = Comparison()
    for method in methods:
        own = [i for i in indices if method in _SPARSE_METHODS or i == _DENSE_INDEX[method]]
        if method not in _SPARSE_METHODS:
            own = own or [_DENSE_INDEX[method]]
            if unknowns > budget:
                records.append({"method": method, "index": own[0], "status":
                                f"skipped: {unknowns} unknowns > budget {budget}"})
                continue
        try:
            results, surrogate, counted, wall = _run_method(
                method, value_function, n, budget, own, max_order, random_state,
                options.get(method, {}))
        except (ValueError, ImportError, RuntimeError) as err:
            for index in own:
                records.append({"method": method, "index": index,
                                "status": f"error: {type(err).__name__}: {err}"})
            continue
        r2 = float(surrogate.r2(test, truth))
        for index in own:
            values = dict(results[index].interactions)
            record = {"method": method, "index": index, "status": "ok",
                      "model_calls": counted.calls, "own_s": wall - counted.seconds,
                      "model_s": counted.seconds, "r2": r2, "top": _top(values, n_top)}
            if index in exact_values:
                order = 1 if index in _FIRST_ORDER else max_order
                record["mse"], record["precision_at_5"] = _errors(values, exact_values[index],
                                                                  order)
            records.append(record)
    return records
