"""Causal language models: teacher-forced log-probabilities of a target continuation.

:func:`teacher_forced_log_probs` scores one fixed target after many prompts with one forward
pass per batch (prompt + target concatenated, padded, attention-masked, with position ids), never
token-by-token generation. :class:`CausalLMLogProb` is the value function: log p(target | masked
prompt), where the target defaults to the model's own greedy answer to the unmasked prompt
(generated once), and the prompt may be wrapped in the tokenizer's chat template.
"""

from __future__ import annotations

import inspect
import json

import numpy as np

from ..runtime import fingerprint, model_key
from .base import MaskedValueFunction, resolve_device
from .text import TokenizedText, resolve_mask_id

__all__ = ["CausalLMLogProb", "teacher_forced_log_probs", "tiny_causal_lm"]


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


def teacher_forced_log_probs(model, input_ids, target_ids, batch_size: int = 16,
                             pad_token_id: int | None = None, per_token: bool = False,
                             padding_side: str = "left"):
    """log p(target | prompt) for many prompts, one teacher-forced forward pass per batch.

    Parameters
    ----------
    model : a ``transformers`` causal LM (``logits`` output), on its device, in eval mode.
    input_ids : list of m 1-D LongTensors (prompts of any lengths, each non-empty).
    target_ids : 1-D LongTensor (T,), the continuation scored after every prompt.
    batch_size : prompts per forward pass.
    pad_token_id : padding id (default: the model config's pad, eos or bos id). Padding never
        changes the result: it is attention-masked and position ids skip it.
    per_token : return the (m, T) per-token log-probabilities instead of their sums (m,).
    padding_side : "left" (targets aligned at the end, so only the last T+1 logits are
        computed when the model takes ``logits_to_keep``) or "right".

    Returns a float64 CPU tensor (m,) or (m, T).
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    target = torch.as_tensor(target_ids, dtype=torch.long).reshape(-1).cpu()
    width = len(target)
    if width == 0:
        raise ValueError("target_ids is empty: nothing to score")
    prompts = [torch.as_tensor(p, dtype=torch.long).reshape(-1).cpu() for p in input_ids]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. a BOS token) to condition "
                         "the first target token on")
    device = next(model.parameters()).device
    pad = _default_pad(model) if pad_token_id is None else int(pad_token_id)
    left = padding_side == "left"
    keep_logits = left and _accepts(model, "logits_to_keep")
    with_positions = _accepts(model, "position_ids")
    results = []
    with torch.inference_mode():
        for start in range(0, len(prompts), max(1, int(batch_size))):
            chunk = prompts[start:start + max(1, int(batch_size))]
            lengths = torch.tensor([len(p) + width for p in chunk])
            length = int(lengths.max())
            ids = torch.full((len(chunk), length), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), length), dtype=torch.long)
            for row, prompt in enumerate(chunk):
                sequence = torch.cat([prompt, target])
                span = slice(length - len(sequence), length) if left else slice(0, len(sequence))
                ids[row, span] = sequence
                attention[row, span] = 1
            kwargs = {"input_ids": ids.to(device), "attention_mask": attention.to(device)}
            if with_positions:
                kwargs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0).to(device)
            if keep_logits:
                kwargs["logits_to_keep"] = width + 1
            logits = model(**kwargs).logits
            if left:
                # logits at positions length-T-1 .. length-2 predict the T target tokens
                logits = logits[:, -(width + 1):-1]
            else:
                first = torch.tensor([len(p) - 1 for p in chunk])
                index = (first[:, None] + torch.arange(width)[None, :]).to(logits.device)
                logits = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
            log_probs = logits.float().log_softmax(-1)
            picked = log_probs.gather(-1, target.to(logits.device)[None, :, None]
                                      .expand(len(chunk), -1, 1)).squeeze(-1)
            results.append(picked.double().cpu())
    scores = torch.cat(results) if results else torch.zeros((0, width), dtype=torch.float64)
    return scores if per_token else scores.sum(-1)


class CausalLMLogProb(MaskedValueFunction):
    """Value function: log p(target | masked prompt) of a causal LM, by teacher forcing.

    Parameters
    ----------
    model, tokenizer : a ``transformers`` causal LM and its fast tokenizer.
    text : the explained text; its features are ``granularity`` units (``token``, ``word``,
        ``sentence``, or ``spans`` with ``spans=[(start, end), ...]``).
    target : the scored continuation (string); None = the model's greedy answer to the
        unmasked prompt (``max_new_tokens`` at most, generated once, without the end token).
    template : the user message / prompt with ``{text}`` where the text goes (e.g.
        ``"Context: {text}\\nQuestion: ...\\nAnswer:"``); template text is never masked.
    chat : wrap the message in the tokenizer's chat template (default: when it has one);
        ``system`` adds a system message.
    mask_token : None (default) deletes masked features' tokens; a token (string or id)
        replaces each of them instead.
    per_token : outputs (m, T), one per target token, instead of their sum (m,).
    batch_size, device, progress : evaluation settings (batches halve on out-of-memory).

    Attributes ``n``, ``features``, ``spans``, ``prompt`` (the unmasked model input string),
    ``target_ids`` (T,), ``target_text``.
    """

    def __init__(self, model, tokenizer, text: str, target: str | None = None,
                 template: str = "{text}", chat: bool | None = None, system: str | None = None,
                 granularity: str = "word", spans: list[tuple[int, int]] | None = None,
                 mask_token: str | int | None = None, max_new_tokens: int = 32,
                 per_token: bool = False, batch_size: int = 16, device=None,
                 progress: bool = False):
        import torch

        if template.count("{text}") != 1:
            raise ValueError("template must contain '{text}' exactly once")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
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
        self.mask_token = mask_token
        self.mask_id = resolve_mask_id(tokenizer, mask_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else _default_pad(model)
        self.per_token = per_token
        self.batch_size = int(batch_size)
        self.progress = progress
        if target is None:
            ids = torch.as_tensor(self.tokens.ids)[None].to(self.device)
            with torch.inference_mode():
                generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=self.pad_id)
            answer = generated[0, ids.shape[1]:].cpu().numpy()
            stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
            ends = [i for i, token in enumerate(answer) if int(token) in stops]
            target_ids = answer[:ends[0]] if ends else answer
            if len(target_ids) == 0:
                raise ValueError("the model's greedy answer is empty; pass target=...")
        else:
            target_ids = np.asarray(tokenizer(target, add_special_tokens=False)["input_ids"])
            if len(target_ids) == 0:
                raise ValueError("target tokenizes to no tokens")
        self.target_ids = np.asarray(target_ids, dtype=np.int64)
        self.target_text = tokenizer.decode(self.target_ids.tolist())

    def masked_inputs(self, masks) -> list[np.ndarray]:
        """Prompt token ids the model sees (before the target) for bool masks (m, n)."""
        return list(self.tokens.masked_ids(np.asarray(masks, dtype=bool), self.mask_id))

    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        scores = teacher_forced_log_probs(self.model, self.masked_inputs(masks), self.target_ids,
                                          batch_size=len(masks), pad_token_id=self.pad_id,
                                          per_token=self.per_token)
        return scores.numpy()

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
