"""The base class of the model value functions, and torch device selection."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

import numpy as np

from ..runtime import as_masks, evaluate

__all__ = ["MaskedValueFunction", "resolve_device"]


def resolve_device(device=None):
    """``torch.device``: ``device`` when given, else CUDA when available, else CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MaskedValueFunction(ABC):
    """Base of the model value functions: bool masks (m, n) -> outputs (m,) or (m, k).

    Subclasses set ``n``, ``features`` (list[str]) and ``batch_size`` and implement
    :meth:`evaluate_batch`, which only turns one batch of distinct masks into model outputs.
    Everything else (de-duplication, batching, out-of-memory halving, output checks, progress
    when ``progress`` is set) is :func:`spex_plugins.runtime.evaluate`'s, both when the
    object is called and when SPEX evaluates it.
    """

    n: int
    features: list[str]
    batch_size: int
    progress: bool = False

    def __call__(self, masks) -> np.ndarray:
        return evaluate(self, as_masks(masks, self.n), progress=self.progress,
                        desc=type(self).__name__).output()

    @abstractmethod
    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        """Model outputs for one batch of distinct bool masks (b, n) -> (b,) or (b, k)."""

    def cache_key(self) -> str:
        """A JSON string identifying this value function's configuration (for the disk cache).

        Subclasses identify their model and inputs by content with
        :func:`~spex_plugins.runtime.fingerprint`.
        """
        return json.dumps({"class": type(self).__name__, "n": self.n,
                           "features": self.features}, sort_keys=True)
