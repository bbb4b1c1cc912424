"""The sparse Fourier result of a SPEX explanation and its conversions."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from . import conversions

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FourierExplanation", "characters"]

FORMAT_NAME = "spex-plugins/fourier-explanation"
FORMAT_VERSION = 1


def _parities(masks: np.ndarray, locations: np.ndarray) -> np.ndarray:
    """<x, k> mod 2 for masks (m, n) and frequencies (s, d) padded with -1 -> bool (m, s)."""
    padded = np.concatenate([masks, np.zeros((len(masks), 1), bool)], axis=1)
    return np.bitwise_xor.reduce(padded[:, locations], axis=2)


def characters(masks: np.ndarray, locations: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Fourier characters ``(-1)^<x, k>`` of bool masks (m, n) at frequencies (s, d) padded
    with -1 -> (m, s) of ``dtype``."""
    signs = np.empty((len(masks), len(locations)), dtype)
    for start in range(0, len(masks), 4096):  # bounds the (rows, s, d) temporary
        parity = _parities(masks[start:start + 4096], locations)
        signs[start:start + 4096] = 1 - 2 * parity.astype(dtype)
    return signs


class FourierExplanation:
    """A sparse Walsh-Hadamard spectrum ``f(x) = sum_k F(k) (-1)^<x,k>`` over n features.

    Attributes
    ----------
    n : int
        Number of features (players).
    locations : ndarray (s, d) int64
        Each row the sorted feature indices of one frequency k, padded with -1.
    coefficients : ndarray (s, K) float64
        F(k) per output (K outputs; K = 1 for a scalar value function).
    n_model_calls : int
        Distinct masks sent to the value function.
    n_samples : int
        Design samples (C * P * 2^b; duplicates counted).
    timings : dict
        Seconds: ``sampling``, ``model`` (inside the value function), ``transform``,
        ``decode``, ``refit``, ``own`` (everything but ``model``), ``total``. Wall-clock
        times: where fits run on threads (``n_jobs``), their stage times share out the wall
        time the fits took, so the stages never add up to more than ``own``.
    metadata : dict
        Configuration and names (``feature_names``, ``output_names``, SPEX settings).
    """

    def __init__(
        self,
        n: int,
        locations: np.ndarray,
        coefficients: np.ndarray,
        *,
        n_model_calls: int = 0,
        n_samples: int = 0,
        timings: dict | None = None,
        metadata: dict | None = None,
    ):
        coefficients = np.asarray(coefficients, dtype=np.float64)
        scalar = coefficients.ndim == 1
        coefficients = coefficients.reshape(len(coefficients), -1)
        locations = np.asarray(locations, dtype=np.int64).reshape(len(coefficients), -1)
        if locations.shape[1] == 0:
            locations = np.full((len(coefficients), 1), -1, np.int64)
        self.n = int(n)
        self.locations, self.coefficients = conversions.canonicalise(locations, coefficients)
        self.n_model_calls = int(n_model_calls)
        self.n_samples = int(n_samples)
        self.timings = dict(timings or {})
        self.metadata = dict(metadata or {})
        self.metadata.setdefault("scalar_output", bool(scalar and coefficients.shape[1] == 1))

    # --- shape helpers ------------------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        return self.coefficients.shape[1]

    @property
    def _scalar(self) -> bool:
        return bool(self.metadata.get("scalar_output")) and self.n_outputs == 1

    def _out(self, values: np.ndarray) -> np.ndarray:
        """Drop the output axis for a scalar value function."""
        return values[..., 0] if self._scalar else values

    def _to_dict(self, locations: np.ndarray, values: np.ndarray) -> dict:
        keys = [tuple(i for i in row if i >= 0) for row in np.asarray(locations).tolist()]
        vals = self._out(values)
        vals = vals.tolist() if vals.ndim == 1 else list(vals)
        return dict(zip(keys, vals, strict=True))

    @property
    def support(self) -> list[tuple[int, ...]]:
        """The recovered frequencies as tuples of feature indices."""
        return [tuple(i for i in row if i >= 0) for row in self.locations.tolist()]

    @property
    def degrees(self) -> np.ndarray:
        """Interaction order |k| of each coefficient, (s,)."""
        return (self.locations >= 0).sum(axis=1)

    def output(self, k: int) -> FourierExplanation:
        """The explanation of output ``k`` alone."""
        meta = dict(self.metadata, scalar_output=True)
        for key in ("output_names", "model_empty_value", "model_full_value"):
            if meta.get(key) is not None:
                meta[key] = [meta[key][k]]
        return FourierExplanation(self.n, self.locations, self.coefficients[:, k],
                                  n_model_calls=self.n_model_calls, n_samples=self.n_samples,
                                  timings=self.timings, metadata=meta)

    # --- surrogate ------------------------------------------------------------------------
    def _masks(self, masks) -> np.ndarray:
        masks = np.asarray(masks)
        if masks.ndim == 1:
            masks = masks[None, :]
        if masks.ndim != 2 or masks.shape[1] != self.n:
            raise ValueError(f"masks must have shape (m, {self.n}), got {masks.shape}")
        return masks.astype(bool)

    def predict(self, masks, chunk_size: int = 4096) -> np.ndarray:
        """Surrogate values at bool masks (m, n) -> (m,) or (m, K)."""
        masks = self._masks(masks)
        out = np.empty((len(masks), self.n_outputs))
        for start in range(0, len(masks), chunk_size):
            signs = characters(masks[start:start + chunk_size], self.locations)
            out[start:start + chunk_size] = signs @ self.coefficients
        return self._out(out)

    def r2(self, masks, values) -> float | np.ndarray:
        """Coefficient of determination of the surrogate against true ``values`` at ``masks``."""
        truth = np.asarray(values, dtype=np.float64).reshape(len(self._masks(masks)), -1)
        if not np.isfinite(truth).all():
            raise ValueError(f"values contain {int((~np.isfinite(truth)).sum())} non-finite "
                             "entries (NaN or inf); R^2 needs finite model outputs")
        pred = self.predict(masks).reshape(truth.shape)
        ss_res = ((truth - pred) ** 2).sum(axis=0)
        ss_tot = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res > 0, -np.inf, 1.0))
        return float(r2[0]) if self._scalar else r2

    @property
    def validation_r2(self) -> float | np.ndarray | None:
        """R^2 of the surrogate on the held-out masks that chose it (float, or (K,) for several
        outputs); None for a refit without held-out masks. 1.0 for an exhaustive run."""
        r2 = self.metadata.get("validation_r2")
        if r2 is None:
            return None
        r2 = np.asarray(r2, dtype=np.float64)
        return float(r2[0]) if self._scalar else r2

    # --- conversions ----------------------------------------------------------------------
    def fourier(self) -> dict:
        """Mapping feature-index tuple -> Fourier coefficient."""
        return self._to_dict(self.locations, self.coefficients)

    def moebius(self) -> dict:
        """Mapping feature-index tuple -> Moebius (Harsanyi) coefficient a(S)."""
        return self._to_dict(*conversions.fourier_to_moebius(self.locations, self.coefficients))

    def shapley_values(self, efficient: bool = True) -> np.ndarray:
        """Shapley values, (n,) or (n, K).

        ``efficient=True`` (default) and a result that knows the model's own f(empty) and
        f(full) (``metadata["model_empty_value"]`` / ``["model_full_value"]``, recorded by
        :meth:`SPEX.explain`): the surrogate's values plus an equal share of the gap between
        the model's f(full) - f(empty) and their sum, for every player
        (``metadata["players"]``, default all n features), so the model's f(empty) plus their
        sum is its f(full). An equal share is the least-squares projection onto efficient
        attributions (as in constrained KernelSHAP); the surrogate itself is not bent towards
        the two endpoints, which costs faithfulness wherever they are outliers (e.g. an empty
        text). ``efficient=False``: the surrogate's own Shapley values.
        """
        values = conversions.shapley_values(self.locations, self.coefficients, self.n)
        empty = self.metadata.get("model_empty_value")
        full = self.metadata.get("model_full_value")
        if efficient and empty is not None and full is not None:
            players = np.asarray(self.metadata.get("players", range(self.n)), np.int64)
            if len(players):
                gap = np.asarray(full, np.float64) - np.asarray(empty, np.float64) \
                    - values.sum(axis=0)
                values[players] += gap / len(players)
        return self._out(values)

    def banzhaf_values(self) -> np.ndarray:
        """Banzhaf values, (n,) or (n, K)."""
        return self._out(conversions.banzhaf_values(self.locations, self.coefficients, self.n))

    def interactions(self, index: str = "Moebius", order: int | None = None) -> dict:
        """Interaction values of ``index`` for all sets up to ``order`` (default: max degree).

        ``index`` in ``conversions.INDICES`` (Moebius, Fourier, BII, SII, k-SII, FBII, FSII,
        STII, SV, BV). Returns a mapping feature-index tuple -> value (an array over outputs for
        a multi-output explanation); sets whose value is zero are left out.
        """
        if order is None:
            order = max(1, int(self.degrees.max(initial=1)))
        return self._to_dict(*conversions.interaction_values(
            self.locations, self.coefficients, self.n, index, order))

    def top(self, k: int = 10, index: str = "Moebius", order: int | None = None,
            output: int = 0) -> list[tuple[tuple, float]]:
        """The ``k`` largest-magnitude sets of ``index`` (default Moebius: each set's joint
        effect beyond its subsets) for one output, as ``[(set, value), ...]``.

        ``order``: only sets of exactly that many features (None: every non-empty set). Sets
        are tuples of feature names when ``metadata["feature_names"]`` is known, else of
        feature indices. Ties are broken by size, then by the sets themselves.
        """
        single = self.output(output)
        depth = order if order is not None else max(1, int(self.degrees.max(initial=1)))
        values = single.interactions(index, depth)
        items = [(s, float(v)) for s, v in values.items()
                 if s and (order is None or len(s) == order)]
        items.sort(key=lambda item: (-abs(item[1]), len(item[0]), item[0]))
        names = self.metadata.get("feature_names")
        if names is not None:
            items = [(tuple(names[i] for i in s), v) for s, v in items]
        return items[:k]

    @property
    def empty_value(self) -> float | np.ndarray:
        """Surrogate value with every feature masked, f(0)."""
        return self.predict(np.zeros((1, self.n), bool))[0]

    @property
    def full_value(self) -> float | np.ndarray:
        """Surrogate value with every feature kept, f(1)."""
        return self.predict(np.ones((1, self.n), bool))[0]

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the explanation to ``path`` (numpy ``.npz``; see :meth:`load` for the format).

        The file holds arrays ``locations`` (s, d) int64 and ``coefficients`` (s, K) float64,
        and ``header``: a JSON string with ``format`` = "spex-plugins/fourier-explanation",
        ``version`` (1), ``n``, ``n_model_calls``, ``n_samples``, ``timings`` and ``metadata``.
        Written to a temporary file first and renamed, so a crash never leaves half a file.
        """
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "n": self.n,
            "n_model_calls": self.n_model_calls,
            "n_samples": self.n_samples,
            "timings": self.timings,
            "metadata": self.metadata,
        }
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, locations=self.locations, coefficients=self.coefficients,
                                header=np.array(json.dumps(header, default=_json_default)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FourierExplanation:
        """Read an explanation written by :meth:`save` (format version 1)."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            if "header" not in data:
                raise ValueError(f"{path} is not a {FORMAT_NAME} file (no header)")
            header = json.loads(str(data["header"]))
            if header.get("format") != FORMAT_NAME:
                raise ValueError(f"{path} is not a {FORMAT_NAME} file")
            if header.get("version", 0) > FORMAT_VERSION:
                raise ValueError(
                    f"{path} has format version {header['version']}; this spex-plugins reads "
                    f"up to {FORMAT_VERSION} — upgrade spex-plugins"
                )
            return cls(header["n"], data["locations"], data["coefficients"],
                       n_model_calls=header["n_model_calls"], n_samples=header["n_samples"],
                       timings=header["timings"], metadata=header["metadata"])

    def __repr__(self) -> str:
        return (f"FourierExplanation(n={self.n}, terms={len(self.coefficients)}, "
                f"outputs={self.n_outputs}, max_degree={int(self.degrees.max(initial=0))}, "
                f"model_calls={self.n_model_calls})")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Sequence):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the explanation header")
