"""Causal language models: teacher-forced log-probabilities of a target continuation.

:func:`teacher_forced_log_probs` scores one fixed target (token ids) after many prompts with
one forward pass per batch (prompt + target concatenated, padded, attention-masked, with
position ids), never token-by-token generation. It is fast where it matters: prompts run in
order of length (little padding), the token prefix all prompts share (chat template, system
text, everything before the first feature) is encoded once per call and reused through the KV
cache, everything runs under ``torch.inference_mode`` in the model's dtype (half precision on
a GPU by default, see :func:`default_dtype`), and passes are bounded by rows and padded tokens.
:class:`CausalLMLogProb` is the value function: log p(target | masked prompt), where the target
defaults to the model's own greedy answer to the unmasked prompt (generated once), and the
prompt may be wrapped in the tokenizer's chat template.
"""

from __future__ import annotations

import inspect
import json
import warnings
from typing import Literal

import numpy as np

from ..runtime import fingerprint, model_key
from .base import MaskedValueFunction, resolve_device
from .embedding import model_max_length
from .text import TokenizedText, resolve_mask_id

__all__ = ["ANSWER_TEMPLATE", "CausalLMLogProb", "answer_template", "context_length",
           "default_dtype", "resolve_dtype", "teacher_forced_log_probs", "tiny_causal_lm"]

ANSWER_TEMPLATE = "Context: {text}\nQuestion: {question}\nAnswer in a few words."
"""The user message of context attribution: the explained context, then the question."""

CPU_BATCH_TOKENS = 1024
"""Padded tokens per forward pass on a CPU (rows x padded length): on SmolLM2 with 2 cores,
passes of at most 1,024 tokens ran as fast as or faster than 2,048 and 8,192 at 100 and 500
prompt tokens (benchmarks/llm_batching.py). A GPU has no such bound and relies on
out-of-memory halving of the batch."""


def _accepts(model, name: str) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def _default_pad(model) -> int:
    config = getattr(model, "config", None)
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def default_dtype(device):
    """The dtype a causal LM is scored in on ``device``: bfloat16 on CUDA when supported, else
    float16 on CUDA; float32 on CPU and other devices (half precision is slow or unsupported
    there). Log-probabilities are always computed in float32 from the logits."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_dtype(dtype, device):
    """A torch dtype from None / "auto" (:func:`default_dtype` of ``device``), a torch dtype,
    or its name ("float32", "bfloat16", "float16")."""
    import torch

    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, str):
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got "
                             f"{dtype!r}")
        return getattr(torch, dtype)
    return dtype


def answer_template(question: str) -> str:
    """:data:`ANSWER_TEMPLATE` with ``question`` filled in (``{text}`` stays for the context)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty: pass the question the model should answer")
    if "{text}" in question:
        raise ValueError("the question must not contain '{text}'")
    return ANSWER_TEMPLATE.replace("{question}", question.strip())


def context_length(model, tokenizer=None) -> int | None:
    """The longest sequence (prompt + target) the model takes: its position table
    (``max_position_embeddings`` / ``n_positions``) capped by the tokenizer's
    ``model_max_length``; None when neither says."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "max_position_embeddings", None) is None:
        limit = getattr(tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None
    return model_max_length(model, tokenizer)


def _cache_argument(model) -> str | None:
    """The forward keyword that takes a KV cache (``cache`` from transformers 5.x on,
    ``past_key_values`` before), or None when the model takes none."""
    for name in ("cache", "past_key_values"):
        if _accepts(model, name):
            return name
    return None


def _packed(prompts) -> tuple:
    """(tokens (m, L) long, left-aligned and zero-filled; lengths (m,) long) from 1-D prompts."""
    import torch

    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    width = int(lengths.max()) if len(prompts) else 0
    flat = torch.cat(prompts) if len(prompts) else torch.zeros(0, dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(len(prompts)), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    columns = torch.arange(len(flat)) - torch.repeat_interleave(starts, lengths)
    tokens = torch.zeros((len(prompts), width), dtype=torch.long)
    tokens[rows, columns] = flat
    return tokens, lengths


def _shared_prefix(tokens, lengths) -> int:
    """Length of the token prefix all prompts share, leaving every prompt at least one token
    of its own (the one whose logits predict the first target token)."""
    import torch

    shortest = int(lengths.min())
    same = (tokens[:, :shortest] == tokens[:1, :shortest]).all(0)
    common = int(torch.cumprod(same.long(), 0).sum())
    return min(common, shortest - 1)


def _batches(lengths, batch_size: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """[start, stop) row ranges over ``lengths`` (tokens each row runs, in running order): at
    most ``batch_size`` rows and, when ``max_tokens`` is set, at most ``max_tokens`` padded
    tokens (rows x the longest row so far) each; a row longer than ``max_tokens`` goes alone."""
    out, start, m = [], 0, len(lengths)
    while start < m:
        rows = min(batch_size, m - start)
        if max_tokens is not None:
            padded = np.arange(1, rows + 1) * np.maximum.accumulate(lengths[start:start + rows])
            rows = max(1, int(np.count_nonzero(padded <= max_tokens)))
        out.append((start, start + rows))
        start += rows
    return out


def _prefix_cache(model, prefix, device, argument: str):
    """The KV cache of ``prefix`` (P,) as a list of per-layer (key, value) tensors, batch 1;
    None when the model returns no cache of that form."""
    import torch

    kwargs = {"input_ids": prefix[None].to(device),
              "attention_mask": torch.ones((1, len(prefix)), dtype=torch.long, device=device),
              "use_cache": True}
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if layers is None:
        try:
            layers = [tuple(entry[:2]) for entry in cache]
        except TypeError:
            return None
        return layers or None
    if any(getattr(layer, "is_sliding", False) for layer in layers):
        return None  # a sliding-window cache is not a plain prefix: run whole prompts
    pairs = [(layer.keys, layer.values) for layer in layers]
    if not pairs or any(k is None or k.shape[-2] != len(prefix) for k, _ in pairs):
        return None
    return pairs


def _expanded_cache(pairs, rows: int):
    """A fresh ``DynamicCache`` holding the prefix's keys and values for ``rows`` rows."""
    from transformers import DynamicCache

    return DynamicCache([(k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:]))
                         for k, v in pairs])


def teacher_forced_log_probs(model, input_ids, target_ids, batch_size: int = 16,
                             pad_token_id: int | None = None, per_token: bool = False,
                             padding_side: str = "left", *,
                             max_batch_tokens: int | Literal["auto"] | None = "auto",
                             sort_by_length: bool = True, share_prefix: bool = True,
                             max_length: int | None = None):
    """log p(target | prompt) for many prompts, one teacher-forced forward pass per batch.

    Parameters
    ----------
    model : a ``transformers`` causal LM (``logits`` output), on its device, in eval mode.
    input_ids : list of m 1-D LongTensors (prompts of any lengths, each non-empty).
    target_ids : 1-D LongTensor (T,), the continuation scored after every prompt (token ids:
        the target is never re-tokenised after the prompt).
    batch_size : most prompts per forward pass.
    pad_token_id : padding id (default: the model config's pad, eos or bos id). Padding never
        changes the result: it is attention-masked and position ids skip it.
    per_token : return the (m, T) per-token log-probabilities instead of their sums (m,).
    padding_side : "left" (targets aligned at the end, so only the last T+1 logits are
        computed when the model takes ``logits_to_keep``) or "right".
    max_batch_tokens : most padded tokens (rows x longest row) per forward pass; "auto":
        :data:`CPU_BATCH_TOKENS` on a CPU, unbounded on other devices; None: only
        ``batch_size`` bounds a pass.
    sort_by_length : run the prompts in order of length, so each pass pads little (results
        come back in the input order).
    share_prefix : encode the token prefix all prompts share (chat template, system text,
        everything before the first masked feature) once per call and reuse its keys and
        values through the model's KV cache in every pass (models that take no cache run
        the whole prompt).
    max_length : the model's context (default: :func:`context_length`); a prompt that does
        not fit with the target is a ValueError that states the lengths.

    Returns a float64 CPU tensor (m,) or (m, T). Computed under ``torch.inference_mode`` in
    the model's own dtype; log-softmax in float32.
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    target = torch.as_tensor(target_ids, dtype=torch.long).reshape(-1).cpu()
    width = len(target)
    if width == 0:
        raise ValueError("target_ids is empty: nothing to score")
    prompts = [torch.as_tensor(p, dtype=torch.long).reshape(-1).cpu() for p in input_ids]
    if not prompts:
        return torch.zeros((0, width) if per_token else (0,), dtype=torch.float64)
    tokens, lengths = _packed(prompts)
    if int(lengths.min()) == 0:
        raise ValueError("every prompt needs at least one token (e.g. a BOS token) to condition "
                         "the first target token on")
    scores = _score(model, tokens, lengths, target, batch_size=batch_size,
                    pad_token_id=pad_token_id, padding_side=padding_side,
                    max_batch_tokens=max_batch_tokens, sort_by_length=sort_by_length,
                    share_prefix=share_prefix, max_length=max_length)
    return scores if per_token else scores.sum(-1)


def _score(model, tokens, lengths, target, *, batch_size: int, pad_token_id: int | None,
           padding_side: str, max_batch_tokens: int | str | None, sort_by_length: bool,
           share_prefix: bool, max_length: int | None):
    """Per-token log-probabilities (m, T) float64 of ``target`` (T,) after the prompts
    ``tokens`` (m, L) (row i: its first ``lengths[i]`` entries); see
    :func:`teacher_forced_log_probs`."""
    import torch

    width = len(target)
    limit = context_length(model) if max_length is None else int(max_length)
    longest = int(lengths.max())
    if limit is not None and longest + width > limit:
        row = int(torch.argmax(lengths))
        raise ValueError(
            f"prompt {row} has {longest:,} tokens + {width:,} target tokens = "
            f"{longest + width:,}, above the model's context of {limit:,} tokens; shorten the "
            "text (fewer or shorter features) or the target")
    device = next(model.parameters()).device
    if max_batch_tokens == "auto":
        max_batch_tokens = CPU_BATCH_TOKENS if device.type == "cpu" else None
    pad = _default_pad(model) if pad_token_id is None else int(pad_token_id)
    left = padding_side == "left"
    keep_logits = left and _accepts(model, "logits_to_keep")
    with_positions = _accepts(model, "position_ids")
    argument = _cache_argument(model) if share_prefix and with_positions else None
    # one prompt gains nothing from a separate prefix pass
    prefix = _shared_prefix(tokens, lengths) if argument is not None and len(lengths) > 1 else 0
    order = torch.argsort(lengths, stable=True) if sort_by_length else torch.arange(len(lengths))
    scores = torch.zeros((len(lengths), width), dtype=torch.float64)
    size = max(1, int(batch_size))
    with torch.inference_mode():
        pairs = _prefix_cache(model, tokens[0, :prefix], device, argument) if prefix else None
        if pairs is None:
            prefix = 0
        run_lengths = (lengths[order] - prefix + width).numpy()  # tokens each row runs
        for start, stop in _batches(run_lengths, size, max_batch_tokens):
            rows = order[start:stop]
            own = lengths[rows] - prefix  # (b,) tokens of each prompt after the shared prefix
            span = int(own.max()) + width
            column = torch.arange(span)[None, :]
            # left: [pad][own tokens][target]; right: [own tokens][target][pad]
            offset = (span - width - own)[:, None] if left else torch.zeros_like(own)[:, None]
            index = column - offset
            in_prompt = (index >= 0) & (index < own[:, None])
            in_target = (index >= own[:, None]) & (index < own[:, None] + width)
            source = tokens[rows].gather(1, (index + prefix).clamp(0, tokens.shape[1] - 1))
            answer = target[(index - own[:, None]).clamp(0, width - 1)]
            ids = torch.where(in_prompt, source, torch.where(in_target, answer, pad))
            attention = (in_prompt | in_target).long()
            kwargs = {"input_ids": ids.to(device)}
            if pairs is not None:
                full = torch.cat([torch.ones((len(rows), prefix), dtype=torch.long), attention],
                                 dim=1)
                kwargs["attention_mask"] = full.to(device)
                kwargs["position_ids"] = (prefix + attention.cumsum(-1) - 1).clamp(
                    min=prefix).to(device)
                kwargs[argument] = _expanded_cache(pairs, len(rows))
                kwargs["use_cache"] = True
            else:
                kwargs["attention_mask"] = attention.to(device)
                if with_positions:
                    kwargs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0).to(device)
            if keep_logits:
                kwargs["logits_to_keep"] = width + 1
            logits = model(**kwargs).logits
            if left:
                # logits at positions span-T-1 .. span-2 predict the T target tokens
                logits = logits[:, -(width + 1):-1]
            else:
                first = (own - 1)[:, None] + torch.arange(width)[None, :]
                logits = logits.gather(1, first.to(logits.device)[..., None]
                                       .expand(-1, -1, logits.shape[-1]))
            log_probs = logits.float().log_softmax(-1)
            picked = log_probs.gather(-1, target.to(logits.device)[None, :, None]
                                      .expand(len(rows), -1, 1)).squeeze(-1)
            scores[rows] = picked.double().cpu()
    return scores


class CausalLMLogProb(MaskedValueFunction):
    """Value function: log p(target | masked prompt) of a causal LM, by teacher forcing.

    Parameters
    ----------
    model, tokenizer : a ``transformers`` causal LM and its fast tokenizer.
    text : the explained text; its features are ``granularity`` units (``token``, ``word``,
        ``sentence``, or ``spans`` with ``spans=[(start, end), ...]``).
    target : the scored continuation: a string, token ids (a sequence of ints, scored as
        given), or None (default) = the model's greedy answer to the unmasked prompt
        (``max_new_tokens`` at most, generated once, without the end token; its token ids are
        scored, never re-tokenised). A string is tokenised on its own; when it tokenises
        differently after the prompt (a merge across the boundary, e.g. a prompt ending in a
        space) a warning shows both and the standalone ids are scored: pass ids to choose.
    template : the user message / prompt with ``{text}`` where the text goes (e.g.
        ``"Context: {text}\\nQuestion: ...\\nAnswer:"``); template text is never masked.
    chat : wrap the message in the tokenizer's chat template (default: when it has one);
        ``system`` adds a system message.
    mask_token : None (default) deletes masked features' tokens; a token (string or id)
        replaces each of them instead.
    per_token : outputs (m, T), one per target token, instead of their sum (m,).
    batch_size : masks per model batch (default 64): the runtime sends this many at a time and
        halves it in place on out-of-memory; inside, prompts run sorted by length.
    max_batch_tokens : most padded tokens per forward pass; "auto": :data:`CPU_BATCH_TOKENS`
        on a CPU (passes of few rows pad little), unbounded on a GPU; None: unbounded.
    share_prefix : encode the prompt's unmasked prefix (chat template, system text, text
        before the first feature) once per batch and reuse it through the KV cache.
    device : torch device (default: CUDA when available, else CPU).
    dtype : None (default) keeps the model's dtype; "auto" = :func:`default_dtype` (bfloat16 /
        float16 on CUDA, float32 on CPU); a torch dtype or its name. The model is moved in
        place.
    progress : a progress bar when the object is called directly.

    The prompt (+ target, or + ``max_new_tokens`` when generating) must fit the model's
    context (:func:`context_length`): a ValueError states the lengths otherwise.

    Attributes ``n``, ``features``, ``spans``, ``prompt`` (the unmasked model input string),
    ``prefix_length`` (tokens before the first feature), ``target_ids`` (T,), ``target_text``,
    ``context`` (the model's context length or None).
    """

    def __init__(self, model, tokenizer, text: str, *, target: str | list[int] | None = None,
                 template: str = "{text}", chat: bool | None = None, system: str | None = None,
                 granularity: str = "word", spans: list[tuple[int, int]] | None = None,
                 mask_token: str | int | None = None, max_new_tokens: int = 32,
                 per_token: bool = False, batch_size: int = 64,
                 max_batch_tokens: int | Literal["auto"] | None = "auto",
                 share_prefix: bool = True, device=None, dtype=None, progress: bool = False):
        import torch

        if template.count("{text}") != 1:
            raise ValueError("template must contain '{text}' exactly once")
        self.device = resolve_device(device)
        dtype = None if dtype is None else resolve_dtype(dtype, self.device)
        self.model = (model.to(self.device) if dtype is None
                      else model.to(self.device, dtype)).eval()
        self.tokenizer = tokenizer
        self.text = text
        before, after = template.split("{text}")
        message = before + text + after
        if chat is None:
            chat = getattr(tokenizer, "chat_template", None) is not None
        if chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": message}]
            prompt = tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=True)
            where = prompt.find(message)
            if where < 0:
                raise ValueError("the chat template changed the message text; pass chat=False")
            before, after = prompt[:where + len(before)], prompt[where + len(message) - len(after):]
        self.prompt = before + text + after
        self.chat = bool(chat)
        self.tokens = TokenizedText(tokenizer, text, granularity, spans, prefix=before,
                                    suffix=after, add_special_tokens=not chat)
        if not (self.tokens.token_feature[:1] == -1).all():
            anchor = tokenizer.bos_token_id
            if anchor is None:
                anchor = tokenizer.eos_token_id
            if anchor is None:
                raise ValueError("the prompt starts with the explained text and the tokenizer "
                                 "has no BOS/EOS token to anchor a fully masked prompt; use a "
                                 "template with text before {text}")
            self.tokens.ids = np.concatenate([[anchor], self.tokens.ids])
            self.tokens.token_feature = np.concatenate([[-1], self.tokens.token_feature])
        self.n, self.features, self.spans = self.tokens.n, self.tokens.features, self.tokens.spans
        self.prefix_length = int(np.argmax(self.tokens.token_feature >= 0))
        self.mask_token = mask_token
        self.mask_id = resolve_mask_id(tokenizer, mask_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else _default_pad(model)
        self.per_token = per_token
        self.batch_size = int(batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.share_prefix = bool(share_prefix)
        self.progress = progress
        self.context = context_length(model, tokenizer)
        length = len(self.tokens.ids)
        if target is None:
            room = max_new_tokens if self.context is None else min(
                max_new_tokens, self.context - length)
            if room < 1:
                raise ValueError(
                    f"the prompt has {length:,} tokens, which leaves no room for an answer in "
                    f"the model's context of {self.context:,} tokens; shorten the text")
            target_ids = self._greedy_answer(room)
            if len(target_ids) == 0:
                raise ValueError("the model's greedy answer to the prompt is empty (it ends "
                                 "at once); pass target=... (a string or token ids)")
        elif isinstance(target, str):
            target_ids = np.asarray(tokenizer(target, add_special_tokens=False)["input_ids"])
            if len(target_ids) == 0:
                raise ValueError(f"target {target!r} tokenizes to no tokens: nothing to score")
            self._check_boundary(target, target_ids)
        else:
            target_ids = np.asarray(torch.as_tensor(target).reshape(-1).cpu().numpy())
            if len(target_ids) == 0:
                raise ValueError("target is an empty sequence of token ids: nothing to score")
            if not np.issubdtype(target_ids.dtype, np.integer):
                raise ValueError(f"target token ids must be integers, got {target_ids.dtype}")
        self.target_ids = np.asarray(target_ids, dtype=np.int64)
        if self.context is not None and length + len(self.target_ids) > self.context:
            raise ValueError(
                f"the prompt has {length:,} tokens + {len(self.target_ids):,} target tokens = "
                f"{length + len(self.target_ids):,}, above the model's context of "
                f"{self.context:,} tokens; shorten the text or the target")
        self.target_text = tokenizer.decode(self.target_ids.tolist())

    def _greedy_answer(self, max_new_tokens: int) -> np.ndarray:
        """Token ids of the model's greedy answer to the unmasked prompt, up to its end token."""
        import torch

        ids = torch.as_tensor(self.tokens.ids)[None].to(self.device)
        with torch.inference_mode():
            generated = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                            max_new_tokens=max_new_tokens, do_sample=False,
                                            pad_token_id=self.pad_id)
        answer = generated[0, ids.shape[1]:].cpu().numpy()
        stops = np.array(sorted({self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
                                - {None}), dtype=np.int64)
        ends = np.flatnonzero(np.isin(answer, stops))
        return answer[:ends[0]] if len(ends) else answer

    def _check_boundary(self, target: str, target_ids: np.ndarray) -> None:
        """Warn when ``target`` tokenizes differently after the prompt than on its own."""
        tokenizer = self.tokenizer
        alone = [int(t) for t in target_ids]
        prompt = tokenizer(self.prompt, add_special_tokens=False)["input_ids"]
        joined = tokenizer(self.prompt + target, add_special_tokens=False)["input_ids"]
        if list(joined) == list(prompt) + alone:
            return
        split = next((i for i, (a, b) in enumerate(zip(joined, prompt, strict=False)) if a != b),
                     min(len(joined), len(prompt)))
        warnings.warn(
            f"target {target!r} tokenizes differently after the prompt: on its own {alone} "
            f"({tokenizer.convert_ids_to_tokens(alone)}), but prompt + target ends "
            f"{list(joined[split:])} ({tokenizer.convert_ids_to_tokens(list(joined[split:]))}) "
            f"from token {split} on (a merge across the boundary). The standalone ids are "
            "scored; pass target=[token ids] to score others", stacklevel=3)

    def packed_inputs(self, masks) -> tuple:
        """(tokens (m, L) long, lengths (m,) long): the prompt token ids the model sees
        (before the target) for bool masks (m, n), row i left-aligned in its first
        ``lengths[i]`` entries (built without a loop over the masks)."""
        import torch

        keep = self.tokens.kept_tokens(np.asarray(masks, dtype=bool))
        ids = self.tokens.ids
        if self.mask_id is not None:
            tokens = np.where(keep, ids[None, :], self.mask_id)
            return torch.from_numpy(tokens), torch.full((len(keep),), len(ids))
        lengths = keep.sum(1)
        rows, columns = np.nonzero(keep)
        tokens = np.zeros(keep.shape, dtype=np.int64)
        tokens[rows, (np.cumsum(keep, 1) - 1)[rows, columns]] = ids[columns]
        return torch.from_numpy(tokens), torch.from_numpy(lengths.astype(np.int64))

    def masked_inputs(self, masks) -> list[np.ndarray]:
        """Prompt token ids the model sees (before the target) for bool masks (m, n)."""
        tokens, lengths = self.packed_inputs(masks)
        return [row[:length] for row, length in zip(tokens.numpy(), lengths.tolist(),
                                                    strict=True)]

    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        import torch

        tokens, lengths = self.packed_inputs(masks)
        scores = _score(self.model, tokens, lengths, torch.from_numpy(self.target_ids),
                        batch_size=self.batch_size, pad_token_id=self.pad_id,
                        padding_side="left", max_batch_tokens=self.max_batch_tokens,
                        sort_by_length=True, share_prefix=self.share_prefix,
                        max_length=self.context)
        return (scores if self.per_token else scores.sum(-1)).numpy()

    def cache_key(self) -> str:
        """JSON: the model's name and weights fingerprint, the prompt, spans, prompt token ids,
        mask, target token ids and ``per_token``."""
        return json.dumps({
            "class": type(self).__name__, **model_key(self.model),
            "tokens": fingerprint((self.tokens.ids, self.tokens.token_feature)),
            "prompt": self.prompt, "spans": self.spans, "mask": self.mask_id,
            "target": self.target_ids.tolist(), "per_token": self.per_token,
        }, sort_keys=True)


def tiny_causal_lm(corpus: list[str], hidden: int = 64, layers: int = 2, seed: int = 0,
                   vocab_size: int = 400):
    """(tokenizer, model): an offline toy causal LM for examples and benchmarks.

    A byte-level BPE tokenizer trained on ``corpus`` here (under a second; BOS ``<s>`` = 0,
    EOS ``</s>`` = 1, PAD ``<pad>`` = 2) and a randomly initialised Llama built from a config
    (``hidden`` width, ``layers`` layers, ``seed``); nothing is downloaded.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(corpus) * 10, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "</s>", "<pad>", "<unk>"], show_progress=False)
    bpe.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(seed)
    heads = max(1, hidden // 32)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
                         pad_token_id=2)
    return tokenizer, LlamaForCausalLM(config).eval()
