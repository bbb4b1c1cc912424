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
import sys
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

from .comparison import PEERS, index_errors, run_peer, top_interactions, uniform_masks
from .core import SPEX, FourierExplanation
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
    "shapiq-kernelshapiq",
    "shapiq-permutation-stii",
    "shapiq-svarmiq",
)
"""Default methods of :func:`compare` (ours first, then shapiq's estimators); any name of
:data:`spex_plugins.comparison.PEERS` is accepted."""

_FIRST_ORDER = ("SV", "BV")
_RENAMED_METHODS = {"shapiq-svarmiq-stii": "shapiq-svarmiq"}
"""Method names of earlier releases of :func:`compare` and their current names."""

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

class Comparison(list):
    """Records of :func:`compare`, one per (method, index); ``str()`` gives a table.

    Each record is a dict with ``method``, ``index``, ``status`` ("ok", "skipped: ...",
    "unavailable: ..." or "error: ..."; never shortened), ``model_calls`` (distinct coalitions
    evaluated), ``own_s`` (wall time of the method minus the time in the game), ``model_s``,
    ``r2`` (faithfulness of its surrogate on the held-out uniform masks; None for estimators
    whose values are not a fit of the game: SII, k-SII and STII estimators), ``top`` (the
    ``n_top`` largest interactions) and, when exact values were computed, ``mse``,
    ``relative_mse`` (MSE over the mean squared exact value) and ``precision_at_5``.
    Definitions: :mod:`spex_plugins.comparison`.
    """

    def table(self, n_top: int = 3) -> str:
        """Markdown table of the records with the first ``n_top`` interactions of each."""
        def fmt(value, spec):
            return "-" if value is None else format(value, spec)

        lines = ["| method | index | status | model calls | own work (s) | R^2 | MSE "
                 f"| relative MSE | P@5 | top {n_top} |", "|---" * 10 + "|"]
        for r in self:
            top = ", ".join(f"{s}: {v:.3g}" for s, v in (r.get("top") or [])[:n_top])
            lines.append(
                f"| {r['method']} | {r['index']} | {r['status']} "
                f"| {fmt(r.get('model_calls'), 'd')} | {fmt(r.get('own_s'), '.3f')} "
                f"| {fmt(r.get('r2'), '.4f')} | {fmt(r.get('mse'), '.3g')} "
                f"| {fmt(r.get('relative_mse'), '.3g')} | {fmt(r.get('precision_at_5'), '.2f')} "
                f"| {top} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _indices_of(method: str, indices: Sequence[str]) -> list[str]:
    """The asked ``indices`` a method reports: all of them for the sparse surrogates (one run
    gives every index), else those the estimator estimates."""
    own = PEERS[method].indices
    return list(indices) if own is None else [i for i in indices if i in own]


def compare(game, n: int, budget: int, indices: Sequence[str] = ("FBII", "STII"),
            max_order: int = 2, *, methods: Sequence[str] | None = None, n_test: int = 1000,
            n_top: int = 10, exact: bool | None = None, random_state: int | None = 0,
            options: dict[str, dict] | None = None) -> Comparison:
    """Run several interaction estimators on one game with one budget.

    Every method runs through :func:`spex_plugins.comparison.run_peer`, so model calls, R^2,
    top-k and the index errors have the project's one definition each.

    Args:
        game: a shapiq ``Game`` or a callable on bool coalitions (m, n) returning (m,).
        n: number of players.
        budget: model calls each method may spend.
        indices: shapiq indices to report (``supported_indices()``). The sparse surrogates
            (ours, shapiq's SPEX and ProxySPEX) report every index from one run; the dense
            estimators report the asked indices they estimate, and a method that estimates
            none of them gets no row.
        max_order: interaction order.
        methods: names of :data:`spex_plugins.comparison.PEERS` (default :data:`METHODS`).
            Dense regressions are skipped (no model call) when they have more unknowns than
            ``budget``; a peer whose host is missing is reported as unavailable.
        n_test: held-out uniform masks for the R^2 of each surrogate.
        n_top: interactions kept per record.
        exact: compare against shapiq's ``ExactComputer`` (default: when n <= 12).
        random_state: seed of every method and of the test masks.
        options: per-method keyword arguments; ours takes :class:`SpexApproximator`'s
            (``{"spex-plugins": {"b": 6, "degree_parameter": 3}}``), shapiq's peers their
            constructors' (``{"shapiq-proxyspex": {"hpo": False}}``).

    Returns:
        :class:`Comparison`, one record per (method, index); wall times exclude the game.
    """
    n, budget = int(n), int(budget)
    methods = tuple(METHODS if methods is None else methods)
    for old in set(methods) & set(_RENAMED_METHODS):
        warnings.warn(f"compare(): method {old!r} is now called {_RENAMED_METHODS[old]!r} (it "
                      "reports every index SVARMIQ estimates)", DeprecationWarning, stacklevel=2)
    methods = tuple(_RENAMED_METHODS.get(m, m) for m in methods)
    unknown = [m for m in methods if m not in PEERS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {tuple(PEERS)}")
    bad = [i for i in indices if i not in supported_indices()]
    if bad or not indices:
        raise ValueError(f"indices {bad or '()'} not supported; choose from "
                         f"{supported_indices()}")
    options = dict(options or {})
    value_function = _value_function(game, n)
    seed = 0 if random_state is None else int(random_state)
    test = uniform_masks(n, n_test, seed)
    truth = np.asarray(value_function(test), float).reshape(len(test))
    exact_values = {}
    if n <= 12 if exact is None else exact:
        computer = shapiq.ExactComputer(value_function, n_players=n)
        for index in indices:
            order = 1 if index in _FIRST_ORDER else max_order
            exact_values[index] = dict(computer(index, order).interactions)

    records = Comparison()
    for method in methods:
        settings = dict(options.get(method, {}))
        if method == "spex-plugins":  # the adapter's names (degree_parameter, decoder_type)
            settings = {"spex": SpexApproximator(n, random_state=random_state,
                                                 **settings).spex}
        sparse = PEERS[method].indices is None
        runs = [indices[0]] if sparse else _indices_of(method, indices)
        for run_index in runs:
            result = run_peer(method, value_function, n, budget, index=run_index,
                              order=max_order, seed=seed, options=settings)
            reported = _indices_of(method, indices) if sparse else [run_index]
            for index in reported:
                records.append(_record(method, index, result, max_order, test, truth,
                                       exact_values, n_top))
    return records


def _record(method: str, index: str, result, max_order: int, test: np.ndarray,
            truth: np.ndarray, exact_values: dict, n_top: int) -> dict:
    """One row of :func:`compare` from a :class:`spex_plugins.comparison.PeerResult`."""
    if not result.ok:
        status = result.status + (f": {result.reason}" if result.reason else "")
        return {"method": method, "index": index, "status": status}
    order = 1 if index in _FIRST_ORDER else max_order
    values = result.interactions(index, order)
    record = {"method": method, "index": index, "status": "ok", "model_calls": result.calls,
              "own_s": result.own_seconds, "model_s": result.model_seconds,
              "r2": result.r2(test, truth), "top": top_interactions(values, n_top)}
    if index in exact_values:
        errors = index_errors(values, exact_values[index], order, k=5)
        record.update(mse=errors.mse, relative_mse=errors.relative_mse,
                      precision_at_5=errors.precision_at_k)
    return record
