"""LLM batching benchmark: perturbed-prompt throughput of SpexLLMAttribution vs Captum's path.

Captum's ``LLMAttribution`` evaluates one perturbed prompt per forward call (its forward
rejects ``perturbations_per_eval > 1``), token by token by default (``forward_in_tokens=True``)
or with the whole target in one pass (``forward_in_tokens=False``). ``SpexLLMAttribution``
scores ``perturbations_per_eval`` perturbed prompts per teacher-forced forward pass.

All methods run in one process on the same tiny randomly initialised causal LM (Llama config,
offline byte-level BPE tokenizer trained here) and the same prompts and target:

- Captum ``FeatureAblation`` and ``ShapleyValueSampling`` through ``LLMAttribution``, in both
  forward modes;
- ``SpexLLMAttribution`` with ``perturbations_per_eval`` = 1 (unbatched) and the batch sizes
  given.

Throughput = perturbed prompts evaluated / time of the ``attribute`` call (SPEX's own sampling
and decoding included), from wall time and from process CPU time (steadier on a shared
machine; torch runs one intra-op thread by default here). Prompts are counted from the calls
to the input's ``to_model_input`` (Captum builds one prompt per call) and from SPEX's distinct
masks (+1 for the unmasked prompt). Run:

    .venv/bin/python benchmarks/llm_batching.py --out benchmarks/results/llm_batching.json
    .venv/bin/python benchmarks/llm_batching.py --hidden 256 --layers 4 --batch 16 64
"""

from __future__ import annotations

import argparse
import json
import platform
import time

CORPUS = [
    "Dave lives in Palm Coast, FL and is a lawyer. His personal interests include golf.",
    "The battery stopped working after two days, and support never answered my emails.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "The movie was not very good but the acting was great, and the music was lovely.",
]
PROMPTS = [
    "Dave lives in Palm Coast, FL and is a lawyer. His personal interests include",
    "The battery stopped working after two days, and support never answered my",
]
TARGET = " playing golf and reading emails."


def build(hidden: int, layers: int, seed: int = 0):
    """(tokenizer, model): a local byte-level BPE tokenizer and a random Llama from a config."""
    from spex_plugins.models import tiny_causal_lm

    return tiny_causal_lm(CORPUS, hidden=hidden, layers=layers, seed=seed)


def counted(inp):
    """Count the perturbed prompts Captum builds (one ``to_model_input`` call each)."""
    inner = inp.to_model_input
    calls = [0]

    def to_model_input(perturbed_tensor=None):
        calls[0] += 1
        return inner(perturbed_tensor)

    inp.to_model_input = to_model_input
    return calls


def run_captum(model, tokenizer, text, method, forward_in_tokens, svs_samples):
    from captum.attr import (
        FeatureAblation,
        LLMAttribution,
        ShapleyValueSampling,
        TextTokenInput,
    )

    inp = TextTokenInput(text, tokenizer, skip_tokens=["<s>"], baselines="<unk>")
    calls = counted(inp)
    if method == "FeatureAblation":
        llm, extra = LLMAttribution(FeatureAblation(model), tokenizer), {}
    else:
        llm = LLMAttribution(ShapleyValueSampling(model), tokenizer)
        extra = {"n_samples": svs_samples}
    began, cpu = time.perf_counter(), time.process_time()
    llm.attribute(inp, target=TARGET, forward_in_tokens=forward_in_tokens, **extra)
    return (calls[0], time.perf_counter() - began, time.process_time() - cpu,
            inp.n_itp_features)


def run_spex(model, tokenizer, text, batch, budget):
    from captum.attr import TextTokenInput

    from spex_plugins.captum import Spex, SpexLLMAttribution

    inp = TextTokenInput(text, tokenizer, skip_tokens=["<s>"], baselines="<unk>")
    llm = SpexLLMAttribution(Spex(model, random_state=0), tokenizer)
    began, cpu = time.perf_counter(), time.process_time()
    result = llm.attribute(inp, target=TARGET, n_samples=budget, perturbations_per_eval=batch)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    return result.explanation.n_model_calls + 1, wall, cpu, inp.n_itp_features


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the random Llama")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32, 128],
                        help="perturbations_per_eval values for SPEX (1 is always run)")
    parser.add_argument("--budget", type=int, default=2000, help="SPEX n_samples")
    parser.add_argument("--svs-samples", type=int, default=30,
                        help="ShapleyValueSampling permutations (n_samples)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is stable on a shared CPU)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    tokenizer, model = build(args.hidden, args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    target_len = len(tokenizer.encode(TARGET, add_special_tokens=False))
    print(f"random Llama: hidden {args.hidden}, {args.layers} layers, {n_params:,} parameters; "
          f"{args.threads} torch thread(s); target {target_len} tokens")
    with torch.inference_mode():  # warm-up: the first forward passes are slow
        model(input_ids=torch.ones((4, 32), dtype=torch.long))

    runs = []
    for text in PROMPTS:
        cases = [("captum FeatureAblation, tokens", lambda t=text: run_captum(
                     model, tokenizer, t, "FeatureAblation", True, 0)),
                 ("captum FeatureAblation, seq", lambda t=text: run_captum(
                     model, tokenizer, t, "FeatureAblation", False, 0)),
                 ("captum ShapleyValueSampling, tokens", lambda t=text: run_captum(
                     model, tokenizer, t, "ShapleyValueSampling", True, args.svs_samples)),
                 ("captum ShapleyValueSampling, seq", lambda t=text: run_captum(
                     model, tokenizer, t, "ShapleyValueSampling", False, args.svs_samples))]
        for batch in [1, *args.batch]:
            cases.append((f"SPEX, perturbations_per_eval={batch}", lambda t=text, b=batch: run_spex(
                model, tokenizer, t, b, args.budget)))
        for name, case in cases:
            prompts, wall, cpu, n = case()
            runs.append({"prompt": text, "n_features": n, "method": name, "prompts": prompts,
                         "wall_s": wall, "cpu_s": cpu})
            print(f"  n={n:3d}  {name:40s} {prompts:6d} prompts {wall:8.2f} s wall "
                  f"{cpu:8.2f} s CPU  {prompts / cpu:8.1f} prompts/CPU-s", flush=True)

    def throughput(method: str, clock: str) -> float:
        rows = [r for r in runs if r["method"] == method]
        return sum(r["prompts"] for r in rows) / sum(r[clock] for r in rows)

    methods = list(dict.fromkeys(r["method"] for r in runs))
    best = max((m for m in methods if m.startswith("SPEX")), key=lambda m: throughput(m, "cpu_s"))
    print(f"\nthroughput over {len(PROMPTS)} prompts (prompts per CPU-second and per wall-second)"
          f" and the ratio {best} / method:")
    summary = []
    for method in methods:
        cpu, wall = throughput(method, "cpu_s"), throughput(method, "wall_s")
        ratio_cpu = throughput(best, "cpu_s") / cpu
        ratio_wall = throughput(best, "wall_s") / wall
        summary.append({"method": method, "prompts_per_cpu_s": cpu, "prompts_per_wall_s": wall,
                        "ratio_cpu": ratio_cpu, "ratio_wall": ratio_wall})
        print(f"  {method:40s} {cpu:8.1f} /CPU-s {wall:8.1f} /s   x{ratio_cpu:.1f} CPU, "
              f"x{ratio_wall:.1f} wall")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"settings": vars(args), "model_parameters": n_params,
                       "target_tokens": target_len, "machine": platform.platform(),
                       "date": time.strftime("%Y-%m-%d"), "runs": runs, "summary": summary},
                      handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
