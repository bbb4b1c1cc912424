"""Tests for ``spex_plugins.core.proxy``.

The spectrum of a booster is checked against the brute-force Walsh-Hadamard transform of
``booster.predict`` on all 2^n masks, ``F(k) = 2^-n sum_x f(x) (-1)^<x,k>``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")

from spex_plugins.core import proxy  # noqa: E402
from spex_plugins.core.proxy import (  # noqa: E402
    MIN_ROWS,
    PROXY_MISSING,
    ProxyFit,
    fit_proxy,
    proxy_available,
    tree_spectrum,
)

ATOL = 1e-9
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def all_masks(n):
    """All 2^n masks, row x holding the bits of the integer x (feature i = bit i)."""
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)


def wht(table):
    """Dense ``F(k) = 2^-n sum_x f(x) (-1)^<x,k>`` of a table indexed like ``all_masks``."""
    a = np.array(table, dtype=np.float64)
    n = a.size.bit_length() - 1
    for i in range(n):
        a = a.reshape(-1, 2, 2**i)
        a = np.concatenate([a[:, :1] + a[:, 1:], a[:, :1] - a[:, 1:]], axis=1)
    return a.ravel() / 2**n


def dense(locations, values, n):
    """A sparse spectrum as a dense vector indexed by the bits of k."""
    index = np.where(locations >= 0, 2 ** np.maximum(locations, 0), 0).sum(axis=1)
    assert len(np.unique(index)) == len(index), "rows are not unique"
    out = np.zeros(2**n)
    out[index] = values
    return out


def surrogate(masks, locations, values):
    """``sum_k F(k) (-1)^<x,k>`` evaluated directly from the definition."""
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros(len(masks))
    for row, value in zip(locations, values, strict=True):
        features = row[row >= 0]
        parity = masks[:, features].sum(axis=1) % 2
        out += value * (1 - 2 * parity)
    return out


def degrees(locations):
    return np.count_nonzero(locations >= 0, axis=1)


def check_canonical(locations, values):
    assert locations.dtype == np.int64 and values.dtype == np.float64
    assert locations.ndim == 2 and locations.shape[1] >= 1 and values.shape == (len(locations),)
    assert np.all(values != 0)
    for row in locations:
        kept = row[row >= 0]
        assert np.all(np.diff(kept) > 0), "features not sorted"
        assert np.all(row[len(kept) :] == -1), "padding not on the right"
    if len(locations):
        assert degrees(locations).max() == locations.shape[1] or locations.shape[1] == 1


def random_function(n, seed):
    """A random function of bool masks with singletons, pairs and triples (AND terms)."""
    rng = np.random.default_rng(seed)
    terms = [(rng.normal(), rng.choice(n, size=rng.integers(1, 4), replace=False))
             for _ in range(2 * n)]

    def f(x):
        x = np.asarray(x, dtype=float)
        return sum(c * np.prod(x[:, idx], axis=1) for c, idx in terms)

    return f


def train(masks, y, rounds=30, *, categorical=None, **params):
    settings = {
        "objective": "regression",
        "num_leaves": 16,
        "min_data_in_leaf": 3,
        "learning_rate": 0.3,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
        "seed": 0,
    }
    settings.update(params)
    data = lgb.Dataset(
        np.asarray(masks, dtype=float), y, categorical_feature=categorical or "auto",
        params=settings,
    )
    return lgb.train(settings, data, num_boost_round=rounds)


def brute_force(booster, n, **predict):
    return wht(booster.predict(all_masks(n).astype(float), **predict))


def random_booster(n, seed, m=600, rounds=30, **params):
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n)) < 0.5
    y = random_function(n, seed)(masks) + 0.05 * rng.normal(size=m)
    return train(masks, y, rounds, **params)


# --------------------------------------------------------------------------------------------
# tree_spectrum
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [6, 10, 12])
def test_tree_spectrum_is_exact(n):
    booster = random_booster(n, seed=n)
    locations, values = tree_spectrum(booster, n)
    check_canonical(locations, values)
    assert degrees(locations).max() > 1  # interactions were learned
    np.testing.assert_allclose(dense(locations, values, n), brute_force(booster, n), atol=ATOL)


@pytest.mark.parametrize("max_degree", [0, 1, 2, 3])
def test_max_degree_restricts_the_spectrum(max_degree):
    n = 10
    booster = random_booster(n, seed=3, max_depth=6)
    locations, values = tree_spectrum(booster, n, max_degree=max_degree)
    check_canonical(locations, values)
    assert degrees(locations).max() <= max_degree
    assert locations.shape[1] == max(1, max_degree)
    expected = brute_force(booster, n)
    popcount = np.array([bin(k).count("1") for k in range(2**n)])
    expected[popcount > max_degree] = 0.0
    np.testing.assert_allclose(dense(locations, values, n), expected, atol=ATOL)


def _paths_with_repeats(node, seen=()):
    if "split_feature" not in node:
        return 0
    here = int(node["split_feature"]) in seen
    below = (node["split_feature"], *seen)
    return here + _paths_with_repeats(node["left_child"], below) + _paths_with_repeats(
        node["right_child"], below
    )


def test_feature_repeated_on_a_path():
    # Trained on values {-1, 0, 0.3, 0.7, 1, 2}: the trees split one feature at several
    # thresholds along a path. On 0/1 masks some of those splits separate 0 from 1 again
    # (a repeat), others send both values the same way (no condition at all).
    n = 3
    rng = np.random.default_rng(7)
    levels = np.array([-1.0, 0.0, 0.3, 0.7, 1.0, 2.0])
    data = levels[rng.integers(0, len(levels), size=(2000, n))]
    y = np.sin(3 * data[:, 0]) + data[:, 1] * data[:, 2] + np.cos(2 * data[:, 1])
    booster = train(data, y, rounds=20, num_leaves=31, min_data_in_leaf=1)
    trees = booster.dump_model()["tree_info"]
    assert sum(_paths_with_repeats(t["tree_structure"]) for t in trees) > 0
    locations, values = tree_spectrum(booster, n)
    np.testing.assert_allclose(dense(locations, values, n), brute_force(booster, n), atol=ATOL)


def test_sign_convention_single_feature():
    # f(x) = x_3: feature 3 kept gives 1, masked gives 0 -> F(∅) = 1/2, F({3}) = -1/2.
    n = 5
    masks = all_masks(n)
    y = masks[:, 3].astype(float)
    booster = train(masks, y, rounds=1, learning_rate=1.0, min_data_in_leaf=1)
    locations, values = tree_spectrum(booster, n)
    assert locations.tolist() == [[-1], [3]]
    np.testing.assert_allclose(values, [0.5, -0.5], atol=1e-12)


@pytest.mark.parametrize("default_left", [True, False, None])
def test_missing_type_zero_routes_zeros_to_the_default_side(default_left):
    # LightGBM with missing_type "Zero" sends x = 0 to the default child whatever the
    # threshold. Rewrite the decision types of a trained model: bit 1 = default left,
    # bits 2-3 = missing type (1 = Zero).
    n = 6
    booster = random_booster(n, seed=11, rounds=10)
    rng = np.random.default_rng(0)
    lines = []
    for line in booster.model_to_string().splitlines():
        if line.startswith("decision_type="):
            count = len(line.split("=", 1)[1].split())
            left = rng.random(count) < 0.5 if default_left is None else [default_left] * count
            line = "decision_type=" + " ".join(str(4 + 2 * bool(b)) for b in left)
        lines.append(line)
    edited = lgb.Booster(model_str="\n".join(lines) + "\n")
    kinds = {
        (node["missing_type"], node["default_left"])
        for tree in edited.dump_model()["tree_info"]
        for node in _nodes(tree["tree_structure"])
    }
    assert {kind for kind, _ in kinds} == {"Zero"}
    locations, values = tree_spectrum(edited, n)
    np.testing.assert_allclose(dense(locations, values, n), brute_force(edited, n), atol=ATOL)
    if default_left is False:  # every zero goes right with the ones: no feature matters
        assert locations.tolist() == [[-1]]


def _nodes(node):
    if "split_feature" in node:
        yield node
        yield from _nodes(node["left_child"])
        yield from _nodes(node["right_child"])


def test_categorical_splits():
    n = 6
    booster = random_booster(
        n, seed=5, categorical=list(range(n)), min_data_per_group=3, cat_smooth=1.0,
        max_cat_to_onehot=1,
    )
    decisions = {
        node["decision_type"]
        for tree in booster.dump_model()["tree_info"]
        for node in _nodes(tree["tree_structure"])
    }
    assert "==" in decisions
    locations, values = tree_spectrum(booster, n)
    np.testing.assert_allclose(dense(locations, values, n), brute_force(booster, n), atol=ATOL)


def test_raw_score_of_a_classifier_and_averaged_random_forest():
    n = 6
    rng = np.random.default_rng(2)
    masks = rng.random((800, n)) < 0.5
    f = random_function(n, 2)(masks)
    binary = train(masks, (f > np.median(f)).astype(float), objective="binary")
    locations, values = tree_spectrum(binary, n)
    np.testing.assert_allclose(
        dense(locations, values, n), brute_force(binary, n, raw_score=True), atol=ATOL
    )
    forest = train(masks, f, boosting="rf", bagging_fraction=0.5, bagging_freq=1)
    assert forest.dump_model()["average_output"]
    locations, values = tree_spectrum(forest, n)
    np.testing.assert_allclose(dense(locations, values, n), brute_force(forest, n), atol=ATOL)


def test_sklearn_wrapper_and_best_iteration():
    n = 6
    rng = np.random.default_rng(4)
    masks = rng.random((400, n)) < 0.5
    y = random_function(n, 4)(masks)
    model = lgb.LGBMRegressor(n_estimators=15, num_leaves=8, min_child_samples=3,
                              n_jobs=1, verbose=-1).fit(masks.astype(float), y)
    locations, values = tree_spectrum(model, n)
    np.testing.assert_allclose(
        dense(locations, values, n), wht(model.predict(all_masks(n).astype(float))), atol=ATOL
    )
    # early stopping: predict and the spectrum both stop at the best iteration
    params = {"objective": "regression", "num_leaves": 8, "min_data_in_leaf": 3,
              "learning_rate": 0.5, "num_threads": 1, "verbose": -1}
    data = lgb.Dataset(masks[:300].astype(float), y[:300] + rng.normal(0, 1, 300))
    valid = lgb.Dataset(masks[300:].astype(float), y[300:], reference=data)
    booster = lgb.train(params, data, num_boost_round=200, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(5, verbose=False)],
                        keep_training_booster=True)  # keeps the trees after the best one
    assert 0 < booster.best_iteration < booster.num_trees()
    locations, values = tree_spectrum(booster, n)
    np.testing.assert_allclose(dense(locations, values, n), brute_force(booster, n), atol=ATOL)


def test_constant_booster_and_wide_inputs():
    n = 4
    masks = all_masks(n)
    booster = train(masks, np.full(len(masks), 2.5), rounds=3)
    locations, values = tree_spectrum(booster, n)
    assert locations.tolist() == [[-1]]
    np.testing.assert_allclose(values, [2.5])
    # many features: the single-key merge and the row merge give the same spectrum
    n = 1200
    rng = np.random.default_rng(9)
    masks = rng.random((300, n)) < 0.5
    x = masks.astype(float)
    y = x[:, 5] * x[:, 1100] + x[:, 7] - x[:, 3] * x[:, 900] * x[:, 11]
    booster = train(masks, y, rounds=10, max_depth=7)
    locations, values = tree_spectrum(booster, n)
    assert locations.shape[1] >= 3
    check_canonical(locations, values)
    fresh = rng.random((500, n)) < 0.5
    np.testing.assert_allclose(
        surrogate(fresh, locations, values), booster.predict(fresh.astype(float)), atol=ATOL
    )


def test_tree_spectrum_errors():
    n = 6
    booster = random_booster(n, seed=1, rounds=3)
    for bad in (5, 7, 0, -1, 2.0, True):
        with pytest.raises(ValueError):
            tree_spectrum(booster, bad)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_degree"):
            tree_spectrum(booster, n, max_degree=bad)
    rng = np.random.default_rng(0)
    masks = rng.random((200, n)) < 0.5
    multi = train(masks, rng.integers(0, 3, 200).astype(float), rounds=2,
                  objective="multiclass", num_class=3)
    with pytest.raises(ValueError, match="single-output"):
        tree_spectrum(multi, n)


# --------------------------------------------------------------------------------------------
# fit_proxy
# --------------------------------------------------------------------------------------------


def sparse_function(x):
    x = np.asarray(x, dtype=float)
    return (
        0.3
        + 1.0 * x[:, 0]
        - 0.7 * x[:, 4]
        + 0.5 * x[:, 9]
        + 0.8 * x[:, 1] * x[:, 2]
        - 0.9 * x[:, 10] * x[:, 20]
        + 0.6 * x[:, 30] * x[:, 45]
    )


def test_fit_proxy_recovers_a_sparse_function():
    rng = np.random.default_rng(0)
    n = 50
    masks = rng.random((2000, n)) < 0.5
    y = sparse_function(masks) + 0.02 * rng.normal(size=len(masks))
    fit = fit_proxy(masks, y, max_degree=2, random_state=0)
    assert isinstance(fit, ProxyFit)
    check_canonical(fit.locations, fit.values)
    assert fit.locations.tolist()[0] == [-1, -1]
    assert len(fit.values) <= 600 and fit.n_trees > 0
    assert fit.validation_r2 > 0.95
    fresh = rng.random((2000, n)) < 0.5
    truth = sparse_function(fresh)
    pred = surrogate(fresh, fit.locations, fit.values)
    r2 = 1 - np.mean((pred - truth) ** 2) / np.var(truth)
    assert r2 > 0.97
    # the three pairs are the largest second-order terms
    pairs = fit.locations[degrees(fit.locations) == 2]
    top = pairs[np.argsort(-np.abs(fit.values[degrees(fit.locations) == 2]))[:3]]
    assert {tuple(row) for row in top.tolist()} == {(1, 2), (10, 20), (30, 45)}


def test_fit_proxy_is_deterministic_and_truncates():
    rng = np.random.default_rng(1)
    masks = rng.random((500, 20)) < 0.5
    y = sparse_function(np.pad(masks, ((0, 0), (0, 30)))) + 0.1 * rng.normal(size=500)
    a = fit_proxy(masks, y, max_degree=3, random_state=3)
    b = fit_proxy(masks.astype(np.int8), y, max_degree=3, random_state=3)
    np.testing.assert_array_equal(a.locations, b.locations)
    np.testing.assert_array_equal(a.values, b.values)
    assert (a.n_trees, a.validation_r2) == (b.n_trees, b.validation_r2)
    assert degrees(a.locations).max() <= 3
    c = fit_proxy(masks, y, max_degree=3, random_state=4)
    assert not np.array_equal(a.values, c.values) or a.n_trees != c.n_trees
    # max_terms keeps the empty set and the largest remaining |F(k)|
    small = fit_proxy(masks, y, max_degree=3, random_state=3, max_terms=5)
    assert len(small.values) == 5 and np.all(small.locations[0] == -1)
    others = np.abs(a.values[1:])
    np.testing.assert_allclose(
        np.sort(np.abs(small.values[1:])), np.sort(others)[-4:], rtol=0, atol=0
    )
    only_mean = fit_proxy(masks, y, max_degree=1, random_state=3, max_terms=1)
    assert only_mean.locations.tolist() == [[-1]]


def test_fit_proxy_with_a_fixed_number_of_trees_trains_on_every_row():
    rng = np.random.default_rng(2)
    masks = rng.random((400, 20)) < 0.5
    y = sparse_function(np.pad(masks, ((0, 0), (0, 30)))) + 0.05 * rng.normal(size=400)
    stopped = fit_proxy(masks, y, max_degree=2, random_state=0)
    refit = fit_proxy(masks, y, max_degree=2, random_state=0, n_trees=stopped.n_trees)
    assert refit.n_trees == stopped.n_trees and np.isnan(refit.validation_r2)
    again = fit_proxy(masks, y, max_degree=2, random_state=0, n_trees=stopped.n_trees)
    np.testing.assert_array_equal(refit.values, again.values)
    # the rows early stopping held out now train the trees too: they are fitted closer
    def error(fit):
        return np.mean((surrogate(masks, fit.locations, fit.values) - y) ** 2)

    assert error(refit) < error(stopped)
    with pytest.raises(ValueError, match="n_trees"):
        fit_proxy(masks, y, max_degree=2, n_trees=0)


def test_fit_proxy_shared_bins_leave_the_trees_unchanged(monkeypatch):
    # the datasets reuse the bins of a synthetic 0/1 reference; LightGBM's own bins (no
    # reference) give the same trees, also with a constant and an almost constant feature
    rng = np.random.default_rng(5)
    masks = rng.random((300, 40)) < 0.5
    masks[:, 7] = True
    masks[:, 8] = False
    masks[:2, 8] = True
    y = sparse_function(np.pad(masks, ((0, 0), (0, 10)))) + 0.05 * rng.normal(size=300)
    shared = [fit_proxy(masks, y, max_degree=3, random_state=1),
              fit_proxy(masks, y, max_degree=2, random_state=1, n_trees=40)]
    monkeypatch.setattr(proxy, "_binning", lambda n: None)
    own = [fit_proxy(masks, y, max_degree=3, random_state=1),
           fit_proxy(masks, y, max_degree=2, random_state=1, n_trees=40)]
    for a, b in zip(shared, own, strict=True):
        assert a.n_trees == b.n_trees
        np.testing.assert_array_equal(a.locations, b.locations)
        np.testing.assert_array_equal(a.values, b.values)


def test_fit_proxy_single_feature_convention():
    masks = all_masks(8)
    fit = fit_proxy(masks, masks[:, 3].astype(float), max_degree=1, random_state=0)
    values = dict(zip(map(tuple, fit.locations.tolist()), fit.values, strict=True))
    assert values[(-1,)] == pytest.approx(0.5, abs=1e-3)
    assert values[(3,)] == pytest.approx(-0.5, abs=1e-3)
    assert fit.validation_r2 > 0.999


def test_fit_proxy_errors():
    rng = np.random.default_rng(0)
    masks = rng.random((100, 5)) < 0.5
    y = rng.normal(size=100)
    bad_inputs = [
        (masks[0], y[:5], "2-D"),
        (masks, y[:99], "shape"),
        (masks, y[:, None], "shape"),
        (masks * 2, y, "0 and 1"),
        (masks, np.where(np.arange(100) == 7, np.nan, y), "finite"),
        (masks, np.where(np.arange(100) == 7, np.inf, y), "finite"),
        (masks[: MIN_ROWS - 1], y[: MIN_ROWS - 1], f"at least {MIN_ROWS} rows"),
    ]
    for bad_masks, bad_y, message in bad_inputs:
        with pytest.raises(ValueError, match=message):
            fit_proxy(bad_masks, bad_y, max_degree=2)
    for settings, name in [
        ({"max_degree": 0}, "max_degree"),
        ({"max_degree": 2, "max_terms": 0}, "max_terms"),
        ({"max_degree": 2, "validation_fraction": 0.0}, "validation_fraction"),
        ({"max_degree": 2, "validation_fraction": 0.7}, "validation_fraction"),
    ]:
        with pytest.raises(ValueError, match=name):
            fit_proxy(masks, y, **settings)
    assert MIN_ROWS == 20
    fit = fit_proxy(masks[:MIN_ROWS], y[:MIN_ROWS], max_degree=2, random_state=0)
    assert np.isfinite(fit.values).all()
    flat = fit_proxy(masks, np.ones(100), max_degree=2, random_state=0)
    assert flat.locations.tolist() == [[-1]] and np.isnan(flat.validation_r2)


def test_missing_lightgbm(monkeypatch):
    assert proxy_available()
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm now raises
    assert not proxy_available()
    masks = np.zeros((30, 3), dtype=bool)
    with pytest.raises(ImportError, match=re.escape(PROXY_MISSING)):
        fit_proxy(masks, np.zeros(30), max_degree=2)
    assert PROXY_MISSING == 'the tree proxy needs LightGBM: pip install "spex-plugins[proxy]"'
    assert proxy.__name__ == "spex_plugins.core.proxy"


def test_module_imports_without_lightgbm():
    code = (
        "import sys; sys.modules['lightgbm'] = None\n"
        "import spex_plugins.core.proxy as p\n"
        "assert not p.proxy_available()\n"
    )
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=60)
