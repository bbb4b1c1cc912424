"""Text classification: the chosen class's logit, log-odds or probability under masking.

The model is a ``transformers`` sequence-classification model with its fast tokenizer (masked
at the token level), or any callable mapping a list of strings to class scores (m, C) (masked
on the string, see :func:`spex_plugins.models.text.mask_strings`).
"""

from __future__ import annotations

import json

import numpy as np

from ..runtime import fingerprint, model_key
from .base import MaskedValueFunction, resolve_device
from .text import TokenizedText, mask_strings, resolve_mask_id, segment

__all__ = ["TextClassification"]

OUTPUTS = ("log_odds", "logit", "probability")


def _from_logits(logits: np.ndarray, target: int, output: str) -> np.ndarray:
    """Column ``target`` of (m, C) logits as a logit, log-odds or probability (m,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if output == "logit":
        return logits[:, target]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    log_p = shifted[:, target] - log_z
    if output == "probability":
        return np.exp(log_p)
    others = np.delete(shifted, target, axis=1)
    if others.shape[1] == 0:
        raise ValueError("log-odds need at least two classes")
    peak = others.max(axis=1, keepdims=True)
    log_rest = (np.log(np.exp(others - peak).sum(axis=1)) + peak[:, 0]) - log_z
    return log_p - log_rest


def _from_probabilities(probabilities: np.ndarray, target: int, output: str) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64)[:, target], 1e-12, 1 - 1e-12)
    if output == "probability":
        return p
    return np.log(p) - np.log1p(-p)


class TextClassification(MaskedValueFunction):
    """Value function: the score of class ``target`` for the masked text.

    Parameters
    ----------
    model : a ``transformers`` sequence-classification model (with ``tokenizer``), or a
        callable ``f(list[str]) -> (m, C)`` class scores (``tokenizer=None``).
    text : the explained text; features are ``granularity`` units (``token`` needs a
        tokenizer; ``word``, ``sentence``, or ``spans`` with ``spans=[(start, end), ...]``).
    target : class index or label name (``model.config.label2id``); None = the class predicted
        for the unmasked text.
    output : "log_odds" (default), "logit" or "probability". For a callable, "logit" uses its
        scores as they are; "log_odds" and "probability" treat them as probabilities.
    mask_token : each masked token (or, for a callable, each masked span) becomes this string
        or token id (default ``[MASK]``); None deletes it.
    batch_size, device, progress : evaluation settings (batches halve on out-of-memory).

    Attributes ``n``, ``features``, ``spans``, ``target``, ``label``.
    """

    def __init__(self, model, tokenizer=None, text: str = "", target: int | str | None = None,
                 output: str = "log_odds", granularity: str = "word",
                 spans: list[tuple[int, int]] | None = None,
                 mask_token: str | int | None = "[MASK]", batch_size: int = 32, device=None,
                 progress: bool = False):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.text = text
        self.output = output
        self.mask_token = mask_token
        self.batch_size = int(batch_size)
        self.progress = progress
        self.tokenizer = tokenizer
        if tokenizer is None:
            if not callable(model):
                raise ValueError("model must be a callable on lists of strings when no "
                                 "tokenizer is given")
            if granularity == "token":
                raise ValueError("granularity='token' needs a tokenizer")
            if mask_token is not None and not isinstance(mask_token, str):
                raise ValueError("mask_token must be a string (or None) for a callable model")
            self.model = model
            self.spans = segment(text, granularity, spans)
            self.features = [text[s:e] for s, e in self.spans]
            self.n = len(self.spans)
            if self.n == 0:
                raise ValueError("the text has no features to explain")
        else:
            self.device = resolve_device(device)
            self.model = model.to(self.device).eval()
            self.tokens = TokenizedText(tokenizer, text, granularity, spans,
                                        max_length=getattr(tokenizer, "model_max_length", None)
                                        if getattr(tokenizer, "model_max_length", 0) < 100_000
                                        else None)
            self.n, self.features, self.spans = (self.tokens.n, self.tokens.features,
                                                 self.tokens.spans)
            self.mask_id = resolve_mask_id(tokenizer, mask_token)
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        scores = self.scores(np.ones((1, self.n), bool))
        labels = getattr(getattr(model, "config", None), "id2label", None) or {}
        if target is None:
            target = int(np.argmax(scores[0]))
        elif isinstance(target, str):
            lookup = {str(v): int(k) for k, v in labels.items()}
            if target not in lookup:
                raise ValueError(f"unknown class label {target!r}; known: {sorted(lookup)}")
            target = lookup[target]
        if not 0 <= int(target) < scores.shape[1]:
            raise ValueError(f"target class {target} outside the {scores.shape[1]} classes")
        self.target = int(target)
        self.label = str(labels.get(self.target, self.target))

    def masked_inputs(self, masks) -> list:
        """What the model sees for bool masks (m, n): strings (callable) or token id arrays."""
        masks = np.asarray(masks, dtype=bool)
        if self.tokenizer is None:
            return mask_strings(self.text, self.spans, masks, self.mask_token)
        return list(self.tokens.masked_ids(masks, self.mask_id))

    def scores(self, masks: np.ndarray) -> np.ndarray:
        """Raw class scores (m, C): logits of a transformers model, or the callable's output."""
        inputs = self.masked_inputs(masks)
        if self.tokenizer is None:
            out = np.asarray(self.model(inputs), dtype=np.float64)
            return out.reshape(len(inputs), -1)
        import torch

        from .embedding import pad_batch

        ids, attention = pad_batch(inputs, self.pad_id, self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=attention).logits
        return logits.float().cpu().double().numpy()

    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        scores = self.scores(masks)
        if self.tokenizer is None and self.output != "logit":
            return _from_probabilities(scores, self.target, self.output)
        return _from_logits(scores, self.target, self.output)

    def cache_key(self) -> str:
        """JSON: the model's name and fingerprint (its weights, or for a callable its code,
        closure or pickle bytes; see :func:`.runtime.fingerprint`), the text, spans, token ids,
        mask, target and output."""
        tokens = None if self.tokenizer is None else \
            fingerprint((self.tokens.ids, self.tokens.token_feature))
        return json.dumps({"class": type(self).__name__, **model_key(self.model), "tokens": tokens,
                           "text": self.text, "spans": self.spans, "mask": str(self.mask_token),
                           "target": self.target, "output": self.output}, sort_keys=True)
