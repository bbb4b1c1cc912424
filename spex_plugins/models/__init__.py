"""Real-model value functions and their evaluation runtime.

Each value function maps bool masks (m, n), True = feature kept, to model outputs (m,) or
(m, k), and exposes its ``features`` and (for text) their character ``spans``. Value functions
only turn a batch of masks into model outputs; batching, de-duplication, out-of-memory halving
and the resumable cache (:class:`CachedValueFunction`, re-exported here) are the runtime's
(:mod:`spex_plugins.runtime`). torch and transformers are imported only when a model value
function is used, so this package imports without them.
"""

from __future__ import annotations

import importlib

from ..runtime import CachedValueFunction, default_cache_dir
from .base import MaskedValueFunction, resolve_device
from .text import TokenizedText, mask_strings, segment

__all__ = [
    "CachedValueFunction",
    "CausalLMLogProb",
    "EmbeddingSimilarity",
    "ImagePatches",
    "MaskedValueFunction",
    "TabularValueFunction",
    "TextClassification",
    "TokenizedText",
    "default_cache_dir",
    "load_offline_minilm",
    "load_offline_smollm2",
    "mask_strings",
    "resolve_device",
    "segment",
    "teacher_forced_log_probs",
    "tiny_causal_lm",
]

_LAZY = {
    "EmbeddingSimilarity": "embedding",
    "load_offline_minilm": "embedding",
    "load_offline_smollm2": "smollm2",
    "CausalLMLogProb": "llm",
    "teacher_forced_log_probs": "llm",
    "tiny_causal_lm": "llm",
    "TextClassification": "classification",
    "TabularValueFunction": "tabular",
    "ImagePatches": "image",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
