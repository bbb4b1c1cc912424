"""The comparison module: definitions (calls, R^2, top-k, index errors) and the peers."""

import math
import sys

import numpy as np
import pytest

from spex_plugins import SPEX, comparison
from spex_plugins.comparison import (
    PEERS,
    CallCounter,
    contiguous_clustering,
    index_errors,
    r2_score,
    run_peer,
    support_recovery,
    top_interactions,
    uniform_masks,
)

N = 8
WEIGHTS = np.array([0.9, -0.4, 0.0, 0.3, 0.0, 1.2, -0.2, 0.5])


def additive(masks):
    return 0.25 + np.asarray(masks, dtype=float) @ WEIGHTS


def needs(*modules):
    for module in modules:
        pytest.importorskip(module, reason=f"{module} is not installed here")


# --- definitions ------------------------------------------------------------------------------

def test_r2_definition():
    truth = np.array([1.0, 2.0, 3.0])
    assert r2_score(truth, truth) == 1.0
    assert r2_score(truth, np.full(3, 2.0)) == 0.0
    assert r2_score(truth, [1.0, 2.0, 4.0]) == pytest.approx(0.5)
    assert math.isnan(r2_score(np.full(3, 0.5), [0.5, 0.5, 0.6]))  # constant truth: undefined
    assert r2_score(truth, [1.0, np.nan, 3.0]) == -math.inf  # a broken surrogate is the worst
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="non-finite"):
            r2_score([1.0, bad, 3.0], truth)
    with pytest.raises(ValueError, match="3 values, the prediction 2"):
        r2_score(truth, truth[:2])


def test_call_counter_counts_distinct_masks():
    counter = CallCounter(additive)
    masks = np.array([[1, 0] * 4, [1, 0] * 4, [0, 1] * 4], dtype=float)
    np.testing.assert_allclose(counter(masks), additive(masks > 0.5))
    assert counter.calls == 2
    counter(masks[:1])  # asked again: not a new model call
    counter(np.ones(N))
    assert counter.calls == 3 and counter.seconds >= 0
    with pytest.raises(ValueError, match="non-finite"):  # outputs are checked by the runtime
        CallCounter(lambda m: np.full(len(m), np.nan))(masks)


def test_uniform_masks_are_distinct_seeded_and_nested():
    masks = uniform_masks(20, 3000, 1)
    assert masks.shape == (3000, 20) and masks.dtype == bool
    assert len(np.unique(np.packbits(masks, axis=1), axis=0)) == 3000
    assert 0.45 < masks.mean() < 0.55
    np.testing.assert_array_equal(uniform_masks(20, 3000, 1), masks)
    np.testing.assert_array_equal(uniform_masks(20, 1000, 1)[:900], masks[:900])
    cube = uniform_masks(6, 500, 0)  # the budget covers the cube: all 2^6 masks, once each
    assert len(cube) == 64 and len(np.unique(np.packbits(cube, axis=1), axis=0)) == 64
    small = uniform_masks(10, 1000, 0)  # 1000 of 1024 possible masks, still distinct
    assert len(np.unique(np.packbits(small, axis=1), axis=0)) == 1000


def test_top_interactions_tie_break():
    values = {(): 9.0, (2,): -1.0, (0, 1): 1.0, (1,): 1.0, (0,): 0.5, (3, 4): -2.0}
    assert top_interactions(values, 3) == [((3, 4), -2.0), ((1,), 1.0), ((2,), -1.0)]
    assert len(top_interactions(values, 10)) == 5  # the empty set is never ranked


def test_index_errors():
    exact = {(0,): 1.0, (1,): -1.0, (0, 1): 2.0, (2,): 0.0}
    estimate = {(0,): 1.0, (1,): -0.5, (0, 2): 0.5, (): 7.0, (0, 1, 2): 3.0}
    errors = index_errors(estimate, exact, order=2, k=2)
    # sets of size 1..2: (0,), (1,), (2,), (0, 1), (0, 2); squared errors 0, .25, 0, 4, .25
    assert errors.mse == pytest.approx(4.5 / 5)
    assert errors.relative_mse == pytest.approx((4.5 / 5) / (6.0 / 5))
    assert errors.precision_at_k == 0.5 and errors.k == 2  # top-2 {(0,1),(0,)} vs {(0,),(1,)}
    assert index_errors(exact, exact, 2).mse == 0.0
    assert index_errors(exact, exact, 2).precision_at_k == 1.0
    assert math.isnan(index_errors({(0,): 1.0}, {(0,): 0.0}, 1).relative_mse)
    with pytest.raises(ValueError, match="no sets"):
        index_errors({(): 1.0}, {(): 1.0}, 2)
    # an exact estimate up to round-off ranks the zero-valued sets as the exact values do
    sparse_exact = {(0,): 1.0, (1,): 0.0, (2,): 0.0, (3,): 0.0}
    round_off = {(0,): 1.0 + 1e-15, (1,): 0.0, (2,): 0.0, (3,): 3e-16}
    assert index_errors(round_off, sparse_exact, 1, k=2).precision_at_k == 1.0


def test_support_recovery():
    explanation = comparison._moebius_explanation(4, {(): 1.0, (0,): 2.0, (1, 2): 4.0})
    # Fourier support of 2 x0 + 4 x1 x2: {0}, {1}, {2}, {1, 2} (and the constant)
    recall, precision = support_recovery(explanation, [(0,), (1, 2), (3,)])
    assert recall == pytest.approx(2 / 3) and precision == pytest.approx(2 / 4)


def test_moebius_surrogate_is_the_set_function():
    moebius = {(): 0.5, (2,): 1.0, (0, 3): -2.0, (3, 0): 0.5, (1, 2, 3): 0.25}
    explanation = comparison._moebius_explanation(5, moebius)
    masks = uniform_masks(5, 32, 0)

    def direct(m):
        return 0.5 + m[:, 2] - 1.5 * (m[:, 0] & m[:, 3]) + 0.25 * (m[:, 1] & m[:, 2] & m[:, 3])

    np.testing.assert_allclose(explanation.predict(masks), direct(masks), atol=1e-12)


# --- peers ------------------------------------------------------------------------------------

FIRST_ORDER = ["ridge", "lasso", "shapiq-regression-fbii", "shapiq-kernelshap",
               "shap-permutation", "captum-kernelshap", "captum-lime"]


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_first_order_peers_recover_an_additive_function(name):
    needs(*PEERS[name].hosts)
    result = run_peer(name, additive, N, budget=200, seed=0, index="FBII" if "fbii" in name
                      else None, order=1)
    assert result.ok, result.reason
    assert 0 < result.calls <= 2 ** N and result.own_seconds >= 0
    test = uniform_masks(N, 50, 7)
    assert result.r2(test, additive(test)) > 0.999
    np.testing.assert_allclose(result.predict(np.eye(N, dtype=bool)) - result.predict(
        np.zeros((1, N), bool)), WEIGHTS, atol=0.01)  # LassoCV shrinks a little


def test_uniform_mask_peers_share_their_masks():
    needs("sklearn")
    seen = []

    def recording(masks):
        seen.append(np.packbits(masks, axis=1))
        return additive(masks)

    ridge = run_peer("ridge", recording, 30, 300, seed=3)
    lasso = run_peer("lasso", recording, 30, 300, seed=3)
    assert ridge.calls == lasso.calls == 300
    np.testing.assert_array_equal(seen[0], seen[1])


def sparse_game(masks):
    m = np.asarray(masks, dtype=float)
    return 0.3 + m[:, 1] - 0.8 * m[:, 2] * m[:, 5] + 0.5 * m[:, 0] * m[:, 3] * m[:, 6]


def test_spex_plugins_peer_recovers_a_sparse_function_and_every_index():
    result = run_peer("spex-plugins", sparse_game, N, budget=400, seed=0,
                      options={"max_order": 3})
    assert result.ok, result.reason
    assert result.calls == result.explanation.n_model_calls <= 2 ** N
    test = uniform_masks(N, 100, 1)
    assert result.r2(test, sparse_game(test)) > 0.9999
    moebius = result.interactions("Moebius", 3)
    assert moebius[(2, 5)] == pytest.approx(-0.8) and moebius[(0, 3, 6)] == pytest.approx(0.5)
    assert result.values is None and result.details["n_terms"] >= 4
    shapley = result.interactions("SV", 1)
    efficiency = sum(v for s, v in shapley.items() if s)
    assert efficiency == pytest.approx(sparse_game(np.ones((1, N)))[0] - 0.3)


def test_spex_plugins_peer_takes_a_spex_object():
    calls = []

    class Recorder(SPEX):
        def explain(self, value_function, n, budget=None, **kwargs):
            calls.append((n, budget))
            return super().explain(value_function, n, budget, **kwargs)

    result = run_peer("spex-plugins", sparse_game, N, 400,
                      options={"spex": Recorder(max_order=3, random_state=0)})
    assert result.ok and calls == [(N, 400)]
    other = run_peer("spex-plugins", sparse_game, N, 400,
                     options={"spex": SPEX(max_order=3), "max_order": 4})
    assert other.status == "error" and "to the spex object" in other.reason


def test_index_values_match_exact_values():
    needs("shapiq")
    import shapiq

    exact = shapiq.ExactComputer(sparse_game, n_players=N)
    for index, order in (("SV", 1), ("k-SII", 2), ("STII", 2), ("FBII", 2)):
        truth = dict(exact(index, order).interactions)
        ours = run_peer("spex-plugins", sparse_game, N, 400, index=index, order=order,
                        options={"max_order": 3})
        assert ours.ok, ours.reason
        assert ours.index == index and ours.order == order
        errors = index_errors(ours.values, truth, order)
        assert errors.mse < 1e-12 and errors.precision_at_k == 1.0, index


def test_index_estimators_report_values_but_no_surrogate():
    needs("shapiq")
    result = run_peer("shapiq-permutation-stii", sparse_game, N, 300, order=2)
    assert result.ok and result.index == "STII" and result.order == 2
    assert result.surrogate is None and result.r2(np.ones((1, N)), [1.0]) is None
    assert result.values[(2, 5)] == pytest.approx(-0.8 + 0.25, abs=0.3)
    with pytest.raises(ValueError, match="no surrogate"):
        result.predict(np.ones((1, N)))
    with pytest.raises(ValueError, match="estimated STII of order 2"):
        result.interactions("k-SII", 2)


def test_peers_skip_what_they_cannot_estimate_without_model_calls():
    needs("shapiq")
    asked = []

    def recording(masks):
        asked.append(len(masks))
        return additive(masks)

    wrong_index = run_peer("shapiq-kernelshap", recording, N, 200, index="STII")
    assert wrong_index.status == "skipped" and "estimates SV" in wrong_index.reason
    too_many = run_peer("shapiq-regression-fbii", recording, 40, 600, order=2)
    assert too_many.status == "skipped" and "821 unknowns" in too_many.reason
    assert not asked and too_many.calls == 0


def test_errors_are_recorded_with_their_whole_message():
    result = run_peer("spex-plugins", additive, N, 20)
    assert result.status == "error" and result.reason.startswith("ValueError: ")
    assert "minimum" in result.reason and not result.reason.endswith("...")
    with pytest.raises(ValueError, match="unknown peer"):
        run_peer("kernelshap", additive, N, 100)
    with pytest.raises(ValueError, match="budget must be"):
        run_peer("ridge", additive, N, 0)


def test_hosts_that_draw_from_numpys_global_generator_leave_it_as_it_was():
    needs("shap")
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    first = run_peer("shap-partition", additive16, N16, 101, seed=4)
    assert first.ok and np.random.random() == expected
    second = run_peer("shap-partition", additive16, N16, 101, seed=4)
    test = uniform_masks(16, 20, 0)
    np.testing.assert_array_equal(first.predict(test), second.predict(test))


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


def test_shap_partition_recovers_an_additive_function():
    needs("shap")
    # the Owen recursion over a balanced tree of 16 features needs 2 + 2(1 + 4 + 16 + 64) =
    # 172 masks; with them the Owen values of an additive function are its weights
    result = run_peer("shap-partition", additive16, N16, budget=256, seed=0)
    assert result.ok and 0 < result.calls <= 256
    assert held_out_r2(result) > 0.99
    np.testing.assert_allclose(result.predict(np.zeros((1, N16))), [INTERCEPT], atol=1e-12)


def test_shap_partition_stays_within_its_budget():
    needs("shap")
    # shap's Owen loop checks max_evals before adding a pair of masks: one mask over at most
    for budget in (50, 101):
        result = run_peer("shap-partition", additive16, N16, budget=budget)
        assert result.ok and budget - 1 <= result.calls <= budget + 1


def test_captum_lime_recovers_an_additive_function_with_its_intercept():
    needs("captum", "torch", "sklearn")
    for budget in (40, 200):
        result = run_peer("captum-lime", additive16, N16, budget=budget, seed=0)
        assert result.ok and 0 < result.calls <= budget
        assert held_out_r2(result) > 0.99
        # the surrogate is Lime's own fit, intercept included (float32 inside Captum)
        np.testing.assert_allclose(result.predict(np.zeros((1, N16))), [INTERCEPT], atol=1e-5)
        np.testing.assert_allclose(result.predict(np.eye(N16)) - INTERCEPT, WEIGHTS16,
                                   atol=1e-5)


def test_lightgbm_peer_fits_an_interaction_with_early_stopping():
    needs("lightgbm")
    result = run_peer("lightgbm", sparse_game, 12, 1500, seed=0)
    assert result.ok and result.calls == 1500 and result.explanation is None
    test = uniform_masks(12, 300, 5)
    assert result.r2(test, sparse_game(test)) > 0.95
    assert 0 < result.details["trees"] < 2000  # stopped early


@pytest.mark.parametrize("name", list(PEERS))
def test_missing_host_library_is_reported(monkeypatch, name):
    host = PEERS[name].hosts[0]
    real = comparison.importlib.util.find_spec
    monkeypatch.setattr(comparison.importlib.util, "find_spec",
                        lambda module: None if module == host else real(module))
    asked = []
    result = run_peer(name, lambda masks: asked.append(masks) or additive(masks), N,
                      budget=50)
    assert result.status == "unavailable" and not result.available
    assert f"{host} is not installed" in result.reason and "pip install" in result.reason
    assert result.surrogate is None and result.calls == 0 and not asked


def test_lime_without_scikit_learn_is_reported_before_any_model_call(monkeypatch):
    needs("captum", "torch")
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes ``import sklearn`` fail
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    asked = []
    result = run_peer("captum-lime", lambda masks: asked.append(masks) or additive(masks),
                      N, budget=50)
    assert result.status == "unavailable" and "sklearn" in result.reason and not asked


def test_importing_the_module_imports_no_host():
    import subprocess

    code = ("import sys, spex_plugins.comparison; "
            "print(sorted(m for m in ('shap', 'shapiq', 'captum', 'torch', 'sklearn', "
            "'lightgbm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
