"""Core speed benchmark: spex-plugins SPEX (hard / soft) against shapiq's SPEX.

Synthetic sparse function (100 Fourier terms of degree <= 5, seeded per n), b = 8, t = 5, C = 3.
Every (method, n) runs in a fresh Python process and explains the function twice:

- cold: first explanation in the fresh process, imports and any JIT compilation included;
- warm: a second explanation in the same process.

"Own work" is wall time minus the time spent inside the value function. R^2 is measured on
2,000 held-out uniform random masks. Run:

    .venv/bin/python benchmarks/core_speed.py                 # n = 100, 1000, 4000
    .venv/bin/python benchmarks/core_speed.py --n 100 1000 --methods spex-soft shapiq-spex
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

METHODS = ("spex-hard", "spex-soft", "shapiq-spex")
N_TERMS, DEGREE, B, T, GROUPS, N_TEST = 100, 5, 8, 5, 3, 2000


def synthetic(n: int, noise: float = 0.0):
    """(value_function, test_masks, test_values) for the seeded sparse function at n.

    With ``noise`` > 0 the value function adds Gaussian noise of that standard deviation to
    every answer; the held-out test values stay noiseless (R^2 against the true function).
    """
    import numpy as np

    rng = np.random.default_rng(n)
    support = np.full((N_TERMS, DEGREE), -1)
    for row in support:
        d = rng.integers(1, DEGREE + 1)
        row[:d] = np.sort(rng.choice(n, d, replace=False))
    coefficients = rng.normal(size=N_TERMS)

    def clean(masks):
        x = np.concatenate([np.asarray(masks, bool), np.zeros((len(masks), 1), bool)], axis=1)
        parity = np.bitwise_xor.reduce(x[:, support], axis=2)
        return (1.0 - 2.0 * parity) @ coefficients

    noise_rng = np.random.default_rng(20_000 + n)

    def value_function(masks):
        out = clean(masks)
        return out + noise * noise_rng.normal(size=len(out)) if noise > 0 else out

    test = np.random.default_rng(10_000 + n).random((N_TEST, n)) < 0.5
    return value_function, test, clean(test)


def _run_ours(decoder, n, value_function, test, truth):
    from spex_plugins import SPEX
    from spex_plugins.comparison import r2_score

    explanation = SPEX(max_order=T, n_groups=GROUPS, b=B, decoder=decoder,
                       random_state=0).explain(value_function, n, progress=False)
    return explanation.n_model_calls, r2_score(truth, explanation.predict(test))


def _run_shapiq(n, value_function, test, truth):
    from spex_plugins.comparison import run_peer
    from spex_plugins.core.sampler import n_shifts

    # shapiq's SPEX at the same design size; its Möbius transform is the surrogate
    result = run_peer("shapiq-spex", value_function, n, GROUPS * n_shifts(n, T) * 2 ** B,
                      seed=0, options={"degree_parameter": T})
    if not result.ok:
        raise RuntimeError(f"shapiq-spex: {result.status}: {result.reason}")
    return result.calls, result.r2(test, truth)


def worker(method: str, n: int, noise: float = 0.0) -> dict:
    """Cold then warm explanation in this (fresh) process; returns the measurements."""
    began = time.perf_counter()
    value_function, test, truth = synthetic(n, noise)
    spent = [0.0]

    def timed(masks):
        start = time.perf_counter()
        out = value_function(masks)
        spent[0] += time.perf_counter() - start
        return out

    rows = {}
    for phase in ("cold", "warm"):
        spent[0] = 0.0
        start = time.perf_counter()
        if method == "shapiq-spex":
            calls, r2 = _run_shapiq(n, timed, test, truth)
        else:
            calls, r2 = _run_ours(method.split("-")[1], n, timed, test, truth)
        wall = time.perf_counter() - start
        if phase == "cold":  # plus interpreter start-up to here (imports); setup is not in wall
            wall += began - _PROCESS_START
        rows[phase] = {"own_s": wall - spent[0], "model_s": spent[0], "calls": int(calls),
                       "r2": r2}
    return {"method": method, "n": n, "noise": noise, **rows}


_PROCESS_START = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 4000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="Gaussian noise sd added to every model answer (default 0)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.noise)))
        return
    results = []
    for n in args.n:
        for method in args.methods:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, str(n),
                   "--noise", str(args.noise)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                      check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                row = {"method": method, "n": n, "timeout_s": args.timeout}
            except subprocess.CalledProcessError as err:
                row = {"method": method, "n": n, "error": err.stderr.strip()[-500:]}
            results.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(table(results))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


def table(results: list[dict]) -> str:
    """Markdown table with ratios against shapiq's SPEX at the same n."""
    lines = ["| n | method | model calls | cold own work (s) | warm own work (s) | R^2 "
             "| shapiq / this, warm | shapiq / this, cold |",
             "|---|---|---|---|---|---|---|---|"]
    peer = {r["n"]: r for r in results if r["method"] == "shapiq-spex" and "warm" in r}
    for r in results:
        if "warm" not in r:
            reason = f"timeout {r['timeout_s']:.0f} s" if "timeout_s" in r else "error"
            lines.append(f"| {r['n']} | {r['method']} | - | {reason} | - | - | - | - |")
            continue
        p = peer.get(r["n"])
        warm_ratio = cold_ratio = "-"
        if p is not None and r["method"] != "shapiq-spex":
            warm_ratio = f"{p['warm']['own_s'] / r['warm']['own_s']:.0f}x"
            cold_ratio = f"{p['cold']['own_s'] / r['cold']['own_s']:.1f}x"
        lines.append(
            f"| {r['n']} | {r['method']} | {r['warm']['calls']} | {r['cold']['own_s']:.2f} | "
            f"{r['warm']['own_s']:.2f} | {r['warm']['r2']:.4f} | {warm_ratio} | {cold_ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
