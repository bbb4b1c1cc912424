"""The Captum adapter: ``Spex`` on tensors and ``SpexLLMAttribution`` on a tiny causal LM."""

import itertools
import math

import numpy as np
import pytest

try:
    import torch
except ImportError:  # the Python 3.12 environment has no torch
    torch = None

SKIP_REASON = "the Captum adapter needs torch and captum (installed in the Python 3.11 venv)"


@pytest.fixture(scope="module")
def sc():
    pytest.importorskip("torch", reason=SKIP_REASON)
    pytest.importorskip("captum", reason=SKIP_REASON)
    import spex_plugins.captum as module

    # Tiny models on a shared 2-core machine: one intra-op thread avoids spin-wait contention
    # (a 2-thread forward pass of the tiny LMs below can take 100x longer under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(threads)


# --- a small model with exactly sparse interactions ------------------------------------------

def sparse_model(x, z, scale=1.0):
    """(b, 5), (b, 3) -> (b, 2); interactions up to degree 3 among the 8 scalars."""
    a = (1.5 * x[:, 0] - 0.7 * x[:, 1] * x[:, 2] + 0.4 * x[:, 3] * z[:, 0] * z[:, 1]
         + 2.0 * x[:, 4] - z[:, 2] + 0.3 * x[:, 0] * z[:, 2])
    return torch.stack([a, torch.sin(a)], dim=1) * scale


GROUPS_X = [0, 1, 1, 2, 3]  # 6 players across the two tensors: 1 = {x1, x2}
GROUPS_Z = [4, 2, 5]        # 2 = {x3, z1}: a group spanning both tensors


def brute_force(n, value):
    """Exact Shapley and Banzhaf values of ``value(bool masks (2^n, n)) -> (2^n,)``."""
    masks = np.array(list(itertools.product([False, True], repeat=n)))
    codes = masks @ (1 << np.arange(n))
    f = np.empty(2 ** n)
    f[codes] = value(masks)
    size = masks.sum(1)
    shapley, banzhaf = np.zeros(n), np.zeros(n)
    for i in range(n):
        without = codes[~masks[:, i]]
        gain = f[without | (1 << i)] - f[without]
        s = size[~masks[:, i]]
        weight = np.array([math.factorial(k) * math.factorial(n - k - 1) for k in s])
        shapley[i] = (weight * gain).sum() / math.factorial(n)
        banzhaf[i] = gain.mean()
    return shapley, banzhaf


def masked_value(x, z, bx, bz, example, target, scale=1.0):
    """Model output of one example with the groups of GROUPS_X / GROUPS_Z kept per mask."""
    gx, gz = torch.tensor(GROUPS_X), torch.tensor(GROUPS_Z)

    def value(masks):
        keep = torch.from_numpy(masks)
        xs = torch.where(keep[:, gx], x[example], bx[example])
        zs = torch.where(keep[:, gz], z[example], bz[example])
        return sparse_model(xs, zs, scale)[:, target].numpy()

    return value


def example_inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 5, generator=g, dtype=torch.float64)
    z = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    return x, z


# --- tensor attribution ------------------------------------------------------------------------

def test_shapley_and_banzhaf_equal_brute_force(sc):
    x, z = example_inputs()
    bx, bz = torch.full_like(x, 0.25), torch.zeros_like(z)
    mask = (torch.tensor([GROUPS_X]), torch.tensor([GROUPS_Z]))
    spex = sc.Spex(sparse_model, random_state=0)
    call = dict(baselines=(0.25, bz), target=0, feature_mask=mask)
    sv = spex.attribute((x, z), **call)
    bv = spex.attribute((x, z), index="banzhaf", **call)
    assert isinstance(sv, tuple) and [t.shape for t in sv] == [x.shape, z.shape]
    for example in range(len(x)):
        exact_sv, exact_bv = brute_force(6, masked_value(x, z, bx, bz, example, 0))
        got = torch.cat([sv[0][example], sv[1][example]]).numpy()
        got_bv = torch.cat([bv[0][example], bv[1][example]]).numpy()
        expect = exact_sv[GROUPS_X + GROUPS_Z]  # a group's value on each of its elements
        np.testing.assert_allclose(got, expect, atol=1e-6)
        np.testing.assert_allclose(got_bv, exact_bv[GROUPS_X + GROUPS_Z], atol=1e-6)
    # efficiency: Shapley values add up to f(x) - f(baseline)
    total = sum(t.sum(1) for t in sv) - sv[0][:, 1] - sv[1][:, 1]  # count 2-groups once
    gap = sparse_model(x, z)[:, 0] - sparse_model(bx, bz)[:, 0]
    np.testing.assert_allclose(total.numpy(), gap.numpy(), atol=1e-6)


def test_non_linear_output_with_tensor_target_and_extra_args(sc):
    """sin(a) has interactions of every order; with 6 players the default budget is all 64
    masks: the exact transform."""
    x, z = example_inputs(batch=3, seed=1)
    mask = (torch.tensor([GROUPS_X]), torch.tensor([GROUPS_Z]))
    target = torch.tensor([1, 0, 1])
    got = sc.Spex(sparse_model, random_state=1).attribute(
        (x, z), target=target, additional_forward_args=(0.5,), feature_mask=mask)
    zero_x, zero_z = torch.zeros_like(x), torch.zeros_like(z)
    for example, t in enumerate(target.tolist()):
        exact, _ = brute_force(6, masked_value(x, z, zero_x, zero_z, example, t, scale=0.5))
        np.testing.assert_allclose(got[0][example].numpy(), exact[GROUPS_X], atol=1e-6)


def test_matches_captum_on_the_same_call(sc):
    """Same call as Captum's ShapleyValues (exact) and KernelShap (shapes)."""
    from captum.attr import KernelShap, ShapleyValues

    x, z = (t.float() for t in example_inputs(batch=2, seed=2))
    call = dict(baselines=(torch.full((1, 5), 0.5), 0.0), target=[0, 1],
                additional_forward_args=(2.0,), perturbations_per_eval=6,
                feature_mask=(torch.tensor([GROUPS_X]), torch.tensor([GROUPS_Z])))
    ours = sc.Spex(sparse_model, random_state=0).attribute((x, z), **call)
    exact = ShapleyValues(sparse_model).attribute((x, z), **call)
    with pytest.warns(UserWarning):  # Captum warns about one model per example
        kernel = KernelShap(sparse_model).attribute((x, z), n_samples=64, **call)
    for a, b, k in zip(ours, exact, kernel, strict=True):
        assert a.shape == b.shape == k.shape and a.dtype == k.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_single_tensor_default_mask_and_player_limit(sc):
    x = torch.randn(1, 6, dtype=torch.float64)

    def model(t):
        return (t[:, 0] * t[:, 1] - 2 * t[:, 2] + t[:, 3] * t[:, 4] * t[:, 5]).unsqueeze(1)

    got = sc.Spex(model, random_state=0).attribute(x, target=0)
    assert isinstance(got, torch.Tensor) and got.shape == (1, 6)
    expect, _ = brute_force(6, lambda m: model(x * torch.from_numpy(m))[:, 0].numpy())
    np.testing.assert_allclose(got[0].numpy(), expect, atol=1e-6)
    per_player = sc.Spex(model, random_state=0).attribute(x, target=0, return_input_shape=False)
    np.testing.assert_allclose(per_player.numpy(), got.numpy())
    with pytest.raises(ValueError, match="max_players=5"):
        sc.Spex(model, max_players=5).attribute(x, target=0)


def test_perturbations_per_eval_batches_forward_calls(sc):
    x, z = example_inputs(batch=2, seed=3)
    sizes = []

    def counted(a, b):
        sizes.append(len(a))
        return sparse_model(a, b)[:, 0]

    mask = (torch.tensor([GROUPS_X]), torch.tensor([GROUPS_Z]))
    one = sc.Spex(counted, random_state=0).attribute((x, z), feature_mask=mask)
    calls_one, sizes_one = len(sizes), sizes[:]
    sizes.clear()
    seven = sc.Spex(counted, random_state=0).attribute(
        (x, z), feature_mask=mask, perturbations_per_eval=7)
    for a, b in zip(one, seven, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert set(sizes_one) == {2}  # one perturbation x 2 examples per call
    assert max(sizes) == 14 and all(s % 2 == 0 for s in sizes)
    assert sum(sizes) == sum(sizes_one)  # the same perturbations, fewer calls
    assert len(sizes) == 1 + math.ceil((calls_one - 1) / 7)


def test_scalar_per_batch_is_explained_as_one(sc):
    x, z = example_inputs(batch=3, seed=4)
    mask = (torch.tensor([GROUPS_X]), torch.tensor([GROUPS_Z]))

    def total(a, b):
        return sparse_model(a, b)[:, 0].sum()

    spex = sc.Spex(total, random_state=0)
    got = spex.attribute((x, z), feature_mask=mask)
    assert [t.shape for t in got] == [(1, 5), (1, 3)]
    zero_x, zero_z = torch.zeros_like(x), torch.zeros_like(z)
    exact = sum(brute_force(6, masked_value(x, z, zero_x, zero_z, e, 0))[0] for e in range(3))
    np.testing.assert_allclose(got[0][0].numpy(), exact[GROUPS_X], atol=1e-6)
    with pytest.raises(ValueError, match="perturbations_per_eval must be 1"):
        spex.attribute((x, z), feature_mask=mask, perturbations_per_eval=2)
    with pytest.raises(ValueError, match="cannot differ between examples"):
        spex.attribute((x, z), feature_mask=(torch.tensor([GROUPS_X] * 3),
                                             torch.tensor([GROUPS_Z] * 3)))


def test_per_example_feature_masks(sc):
    """Renumbering the groups of one example leaves its attributions unchanged."""
    x, z = example_inputs(batch=2, seed=5)
    perm = torch.tensor([3, 5, 0, 1, 4, 2])
    gx, gz = torch.tensor(GROUPS_X), torch.tensor(GROUPS_Z)
    mask = (torch.stack([gx, perm[gx]]), torch.stack([gz, perm[gz]]))
    got = sc.Spex(sparse_model, random_state=0).attribute((x, z), target=0, feature_mask=mask)
    same = sc.Spex(sparse_model, random_state=0).attribute(
        (x, z), target=0, feature_mask=(gx[None], gz[None]))
    for a, b in zip(got, same, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_attribute_interactions_recover_the_planted_terms(sc):
    x = torch.ones(2, 4, dtype=torch.float64)
    x[1] *= 2.0

    def model(t):
        return 3.0 * t[:, 0] - t[:, 1] * t[:, 2] + 0.5 * t[:, 0] * t[:, 2] * t[:, 3]

    explanations = sc.Spex(model, random_state=0).attribute_interactions(x)
    assert len(explanations) == 2 and all(e.n == 4 for e in explanations)
    for scale, e in zip((1.0, 2.0), explanations, strict=True):
        moebius = {k: v for k, v in e.moebius().items() if abs(v) > 1e-9}
        expected = {(0,): 3.0 * scale, (1, 2): -scale ** 2, (0, 2, 3): 0.5 * scale ** 3}
        assert moebius.keys() == expected.keys()
        for key, value in expected.items():
            assert moebius[key] == pytest.approx(value, abs=1e-9)
        assert e.metadata["captum_method"] == "Spex"


def test_bad_input_errors(sc):
    x, z = example_inputs(batch=2, seed=6)
    spex = sc.Spex(sparse_model, random_state=0)
    good = (torch.tensor([GROUPS_X]), torch.tensor([GROUPS_Z]))
    with pytest.raises(ValueError, match=r"without gaps; ids \[4\] are missing"):
        spex.attribute((x, z), target=0, feature_mask=(torch.tensor([[0, 1, 1, 2, 3]]),
                                                       torch.tensor([[5, 2, 6]])))
    with pytest.raises(ValueError, match="does not broadcast to input 1"):
        spex.attribute((x, z), target=0, feature_mask=(good[0], torch.tensor([[0, 1]])))
    with pytest.raises(ValueError, match="feature_mask has 1 tensor"):
        spex.attribute((x, z), target=0, feature_mask=good[0])
    with pytest.raises(ValueError, match="integer ids"):
        spex.attribute((x, z), target=0, feature_mask=(good[0].float(), good[1]))
    with pytest.raises(ValueError, match=">= 0"):
        spex.attribute((x, z), target=0, feature_mask=(good[0] - 1, good[1]))
    # 6 players: 16 training plus 16 held-out masks
    with pytest.raises(ValueError, match=r"^n_samples=20 is below the minimum SPEX budget of 32"):
        spex.attribute((x, z), target=0, feature_mask=good, n_samples=20)
    with pytest.raises(ValueError, match="baselines\\[0\\] of shape \\(4,\\)"):
        spex.attribute((x, z), target=0, baselines=(torch.zeros(4), 0.0))
    with pytest.raises(ValueError, match="one scalar per example"):
        spex.attribute((x, z), feature_mask=good)  # (b, 2) outputs and no target
    with pytest.raises(ValueError, match="index must be one of"):
        spex.attribute((x, z), target=0, feature_mask=good, index="sii")
    with pytest.raises(ValueError, match="perturbations_per_eval must be an integer"):
        spex.attribute((x, z), target=0, feature_mask=good, perturbations_per_eval=0)

    def unstable(a, b):
        out = sparse_model(a, b)[:, 0]
        return torch.where(a[:, 0] == 0, torch.nan, out)  # NaN once player 0 is absent

    with pytest.raises(ValueError, match=r"non-finite outputs .* players \[0"):
        sc.Spex(unstable, random_state=0).attribute((x, z), feature_mask=good)


# --- LLM attribution ---------------------------------------------------------------------------

CORPUS = ["Dave lives in Palm Coast, FL and is a lawyer. His personal interests include golf.",
          "The capital of France is Paris, and the battery stopped working after two days.",
          "The movie was not very good but the acting was great."] * 10
TARGET = " playing golf"


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained here in well under a second, with a BOS token."""
    pytest.importorskip("transformers", reason="the LLM tests need transformers")
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=320, min_frequency=1,
                            special_tokens=["<s>", "</s>", "<pad>", "<unk>"], show_progress=False)
    bpe.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def tiny_lm(kind, vocab_size):
    """A tiny randomly initialised causal LM from a Llama or GPT-2 config."""
    import transformers

    torch.manual_seed(0)
    ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, **ids)
        return transformers.LlamaForCausalLM(config).eval()
    config = transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2,
                                     n_positions=128, **ids)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def causal_lm(tokenizer):
    return tiny_lm("llama", len(tokenizer))


def template_input():
    from captum.attr import TextTemplateInput

    return TextTemplateInput("{} lives in {}, {} and is a {}. His personal interests include",
                             values=["Dave", "Palm Coast", "FL", "lawyer"],
                             baselines=["Sarah", "Seattle", "WA", "doctor"])


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_batched_log_probs_equal_captums_unbatched_forward(sc, tokenizer, kind):
    """Our padded batches score each perturbed prompt as Captum's one-prompt forward does."""
    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    causal_lm = tiny_lm(kind, len(tokenizer))
    ours = sc.SpexLLMAttribution(sc.Spex(causal_lm), tokenizer)
    captum = LLMAttribution(FeatureAblation(causal_lm), tokenizer)
    target = torch.tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    words = template_input()  # deletion-free, but prompts of different lengths
    tokens = TextTokenInput("Dave lives in Palm Coast.", tokenizer, skip_tokens=["<s>"],
                            baselines="<unk>")
    rng = np.random.default_rng(0)
    for inp in (words, tokens):
        masks = rng.random((9, inp.n_itp_features)) < 0.5
        masks[0] = True
        got = ours._log_probs(inp, masks, target, batch_size=4)  # (9, 1 + T)
        assert len({len(p) for p in ours._prompts(inp, masks)}) > 1 or inp is tokens
        for row, mask in enumerate(masks):
            perturbed = torch.from_numpy(mask[None]).long()
            by_seq = captum._forward_func(perturbed, inp, target, forward_in_tokens=False)
            np.testing.assert_allclose(got[row], by_seq.reshape(-1).numpy(), atol=1e-5)
        by_tokens = captum._forward_func(torch.from_numpy(masks[1:2]).long(), inp, target,
                                         use_cached_outputs=False)
        np.testing.assert_allclose(got[1], by_tokens.reshape(-1).numpy(), atol=1e-5)


def test_llm_attribution_equals_captums_exact_shapley_values(sc, tokenizer, causal_lm):
    """4 template features: SPEX sees all 16 prompts, so it matches Captum's ShapleyValues."""
    from captum.attr import LLMAttribution, ShapleyValues

    inp = template_input()
    ours = sc.SpexLLMAttribution(sc.Spex(causal_lm, random_state=0), tokenizer).attribute(
        inp, target=TARGET, perturbations_per_eval=5)
    exact = LLMAttribution(ShapleyValues(causal_lm), tokenizer).attribute(
        inp, target=TARGET, forward_in_tokens=False)
    assert isinstance(ours, sc.SpexLLMAttributionResult)
    assert ours.output_tokens == exact.output_tokens and ours.input_tokens == exact.input_tokens
    torch.testing.assert_close(ours.seq_attr, exact.seq_attr, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(ours.token_attr, exact.token_attr, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(ours.token_attr.sum(0), ours.seq_attr, atol=1e-5, rtol=0)
    e = ours.explanation
    assert e.n == 4 and e.n_outputs == 1 + len(ours.output_tokens) and e.n_model_calls == 16
    assert e.metadata["feature_names"] == ["Dave", "Palm Coast", "FL", "lawyer"]
    full = np.exp(e.output(0).predict(np.ones((1, 4), bool)))  # surrogate at the full prompt
    np.testing.assert_allclose(full, ours.output_probs.double().prod().numpy(), rtol=1e-4)


def test_llm_result_plots_and_covers_every_feature(sc, tokenizer, causal_lm):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import TextTemplateInput, TextTokenInput

    grouped = TextTemplateInput("{} {} lives in {}, {}.", values=["Dave", "Smith", "Palm", "FL"],
                                mask=[0, 0, 1, 2])  # "Dave Smith" is one feature
    tokens = TextTokenInput("Dave lives in Palm Coast.", tokenizer, skip_tokens=["<s>"],
                            baselines="<unk>")
    llm = sc.SpexLLMAttribution(sc.Spex(causal_lm, max_order=2, random_state=0), tokenizer,
                                attr_target="prob")
    for inp, n_inputs in ((grouped, 4), (tokens, tokens.n_itp_features)):
        result = llm.attribute(inp, target=TARGET, n_samples=300, perturbations_per_eval=32)
        n_targets = len(result.output_tokens)
        assert result.seq_attr.shape == (n_inputs,) and len(result.input_tokens) == n_inputs
        assert result.token_attr.shape == (n_targets, n_inputs)
        assert torch.isfinite(result.token_attr).all() and (result.seq_attr != 0).all()
        fig, ax = result.plot_token_attr()
        assert len(ax.get_xticklabels()) == n_inputs and len(ax.get_yticklabels()) == n_targets
        fig2, ax2 = result.plot_seq_attr()
        assert len(ax2.get_xticklabels()) == n_inputs
        plt.close(fig)
        plt.close(fig2)
        if inp is grouped:  # "Dave" and "Smith" form one feature: equal attributions
            assert result.seq_attr[0] == result.seq_attr[1]
            assert result.explanation.metadata["feature_names"] == ["Dave Smith", "Palm", "FL"]
    assert result.explanation.n == n_inputs > 4
    pairs = result.interactions("FSII", order=2, output=1)
    names = result.explanation.metadata["feature_names"]
    assert all(names[i] == name for key in pairs for i, name in key)
    assert {len(key) for key in pairs} <= {0, 1, 2} and len(pairs) > n_inputs
    # keys are positional: every interaction of the explanation keeps its own key, repeated
    # words included (13.2: by text alone, two features with the same word were merged)
    assert len(pairs) == len(result.explanation.output(1).interactions("FSII", 2))


@pytest.mark.filterwarnings("ignore:.*Skipping this token:UserWarning",
                            "ignore:Pretty tokens length:UserWarning")  # Captum's token labels
def test_llm_forward_passes_are_batched_and_targets_take_every_form(sc, tokenizer, causal_lm):
    """One forward pass per perturbations_per_eval prompts; target as text, ids or generated."""
    inp = template_input()
    shapes = []
    hook = causal_lm.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    try:
        llm = sc.SpexLLMAttribution(sc.Spex(causal_lm, random_state=0), tokenizer)
        by_text = llm.attribute(inp, target=TARGET, perturbations_per_eval=6)
    finally:
        hook.remove()
    n_targets = len(by_text.output_tokens)
    # 16 distinct prompts in batches of 6, each after one pass over the prompts' shared
    # prefix (then reused through the KV cache), then the unmasked prompt for output_probs
    assert [rows for rows, _ in shapes] == [1, 6, 1, 6, 1, 4, 1]
    assert all(width > n_targets for rows, width in shapes if rows > 1)  # + whole target
    ids = torch.tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    by_ids = llm.attribute(inp, target=ids, perturbations_per_eval=6)
    torch.testing.assert_close(by_ids.token_attr, by_text.token_attr)
    # a user swapping from Captum: token ids as a list, and Captum's own keyword arguments
    by_list = llm.attribute(inp, target=ids.tolist(), perturbations_per_eval=6,
                            use_cached_outputs=False, forward_in_tokens=True)
    torch.testing.assert_close(by_list.token_attr, by_text.token_attr)
    with pytest.raises(TypeError, match="token ids"):
        llm.attribute(inp, target=["playing", "golf"])
    generated = llm.attribute(inp, gen_args={"max_new_tokens": 3, "do_sample": False})
    assert len(generated.output_tokens) == generated.token_attr.shape[0] == 3


def test_llm_interactions_keep_repeated_words_apart(sc, tokenizer, causal_lm):
    from captum.attr import TextTemplateInput

    inp = TextTemplateInput("{} is {} than {} and {} {}", values=["Tom", "taller", "Ann",
                                                                 "taller", "still"])
    llm = sc.SpexLLMAttribution(sc.Spex(causal_lm, random_state=0), tokenizer)
    result = llm.attribute(inp, target=TARGET)
    by_index = result.explanation.output(0).interactions("Moebius", 2)
    by_name = result.interactions("Moebius", 2)
    assert len(by_name) == len(by_index)
    assert {key for key in by_name if len(key) == 1} >= {((1, "taller"),), ((3, "taller"),)}
    assert by_name[((1, "taller"),)] == by_index[(1,)]
    assert by_name[((3, "taller"),)] == by_index[(3,)]


def test_llm_bad_input(sc, tokenizer, causal_lm):
    from captum.attr import FeatureAblation

    inp = template_input()
    llm = sc.SpexLLMAttribution(causal_lm, tokenizer)
    with pytest.raises(TypeError, match="Captum's own methods go to LLMAttribution"):
        sc.SpexLLMAttribution(FeatureAblation(causal_lm), tokenizer)
    with pytest.raises(ValueError, match="attr_target"):
        sc.SpexLLMAttribution(causal_lm, tokenizer, attr_target="logit")
    with pytest.raises(ValueError, match="num_trials must be 1"):
        llm.attribute(inp, target=TARGET, num_trials=3)
    with pytest.raises(TypeError, match="supports TextTemplateInput, TextTokenInput"):
        llm.attribute("Dave lives in Palm Coast", target=TARGET)
    with pytest.raises(ValueError, match="below the minimum SPEX budget"):
        llm.attribute(inp, target=TARGET, n_samples=5)
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        llm.attribute(inp, target=TARGET, perturbations_per_eval=0)


def test_default_budget_is_affordable_and_announced(sc, monkeypatch):
    """13.5: n_samples=None meant b = 8 (21,424 prompts for 23 features); now about 1,000,
    and the progress bar knows the total before the first model call."""
    from spex_plugins.core.settings import DEFAULT_BUDGET
    from spex_plugins.runtime import evaluation

    announced = []
    monkeypatch.setattr(evaluation, "_progress_bar",
                        lambda total, desc: announced.append(total))
    x = torch.randn(2, 23, generator=torch.Generator().manual_seed(0))

    def model(z):
        return z[:, 0] * z[:, 1] + z[:, 2:].sum(1)

    spex = sc.Spex(model, random_state=0)
    explanations = spex.attribute_interactions(x, show_progress=True)
    calls = explanations[0].n_model_calls
    assert announced == [calls] and calls <= max(DEFAULT_BUDGET, spex.spex.min_budget(23))


def test_an_example_is_explained_alike_alone_and_in_a_batch(sc):
    """Issue 13.1: masks are shared across a batch, the choice of surrogate is per example."""
    g = torch.Generator().manual_seed(11)
    images = torch.rand(6, 1, 6, 6, generator=g, dtype=torch.float64)
    weights = torch.randn(36, generator=g, dtype=torch.float64)

    def dense(img):  # every pixel interacts through the tanh: selection and refit matter
        flat = img.flatten(1)
        return torch.tanh(flat @ weights / 3) + flat[:, 0] * flat[:, 7]

    spex = sc.Spex(dense, random_state=0)
    together = spex.attribute(images, n_samples=400)
    for example in (0, 3):
        alone = spex.attribute(images[example:example + 1], n_samples=400)
        torch.testing.assert_close(together[example:example + 1], alone, atol=1e-9, rtol=0)
    # and the attributions are efficient per example
    full = dense(images)
    empty = dense(torch.zeros_like(images))
    torch.testing.assert_close(together.flatten(1).sum(1), full - empty, atol=1e-8, rtol=0)
