"""Command line (``spex-plugins``, also ``python -m spex_plugins``).

- ``spex-plugins demo``: explain all-MiniLM-L6-v2 (offline) on a built-in product review, compare
  SPEX with SHAP / Captum / shapiq at the same number of model calls and write an HTML report.
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

TASKS = ("classify", "generate", "embed")


def demo(args: argparse.Namespace) -> int:
    from .app.demo import DemoSettings, run_demo

    settings = DemoSettings(quick=args.quick, max_order=args.max_order, b=args.b,
                            n_test=args.test, seed=args.seed, out=args.out, cache=args.cache,
                            use_cache=not args.no_cache, progress=not args.quiet)
    run_demo(settings)
    return 0


def load_model(name: str, task: str):
    """(model, tokenizer) for ``task`` from a hub name or a local folder (``from_pretrained``)."""
    import transformers

    classes = {"classify": transformers.AutoModelForSequenceClassification,
               "generate": transformers.AutoModelForCausalLM,
               "embed": transformers.AutoModel}
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    model = classes[task].from_pretrained(name)
    if task == "generate" and tokenizer.pad_token_id is None:
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
                                  device=args.device)
    if args.task == "generate":
        return CausalLMLogProb(model, tokenizer, text, target=args.target,
                               granularity=args.granularity, mask_token=mask,
                               device=args.device)
    return EmbeddingSimilarity(model, tokenizer, text, reference=args.target,
                               granularity=args.granularity, mask_token=mask,
                               device=args.device)


def rebuild_value_function(args: argparse.Namespace, text: str):
    """``explain``'s value function, built again where it runs (the factory of ``--ray``)."""
    model, tokenizer = load_model(args.model, args.task)
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
    from .app.report import top_interactions, write_report
    from .models import CachedValueFunction, default_cache_dir

    if args.file:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = args.text
    began = time.perf_counter()
    model, tokenizer = load_model(args.model, args.task)
    here = argparse.Namespace(**{**vars(args), "device": "cpu"}) if args.ray else args
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
    what = {"classify": f"class {getattr(value, 'label', '')} ({args.task})",
            "generate": f"log p({getattr(value, 'target_text', '')!r} | prompt)",
            "embed": "cosine similarity to " + (repr(args.target) if args.target
                                                 else "the unmasked text")}[args.task]
    print(f"explaining {what} of {args.model}: n = {n} {args.granularity}s", flush=True)
    explanation = SPEX(max_order=args.max_order, random_state=args.seed).explain(
        f, n, budget=args.budget, batch_size=64, progress=not args.quiet)
    test = np.random.default_rng(args.seed + 1).random((args.test, n)) < 0.5
    r2 = explanation.r2(test, np.asarray(f(test), dtype=np.float64)) if args.test else None
    print(f"{explanation.n_model_calls:,} model calls, b = {explanation.metadata['b']}"
          + (f", held-out R^2 = {r2:.3f}" if r2 is not None else ""))
    print("top interactions (Moebius):")
    for subset, v in top_interactions(explanation, 10):
        print(f"  {v:+.4f}  " + " + ".join(f"[{i}] {value.features[i]}" for i in subset))
    wall = time.perf_counter() - began
    details = {"model": args.model, "task": args.task, "output": what,
               "features": f"{n} {args.granularity}s",
               "SPEX": f"max_order={args.max_order}, b={explanation.metadata['b']}, "
                       f"{explanation.n_model_calls:,} model calls",
               "wall time": f"{wall:.1f} s", "cache": path or "off"}
    if args.ray:
        details["Ray"] = f"{args.ray} actors"
    if r2 is not None:
        details["held-out R^2"] = f"{r2:.3f} on {args.test} uniform random masks"
    write_report(args.out, explanation, value.features, title=f"SPEX explanation: {args.model}",
                 text=value.text, spans=value.spans, details=details)
    print(f"HTML report: {os.path.abspath(args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spex-plugins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("demo", help="explain all-MiniLM-L6-v2 on a built-in review")
    run.add_argument("--quick", action="store_true",
                     help="sentence features, small budget, fast baselines only")
    run.add_argument("--max-order", type=int, default=3, help="SPEX max_order (default 3)")
    run.add_argument("--b", type=int, default=3, help="log2 bins per group (default 3)")
    run.add_argument("--test", type=int, default=200, help="held-out masks for R^2")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="spex_demo_report.html", help="HTML report path")
    run.add_argument("--cache", default=None, help="cache file (default: user cache folder)")
    run.add_argument("--no-cache", action="store_true", help="do not cache model outputs")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=demo)

    ex = commands.add_parser("explain", help="explain your own Hugging Face model on a text")
    ex.add_argument("--model", required=True, help="hub name or local folder")
    source = ex.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to explain")
    source.add_argument("--file", help="read the text from this file")
    ex.add_argument("--task", choices=TASKS, default="classify")
    ex.add_argument("--granularity", choices=("word", "sentence", "token"), default="word")
    ex.add_argument("--budget", type=int, default=None, help="model calls (default: b = 8)")
    ex.add_argument("--max-order", type=int, default=3)
    ex.add_argument("--target", default=None,
                    help="classify: class index or label (default: predicted); generate: the "
                         "continuation (default: greedy answer); embed: a reference text")
    ex.add_argument("--mask-token", default=None,
                    help="replace masked tokens by this token (default: classify [MASK] when "
                         "the tokenizer has one; generate/embed: deletion); 'none' deletes")
    ex.add_argument("--device", default=None, help="torch device (default: CUDA if present)")
    ex.add_argument("--ray", type=int, default=0, metavar="ACTORS",
                    help="evaluate on this many Ray actors, each loading the model (one GPU "
                         "each when the Ray cluster has GPUs; this process keeps a CPU copy "
                         "for the features and the target); needs spex-plugins[ray]")
    ex.add_argument("--test", type=int, default=200, help="held-out masks for R^2 (0: none)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", default="spex_report.html", help="HTML report path")
    ex.add_argument("--cache", default=None, help="cache file (default: user cache folder)")
    ex.add_argument("--no-cache", action="store_true")
    ex.add_argument("--quiet", action="store_true")
    ex.set_defaults(handler=explain)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
