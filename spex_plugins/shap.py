"""SHAP adapter: :class:`SpexExplainer`, a ``shap.Explainer`` that estimates with SPEX.

Swap-in for SHAP's model-agnostic explainers: ``shap.Explainer(model, masker)`` or
``shap.PermutationExplainer(model, masker)`` becomes ``SpexExplainer(model, masker)``. Every mask
SPEX asks for is evaluated through SHAP's own ``shap.utils.MaskedModel`` (the machinery the
permutation, exact and partition explainers use), so masking, background averaging, link
functions and batching are exactly SHAP's, for any masker. The players are the masked model's
varying inputs (``MaskedModel.varying_inputs()``); inputs SHAP keeps fixed, such as the special
tokens of a ``shap.maskers.Text`` masker or tabular features equal to every background row, are
not players and always stay masked (as in SHAP's own explainers, whose masks start all False).

The result is a :class:`SpexExplanation`: a ``shap.Explanation`` (plots, slicing, cohorts work
as usual) that also carries the full sparse spectrum of each row in ``.spex``, kept through
slicing and SHAP's operations.

``shap.Explainer(model, masker, algorithm="spex")`` is not provided: SHAP chooses the subclass
in a closed ``if``/``elif`` chain inside ``Explainer.__init__`` that raises
``InvalidAlgorithmError`` for any other name, and offers no registry or entry point, so it could
only be done by patching SHAP. Construct :class:`SpexExplainer` directly instead.

>>> import numpy as np, shap
>>> from spex_plugins.shap import SpexExplainer
>>> background = np.zeros((1, 3))
>>> explainer = SpexExplainer(lambda x: x[:, 0] * x[:, 1] + x[:, 2], background, random_state=0)
>>> explanation = explainer(np.ones((1, 3)), silent=True)
>>> np.round(explanation.values[0], 6).tolist()
[0.5, 0.5, 1.0]
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np

try:
    import shap
    from shap.utils import MaskedModel
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("spex_plugins.shap needs shap: pip install 'spex-plugins[shap]'") from error

from .core import SPEX, FourierExplanation
from .core.conversions import interaction_values
from .core.settings import engine, resolve_budget

__all__ = ["MAX_INTERACTION_FEATURES", "SpexExplainer", "SpexExplanation"]

MAX_INTERACTION_FEATURES = 2048
"""Largest number of features for which ``interactions=True`` builds dense (M, M) matrices.

Above it the sparse result is still there: ``explanation.spex[row].interactions("SII", 2)``.
"""

Index = Literal["shapley", "banzhaf"]
Interactions = Literal[False, True, "SII", "STII"]
_INDICES = ("shapley", "banzhaf")
_INTERACTIONS = (False, True, "SII", "STII")


def _interaction_matrix(spectrum: FourierExplanation, index: str, kind: bool | str) -> np.ndarray:
    """Order-2 interactions of one row as a dense (M, M, K) matrix.

    ``kind`` True / "SII" is the convention of ``TreeExplainer.shap_interaction_values``:
    off-diagonal halves of the pairwise Shapley (or, for ``index="banzhaf"``, Banzhaf)
    interaction index, and the diagonal chosen so that each row sums to the Shapley (Banzhaf)
    value. "STII" is the convention of ``ExactExplainer(..., interactions=True)``: halves of the
    order-2 Shapley-Taylor index off the diagonal and the main effects f({i}) - f({}) on it.
    """
    m, k = spectrum.n, spectrum.n_outputs
    pair_index = "STII" if kind == "STII" else ("SII" if index == "shapley" else "BII")
    locs, vals = interaction_values(spectrum.locations, spectrum.coefficients, m, pair_index, 2)
    pairs = (locs >= 0).sum(axis=1) == 2
    singles = (locs >= 0).sum(axis=1) == 1
    matrix = np.zeros((m, m, k))
    i, j = locs[pairs, 0], locs[pairs, 1]
    matrix[i, j] = matrix[j, i] = vals[pairs] / 2
    diagonal = np.zeros((m, k))
    if kind == "STII":
        diagonal[locs[singles, 0]] = vals[singles]
    else:
        totals = spectrum.shapley_values() if index == "shapley" else spectrum.banzhaf_values()
        diagonal = totals.reshape(m, k) - matrix.sum(axis=1)
    matrix[np.arange(m), np.arange(m)] = diagonal
    return matrix


def _main_effects(spectrum: FourierExplanation) -> np.ndarray:
    """Main effects f({i}) - f({}) (Moebius singletons) of a spectrum, (M,) or (M, K)."""
    locs, vals = interaction_values(spectrum.locations, spectrum.coefficients, spectrum.n,
                                    "Moebius", 1)
    singles = (locs >= 0).sum(axis=1) == 1
    effects = np.zeros((spectrum.n, spectrum.n_outputs))
    effects[locs[singles, 0]] = vals[singles]
    return effects[:, 0] if spectrum.metadata.get("scalar_output") else effects


def _delta_encode(masks: np.ndarray, noop: int) -> np.ndarray:
    """SHAP's delta-mask code for a sequence of bool masks (m, M), starting from all False.

    Per mask: every flipped input but the last as ``-(i + 1)``, the last as ``i``, and ``noop``
    when nothing changes (the encoding ``MaskedModel`` and delta-masking maskers read).
    """
    previous = np.zeros_like(masks)
    previous[1:] = masks[:-1]
    rows, cols = np.nonzero(masks ^ previous)
    counts = np.bincount(rows, minlength=len(masks))
    lengths = np.maximum(counts, 1)
    ends = np.cumsum(lengths)
    codes = np.full(ends[-1], noop, dtype=np.int64)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    last = rank == counts[rows] - 1
    codes[ends[rows] - lengths[rows] + rank] = np.where(last, cols, -cols - 1)
    return codes


def _pack(arrays: list[np.ndarray]) -> np.ndarray:
    """Rows of equal shape stacked; ragged rows (texts of different lengths) as an object array."""
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    packed = np.empty(len(arrays), dtype=object)
    packed[:] = arrays
    return packed


def _first_axis(item) -> Any:
    """The part of an ``Explanation.__getitem__`` index that selects rows (None: all rows)."""
    first = item[0] if isinstance(item, tuple) else item
    if first is Ellipsis or (isinstance(item, tuple) and len(item) == 0):
        return None
    if isinstance(first, shap.Explanation):
        first = first.values
    return first


class SpexExplanation(shap.Explanation):
    """A ``shap.Explanation`` that also carries the sparse SPEX spectrum of each row.

    ``spex``: the :class:`~spex_plugins.FourierExplanation` of the row (for a single-row
    explanation such as ``e[0]``) or the list of them (one per row, for ``e``, ``e[[0, 2]]``,
    ``e[:, :5]``, ``e.abs``, ``e.mean(0)``, ...). Each spectrum covers all M features of its row,
    whatever feature slice was taken, so ``e[0, :5].spex`` is still row 0's full spectrum.
    """

    _spectra: list[FourierExplanation] | None = None
    _rows: Any = None  # indices into _spectra, an int for a single row, None for all

    @classmethod
    def wrap(cls, explanation: shap.Explanation,
             spectra: list[FourierExplanation]) -> SpexExplanation:
        """``explanation`` as a :class:`SpexExplanation` whose rows have ``spectra``."""
        new = copy.copy(explanation)
        new.__class__ = cls
        new._spectra, new._rows = list(spectra), None
        return new

    @property
    def spex(self) -> FourierExplanation | list[FourierExplanation] | None:
        if self._spectra is None:
            return None
        if self._rows is None:
            return list(self._spectra)
        if np.ndim(self._rows) == 0:
            return self._spectra[int(self._rows)]
        return [self._spectra[i] for i in self._rows]

    def __copy__(self) -> SpexExplanation:
        new = shap.Explanation.__copy__(self)
        new.__class__ = type(self)
        new._spectra, new._rows = self._spectra, self._rows
        return new

    def _numpy_func(self, fname: str, **kwargs: Any) -> SpexExplanation:
        # SHAP collapses an axis by indexing with the axis number (``self[axis]``), which is not
        # a row selection: the result aggregates the rows this explanation has
        new = super()._numpy_func(fname, **kwargs)
        new._rows = self._rows
        return new

    def __getitem__(self, item) -> SpexExplanation:
        new = super().__getitem__(item)
        if not isinstance(new, SpexExplanation):  # SHAP built a plain one (output-name paths)
            new = SpexExplanation.wrap(new, self._spectra or [])
            new._rows = self._rows
        rows, first = self._rows, _first_axis(item)
        single = rows is not None and np.ndim(rows) == 0  # already one row: item is features
        if self._spectra is not None and first is not None and not single:
            current = np.arange(len(self._spectra)) if rows is None else np.asarray(rows)
            try:
                picked = current[first]
            except (IndexError, TypeError, ValueError):
                picked = rows  # an index SHAP resolves itself (names, OpChains): keep all
            new._rows = int(picked) if np.ndim(picked) == 0 else picked
        return new


class _CheckedModel(shap.models.Model):
    """A SHAP model, checked to give one output per input row on every call."""

    def __init__(self, model: shap.models.Model) -> None:
        super().__init__(model)
        self.wrapped = model

    def __call__(self, *args: Any) -> np.ndarray:
        out = self.wrapped(*args)
        rows = len(args[0]) if args and hasattr(args[0], "__len__") else None
        if np.ndim(out) == 0:
            raise ValueError(
                f"the model returned a scalar ({np.asarray(out).item()!r}) for a batch of {rows} "
                "rows; it must return one output per row, shape (rows,) or (rows, outputs)")
        if rows is not None and len(out) != rows:
            raise ValueError(f"the model returned {len(out)} outputs for a batch of {rows} rows;"
                             " it must return one output per row")
        return out


class SpexExplainer(shap.Explainer):
    """SPEX (Kang et al., ICML 2025) as a SHAP explainer: Shapley values and interactions.

    Parameters
    ----------
    model : callable or transformers pipeline
        As for ``shap.Explainer``; it must return one output per row, (rows,) or (rows, k).
    masker : shap masker, background data, tokenizer or None
        As for ``shap.Explainer`` (None only where SHAP derives one, e.g. from a
        ``transformers`` pipeline's tokenizer).
    link, output_names, feature_names, linearize_link
        As for ``shap.Explainer``. As in ``shap.PermutationExplainer``, ``output_names`` of a
        model with a single output are accepted and not used.
    spex : spex_plugins.SPEX, optional
        The engine and its settings. Any keyword argument of :class:`spex_plugins.SPEX`
        (``max_order``, ``n_groups``, ``b``, ``decoder``, ``refit``, ``random_state``,
        ``chase_depth``, ...) may be given here instead, or on top of ``spex`` to override
        it. ``max_order`` above a row's number of players is lowered by the core (nothing is
        lost: no interaction has more players than there are).
    seed
        Alias of ``random_state`` for code written for ``shap.PermutationExplainer``.
    algorithm
        Accepted and ignored: SHAP's constructor passes it back when it re-enters
        ``__init__`` for ``transformers`` pipelines.

    Calling the explainer (see :meth:`__call__`) returns a :class:`SpexExplanation`;
    :meth:`shap_values` is SHAP's legacy interface (arrays).
    """

    _names: list[str] | None = None  # the user's output_names while a call runs

    def __init__(
        self,
        model: Any,
        masker: Any = None,
        link: Any = shap.links.identity,
        output_names: list[str] | None = None,
        feature_names: list[str] | None = None,
        *,
        spex: SPEX | None = None,
        algorithm: str = "spex",
        linearize_link: bool = True,
        seed: int | None = None,
        **spex_options: Any,
    ) -> None:
        if seed is not None and spex_options.get("random_state") is None:
            spex_options["random_state"] = seed
        self.spex = engine(spex, **spex_options)
        # SHAP re-enters self.__init__ (up to three times for a transformers pipeline) with
        # the keywords below, so the engine travels along and every pass is identical.
        super().__init__(model, masker, link=link, algorithm=algorithm,
                         output_names=output_names, feature_names=feature_names,
                         linearize_link=linearize_link, spex=self.spex)
        if self.masker is None:
            raise ValueError("masker cannot be None for this model: pass a shap masker, "
                             "background data or a tokenizer")
        if not isinstance(self.model, shap.models.Model):
            self.model = shap.models.Model(self.model)

    def __call__(
        self,
        *args: Any,
        max_evals: int | Literal["auto"] = "auto",
        main_effects: bool = False,
        error_bounds: bool = False,
        batch_size: int | Literal["auto"] = "auto",
        outputs: Any = None,
        silent: bool = False,
        interactions: Interactions = False,
        index: Index = "shapley",
    ) -> SpexExplanation:
        """Explain ``model(*args)`` row by row; returns a :class:`SpexExplanation`.

        ``max_evals`` is the SPEX budget per row (distinct model calls); "auto" follows
        :func:`spex_plugins.core.settings.default_budget` (all 2^M masks for up to 9 players,
        else about 1,000 calls, at least the engine's minimum). A budget below the minimum
        raises the core's ValueError, which states it. ``index="banzhaf"`` gives Banzhaf
        instead of Shapley values. ``interactions=True`` (or "SII") puts (rows, M, M[, K])
        order-2 interaction values in ``.values`` in the convention of
        ``TreeExplainer.shap_interaction_values``; "STII" uses the convention of
        ``ExactExplainer(interactions=True)``. Either way ``.spex`` holds one
        :class:`~spex_plugins.FourierExplanation` per row over all M features. Base values
        plus the values of a row add up to the model's output on the row (the surrogate
        reproduces the empty and the full mask exactly). One progress bar covers the call
        (SHAP's own, over rows), shown unless ``silent``. ``error_std`` is None: SPEX gives no
        per-value error estimate; ``explanation.spex[row].validation_r2`` (where available)
        says how faithful each row's surrogate is.
        """
        if index not in _INDICES:
            raise ValueError(f"index must be one of {_INDICES}, got {index!r}")
        if not any(interactions is v or (isinstance(v, str) and interactions == v)
                   for v in _INTERACTIONS):
            raise ValueError(f"interactions must be one of {_INTERACTIONS}, got "
                             f"{interactions!r}")
        if interactions == "STII" and index != "shapley":
            raise ValueError("interactions='STII' is a Shapley index; use index='shapley'")
        if interactions is not False and len(args) != 1:
            raise ValueError("interactions need a model with a single input argument; the "
                             "cross-input spectrum is in explanation.spex")
        if error_bounds:
            raise ValueError("error_bounds is not available for SPEX; use "
                             "explanation.spex[row].r2(masks, values) on held-out masks")
        if outputs is not None:
            raise ValueError("outputs= is not supported; select outputs from the explanation")
        self._spectra: list[FourierExplanation] = []
        names, self.output_names = self.output_names, None  # rows name their outputs
        self._names = names
        try:
            explanation = super().__call__(
                *args, max_evals=max_evals, main_effects=False, error_bounds=False,
                batch_size=batch_size, outputs=None, silent=silent, index=index,
                with_main_effects=main_effects,
            )
        finally:
            self.output_names = names
        spectra, self._spectra = self._spectra, []
        if interactions is not False:
            explanation = self._with_interactions(explanation, spectra, index, interactions)
        if isinstance(explanation, list):
            return [SpexExplanation.wrap(single, spectra) for single in explanation]
        return SpexExplanation.wrap(explanation, spectra)

    def shap_values(self, X: Any, max_evals: int | Literal["auto"] = "auto",
                    main_effects: bool = False, batch_size: int | Literal["auto"] = "auto",
                    silent: bool = False, index: Index = "shapley") -> np.ndarray:
        """SHAP's legacy interface: the values array of ``self(X, ...)``, (rows, M) for a
        single-output model, (rows, M, K) for K outputs."""
        return self(X, max_evals=max_evals, main_effects=main_effects, batch_size=batch_size,
                    silent=silent, index=index).values

    def _with_interactions(self, explanation, spectra, index, kind):
        too_big = [s.n for s in spectra if s.n > MAX_INTERACTION_FEATURES]
        if too_big:
            raise ValueError(
                f"interactions=True builds dense (M, M) matrices for at most "
                f"{MAX_INTERACTION_FEATURES} features, got M={max(too_big)}; use "
                f"explanation.spex[row].interactions('SII', 2) for the sparse values")
        matrices = []
        for spectrum in spectra:
            matrix = _interaction_matrix(spectrum, index, kind)
            matrices.append(matrix[..., 0] if spectrum.metadata.get("scalar_output")
                            else matrix)
        return shap.Explanation(
            _pack(matrices),
            base_values=explanation.base_values,
            data=explanation.data,
            feature_names=explanation.feature_names,
            output_names=explanation.output_names,
            main_effects=explanation.main_effects,
            clustering=explanation.clustering,
            compute_time=explanation.compute_time,
        )

    def explain_row(self, *row_args, max_evals, main_effects, error_bounds, batch_size,
                    outputs, silent, index="shapley", with_main_effects=False):
        """Explain one input: SPEX over the varying inputs through SHAP's MaskedModel."""
        fm = MaskedModel(_CheckedModel(self.model), self.masker, self.link, self.linearize_link,
                         *row_args)
        players = np.asarray(fm.varying_inputs(), dtype=np.int64)
        # f(all masked): SHAP's expected value; with a non-identity link this first call
        # also fixes the link linearisation weights, as in SHAP's own explainers
        empty = fm(np.array([MaskedModel.delta_mask_noop_value]), zero_index=0, batch_size=1)
        expected = empty[0]
        self._check_finite(np.atleast_1d(expected), row_args, "the all-masked input")
        spectrum = self._spectrum(fm, players, expected, max_evals, batch_size, row_args)
        values = (spectrum.shapley_values() if index == "shapley"
                  else spectrum.banzhaf_values())
        # shap's Explainer.__call__ hands explain_row its own accumulator list as
        # ``main_effects``, so the caller's flag comes as ``with_main_effects``
        effects = _main_effects(spectrum) if with_main_effects else None
        self._spectra.append(spectrum)
        row_clustering = getattr(self.masker, "clustering", None)
        if callable(row_clustering):
            row_clustering = row_clustering(*row_args)
        scalar = np.ndim(expected) == 0
        names = self._names if self._names is not None else getattr(self.model,
                                                                     "output_names", None)
        if names is not None and not scalar and len(names) != len(expected):
            raise ValueError(f"output_names has {len(names)} names for a model with "
                             f"{len(expected)} outputs")
        return {
            "values": values,
            "expected_values": expected,
            "mask_shapes": fm.mask_shapes,
            "main_effects": effects,
            "clustering": row_clustering,
            "output_names": None if scalar else names,
            "output_indices": None if scalar else np.arange(len(expected)),
            "error_std": None,
        }

    def _check_finite(self, outputs: np.ndarray, row_args, what: str) -> None:
        """A clear error for NaN/inf outputs, naming the link when it caused them."""
        if np.isfinite(outputs).all():
            return
        if self.link is not shap.links.identity:
            raw = MaskedModel(_CheckedModel(self.model), self.masker, shap.links.identity, False,
                              *row_args)
            plain = raw(np.array([MaskedModel.delta_mask_noop_value]), zero_index=0,
                        batch_size=1)
            if np.isfinite(plain).all():
                link = getattr(self.link, "__name__", repr(self.link))
                raise ValueError(
                    f"the link function {link} made the model's outputs non-finite on {what} "
                    f"(the model, averaged over the background: {np.ravel(plain)[:4].tolist()}; "
                    f"the link: {np.ravel(outputs)[:4].tolist()}); shap.links.logit needs outputs "
                    "in (0, 1) (probabilities): pass link=shap.links.identity or a model that "
                    "returns probabilities")
        raise ValueError(f"the model returned non-finite outputs (NaN or inf) on {what}: "
                         f"{np.ravel(outputs)[:4].tolist()}")

    def _spectrum(self, fm, players, expected, max_evals, batch_size, row_args):
        n_features, n = len(fm), len(players)
        scalar = np.ndim(expected) == 0
        metadata = {"scalar_output": scalar, "players": players.tolist(),
                    "method": "SPEX via shap.utils.MaskedModel"}
        if n == 0:  # nothing varies: a constant game
            return FourierExplanation(n_features, np.full((1, 1), -1), [np.ravel(expected)],
                                      n_model_calls=1, metadata=metadata)
        budget = resolve_budget(self.spex, n, None if max_evals == "auto" else max_evals)
        delta = getattr(self.masker, "supports_delta_masking", False)

        def value_function(masks: np.ndarray) -> np.ndarray:
            full = np.zeros((len(masks), n_features), dtype=bool)
            full[:, players] = masks
            if delta:  # the masker's vectorised path, as SHAP's permutation explainer uses
                codes = _delta_encode(full, MaskedModel.delta_mask_noop_value)
                out = fm(codes, zero_index=0, batch_size=batch_size)
            else:
                out = fm(full, batch_size=batch_size)
            bad = ~np.isfinite(np.reshape(out, (len(masks), -1))).all(axis=1)
            if bad.any():
                kept = np.flatnonzero(masks[np.argmax(bad)]).tolist()
                self._check_finite(out[bad], row_args,
                                   f"{int(bad.sum())} of {len(masks)} masked inputs (first: "
                                   f"players {kept[:12]}{' ...' if len(kept) > 12 else ''} kept)")
            return out

        if delta:  # every masked background row of a call is built at once: cap the
            # masks per call at about 2^24 masked values
            rows = int(np.prod(getattr(self.masker, "shape", (1, n_features))))
            chunk = max(1, (1 << 24) // max(1, rows))
        else:  # MaskedModel batches by batch_size; chunks of 8 batches
            chunk = 8 * int(batch_size)
        result = self.spex.explain(value_function, n, budget, batch_size=chunk, progress=False,
                                   budget_name="max_evals")
        locations = np.where(result.locations >= 0, players[result.locations], -1)
        metadata = dict(result.metadata, **metadata)
        return FourierExplanation(n_features, locations, result.coefficients,
                                  n_model_calls=result.n_model_calls + 1,
                                  n_samples=result.n_samples, timings=result.timings,
                                  metadata=metadata)
