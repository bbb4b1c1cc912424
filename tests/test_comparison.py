"""Comparison baselines: host estimators run on a masked value function, scored by R^2."""

import sys

import numpy as np
import pytest

from spex_plugins import comparison as baselines
from spex_plugins.comparison import CallCounter, contiguous_clustering, r2_score, run_baseline

N = 8
WEIGHTS = np.array([0.9, -0.4, 0.0, 0.3, 0.0, 1.2, -0.2, 0.5])


def additive(masks):
    return 0.25 + np.asarray(masks, dtype=float) @ WEIGHTS


def test_r2_and_counter():
    truth = np.array([1.0, 2.0, 3.0])
    assert r2_score(truth, truth) == 1.0
    assert r2_score(truth, np.full(3, 2.0)) == 0.0
    counter = CallCounter(additive)
    masks = np.array([[1, 0] * 4, [1, 0] * 4, [0, 1] * 4], dtype=float)
    np.testing.assert_allclose(counter(masks), additive(masks > 0.5))
    assert counter.calls == 2


@pytest.mark.parametrize("name", ["SHAP PermutationExplainer", "Captum KernelShap",
                                  "shapiq RegressionFBII (Faith-Banzhaf, order 1)"])
def test_first_order_baselines_recover_an_additive_function(name):
    module = baselines.BASELINES[name][0]
    pytest.importorskip(module, reason=f"{module} is not installed here")
    if module == "captum":
        pytest.importorskip("torch", reason="captum needs torch")
    result = run_baseline(name, additive, N, budget=200, seed=0)
    assert result.available and 0 < result.calls <= 2 ** N
    test = np.random.default_rng(0).random((50, N)) < 0.5
    assert r2_score(additive(test), result.predict(test)) > 0.999


# n = 16 features, an exactly additive function with an intercept, on the scale of the demo's
# cosine similarities (~0.01), where Captum's default Lasso surrogate zeroes everything
N16 = 16
INTERCEPT = 0.02
WEIGHTS16 = 0.01 * np.random.default_rng(1).normal(size=N16)


def additive16(masks):
    return INTERCEPT + np.asarray(masks, dtype=float) @ WEIGHTS16


def held_out_r2(result, n=N16, function=additive16):
    test = np.random.default_rng(7).random((200, n)) < 0.5
    return r2_score(function(test), result.predict(test))


def test_contiguous_clustering_is_a_balanced_linkage_of_runs():
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    for n in (2, 3, 5, 12, 16, 153):
        linkage = contiguous_clustering(n)
        assert linkage.shape == (n - 1, 4)
        assert hierarchy.is_valid_linkage(linkage) and hierarchy.is_monotonic(linkage)
        assert (hierarchy.leaves_list(linkage) == np.arange(n)).all()
        assert hierarchy.to_tree(linkage).get_count() == n
    # every cluster is a contiguous run of positions whose spread is its distance
    for tree in hierarchy.to_tree(contiguous_clustering(12), rd=True)[1][12:]:
        leaves = sorted(tree.pre_order())
        assert leaves == list(range(leaves[0], leaves[-1] + 1))
        assert tree.dist == leaves[-1] - leaves[0]
    assert hierarchy.to_tree(contiguous_clustering(16)).left.get_count() == 8


def test_shap_partition_recovers_an_additive_function():
    pytest.importorskip("shap", reason="shap is not installed here")
    # the Owen recursion over a balanced tree of 16 features needs 2 + 2(1 + 4 + 16 + 64) =
    # 172 masks; with them the Owen values of an additive function are its weights
    result = run_baseline("SHAP PartitionExplainer", additive16, N16, budget=256, seed=0)
    assert result.available and 0 < result.calls <= 256
    assert held_out_r2(result) > 0.99
    np.testing.assert_allclose(result.predict(np.zeros((1, N16))), [INTERCEPT], atol=1e-12)


def test_shap_partition_stays_within_its_budget():
    pytest.importorskip("shap", reason="shap is not installed here")
    # shap's Owen loop checks max_evals before adding a pair of masks: one mask over at most
    for budget in (50, 101):
        result = run_baseline("SHAP PartitionExplainer", additive16, N16, budget=budget)
        assert result.available and budget - 1 <= result.calls <= budget + 1


def test_captum_lime_recovers_an_additive_function_with_its_intercept():
    pytest.importorskip("captum", reason="captum is not installed here")
    pytest.importorskip("torch", reason="captum needs torch")
    pytest.importorskip("sklearn", reason="captum's Lime fits with scikit-learn")
    for budget in (40, 200):
        result = run_baseline("Captum Lime", additive16, N16, budget=budget, seed=0)
        assert result.available and 0 < result.calls <= budget
        assert held_out_r2(result) > 0.99
        # the surrogate is Lime's own fit, intercept included (float32 inside Captum)
        np.testing.assert_allclose(result.predict(np.zeros((1, N16))), [INTERCEPT], atol=1e-5)
        np.testing.assert_allclose(result.predict(np.eye(N16)) - INTERCEPT, WEIGHTS16,
                                   atol=1e-5)


def test_baselines_are_listed_in_the_comparison_order():
    assert list(baselines.BASELINES)[:4] == ["SHAP PermutationExplainer",
                                             "SHAP PartitionExplainer", "Captum KernelShap",
                                             "Captum Lime"]
    assert all(name.startswith("shapiq ") for name in list(baselines.BASELINES)[4:])


@pytest.mark.parametrize("name", list(baselines.BASELINES))
def test_missing_host_library_is_reported(monkeypatch, name):
    module = baselines.BASELINES[name][0]
    monkeypatch.setattr(baselines.importlib.util, "find_spec", lambda name: None)
    asked = []
    result = run_baseline(name, lambda masks: asked.append(masks) or additive(masks), N,
                          budget=50)
    assert not result.available and f"{module} is not installed" in result.reason
    assert result.predict is None and result.calls == 0 and not asked


def test_lime_without_scikit_learn_is_reported_before_any_model_call(monkeypatch):
    pytest.importorskip("captum", reason="captum is not installed here")
    pytest.importorskip("torch", reason="captum needs torch")
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes ``import sklearn`` fail
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    asked = []
    result = run_baseline("Captum Lime", lambda masks: asked.append(masks) or additive(masks),
                          N, budget=50)
    assert not result.available and "scikit-learn" in result.reason and not asked
