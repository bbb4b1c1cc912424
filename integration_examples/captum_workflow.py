"""Captum workflows with SPEX: an image classifier with superpixels, and a tiny causal LM.

1. Image: a small CNN trained here on scikit-learn's digits (upsampled to 16 x 16), one test
   digit explained with 2 x 2 superpixels as players (``feature_mask``, 64 players).
   ``Spex`` against Captum's ``KernelShap``, ``ShapleyValueSampling`` and ``Lime``.
2. LLM: a randomly initialised Llama built from a config, with a byte-level BPE tokenizer
   trained here (offline); a ``TextTokenInput`` prompt and a fixed target continuation.
   ``SpexLLMAttribution`` against Captum's ``LLMAttribution`` with the same three methods.

Each comparison uses the same number of forward calls (SPEX's distinct masks; Shapley value
sampling gets that many divided by the number of players, in permutations) and reports wall
time and faithfulness: R^2 of each method's surrogate on held-out uniformly random masks.
SPEX's surrogate is its sparse Fourier spectrum; the others are additive,
``c + sum of kept players' attributions``, with the offset c fitted on the held-out masks
(which favours them). Run:

    .venv/bin/python integration_examples/captum_workflow.py            # about 2-4 minutes
    .venv/bin/python integration_examples/captum_workflow.py --quick    # smaller budgets
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

CORPUS = [
    "Dave lives in Palm Coast, FL and is a lawyer. His personal interests include golf.",
    "The battery stopped working after two days, and support never answered my emails.",
    "The movie was not very good but the acting was great, and the music was lovely.",
]
PROMPT = "The movie was not very good but the acting was great, and"
TARGET = " the music was lovely."


def r2(truth: np.ndarray, prediction: np.ndarray) -> float:
    return float(1.0 - np.sum((truth - prediction) ** 2) / np.sum((truth - truth.mean()) ** 2))


def additive_r2(attributions: np.ndarray, masks: np.ndarray, truth: np.ndarray) -> float:
    """R^2 of ``c + masks @ attributions`` with the best offset c."""
    linear = masks.astype(float) @ attributions
    return r2(truth, linear + np.mean(truth - linear))


def strongest_pairs(explanation, k: int = 3) -> list[tuple[tuple[int, ...], float]]:
    """The ``k`` largest order-2 FSII interactions of output 0."""
    values = explanation.output(0).interactions("FSII", 2)
    pairs = [(key, float(v)) for key, v in values.items() if len(key) == 2]
    return sorted(pairs, key=lambda kv: -abs(kv[1]))[:k]


def report(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'method':28s} {'forward calls':>13s} {'wall (s)':>9s} {'R^2 held-out':>13s}")
    for row in rows:
        print(f"  {row['method']:28s} {row['calls']:13,d} {row['wall']:9.2f} {row['r2']:13.3f}")


# --- 1. image classifier with superpixels ------------------------------------------------------

def train_digits_cnn(torch, seed: int = 0):
    """(model, test images (m, 1, 16, 16)): a small CNN on upsampled sklearn digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear")
    labels = torch.tensor(digits.target)
    torch.manual_seed(seed)
    order = torch.randperm(len(images))
    train, test = order[:1500], order[1500:]
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 16, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for batch in train[torch.randperm(len(train))].split(64):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    print(f"digits CNN: test accuracy {accuracy:.3f}")
    return model, images[test]


def image_workflow(torch, max_order: int, budget: int, n_test: int) -> list[dict]:
    from captum.attr import KernelShap, Lime, ShapleyValueSampling

    from spex_plugins.captum import Spex

    model, test_images = train_digits_cnn(torch)
    image = test_images[:1]
    with torch.no_grad():
        target = int(model(image).argmax())
    cells = torch.arange(16) // 2
    feature_mask = (cells[:, None] * 8 + cells[None, :])[None, None]  # (1, 1, 16, 16), 64 ids
    n = 64

    rng = np.random.default_rng(1)
    held_out = rng.random((n_test, n)) < 0.5
    with torch.no_grad():
        kept = torch.from_numpy(held_out)[:, feature_mask.reshape(-1)].reshape(-1, 1, 16, 16)
        truth = model(image * kept)[:, target].double().numpy()  # baseline 0 = blank

    call = dict(target=target, feature_mask=feature_mask, perturbations_per_eval=64)
    rows = []
    began = time.perf_counter()
    spex = Spex(model, max_order=max_order, random_state=0)
    explanation = spex.attribute_interactions(image, n_samples=budget, **call)[0]
    calls = explanation.n_model_calls
    rows.append({"method": f"Spex (t={max_order})", "calls": calls,
                 "wall": time.perf_counter() - began,
                 "r2": r2(truth, explanation.predict(held_out))})
    print("  strongest superpixel pairs (FSII):",
          ", ".join(f"{k}: {v:+.3f}" for k, v in strongest_pairs(explanation)))

    for name, method, extra, used in comparisons(KernelShap, Lime, ShapleyValueSampling,
                                                 model, calls, n):
        started = time.perf_counter()
        attr = method.attribute(image, **call, **extra)  # input-shaped, as Spex.attribute
        wall = time.perf_counter() - started
        values = np.zeros(n)
        values[feature_mask.reshape(-1).numpy()] = attr.reshape(-1).double().numpy()
        rows.append({"method": f"Captum {name}", "calls": used, "wall": wall,
                     "r2": additive_r2(values, held_out, truth)})
    return rows


def comparisons(kernel_shap, lime, sampling, model, calls: int, n: int):
    """(name, method, attribute keywords, forward calls) at ``calls`` forward calls."""
    permutations = max(1, calls // n)
    return (("KernelShap", kernel_shap(model), {"n_samples": calls}, calls),
            ("Lime", lime(model), {"n_samples": calls}, calls),
            ("ShapleyValueSampling", sampling(model), {"n_samples": permutations},
             1 + permutations * n))


# --- 2. causal LM ------------------------------------------------------------------------------

def llm_workflow(torch, max_order: int, budget: int, n_test: int) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    from captum.attr import (
        KernelShap,
        Lime,
        LLMAttribution,
        ShapleyValueSampling,
        TextTokenInput,
    )

    from spex_plugins.captum import Spex, SpexLLMAttribution
    from spex_plugins.models import tiny_causal_lm
    from spex_plugins.models.llm import teacher_forced_log_probs

    tokenizer, model = tiny_causal_lm(CORPUS, hidden=64, layers=2, seed=0)
    inp = TextTokenInput(PROMPT, tokenizer, skip_tokens=["<s>"], baselines="<unk>")
    n = inp.n_itp_features
    target_ids = torch.tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    print(f"\ntiny Llama ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{n} prompt tokens as players, target {len(target_ids)} tokens")

    held_out = np.random.default_rng(2).random((n_test, n)) < 0.5
    prompts = list(inp.to_model_input(torch.from_numpy(held_out).long()))
    truth = teacher_forced_log_probs(model, prompts, target_ids, batch_size=64).numpy()

    rows = []
    began = time.perf_counter()
    result = SpexLLMAttribution(Spex(model, max_order=max_order, random_state=0),
                                tokenizer).attribute(inp, target=TARGET, n_samples=budget,
                                                     perturbations_per_eval=32)
    explanation = result.explanation
    calls = explanation.n_model_calls
    rows.append({"method": f"SpexLLMAttribution (t={max_order})", "calls": calls,
                 "wall": time.perf_counter() - began,
                 "r2": r2(truth, explanation.output(0).predict(held_out))})
    names = explanation.metadata["feature_names"]
    print("  strongest token pairs (FSII):", ", ".join(
        f"{tuple(names[i] for i in k)}: {v:+.3f}" for k, v in strongest_pairs(explanation)))
    figure = os.path.join(os.environ.get("TMPDIR", "/tmp"), "spex_token_attr.png")
    result.plot_token_attr()[0].savefig(figure)
    print(f"  token attribution heatmap (Captum's plot_token_attr): {figure}")

    for name, method, extra, used in comparisons(KernelShap, Lime, ShapleyValueSampling,
                                                 model, calls, n):
        started = time.perf_counter()
        attr = LLMAttribution(method, tokenizer).attribute(
            inp, target=TARGET, forward_in_tokens=False, **extra)
        rows.append({"method": f"Captum {name}", "calls": used,
                     "wall": time.perf_counter() - started,
                     "r2": additive_r2(attr.seq_attr.double().numpy(), held_out, truth)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller budgets (about 1 minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    image_budget, llm_budget, n_test = (720, 600, 300) if args.quick else (4224, 1824, 1000)
    image_order, llm_order = (2, 2) if args.quick else (3, 3)
    report("image (64 superpixels), logit of the predicted class",
           image_workflow(torch, image_order, image_budget, n_test))
    report("causal LM, log p(target | prompt)",
           llm_workflow(torch, llm_order, llm_budget, n_test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
