"""SHAP adapter: :class:`SpexExplainer`, a ``shap.Explainer`` that estimates with SPEX.

Swap-in for SHAP's model-agnostic explainers: ``shap.Explainer(model, masker)`` or
``shap.PermutationExplainer(model, masker)`` becomes ``SpexExplainer(model, masker)``. Every mask
SPEX asks for is evaluated through SHAP's own ``shap.utils.MaskedModel`` (the machinery the
permutation, exact and partition explainers use), so masking, background averaging, link
functions and batching are exactly SHAP's, for any masker. The players are the masked model's
varying inputs (``MaskedModel.varying_inputs()``); inputs SHAP keeps fixed, such as the special
tokens of a ``shap.maskers.Text`` masker or tabular features equal to every background row, are
not players and always stay masked (as in SHAP's own explainers, whose masks start all False).

``shap`` is imported when :class:`SpexExplainer` is first accessed, not when this module is.

``shap.Explainer(model, masker, algorithm="spex")`` is not provided: SHAP chooses the subclass
in a closed ``if``/``elif`` chain inside ``Explainer.__init__`` that raises
``InvalidAlgorithmError`` for any other name, and offers no registry or entry point, so it could
only be done by patching SHAP. Construct :class:`SpexExplainer` directly instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import SPEX, FourierExplanation, sample_count
from .core.conversions import interaction_values

# SpexExplainer is built on first access (module __getattr__), so shap loads only when used
__all__ = ["AUTO_B", "MAX_INTERACTION_FEATURES", "SpexExplainer"]  # noqa: F822

AUTO_B = 4
"""``max_evals="auto"`` uses the SPEX design with 2^AUTO_B bins per group."""

MAX_INTERACTION_FEATURES = 2048
"""Largest number of features for which ``interactions=True`` builds dense (M, M) matrices.

Above it the sparse result is still there: ``explanation.spex[row].interactions("SII", 2)``.
"""

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


def _build_class():
    import shap
    from shap.utils import MaskedModel

    class SpexExplainer(shap.Explainer):
        """SPEX (Kang et al., ICML 2025) as a SHAP explainer: Shapley values and interactions.

        Parameters
        ----------
        model : callable or transformers pipeline
            As for ``shap.Explainer``.
        masker : shap masker, background data, tokenizer or None
            As for ``shap.Explainer`` (None only where SHAP derives one, e.g. from a
            ``transformers`` pipeline's tokenizer).
        link, output_names, feature_names, linearize_link
            As for ``shap.Explainer``.
        max_order, decoder, refit, random_state
            SPEX settings (see :class:`spex_plugins.SPEX`); ``max_order`` is capped at the number
            of players of a row (no frequency can have more). ``seed`` is an alias of
            ``random_state`` for code written for ``shap.PermutationExplainer``.
        algorithm
            Accepted and ignored: SHAP's constructor passes it back when it re-enters
            ``__init__`` for ``transformers`` pipelines.
        """

        def __init__(
            self,
            model: Any,
            masker: Any = None,
            link: Any = shap.links.identity,
            output_names: list[str] | None = None,
            feature_names: list[str] | None = None,
            max_order: int = 5,
            decoder: str = "soft",
            refit: str | None = "ridge",
            random_state: Any = None,
            *,
            algorithm: str = "spex",
            linearize_link: bool = True,
            seed: int | None = None,
        ) -> None:
            if random_state is None:
                random_state = seed
            self._configure(max_order, decoder, refit, random_state)
            # SHAP re-enters self.__init__ (up to three times for a transformers pipeline) with
            # the keywords below, so the SPEX settings travel along and every pass is identical.
            super().__init__(
                model, masker, link=link, algorithm=algorithm, output_names=output_names,
                feature_names=feature_names, linearize_link=linearize_link, max_order=max_order,
                decoder=decoder, refit=refit, random_state=random_state,
            )
            self._configure(max_order, decoder, refit, random_state)
            if self.masker is None:
                raise ValueError("masker cannot be None for this model: pass a shap masker, "
                                 "background data or a tokenizer")
            if not isinstance(self.model, shap.models.Model):
                self.model = shap.models.Model(self.model)

        def _configure(self, max_order, decoder, refit, random_state) -> None:
            self.max_order = max_order
            self.decoder = decoder
            self.refit = refit
            self.random_state = random_state

        def __call__(
            self,
            *args: Any,
            max_evals: int | str = "auto",
            main_effects: bool = False,
            error_bounds: bool = False,
            batch_size: int | str = "auto",
            outputs: Any = None,
            silent: bool = False,
            interactions: bool | str = False,
            index: str = "shapley",
        ):
            """Explain ``model(*args)`` row by row; returns a ``shap.Explanation``.

            ``max_evals`` is the SPEX budget per row (design masks; identical masks are sent
            once, plus one call for the all-masked input); "auto" uses b = ``AUTO_B``. A budget
            below SPEX's minimum raises the core's ValueError stating the minimum.
            ``index="banzhaf"`` gives Banzhaf instead of Shapley values. ``interactions=True``
            (or "SII") puts (rows, M, M[, K]) order-2 interaction values in ``.values`` in the
            convention of ``TreeExplainer.shap_interaction_values``; "STII" uses the convention
            of ``ExactExplainer(interactions=True)``. Either way the explanation has ``.spex``:
            one :class:`~spex_plugins.FourierExplanation` per row over all M features.
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
            explanation = super().__call__(
                *args, max_evals=max_evals, main_effects=False, error_bounds=False,
                batch_size=batch_size, outputs=None, silent=silent, index=index,
                with_main_effects=main_effects,
            )
            spectra, self._spectra = self._spectra, []
            if interactions is not False:
                explanation = self._with_interactions(explanation, spectra, index, interactions)
            for single in explanation if isinstance(explanation, list) else [explanation]:
                single.spex = spectra
            return explanation

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
            fm = MaskedModel(self.model, self.masker, self.link, self.linearize_link, *row_args)
            players = np.asarray(fm.varying_inputs(), dtype=np.int64)
            # f(all masked): SHAP's expected value; with a non-identity link this first call
            # also fixes the link linearisation weights, as in SHAP's own explainers
            empty = fm(np.array([MaskedModel.delta_mask_noop_value]), zero_index=0,
                       batch_size=1)
            expected = empty[0]
            spectrum = self._spectrum(fm, players, expected, max_evals, batch_size, silent)
            values = (spectrum.shapley_values() if index == "shapley"
                      else spectrum.banzhaf_values())
            # shap's Explainer.__call__ hands explain_row its own accumulator list as
            # ``main_effects``, so the caller's flag comes as ``with_main_effects``
            effects = _main_effects(spectrum) if with_main_effects else None
            self._spectra.append(spectrum)
            row_clustering = getattr(self.masker, "clustering", None)
            if callable(row_clustering):
                row_clustering = row_clustering(*row_args)
            return {
                "values": values,
                "expected_values": expected,
                "mask_shapes": fm.mask_shapes,
                "main_effects": effects,
                "clustering": row_clustering,
                "output_names": getattr(self.model, "output_names", None),
                "output_indices": None if np.ndim(expected) == 0 else np.arange(len(expected)),
            }

        def _spectrum(self, fm, players, expected, max_evals, batch_size, silent):
            n_features, n = len(fm), len(players)
            scalar = np.ndim(expected) == 0
            metadata = {"scalar_output": scalar, "players": players.tolist(),
                        "method": "SPEX via shap.utils.MaskedModel"}
            if n == 0:  # nothing varies: a constant game
                return FourierExplanation(n_features, np.full((1, 1), -1), [np.ravel(expected)],
                                          n_model_calls=1, metadata=metadata)
            spex = SPEX(max_order=min(self.max_order, n), decoder=self.decoder,
                        refit=self.refit, random_state=self.random_state)
            budget = (sample_count(n, spex.max_order, spex.n_groups, AUTO_B)
                      if max_evals == "auto" else max_evals)

            delta = getattr(self.masker, "supports_delta_masking", False)

            def value_function(masks: np.ndarray) -> np.ndarray:
                full = np.zeros((len(masks), n_features), dtype=bool)
                full[:, players] = masks
                if delta:  # the masker's vectorised path, as SHAP's permutation explainer uses
                    codes = _delta_encode(full, MaskedModel.delta_mask_noop_value)
                    return fm(codes, zero_index=0, batch_size=batch_size)
                return fm(full, batch_size=batch_size)

            if delta:  # every masked background row of a call is built at once: cap the
                # masks per call at about 2^24 masked values
                rows = int(np.prod(getattr(self.masker, "shape", (1, n_features))))
                chunk = max(1, (1 << 24) // max(1, rows))
            else:  # MaskedModel batches by batch_size; chunks of 8 batches keep progress moving
                chunk = 8 * int(batch_size)
            result = spex.explain(value_function, n, budget, batch_size=chunk,
                                  progress=not silent)
            locations = np.where(result.locations >= 0, players[result.locations], -1)
            metadata = dict(result.metadata, **metadata)
            return FourierExplanation(n_features, locations, result.coefficients,
                                      n_model_calls=result.n_model_calls + 1,
                                      n_samples=result.n_samples, timings=result.timings,
                                      metadata=metadata)

    SpexExplainer.__module__ = __name__
    SpexExplainer.__qualname__ = "SpexExplainer"
    return SpexExplainer


def __getattr__(name: str):
    if name == "SpexExplainer":
        cls = _build_class()
        globals()["SpexExplainer"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
