"""Tabular models: one row explained, masked features replaced from background data."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from ..runtime import fingerprint
from .base import MaskedValueFunction

__all__ = ["TabularValueFunction"]


class TabularValueFunction(MaskedValueFunction):
    """Value function of a ``predict`` / ``predict_proba`` callable on one row ``x``.

    Parameters
    ----------
    predict : callable, rows (r, d) -> (r,) or (r, C) (e.g. ``model.predict_proba``).
    x : the explained row (d,).
    background : data (N, d) that masked features are taken from.
    mode : "mean": a masked feature takes its background mean (one row per mask);
        "sample": the prediction is averaged over ``max_background`` background rows, each with
        the masked features taken from that row (interventional expectation).
    output : column of a 2-D prediction (default: the column largest at ``x``); ignored for 1-D.
    feature_names : names of the d features (default ``x0``, ``x1``, ...).
    batch_size : masks per ``predict`` call (rows per call: batch_size x background rows).

    Attributes ``n`` (= d), ``features``, ``baseline`` (mean mode: the replacement row),
    ``background`` (the rows used), ``output``.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], x, background,
                 mode: str = "mean", output: int | None = None,
                 feature_names: list[str] | None = None, batch_size: int = 256,
                 max_background: int = 100, random_state: int | None = 0,
                 progress: bool = False):
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}")
        self.predict = predict
        self.x = np.asarray(x, dtype=np.float64).reshape(-1)
        background = np.asarray(background, dtype=np.float64)
        if background.ndim != 2 or background.shape[1] != len(self.x) or len(background) == 0:
            raise ValueError(f"background must have shape (N, {len(self.x)}) with N >= 1, "
                             f"got {background.shape}")
        if mode == "sample" and len(background) > max_background:
            rng = np.random.default_rng(random_state)
            background = background[rng.choice(len(background), max_background, replace=False)]
        self.background = background
        self.baseline = background.mean(axis=0)
        self.mode = mode
        self.n = len(self.x)
        if feature_names is not None and len(feature_names) != self.n:
            raise ValueError(f"{len(feature_names)} feature names for {self.n} features")
        self.features = list(feature_names) if feature_names is not None else \
            [f"x{i}" for i in range(self.n)]
        self.batch_size = int(batch_size)
        self.progress = progress
        full = np.asarray(predict(self.x[None, :]))
        if full.ndim == 2 and output is None:
            output = int(np.argmax(full[0]))
        if full.ndim == 2 and not 0 <= output < full.shape[1]:
            raise ValueError(f"output column {output} outside the {full.shape[1]} columns")
        self.output = output if full.ndim == 2 else None

    def masked_inputs(self, masks) -> np.ndarray:
        """Rows given to ``predict`` for bool masks (m, n): (m, d) in mean mode, (m, N, d) in
        sample mode."""
        masks = np.asarray(masks, dtype=bool)
        if self.mode == "mean":
            return np.where(masks, self.x[None, :], self.baseline[None, :])
        return np.where(masks[:, None, :], self.x[None, None, :], self.background[None, :, :])

    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        rows = self.masked_inputs(masks)
        out = np.asarray(self.predict(rows.reshape(-1, self.n)), dtype=np.float64)
        if self.output is not None:
            out = out.reshape(len(out), -1)[:, self.output]
        return out.reshape(len(masks), -1).mean(axis=1)

    def cache_key(self) -> str:
        """JSON: the mode and output, and fingerprints of ``x``, the background rows used and
        ``predict`` (for a bound method such as ``model.predict_proba``: the fitted model, by
        its pickle bytes, plus the method name; see :func:`.runtime.fingerprint`)."""
        name = getattr(self.predict, "__qualname__", type(self.predict).__name__)
        return json.dumps({"class": type(self).__name__, "predict": name,
                           "predict_fingerprint": fingerprint(self.predict),
                           "x": fingerprint(self.x), "background": fingerprint(self.background),
                           "n": self.n, "mode": self.mode, "output": self.output},
                          sort_keys=True)
