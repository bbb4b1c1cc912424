"""Text features: words, sentences, tokens or user spans, and the masked inputs built from them.

A feature is a character span of the explained text. :class:`TokenizedText` tokenizes the model
input once (the text, possibly inside a prompt template) and maps every token to the feature
whose span holds its first character; tokens outside all features (special tokens, template
text) are always kept. A masked feature's tokens are each replaced by the mask token id (the
sequence keeps its length and positions) or, with ``mask_id=None``, deleted.
:func:`mask_strings` does the same on the string itself, for models that take raw text.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

__all__ = ["GRANULARITIES", "TokenizedText", "mask_strings", "resolve_mask_id", "segment"]

GRANULARITIES = ("token", "word", "sentence", "spans")

_WORD = re.compile(r"\S+")
_SENTENCE = re.compile(r"[^\s].*?(?:[.!?]+(?=\s|$)|\n|$)", re.S)


def segment(text: str, granularity: str = "word",
            spans: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Character spans [start, end) of the features of ``text``.

    ``word``: whitespace-separated words (punctuation stays with its word); ``sentence``: runs
    ending in ``.``, ``!`` or ``?`` followed by whitespace, or a line break; ``spans``: the given
    ``spans`` (sorted, non-overlapping, inside the text). Tokens are handled by
    :class:`TokenizedText` (``granularity="token"``).
    """
    if granularity == "word":
        return [m.span() for m in _WORD.finditer(text)]
    if granularity == "sentence":
        return [(m.start(), m.start() + len(m.group().rstrip()))
                for m in _SENTENCE.finditer(text) if m.group().strip()]
    if granularity == "spans":
        if not spans:
            raise ValueError("granularity='spans' needs a non-empty list of (start, end) spans")
        out = [(int(s), int(e)) for s, e in spans]
        for (s0, e0), (s1, _) in zip(out, out[1:], strict=False):
            if s1 < e0:
                raise ValueError(f"spans must be sorted and non-overlapping: {(s0, e0)} then "
                                 f"starts at {s1}")
        for s, e in out:
            if not 0 <= s < e <= len(text):
                raise ValueError(f"span {(s, e)} is empty or outside the text (length "
                                 f"{len(text)})")
        return out
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def mask_strings(text: str, spans: list[tuple[int, int]], masks: np.ndarray,
                 mask_token: str | None = "[MASK]") -> list[str]:
    """Masked copies of ``text``: each masked span replaced by ``mask_token``, or deleted
    together with the whitespace that follows it when ``mask_token`` is None. masks: (m, n)."""
    masks = np.asarray(masks, dtype=bool)
    pieces, gaps = [], []
    cursor = 0
    for s, e in spans:
        gaps.append(text[cursor:s])
        pieces.append(text[s:e])
        cursor = e
    tail = text[cursor:]
    out = []
    for row in masks:
        parts = []
        drop_gap = False
        for gap, piece, keep in zip(gaps, pieces, row, strict=True):
            parts.append(gap.lstrip() if drop_gap else gap)
            drop_gap = False
            if keep:
                parts.append(piece)
            elif mask_token is None:
                drop_gap = True
            else:
                parts.append(mask_token)
        parts.append(tail.lstrip() if drop_gap else tail)
        out.append("".join(parts))
    return out


def resolve_mask_id(tokenizer, mask_token: str | int | None) -> int | None:
    """Token id of ``mask_token`` (a token string or an id); None = masking by deletion."""
    if mask_token is None:
        return None
    if isinstance(mask_token, int | np.integer):
        return int(mask_token)
    ids = tokenizer.convert_tokens_to_ids(mask_token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if ids is None or (ids == unk and mask_token != getattr(tokenizer, "unk_token", None)):
        encoded = tokenizer(mask_token, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(
                f"mask_token {mask_token!r} is not a single token of this tokenizer (it encodes "
                f"to {len(encoded)} tokens); pass a token such as {tokenizer.unk_token!r}, "
                "a token id, or None to mask by deletion"
            )
        ids = encoded[0]
    return int(ids)


class TokenizedText:
    """``text`` (inside ``prefix`` + text + ``suffix``) tokenized once, with its features.

    Attributes: ``ids`` (L,) int64 token ids of the whole input; ``token_feature`` (L,) int64,
    the feature of each token (-1: always kept); ``spans`` feature character spans in ``text``;
    ``features`` their strings; ``n``. Needs a fast tokenizer (offset mapping).
    """

    def __init__(self, tokenizer, text: str, granularity: str = "word",
                 spans: list[tuple[int, int]] | None = None, prefix: str = "", suffix: str = "",
                 add_special_tokens: bool = True, max_length: int | None = None):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast tokenizer (offset mapping) is needed: load it with "
                             "AutoTokenizer.from_pretrained(..., use_fast=True)")
        self.text = text
        full = prefix + text + suffix
        encoded = tokenizer(full, add_special_tokens=add_special_tokens,
                            return_offsets_mapping=True, return_special_tokens_mask=True,
                            truncation=max_length is not None, max_length=max_length)
        self.ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        special = np.asarray(encoded["special_tokens_mask"], dtype=bool)
        start = offsets[:, 0] - len(prefix)
        # a byte-level BPE token may start with the prefix's trailing whitespace (" The" after
        # "Context: "): it belongs to the text when nothing but whitespace of it is in the prefix
        blank = len(prefix) - len(prefix.rstrip())
        lead = (start < 0) & (start >= -blank) & (offsets[:, 1] - len(prefix) > 0)
        start = np.where(lead, 0, start)
        inside = ~special & (offsets[:, 1] > offsets[:, 0]) & (start >= 0) & (start < len(text))
        # byte-level BPE offsets include a word's leading space: start at its first visible char
        visible = np.array([not c.isspace() for c in text] + [True])
        first_visible = np.minimum.accumulate(
            np.where(visible, np.arange(len(visible)), len(text))[::-1])[::-1]
        end = offsets[:, 1] - len(prefix)
        shifted = first_visible[start.clip(0, len(text))]
        start = np.where(inside & (shifted < end), shifted, start)
        if granularity == "token":
            positions = np.flatnonzero(inside)
            candidate = [(int(start[i]), int(min(offsets[i, 1] - len(prefix), len(text))))
                         for i in positions]
            token_feature = np.full(len(self.ids), -1, np.int64)
            token_feature[positions] = np.arange(len(positions))
        else:
            candidate = segment(text, granularity, spans)
            bounds = np.array([s for s, _ in candidate], dtype=np.int64)
            ends = np.array([e for _, e in candidate], dtype=np.int64)
            owner = np.searchsorted(bounds, start, side="right") - 1
            valid = inside & (owner >= 0)
            valid[valid] &= start[valid] < ends[owner[valid]]
            token_feature = np.where(valid, owner, -1)
        used = np.unique(token_feature[token_feature >= 0])
        if len(used) < len(candidate):
            dropped = len(candidate) - len(used)
            warnings.warn(f"{dropped} of {len(candidate)} features have no tokens in the model "
                          f"input (truncated at max_length={max_length}?) and are not explained",
                          stacklevel=2)
        remap = np.full(len(candidate), -1, np.int64)
        remap[used] = np.arange(len(used))
        self.token_feature = np.where(token_feature >= 0, remap[token_feature.clip(0)], -1)
        self.spans = [candidate[i] for i in used]
        self.features = [text[s:e] for s, e in self.spans]
        self.n = len(self.spans)
        if self.n == 0:
            raise ValueError("the text has no features to explain")

    def kept_tokens(self, masks: np.ndarray) -> np.ndarray:
        """bool (m, L): which tokens of the input each mask keeps."""
        keep = np.ones((len(masks), len(self.ids)), dtype=bool)
        tokens = np.flatnonzero(self.token_feature >= 0)
        keep[:, tokens] = masks[:, self.token_feature[tokens]]
        return keep

    def masked_ids(self, masks: np.ndarray, mask_id: int | None) -> np.ndarray | list[np.ndarray]:
        """Token ids for bool masks (m, n): an (m, L) array where masked tokens become
        ``mask_id``, or (``mask_id`` None) a list of m 1-D arrays without the masked tokens."""
        keep = self.kept_tokens(masks)
        if mask_id is not None:
            return np.where(keep, self.ids[None, :], mask_id)
        return [self.ids[row] for row in keep]
