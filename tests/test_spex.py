"""End-to-end behaviour of SPEX.explain and the FourierExplanation it returns."""

import math

import numpy as np
import pytest

from spex_plugins import SPEX, FourierExplanation
from spex_plugins.core.sampler import SubsampleDesign, n_shifts


def sparse_function(n, n_terms, max_degree=5, seed=0, constant=0.7):
    """A random sparse Fourier function; returns (value_function, truth dict)."""
    rng = np.random.default_rng(seed)
    support, chosen = np.full((n_terms, max_degree), -1), set()
    for row in support:
        while True:  # distinct frequencies
            d = rng.integers(1, max_degree + 1)
            k = tuple(np.sort(rng.choice(n, d, replace=False)))
            if k not in chosen:
                break
        chosen.add(k)
        row[:d] = k
    coefficients = rng.choice([-1, 1], n_terms) * rng.uniform(0.2, 2.0, n_terms)
    truth = {tuple(int(i) for i in row if i >= 0): c
             for row, c in zip(support, coefficients, strict=True)}
    truth[()] = truth.get((), 0.0) + constant

    def value_function(masks):
        x = np.concatenate([masks, np.zeros((len(masks), 1), bool)], axis=1)
        parity = np.bitwise_xor.reduce(x[:, support], axis=2)
        return (1.0 - 2.0 * parity) @ coefficients + constant

    return value_function, truth


def held_out(n, m=2000, seed=123):
    return np.random.default_rng(seed).random((m, n)) < 0.5


@pytest.mark.parametrize("decoder", ["hard", "soft"])
@pytest.mark.parametrize("refit", ["ridge", None])
@pytest.mark.parametrize(("n", "n_terms", "b"), [(16, 50, 8), (100, 80, 7), (1000, 100, 8)])
def test_exact_recovery_of_sparse_low_degree_functions(n, n_terms, b, decoder, refit):
    f, truth = sparse_function(n, n_terms, seed=n)
    explanation = SPEX(b=b, decoder=decoder, refit=refit, random_state=1).explain(
        f, n, progress=False)
    got = explanation.fourier()
    for k, value in truth.items():
        assert got.get(k, 0.0) == pytest.approx(value, abs=1e-8), k
    # nothing else of any size (the refit also carries all first-order terms, at ~0)
    assert max((abs(v) for k, v in got.items() if k not in truth), default=0.0) < 1e-8
    test = held_out(n)
    assert explanation.r2(test, f(test)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("n", "n_terms", "b"), [(7, 12, 4), (10, 20, 4), (12, 25, 5)])
def test_exact_recovery_with_few_bins_per_term(n, n_terms, b):
    # many multitons: the noise floor must not mistake dominated multitons for noise
    for seed in range(4):
        f, truth = sparse_function(n, n_terms, max_degree=3, seed=seed)
        for random_state in range(3):
            explanation = SPEX(max_order=3, b=b, random_state=random_state).explain(
                f, n, progress=False)
            got = explanation.fourier()
            for k, value in truth.items():
                assert got.get(k, 0.0) == pytest.approx(value, abs=1e-8), (seed, k)
            # least squares up to round-off (or the exact transform of every mask)
            penalty = explanation.metadata["ridge_penalty"]
            assert penalty is None or penalty[0] <= 1e-9


def test_soft_decoding_recovers_more_than_hard_under_noise():
    n, noise = 500, 3.0
    f, truth = sparse_function(n, 100, seed=5)
    rng = np.random.default_rng(0)

    def noisy(masks):
        return f(masks) + rng.normal(0, noise, len(masks))

    found = {}
    for decoder in ("hard", "soft"):
        rng = np.random.default_rng(0)
        explanation = SPEX(b=6, decoder=decoder, refit=None, random_state=3).explain(
            noisy, n, progress=False)
        got = explanation.fourier()
        found[decoder] = sum(1 for k in truth if k and k in got)
        # and hardly any spurious terms: the noise floor keeps pure-noise bins out
        assert len(got) - found[decoder] <= 3
    # measured on this seed: hard 79, soft 88 of 100 terms
    assert found["soft"] >= found["hard"] + 5, found


def test_multi_output_explains_each_output_from_one_set_of_masks():
    n = 60
    f1, truth1 = sparse_function(n, 30, seed=1)
    f2, truth2 = sparse_function(n, 30, seed=2)
    calls = []

    def both(masks):
        calls.append(len(masks))
        return np.stack([f1(masks), f2(masks)], axis=1)

    explanation = SPEX(b=6, random_state=0).explain(both, n, progress=False)
    assert explanation.n_outputs == 2
    assert sum(calls) == explanation.n_model_calls
    for k, truth in enumerate((truth1, truth2)):
        got = explanation.output(k).fourier()
        for key, value in truth.items():
            assert got.get(key, 0.0) == pytest.approx(value, abs=1e-8)
    test = held_out(n)
    np.testing.assert_allclose(explanation.r2(test, both(test)), [1.0, 1.0], atol=1e-12)
    assert explanation.shapley_values().shape == (n, 2)
    assert explanation.predict(test).shape == (len(test), 2)


def test_an_output_gets_the_same_fit_alone_and_beside_others():
    """The column table is the union of every output's candidates; an output's fit must not
    depend on the others (BLAS rounds by position, and the tuning turns 1e-14 into 1e-4)."""
    n, rng = 36, np.random.default_rng(7)  # a seed whose tuning flipped before the fix
    weights = rng.normal(size=(n, 6))
    points = rng.random((6, n))

    def dense(masks):  # every feature interacts through the tanh
        x = masks[:, :, None] * points.T[None]  # (m, n, 6)
        return np.tanh(np.einsum("mnk,nk->mk", x, weights) / 3) + x[:, 0] * x[:, 7]

    together = SPEX(random_state=0).explain(dense, n, budget=400, progress=False)
    test = np.random.default_rng(123).random((500, n)) < 0.5
    for k in range(6):
        alone = SPEX(random_state=0).explain(lambda masks, k=k: dense(masks)[:, k], n,
                                             budget=400, progress=False)
        assert [name for name, _ in together.metadata["stack"][k]] == \
            [name for name, _ in alone.metadata["stack"][0]]
        np.testing.assert_allclose(together.predict(test)[:, k], alone.predict(test),
                                   rtol=0, atol=1e-11)
        np.testing.assert_allclose(together.output(k).shapley_values(), alone.shapley_values(),
                                   rtol=0, atol=1e-11)


def test_same_seed_same_explanation_and_other_seed_other_masks():
    f, _ = sparse_function(50, 20, seed=4)
    seen = []

    def recorder(masks):
        seen.append(masks.copy())
        return f(masks)

    a = SPEX(b=5, random_state=11).explain(recorder, 50, progress=False)
    b = SPEX(b=5, random_state=11).explain(recorder, 50, progress=False)
    np.testing.assert_array_equal(a.locations, b.locations)
    np.testing.assert_array_equal(a.coefficients, b.coefficients)
    np.testing.assert_array_equal(np.vstack(seen[: len(seen) // 2]),
                                  np.vstack(seen[len(seen) // 2:]))
    c = SPEX(b=5, random_state=12).explain(recorder, 50, progress=False)
    assert c.n_model_calls > 0
    assert not np.array_equal(np.vstack(seen[: len(seen) // 3]), np.vstack(seen[-len(seen) // 3:]))


@pytest.mark.parametrize(("n", "budget"), [(12, 700), (30, 1000), (200, 20_000), (1000, 32),
                                           (1000, 1017), (1000, 5000)])
def test_the_whole_budget_is_spent(n, budget):
    f, _ = sparse_function(n, 20, seed=6)
    calls = []

    def counting(masks):
        calls.append(len(masks))
        return f(masks)

    explanation = SPEX(random_state=0).explain(counting, n, budget=budget, progress=False)
    assert sum(calls) == explanation.n_model_calls == budget
    meta = explanation.metadata
    # the design is the largest b that fits in DESIGN_SHARE of the budget, if any, with 3
    # groups or 2, whichever reaches the larger b once doubled where the doubled design fits
    # in EXTENDED_SHARE (and n > 14), then whichever starts larger (3 on a tie)
    fitting = {c: [b for b in range(3, 21) if c * n_shifts(n, 5) * 2 ** b <= 0.5 * budget]
               for c in (3, 2)}
    best = {c: max(bs) if bs else -1 for c, bs in fitting.items()}
    room = budget - meta["n_validation_masks"] - 2 - 16
    reach = {c: b + (n > 14 and b >= 0
                     and c * n_shifts(n, 5) * 2 ** (b + 1) <= min(room, 0.75 * budget))
             for c, b in best.items()}
    groups = 3 if (reach[3], best[3]) >= (reach[2], best[2]) else 2
    assert meta["n_groups"] == groups
    doubled = bool(meta["design_extended"])
    assert meta["b"] == (best[groups] + doubled if best[groups] >= 0 else None)
    assert meta["n_design_masks"] == (groups * n_shifts(n, 5) * 2 ** meta["b"]
                                      if meta["b"] else 0)
    assert meta["n_validation_masks"] == min(max(16, round(0.15 * budget)), budget - 16)
    assert explanation.n_samples == meta["n_design_masks"] + meta["n_uniform_masks"]


def test_the_design_doubles_where_peeling_cannot_yet_resolve_the_interactions():
    # 100 terms of degree <= 4 with normal coefficients over n = 1000 at 5,000 calls: the first
    # design has 2 x 16 bins and peels a share of the interactions; the held-back masks double
    # it (b = 4 -> 5). (With coefficients of similar sizes, as in sparse_function, the first
    # design peels almost nothing and stays as it is: no evidence that more bins would help.)
    n, budget = 1000, 5000
    rng = np.random.default_rng(0)
    locations = np.full((101, 4), -1)
    for row in locations[1:]:
        degree = rng.integers(1, 5)
        row[:degree] = np.sort(rng.choice(n, degree, replace=False))
    f = FourierExplanation(n, locations, rng.normal(size=101)).predict
    calls = []

    def counting(masks):
        calls.append(len(masks))
        return f(masks)

    plan = SPEX().plan(n, budget)
    assert (plan.n_groups, plan.b, plan.n_extension) == (2, 4, plan.n_design)
    doubled = SPEX(random_state=0).explain(counting, n, budget=budget, progress=False)
    meta = doubled.metadata
    assert meta["design_extended"] and meta["b"] == 5
    assert meta["n_design_masks"] == 2 * plan.n_design
    assert sum(calls) == doubled.n_model_calls == budget
    evidence = meta["design_evidence"]
    assert evidence["interactions"][0] >= 0.1 and evidence["peeled"][0] <= 0.8
    # the same budget with the first design kept (b given: no extension) is far less faithful
    kept = SPEX(b=4, n_groups=2, random_state=0).explain(f, n, budget=budget, progress=False)
    assert kept.metadata["design_extended"] is None and kept.metadata["b"] == 4
    masks = held_out(n)
    assert doubled.r2(masks, f(masks)) > 0.999 > kept.r2(masks, f(masks)) + 0.1
    again = SPEX(random_state=0).explain(f, n, budget=budget, progress=False)
    np.testing.assert_array_equal(again.locations, doubled.locations)
    np.testing.assert_array_equal(again.coefficients, doubled.coefficients)


def test_an_additive_function_keeps_the_uniform_masks():
    n, budget = 1000, 5000
    weights = np.random.default_rng(2).normal(size=n)
    explanation = SPEX(random_state=0).explain(lambda m: m @ weights, n, budget=budget,
                                               progress=False)
    meta = explanation.metadata
    assert meta["design_extended"] is False and meta["b"] == 4
    assert meta["design_evidence"]["interactions"][0] < 0.1
    assert explanation.n_model_calls == budget
    assert meta["n_uniform_masks"] == budget - meta["n_design_masks"] + (
        explanation.n_samples - explanation.n_model_calls)  # the design's repeated masks


def test_few_rows_per_feature_average_five_fits_on_disjoint_held_out_folds(monkeypatch):
    import spex_plugins.core.spex as spex_module

    # n = 300 at 600 calls: no design fits, 510 training rows < 4 per feature
    n, budget = 300, 600
    f, _ = sparse_function(n, 40, max_degree=2, seed=5)
    fits, held_out_rows = [], []
    real = spex_module.SPEX._validated_fit

    def recording(self, samples, values, *args, **kwargs):
        held_out_rows.append({tuple(np.flatnonzero(m)) for m in
                              samples.masks[samples.n_train_rows:]})
        assert not kwargs["first_order_ridge"]
        fits.append(real(self, samples, values, *args, **kwargs))
        return fits[-1]

    monkeypatch.setattr(spex_module.SPEX, "_validated_fit", recording)
    explanation = SPEX(random_state=0).explain(f, n, budget=budget, progress=False)
    meta = explanation.metadata
    assert meta["b"] is None and explanation.n_model_calls == budget
    assert len(fits) == 5 and len(meta["committee"]) == 5
    # the folds are disjoint, cover every uniform mask but the two endpoints, and never hold
    # out an endpoint
    assert sum(len(rows) for rows in held_out_rows) == budget - 2
    assert len(set().union(*held_out_rows)) == budget - 2
    assert () not in set().union(*held_out_rows)
    # the surrogate is the fits' average, weighted against a first-order LASSO by stacking
    (name, share), (lasso_name, lasso_share) = meta["committee_stack"][0]
    assert (name, lasso_name) == ("committee", "first-order lasso cv")
    assert share >= 0 and lasso_share >= 0 and share + lasso_share == pytest.approx(1.0)
    masks = held_out(n, 500)
    average = np.mean([FourierExplanation(n, fit.locations, fit.coefficients[:, 0]).predict(masks)
                       for fit in fits], axis=0)
    rest = explanation.predict(masks) - share * average
    first_order = np.hstack([np.ones((len(masks), 1)), 1.0 - 2.0 * masks])
    residual = rest - first_order @ np.linalg.lstsq(first_order, rest, rcond=None)[0]
    assert np.abs(residual).max() < 1e-8  # what is not the committee is first order
    assert meta["committee"] == [fit.metadata["validation_r2"] for fit in fits]
    assert -1.0 < explanation.validation_r2 <= 1.0
    monkeypatch.undo()
    again = SPEX(random_state=0).explain(f, n, budget=budget, progress=False)
    np.testing.assert_array_equal(again.coefficients, explanation.coefficients)
    threaded = SPEX(random_state=0, n_jobs=2).explain(f, n, budget=budget, progress=False)
    np.testing.assert_array_equal(threaded.locations, explanation.locations)
    np.testing.assert_array_equal(threaded.coefficients, explanation.coefficients)
    # the fits overlap on the threads: their stage times share out the wall time
    stages = ("sampling", "transform", "decode", "refit")
    assert sum(threaded.timings[key] for key in stages) <= threaded.timings["own"] + 1e-3
    # with more rows per feature (or a design) there is one fit
    single = SPEX(random_state=0).explain(f, n, budget=2000, progress=False)
    assert "committee" not in single.metadata


def test_older_refits_spend_only_the_design():
    f, _ = sparse_function(200, 20, seed=6)
    budget = 20_000
    explanation = SPEX(refit="ridge", random_state=0).explain(f, 200, budget=budget,
                                                              progress=False)
    expected_b = int(np.floor(np.log2(budget / (3 * n_shifts(200, 5)))))
    assert explanation.metadata["b"] == expected_b
    assert explanation.n_samples == 3 * n_shifts(200, 5) * 2 ** expected_b <= budget
    # duplicates (the l = 0 masks repeat in every group) are sent once
    assert explanation.n_model_calls < explanation.n_samples


def test_a_budget_covering_every_mask_gives_the_exact_transform():
    f, truth = sparse_function(9, 30, seed=3)
    explanation = SPEX(max_order=2, random_state=0).explain(f, 9, budget=600, progress=False)
    assert explanation.n_model_calls == 512 and explanation.metadata["exhaustive"]
    got = explanation.fourier()  # every degree, not only up to max_order
    assert set(got) == set(truth)
    for k, value in truth.items():
        assert got[k] == pytest.approx(value, abs=1e-12)
    assert explanation.validation_r2 == 1.0


def test_small_n_is_exact_on_every_evaluated_mask_and_enumerates_the_border():
    # degree-7 terms (beyond max_order=3) that no low-degree surrogate fits
    f, truth = sparse_function(11, 25, max_degree=7, seed=4)
    sent = []

    def recorder(masks):
        sent.append(masks.copy())
        return f(masks)

    explanation = SPEX(max_order=3, random_state=0).explain(recorder, 11, budget=900,
                                                           progress=False)
    masks = np.vstack(sent)
    assert explanation.metadata["completed"] and len(masks) == 900 < 2 ** 11
    np.testing.assert_allclose(explanation.predict(masks), f(masks), atol=1e-9)
    sizes = masks.sum(axis=1)
    for size in (0, 1, 2, 9, 10, 11):  # the border sizes fit in the room: all evaluated
        assert (sizes == size).sum() == math.comb(11, size)
    shapley = explanation.shapley_values()
    assert shapley.sum() == pytest.approx(f(np.ones((1, 11), bool))[0]
                                          - f(np.zeros((1, 11), bool))[0], abs=1e-9)


def test_above_the_completion_limit_the_surrogate_stays_sparse():
    f, _ = sparse_function(15, 10, max_degree=3, seed=5)
    explanation = SPEX(max_order=3, random_state=0).explain(f, 15, budget=600, progress=False)
    assert not explanation.metadata["completed"]
    assert len(explanation.locations) < 200


def test_masks_are_sent_once_in_batches():
    f, _ = sparse_function(30, 10, seed=8)
    batches = []

    def recorder(masks):
        assert masks.dtype == bool and masks.shape[1] == 30
        batches.append(masks.copy())
        return f(masks)

    explanation = SPEX(b=5, random_state=0).explain(recorder, 30, batch_size=500, progress=False)
    sent = np.vstack(batches)
    assert max(len(b) for b in batches) <= 500
    assert len(np.unique(sent, axis=0)) == len(sent) == explanation.n_model_calls


def test_ridge_refit_is_never_worse_than_a_first_order_fit_on_the_samples():
    n, b, seed = 40, 5, 2
    rng = np.random.default_rng(0)
    weights = rng.normal(size=n)

    def dense(masks):  # not sparse: a smooth non-linear function of a linear score
        return np.tanh(masks @ weights / 3) + 0.3 * np.sin(masks[:, :10].sum(axis=1))

    explanation = SPEX(b=b, random_state=seed).explain(dense, n, progress=False)
    design = SubsampleDesign.create(n, 5, 3, b, np.random.default_rng(seed))
    masks = design.masks().reshape(-1, n)
    y = dense(masks)
    rss_spex = ((y - explanation.predict(masks)) ** 2).sum()
    linear = np.hstack([np.ones((len(masks), 1)), masks.astype(float)])
    coef, *_ = np.linalg.lstsq(linear, y, rcond=None)
    rss_linear = ((y - linear @ coef) ** 2).sum()
    assert rss_spex <= rss_linear * (1 + 1e-9)
    # and the sample-domain refit equals an explicit least-squares fit for noiseless data
    raw = SPEX(b=b, random_state=seed, refit=None).explain(dense, n, progress=False)
    assert len(raw.coefficients) < len(explanation.coefficients)


def test_timings_separate_model_time_from_own_work():
    f, _ = sparse_function(20, 5, seed=9)

    def slow(masks):
        import time

        time.sleep(0.2)
        return f(masks)

    explanation = SPEX(b=3, random_state=0).explain(slow, 20, progress=False)
    t = explanation.timings
    assert set(t) >= {"sampling", "model", "transform", "decode", "refit", "own", "total"}
    assert t["model"] >= 0.2
    assert t["own"] == pytest.approx(t["total"] - t["model"], abs=1e-6)
    assert t["own"] < t["total"] - 0.19


def test_conversions_from_the_explanation_are_consistent():
    n = 12
    f, _ = sparse_function(n, 15, max_degree=3, seed=10)
    explanation = SPEX(max_order=3, b=6, random_state=0).explain(f, n, progress=False)
    full, empty = f(np.ones((1, n), bool))[0], f(np.zeros((1, n), bool))[0]
    assert explanation.full_value == pytest.approx(full)
    assert explanation.empty_value == pytest.approx(empty)
    assert explanation.shapley_values().sum() == pytest.approx(full - empty)
    moebius = explanation.moebius()
    assert sum(moebius.values()) == pytest.approx(full)
    assert moebius[()] == pytest.approx(empty)
    banzhaf = explanation.banzhaf_values()
    fourier = explanation.fourier()
    for i in range(n):
        assert banzhaf[i] == pytest.approx(-2 * fourier.get((i,), 0.0))
    top = explanation.top(3)
    assert len(top) == 3 and all(len(s) >= 1 for s, _ in top)
    assert abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])
    # Moebius by default, `order` means exactly that size, names when known (issue 13.12)
    assert top[0][1] == pytest.approx(moebius[top[0][0]])
    pairs = explanation.top(5, order=2)
    assert pairs and all(len(s) == 2 for s, _ in pairs)
    named = FourierExplanation(explanation.n, explanation.locations, explanation.coefficients,
                               metadata={"feature_names": [f"f{i}" for i in range(n)]})
    assert named.top(1)[0][0] == tuple(f"f{i}" for i in top[0][0])
    for index in ("Moebius", "Fourier", "BII", "SII", "k-SII", "FBII", "FSII", "STII"):
        values = explanation.interactions(index, order=2)
        assert values and all(len(s) <= 2 for s in values)


def test_save_and_load_round_trip(tmp_path):
    f, _ = sparse_function(30, 10, seed=12)
    explanation = SPEX(b=5, random_state=0).explain(f, 30, progress=False)
    path = tmp_path / "explanation.npz"
    explanation.save(path)
    loaded = FourierExplanation.load(path)
    np.testing.assert_array_equal(loaded.locations, explanation.locations)
    np.testing.assert_array_equal(loaded.coefficients, explanation.coefficients)
    assert loaded.n == 30 and loaded.n_model_calls == explanation.n_model_calls
    assert loaded.metadata["b"] == 5 and loaded.timings == explanation.timings
    test = held_out(30)
    np.testing.assert_array_equal(loaded.predict(test), explanation.predict(test))
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a spex-plugins/fourier-explanation file"):
        FourierExplanation.load(tmp_path / "other.npz")


def test_progress_bar_runs():
    f, _ = sparse_function(20, 5, seed=13)
    explanation = SPEX(b=3, random_state=0).explain(f, 20, batch_size=100, progress=True)
    assert explanation.n_model_calls > 0


# --- bad input ------------------------------------------------------------------------------

def _ones(masks):
    return np.ones(len(masks))


@pytest.mark.parametrize("n", [0, -3, 2.5, "10"])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n .number of features. must be an integer >= 1"):
        SPEX().explain(_ones, n)


@pytest.mark.parametrize("max_order", [0, -1, 2.5])
def test_max_order_outside_range(max_order):
    with pytest.raises(ValueError, match=r"max_order must be an integer >= 1"):
        SPEX(max_order=max_order).explain(_ones, 10)


def test_max_order_above_n_is_lowered_and_recorded():
    explanation = SPEX(max_order=11, b=3).explain(_ones, 10, progress=False)
    assert explanation.metadata["max_order"] == 10
    assert explanation.metadata["max_order_requested"] == 11
    assert SPEX(max_order=11).min_budget(10) == SPEX(max_order=10).min_budget(10)


def test_threads_give_the_same_explanation():
    # one validated fit with the deep and the shallow proxy of two outputs on the threads
    pytest.importorskip("lightgbm")
    n = 40
    f, _ = sparse_function(n, 12, max_degree=3, seed=8)

    def two_outputs(masks):
        y = f(masks)
        return np.stack([y, np.sin(y)], axis=1)

    one = SPEX(random_state=3).explain(two_outputs, n, budget=700, progress=False)
    assert one.metadata["shallow_proxy"] and "committee" not in one.metadata
    for jobs in (2, -1):
        other = SPEX(random_state=3, n_jobs=jobs).explain(two_outputs, n, budget=700,
                                                          progress=False)
        np.testing.assert_array_equal(other.locations, one.locations)
        np.testing.assert_array_equal(other.coefficients, one.coefficients)
    assert "n_jobs=2" in repr(SPEX(n_jobs=2))


def test_bad_configuration():
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n_jobs must be"):
            SPEX(n_jobs=bad).explain(_ones, 10)
    with pytest.raises(ValueError, match="decoder must be"):
        SPEX(decoder="fast").explain(_ones, 10)
    with pytest.raises(ValueError, match="refit must be"):
        SPEX(refit="lasso").explain(_ones, 10)


def test_budget_too_small_states_the_minimum():
    # validated refit: 16 training plus 16 held-out masks (ridge copes with fewer rows than n)
    with pytest.raises(ValueError, match=r"below the minimum SPEX budget of 32 model calls for "
                                         r"n=1000 features at max_order=5"):
        SPEX().explain(_ones, 1000, budget=31)
    assert SPEX().min_budget(1000) == 32
    assert SPEX().explain(_ones, 1000, budget=32, progress=False).n_model_calls == 32
    # all masks when there are fewer, and the minimum is what runs
    assert SPEX().min_budget(4) == 16
    assert SPEX().explain(_ones, 4, budget=16, progress=False).n_model_calls == 16
    with pytest.raises(ValueError, match=r"^max_evals=15 is below the minimum SPEX budget of 16"):
        SPEX().explain(_ones, 4, budget=15, budget_name="max_evals")
    # the older refits need the design at b = 3
    with pytest.raises(ValueError, match=r"below the minimum SPEX budget of 1344 model calls for "
                                         r"n=1000 features at max_order=5"):
        SPEX(refit="ridge").explain(_ones, 1000, budget=1000)
    with pytest.raises(ValueError, match="above budget"):
        SPEX(b=8).explain(_ones, 100, budget=2000)


@pytest.mark.parametrize("bad", [
    lambda m: np.ones(len(m) + 1),
    lambda m: np.ones((len(m), 2, 2)),
    lambda m: np.float64(1.0),
    lambda m: None,
])
def test_wrong_output_shape(bad):
    with pytest.raises(ValueError, match="must return an array of shape"):
        SPEX(b=3).explain(bad, 10, progress=False)


def test_changing_number_of_outputs():
    state = {"k": 1}

    def flip(masks):
        state["k"] += 1
        return np.ones((len(masks), state["k"]))

    with pytest.raises(ValueError, match="outputs per mask"):
        SPEX(b=3).explain(flip, 10, batch_size=50, progress=False)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_name_the_masks(bad_value):
    def broken(masks):
        out = masks.sum(axis=1).astype(float)
        out[[3, 7]] = bad_value
        return out

    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) for 2 of .* masks.*"
                                         r"mask rows \[3, 7\].*first offending mask"):
        SPEX(b=3).explain(broken, 10, progress=False)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_r2_against_non_finite_targets_is_an_error(bad_value):
    """Issue 13.3: R^2 used to come out as 1.0 when the targets held NaN."""
    explanation = FourierExplanation(3, [[-1], [0]], [0.5, 0.25])
    masks = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 1]], bool)
    with pytest.raises(ValueError, match="non-finite"):
        explanation.r2(masks, [0.75, bad_value, 0.25])
