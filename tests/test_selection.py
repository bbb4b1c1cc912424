"""The validated refit: held-out selection, endpoints, per-output independence, options."""

import hashlib

import numpy as np
import pytest

from spex_plugins import SPEX
from spex_plugins.core import proxy as tree_proxy
from spex_plugins.core.fourier import characters
from spex_plugins.core.selection import Candidate, final_fit, lasso_cv, lasso_path, select


def linear_plus_hash_noise(n, seed=0, noise=1.0):
    """A first-order function plus a deterministic pseudo-random function of the mask: the
    noise part has no low-degree structure, so anything that fits it does not generalise."""
    weights = np.random.default_rng(seed).normal(size=n)

    def f(masks):
        masks = np.asarray(masks, bool)
        packed = np.packbits(masks, axis=1)
        hashed = np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=4)
                                          .digest(), "little") for row in packed])
        return masks @ weights + noise * (hashed / 2 ** 32 - 0.5) * np.sqrt(12)

    return f, weights


def fresh(n, m=3000, seed=99):
    return np.random.default_rng(seed).random((m, n)) < 0.5


def test_select_prefers_the_candidate_that_generalises():
    rng = np.random.default_rng(0)
    n, rows, held = 20, 60, 400
    locations = np.full((1 + n + 60, 2), -1)
    locations[1:n + 1, 0] = np.arange(n)
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])[:60]
    locations[n + 1:] = pairs
    weights = rng.normal(size=n)

    def f(masks):
        return masks @ weights + rng.normal(0, 1.0, len(masks))

    train, val = rng.random((rows, n)) < 0.5, rng.random((held, n)) < 0.5
    x = characters(train, locations)
    big = Candidate("everything", np.arange(len(locations)))
    small = Candidate("first-order", np.arange(n + 1))
    surrogate = select(x.T @ x, x.T @ f(train), rows, characters(val, locations), f(val),
                       [big, small])
    # 81 columns on 60 rows fit the samples exactly; the held-out error says they don't carry
    assert np.linalg.matrix_rank(x) == rows
    choice = surrogate.parts[0]
    assert choice.candidate == "first-order" and choice.weight > 0.5
    assert len(choice.columns) <= n + 1
    assert set(choice.columns.tolist()) <= set(range(n + 1))
    assert 0.5 < surrogate.validation_r2 < 1.0
    assert sum(part.weight for part in surrogate.parts) == pytest.approx(1.0)


def test_the_refit_does_not_keep_what_only_fits_the_samples():
    n = 30
    f, _ = linear_plus_hash_noise(n)
    explanation = SPEX(max_order=3, random_state=0).explain(f, n, budget=800, progress=False)
    test = fresh(n)
    held_out_r2 = explanation.r2(test, f(test))
    # the linear part carries ~ 1 - 1/(1 + var(linear)) of the variance
    assert held_out_r2 > 0.8
    assert abs(explanation.validation_r2 - held_out_r2) < 0.1
    assert explanation.metadata["n_terms"][0] < 3 * n


@pytest.mark.parametrize(("n", "budget"), [(12, 300), (40, 900), (300, 2000)])
def test_shapley_values_are_efficient_for_the_model(n, budget):
    rng = np.random.default_rng(n)
    w = rng.normal(size=n)

    def dense(masks):  # not sparse, and f(empty) an outlier, as an empty text often is
        score = masks @ w / np.sqrt(n)
        return np.tanh(score) + 0.3 * score ** 2 + 5.0 * ~masks.any(axis=1)

    explanation = SPEX(max_order=3, random_state=0).explain(dense, n, budget=budget,
                                                           progress=False)
    empty, full = np.zeros((1, n), bool), np.ones((1, n), bool)
    gap = dense(full)[0] - dense(empty)[0]
    assert explanation.shapley_values().sum() == pytest.approx(gap, abs=1e-8)
    # the surrogate is not bent towards the outlying endpoint
    test = fresh(n, 1000)
    assert explanation.r2(test, dense(test)) > 0.5
    raw = explanation.shapley_values(efficient=False)
    if explanation.metadata["completed"]:  # small n: the surrogate itself is exact there
        assert raw.sum() == pytest.approx(gap, abs=1e-8)
    else:
        assert abs(raw.sum() - gap) > 1.0
    np.testing.assert_allclose(explanation.shapley_values() - raw, (gap - raw.sum()) / n,
                               atol=1e-12)


def test_an_even_support_still_gives_efficient_shapley_values():
    n = 50

    def pairs_only(masks):  # f(empty) != f(full), nothing odd in the function
        return 2.0 * masks[:, 0] * masks[:, 1] + 0.5 * masks[:, 2]

    explanation = SPEX(max_order=2, random_state=1).explain(pairs_only, n, budget=1200,
                                                           progress=False)
    assert explanation.shapley_values().sum() == pytest.approx(2.5, abs=1e-8)
    assert explanation.output(0).shapley_values().sum() == pytest.approx(2.5, abs=1e-8)


def test_outputs_are_chosen_each_on_their_own():
    n = 60
    f, _ = linear_plus_hash_noise(n, seed=1, noise=0.3)
    g, _ = linear_plus_hash_noise(n, seed=2, noise=3.0)

    def both(masks):
        return np.stack([f(masks), g(masks)], axis=1)

    together = SPEX(max_order=3, random_state=4).explain(both, n, budget=1500, progress=False)
    alone = SPEX(max_order=3, random_state=4).explain(f, n, budget=1500, progress=False)
    first = together.output(0)
    assert first.metadata["candidate"][0] == alone.metadata["candidate"][0]
    test = fresh(n, 500)
    np.testing.assert_allclose(first.predict(test), alone.predict(test), atol=1e-9)
    np.testing.assert_allclose(first.shapley_values(), alone.shapley_values(), atol=1e-9)


def test_same_seed_same_explanation_with_every_stage():
    n = 80
    f, _ = linear_plus_hash_noise(n, noise=0.5)
    runs = [SPEX(random_state=3).explain(f, n, budget=2500, progress=False) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].locations, runs[1].locations)
    np.testing.assert_array_equal(runs[0].coefficients, runs[1].coefficients)
    assert runs[0].metadata["candidate"] == runs[1].metadata["candidate"]


def test_bad_options_are_clear_errors(monkeypatch):
    ones = lambda m: np.ones(len(m))  # noqa: E731
    with pytest.raises(ValueError, match="support must be one of"):
        SPEX(support="trees").explain(ones, 10)
    with pytest.raises(ValueError, match="support='peeling' needs refit='validated'"):
        SPEX(support="peeling", refit="ridge").explain(ones, 10)
    monkeypatch.setattr(tree_proxy, "proxy_available", lambda: False)
    calls = []
    with pytest.raises(ImportError, match=r"spex-plugins\[proxy\]"):
        SPEX(support="proxy").explain(lambda m: calls.append(m) or np.ones(len(m)), 10)
    assert not calls  # before any model call
    # "auto" without LightGBM skips the proxy and says so
    explanation = SPEX(random_state=0).explain(ones, 40, budget=500, progress=False)
    assert explanation.metadata["proxy"].startswith("skipped")


def test_bin_domain_normal_equations_equal_the_explicit_ones():
    """The design's X^T X and X^T y, read off the WHT bins, equal those of the sample matrix
    built from ``design.masks()`` (issue 10)."""
    from spex_plugins.core.refit import design_moments
    from spex_plugins.core.sampler import SubsampleDesign
    from spex_plugins.core.transforms import fwht

    rng = np.random.default_rng(5)
    n, t = 40, 3
    design = SubsampleDesign.create(n, t, 3, 4, rng)
    masks = design.masks()  # (C, P, 2^b, n)
    y = rng.normal(size=masks.shape[:3] + (2,))
    columns = np.full((60, t), -1)
    columns[1:n + 1, 0] = np.arange(n)
    columns[n + 1:, :2] = [sorted(rng.choice(n, 2, replace=False)) for _ in range(60 - n - 1)]
    columns = np.unique(columns, axis=0)
    gram, xty, yty = design_moments(fwht(y, axis=2), design, columns)
    x = characters(masks.reshape(-1, n), columns)
    np.testing.assert_allclose(gram.dense(), x.T @ x, atol=1e-9)
    np.testing.assert_allclose(xty, x.T @ y.reshape(-1, 2), atol=1e-9)
    np.testing.assert_allclose(yty, (y.reshape(-1, 2) ** 2).sum(axis=0), rtol=1e-12)


def test_proxy_spex_spends_every_call_on_uniform_masks():
    pytest.importorskip("lightgbm")
    from spex_plugins import ProxySPEX

    n = 30
    f, _ = linear_plus_hash_noise(n, noise=0.2)
    explanation = ProxySPEX(max_order=3, random_state=0).explain(f, n, budget=600,
                                                                 progress=False)
    meta = explanation.metadata
    assert meta["b"] is None and meta["n_design_masks"] == 0 and meta["proxy"] == "lightgbm"
    assert explanation.n_model_calls == 600
    test = fresh(n)
    assert explanation.r2(test, f(test)) > 0.8


def _lasso_problem(rows, p, seed=0):
    rng = np.random.default_rng(seed)
    x = np.hstack([np.ones((rows, 1)), rng.standard_normal((rows, p))])
    beta = np.zeros(p + 1)
    beta[[0, 1, 2, 3, 7]] = [4.0, 3.0, -2.0, 1.0, 0.5]
    y = x @ beta + 0.5 * rng.standard_normal(rows)
    return x, y


@pytest.mark.parametrize("rows, p", [(300, 40), (120, 200)])
def test_lasso_path_meets_the_optimality_conditions(rows, p):
    x, y = _lasso_problem(rows, p)
    gram, xty = x.T @ x, x.T @ y
    penalties, beta = lasso_path(gram, xty, rows)
    assert beta.shape == (p + 1, len(penalties))
    assert np.all(np.diff(penalties) < 0)
    assert np.count_nonzero(beta[1:, 0]) == 0  # the first penalty zeroes every term
    for k, lam in enumerate(penalties * rows):
        b = beta[:, k]
        if np.count_nonzero(b[1:]) >= 0.25 * rows:  # past the path's stop: not optimal there
            break
        gradient = xty - gram @ b
        assert abs(gradient[0]) < 1e-8 * np.abs(xty).max()  # the constant is unpenalised
        on = np.flatnonzero(b[1:]) + 1
        off = np.setdiff1d(np.arange(1, p + 1), on)
        np.testing.assert_allclose(gradient[on], lam * np.sign(b[on]), rtol=1e-6, atol=1e-8)
        assert np.all(np.abs(gradient[off]) <= lam * (1 + 1e-6))


def test_lasso_candidate_is_chosen_and_refitted_with_its_nonzero_terms():
    rows, p = 200, 60
    x, y = _lasso_problem(rows, p, seed=1)
    xv, yv = _lasso_problem(400, p, seed=2)  # the same model on fresh rows
    lasso = Candidate("lasso", np.arange(p + 1), estimator="lasso")
    surrogate = select(x.T @ x, x.T @ y, rows, xv, yv, [lasso])
    (choice,) = surrogate.parts
    assert choice.estimator == "lasso" and choice.weight == 1.0
    assert surrogate.validation_r2 > 0.9 and choice.validation_r2 == surrogate.validation_r2
    assert {1, 2, 3} <= set(choice.columns.tolist()) and len(choice.columns) < p
    kept, beta = final_fit(choice, x.T @ x, x.T @ y, rows)
    assert kept[0] == 0 and np.all(beta[1:] != 0)
    np.testing.assert_allclose(beta[:4], [4.0, 3.0, -2.0, 1.0], atol=0.25)


def test_lasso_cv_matches_scikit_learn_on_the_same_folds_and_penalties():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rows, p = 300, 40
    x, y = _lasso_problem(rows, p, seed=3)
    order = np.random.default_rng(0).permutation(rows)
    folds = np.array_split(order[10:], 5)  # the first 10 rows of ``order`` always train
    beta, oof, penalty = lasso_cv(x, y, folds)
    penalties, _ = lasso_path(x.T @ x, x.T @ y, rows)
    assert penalty in penalties and penalties[-1] < penalty < penalties[0]
    # scikit-learn's objective 1/(2m) |y - Xb|^2 + alpha |b|_1 is ours at alpha = penalty
    splits = [(np.setdiff1d(np.arange(rows), held), held) for held in folds]
    reference = linear_model.LassoCV(alphas=penalties, cv=splits, tol=1e-12,
                                     max_iter=100_000).fit(x[:, 1:], y)
    assert reference.alpha_ == pytest.approx(penalty)
    np.testing.assert_allclose(beta[1:], reference.coef_, atol=1e-6)
    assert beta[0] == pytest.approx(reference.intercept_, abs=1e-6)
    # the out-of-fold predictions: each fold by the fit on the other rows at that penalty
    held = folds[2]
    at = sum(len(f) for f in folds[:2])
    train = np.setdiff1d(np.arange(rows), held)
    _, own = lasso_path(x[train].T @ x[train], x[train].T @ y[train], len(train),
                        penalties=np.array([penalty]))
    np.testing.assert_allclose(oof[at:at + len(held)], x[held] @ own[:, 0], atol=1e-9)


def test_stacking_weighs_exact_and_indistinguishable_candidates():
    rng = np.random.default_rng(5)
    rows, held, p = 400, 300, 12
    x = np.hstack([np.ones((rows, 1)), rng.choice([-1.0, 1.0], (rows, p))])
    xv = np.hstack([np.ones((held, 1)), rng.choice([-1.0, 1.0], (held, p))])
    beta = np.concatenate([[1.0], rng.normal(size=p)])
    exact = select(x.T @ x, x.T @ (x @ beta), rows, xv, xv @ beta,
                   [Candidate("half", np.arange(7)), Candidate("all", np.arange(p + 1))])
    # the exact candidate takes all the weight
    assert [part.candidate for part in exact.parts] == ["all"]
    assert exact.validation_r2 == pytest.approx(1.0)
    # two copies of one candidate are indistinguishable: whatever the split, the surrogate's
    # held-out R^2 is the single candidate's
    noisy, noisy_v = x @ beta + rng.normal(0, 2, rows), xv @ beta + rng.normal(0, 2, held)
    one = select(x.T @ x, x.T @ noisy, rows, xv, noisy_v, [Candidate("a", np.arange(p + 1))])
    two = select(x.T @ x, x.T @ noisy, rows, xv, noisy_v,
                 [Candidate("a", np.arange(p + 1)), Candidate("b", np.arange(p + 1))])
    assert sum(part.weight for part in two.parts) == pytest.approx(1.0)
    assert two.validation_r2 == pytest.approx(one.validation_r2, abs=1e-9)


def test_fixed_predictions_enter_the_stack_as_they_are():
    rng = np.random.default_rng(6)
    rows, held, p = 300, 200, 10
    x = np.hstack([np.ones((rows, 1)), rng.choice([-1.0, 1.0], (rows, p))])
    xv = np.hstack([np.ones((held, 1)), rng.choice([-1.0, 1.0], (held, p))])
    beta = rng.normal(size=p + 1)
    pair = xv[:, 1] * xv[:, 2]  # an interaction no candidate column holds
    truth_v = xv @ beta + pair
    truth = x @ beta + x[:, 1] * x[:, 2]
    surrogate = select(x.T @ x, x.T @ truth, rows, xv, truth_v,
                       [Candidate("first-order", np.arange(p + 1))],
                       fixed={"oracle": truth_v})
    lead = surrogate.parts[0]
    assert (lead.candidate, lead.estimator, lead.weight) == ("oracle", "fixed", 1.0)
    assert len(lead.columns) == 0 and surrogate.validation_r2 == pytest.approx(1.0)


def test_proxy_trees_part_is_the_trees_own_spectrum(monkeypatch):
    pytest.importorskip("lightgbm")
    import spex_plugins.core.spex as spex_module

    n = 16  # above COMPLETION_MAX_N: the surrogate is not completed
    w = np.random.default_rng(2).normal(size=n)

    def f(masks):  # a threshold: what trees express and low-order terms do not
        return np.tanh(3 * (masks @ w - w.sum() / 2))

    fits, real_fit, real_select = [], tree_proxy.fit_proxy, spex_module.select

    rows = []

    def fit_proxy(*args, **kwargs):
        rows.append(len(args[0]))
        fits.append(real_fit(*args, **kwargs))
        return fits[-1]

    def trees_only(*args, fixed):  # no candidate but the trees, to see them in the result
        return real_select(*args[:5], [], fixed=fixed)

    monkeypatch.setattr(tree_proxy, "fit_proxy", fit_proxy)
    monkeypatch.setattr(spex_module, "select", trees_only)
    explanation = SPEX(max_order=3, random_state=0).explain(f, n, budget=1500, progress=False)
    assert explanation.metadata["candidate"] == ["proxy trees"]
    assert explanation.metadata["estimator"] == ["fixed"]
    # the early-stopped fit on the training rows, then the same number of trees on every row
    # (the held-out ones too), whose spectrum is the surrogate
    stopped, refit = fits
    assert rows == [explanation.n_samples - explanation.metadata["n_validation_masks"],
                    explanation.n_samples]
    assert refit.n_trees == stopped.n_trees and np.isnan(refit.validation_r2)
    assert not np.isnan(stopped.validation_r2)
    test = fresh(n, 500)
    np.testing.assert_allclose(explanation.predict(test),
                               tree_proxy.evaluate_spectrum(test, refit.locations, refit.values),
                               atol=1e-9)


def test_given_ranking_keeps_the_candidates_own_order():
    rng = np.random.default_rng(4)
    n, rows, held = 12, 300, 300
    locations = np.full((n + 1, 1), -1)
    locations[1:, 0] = np.arange(n)
    weights = np.zeros(n)
    weights[:3] = (3.0, 2.0, 1.5)  # features 0-2 carry the function, the rest nothing

    def f(masks):
        return masks @ weights + rng.normal(0, 0.1, len(masks))

    train, val = rng.random((rows, n)) < 0.5, rng.random((held, n)) < 0.5
    x, xv = characters(train, locations), characters(val, locations)
    # columns 1-3 are features 0-2; the given order puts a useless feature (column 9) first
    order = np.array([0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12])
    chosen = {}
    for ranking in ("given", "fit"):
        surrogate = select(x.T @ x, x.T @ f(train), rows, xv, f(val),
                           [Candidate("ranked", order, ranking)])
        chosen[ranking] = surrogate.parts[0].columns
    size = len(chosen["given"])  # a prefix of the given order: the useless column comes along
    np.testing.assert_array_equal(chosen["given"], order[:size])
    assert size >= 5 and 9 in chosen["given"]
    assert set(chosen["fit"].tolist()) == {0, 1, 2, 3}  # a joint fit ranks it last


def test_shallow_proxy_proposes_terms_below_its_row_limit(monkeypatch):
    pytest.importorskip("lightgbm")
    import spex_plugins.core.spex as spex_module

    n = 16
    w = np.random.default_rng(3).normal(size=n)

    def f(masks):
        return np.tanh(3 * (masks @ w - w.sum() / 2))

    calls, names, real_fit, real_select = [], [], tree_proxy.fit_proxy, spex_module.select

    def fit_proxy(*args, **kwargs):
        calls.append((len(args[0]), kwargs.get("max_degree"), kwargs.get("n_trees")))
        return real_fit(*args, **kwargs)

    def recording_select(*args, **kwargs):
        names.append({c.name: c.ranking for c in args[5]})
        return real_select(*args, **kwargs)

    monkeypatch.setattr(tree_proxy, "fit_proxy", fit_proxy)
    monkeypatch.setattr(spex_module, "select", recording_select)
    explanation = SPEX(random_state=0).explain(f, n, budget=800, progress=False)
    train = explanation.n_samples - explanation.metadata["n_validation_masks"]
    t = explanation.metadata["max_order"]
    assert t > spex_module.SHALLOW_PROXY_DEPTH
    shallow = (train, spex_module.SHALLOW_PROXY_DEPTH, spex_module.SHALLOW_PROXY_ROUNDS)
    assert calls[:2] == [(train, t, None), shallow]  # early-stopped deep trees, then shallow
    assert names[0]["proxy"] == names[0]["shallow proxy"] == "given"
    assert names[0]["first-order+proxy+shallow proxy lasso"] == "fit"
    assert explanation.metadata["shallow_proxy"] is True

    calls.clear()
    names.clear()
    third = SPEX(max_order=3, random_state=0).explain(f, n, budget=800, progress=False)
    assert third.metadata["shallow_proxy"] is False
    rows = third.n_samples - third.metadata["n_validation_masks"]
    assert calls[0] == (rows, 3, None) and "shallow proxy" not in names[0]  # t = 3: no need
    assert (rows, 3, spex_module.SHALLOW_PROXY_ROUNDS) not in calls
    calls.clear()
    names.clear()
    monkeypatch.setattr(spex_module, "SHALLOW_PROXY_MAX_ROWS", train - 1)
    SPEX(random_state=0).explain(f, n, budget=800, progress=False)
    assert shallow not in calls and "shallow proxy" not in names[0]
