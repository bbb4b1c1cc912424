"""spex_plugins.shapiq: the shapiq approximator, index conversions, explainers, plots, compare()."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

shapiq = pytest.importorskip("shapiq", reason="the shapiq adapter needs shapiq")

from spex_plugins import SPEX  # noqa: E402
from spex_plugins.shapiq import (  # noqa: E402
    METHODS,
    SpexApproximator,
    compare,
    supported_indices,
    to_interaction_values,
)

FIRST_ORDER = ("SV", "BV")


def fourier_game(n: int, terms: dict[tuple[int, ...], float]):
    """f(x) = sum_K F(K) (-1)^<x,K> on bool coalitions (m, n) -> (m,)."""
    def game(coalitions):
        x = np.atleast_2d(np.asarray(coalitions, bool))
        out = np.zeros(len(x))
        for k, value in terms.items():
            out += value * (1.0 - 2.0 * (x[:, list(k)].sum(axis=1) % 2))
        return out
    return game


SPARSE_TERMS = {(): 0.7, (0,): -1.1, (1, 2): 0.9, (3, 4, 5): -0.8, (6,): 0.5, (2, 7): 0.6,
                (8, 9): -0.4, (1, 5, 7, 9): 0.3}
N_SPARSE = 10


@pytest.fixture(scope="module")
def sparse_game():
    return fourier_game(N_SPARSE, SPARSE_TERMS)


@pytest.fixture(scope="module")
def exact(sparse_game):
    return shapiq.ExactComputer(sparse_game, n_players=N_SPARSE)


def _order(index: str, max_order: int) -> int:
    return 1 if index in FIRST_ORDER else max_order


def _max_abs_diff(ours: dict, theirs: dict, order: int) -> float:
    keys = {s for s in (*ours, *theirs) if len(s) <= order}
    return max(abs(ours.get(s, 0.0) - theirs.get(s, 0.0)) for s in keys)


def test_names_and_defaults_are_those_of_the_installed_shapiq_spex():
    import inspect

    ours = inspect.signature(SpexApproximator.__init__).parameters
    theirs = inspect.signature(shapiq.SPEX.__init__).parameters
    for name, parameter in theirs.items():
        if name != "self":
            assert name in ours, name
            assert ours[name].default == parameter.default, name
    approx = SpexApproximator(n=8)
    assert approx.index == theirs["index"].default
    with pytest.warns(DeprecationWarning, match="decoder_type"):
        old = SpexApproximator(n=8, decoder="hard")
    assert old.spex.decoder == old.decoder_type == "hard"
    spex = SPEX(n_groups=2, chase_depth=4)
    forwarded = SpexApproximator(n=8, spex=spex, degree_parameter=3, decoder_type="hard",
                                 random_state=7, b=4)
    assert (forwarded.spex.n_groups, forwarded.spex.chase_depth, forwarded.spex.max_order,
            forwarded.spex.decoder, forwarded.spex.random_state, forwarded.spex.b) == (
        2, 4, 3, "hard", 7, 4)
    with pytest.raises(TypeError, match="unknown keyword"):
        SpexApproximator(n=8, decoder_typo="hard")


def test_first_order_index_with_a_higher_order_says_so():
    with pytest.warns(UserWarning, match="SV is an order-1 index: max_order=3 is ignored"):
        approx = SpexApproximator(n=12, max_order=3, index="SV")
    assert approx.max_order == 1


def test_is_a_shapiq_approximator_with_its_own_name():
    from shapiq.approximator.base import Approximator

    approx = SpexApproximator(12, max_order=3, index="STII", random_state=1)
    assert isinstance(approx, Approximator)
    assert SpexApproximator is not shapiq.SPEX and SpexApproximator.__name__ != "SPEX"
    assert (approx.n, approx.max_order, approx.index, approx.min_order) == (12, 3, "STII", 0)
    assert SpexApproximator(12, max_order=3, index="STII", top_order=True).min_order == 3
    assert set(supported_indices()) >= {"SV", "BV", "SII", "BII", "k-SII", "STII", "FSII",
                                        "FBII", "Moebius"}
    with pytest.raises(ValueError, match="Invalid index"):
        SpexApproximator(12, index="nope")
    with pytest.raises(ValueError, match="max_order"):
        SpexApproximator(5, max_order=6)


@pytest.mark.parametrize("max_order", [2, 3])
def test_every_index_matches_shapiq_exact_computer(sparse_game, exact, max_order):
    """Exactly sparse game (degree 4, n = 10): every supported index equals the exact one."""
    budget = 1200
    for index in supported_indices():
        order = _order(index, max_order)
        approx = SpexApproximator(N_SPARSE, max_order=order, index=index, random_state=0, b=4)
        ours = approx.approximate(budget, sparse_game)
        theirs = exact(index, order)
        assert ours.index == index
        assert (ours.max_order, ours.min_order, ours.n_players) == (order, 0, N_SPARSE)
        assert ours.estimated is True
        assert ours.estimation_budget == approx.explanation_.n_model_calls <= budget
        assert _max_abs_diff(dict(ours.interactions), dict(theirs.interactions), order) < 1e-8, \
            index
        if index not in ("BV", "BII", "Fourier"):  # those carry E[f] on the empty set
            assert ours.baseline_value == pytest.approx(theirs.baseline_value, abs=1e-8)


def test_native_moebius_converter_route_matches_core_conversions(sparse_game):
    """shapiq's MoebiusConverter (native route) against FourierExplanation.interactions."""
    from shapiq.game_theory.moebius_converter import MoebiusConverter

    explanation = SPEX(b=4, random_state=0).explain(sparse_game, N_SPARSE, progress=False)
    for index in MoebiusConverter.valid_indices:
        order = _order(index, 3)
        native = dict(to_interaction_values(explanation, index, order).interactions)
        core = explanation.interactions(index, order)
        for s in {*native, *core} - {()}:  # the empty set follows shapiq's own conventions
            assert native.get(s, 0.0) == pytest.approx(core.get(s, 0.0), abs=1e-9), (index, s)


def test_top_order_keeps_only_the_top_order(sparse_game, exact):
    iv = SpexApproximator(N_SPARSE, max_order=2, index="FSII", top_order=True, random_state=0,
                          b=4).approximate(1200, sparse_game)
    assert iv.min_order == 2 and set(map(len, iv.interactions)) == {2}
    truth = exact("FSII", 2)
    for s, v in iv.interactions.items():
        assert v == pytest.approx(truth[s], abs=1e-8)


def _dense_game(n: int):
    """A smooth, not sparse game: sigmoid of a weighted sum plus pairwise products."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=n)
    pairs = [(0, 1, 1.5), (2, 5, -1.0), (3, 6, 0.8)]

    def game(coalitions):
        x = np.atleast_2d(np.asarray(coalitions, float))
        z = x @ w + sum(c * x[:, i] * x[:, j] for i, j, c in pairs)
        return 1.0 / (1.0 + np.exp(-z))
    return game


def test_non_sparse_game_fbii_and_stii_close_to_exact():
    """n = 8, every Fourier coefficient non-zero, so SPEX (degree <= 5, 32 bins per group)
    returns an approximation. Tolerance: each index value is linear in the Fourier spectrum,
    ``I(S) = sum_K c_S(K) F(K)``, so by Cauchy-Schwarz and Parseval its error is at most
    ``||c_S||_2 * rms`` with ``rms`` the surrogate's RMS error over all 2^n masks. For FBII of
    order 2, c_S(K) = (-2)^|S| on K ⊇ S with |K| <= 2: ||c_S|| <= sqrt(1 + n + C(n, 2)). For
    STII of order 2, c_S(K) = (-2)^|S| on all K ⊇ S for |S| < 2 (Möbius coefficients), the
    largest norm being 2 sqrt(2^(n-1)) at |S| = 1; the top order has a smaller norm. On top of
    that bound, the surrogate must be faithful (rms below 2% of the output range) and the
    error below 10% of the spread of the exact values.
    """
    n = 8
    game = _dense_game(n)
    all_masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    values = game(all_masks)
    exact = shapiq.ExactComputer(game, n_players=n)
    norms = {"FBII": np.sqrt(1 + n + n * (n - 1) / 2), "STII": 2 * np.sqrt(2 ** (n - 1))}
    for index, norm in norms.items():
        approx = SpexApproximator(n, max_order=2, index=index, random_state=0, b=5)
        iv = approx.approximate(2100, game)
        rms = np.sqrt(np.mean((values - approx.explanation_.predict(all_masks)) ** 2))
        assert rms < 0.02 * np.ptp(values)
        truth = dict(exact(index, 2).interactions)
        err = _max_abs_diff(dict(iv.interactions), truth, 2)
        assert err <= norm * rms + 1e-12, (index, err, rms)
        assert err < 0.1 * np.ptp([v for s, v in truth.items() if s]), (index, err)


def test_budget_too_small_surfaces_the_core_error(sparse_game):
    with pytest.raises(ValueError) as core_err:
        SPEX(max_order=5).explain(sparse_game, N_SPARSE, budget=20, progress=False)
    with pytest.raises(ValueError) as ours:
        SpexApproximator(N_SPARSE, max_order=2, index="k-SII").approximate(20, sparse_game)
    assert str(ours.value) == str(core_err.value) and "minimum" in str(ours.value)


def test_accepts_a_shapiq_game_and_checks_its_size():
    terms = {(0,): 1.0, (1, 2): -0.5}

    class Sparse(shapiq.Game):
        def __init__(self, n):
            super().__init__(n_players=n, normalize=False)
            self.f = fourier_game(n, terms)

        def value_function(self, coalitions):
            return self.f(coalitions)

    approx = SpexApproximator(6, max_order=2, index="Moebius", random_state=0, b=4)
    iv = approx.approximate(2000, Sparse(6))
    # a(S) = (-2)^|S| F(S) for a spectrum without supersets: a({0}) = -2, a({1,2}) = -2
    assert iv[(0,)] == pytest.approx(-2.0) and iv[(1, 2)] == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="players"):
        SpexApproximator(7, max_order=2, index="Moebius", b=4).approximate(2000, Sparse(6))


def test_multi_output_value_function_is_refused():
    def two(coalitions):
        x = np.asarray(coalitions, float)
        return np.stack([x[:, 0], x[:, 1]], axis=1)

    with pytest.raises(ValueError, match="one value per coalition"):
        SpexApproximator(6, max_order=2, index="SII", b=4).approximate(2000, two)


def test_explainer_asking_for_another_index_warns():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 5))

    def model(X):
        return X[:, 0] * X[:, 1] + X[:, 2]

    explainer = shapiq.TabularExplainer(model=model, data=data, index="FBII", max_order=3,
                                        approximator=SpexApproximator(n=5, index="k-SII",
                                                                      max_order=2, b=4))
    with pytest.warns(UserWarning, match="asked for FBII of order 3, but this SpexApproximator "
                                         "returns k-SII of order 2"):
        explainer.explain(data[:1], budget=1500)


def test_plugs_into_shapiq_explainers():
    """TabularExplainer / Explainer accept the instance; k-SII is efficient on the imputed game."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(30, 6))
    x = rng.normal(size=(1, 6))

    def model(X):
        return X @ np.arange(1.0, 7.0) + 2.0 * X[:, 0] * X[:, 1] - X[:, 2] * X[:, 4]

    for cls in (shapiq.TabularExplainer, shapiq.Explainer):
        approx = SpexApproximator(6, max_order=2, index="k-SII", random_state=0, b=4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explainer = cls(model=model, data=data, index="k-SII", max_order=2,
                            approximator=approx, random_state=0)
            iv = explainer.explain(x, budget=1500)
        assert explainer.approximator is approx
        assert iv.index == "k-SII" and 0 < iv.estimation_budget <= 1500
        total = sum(v for s, v in iv.interactions.items() if s) + iv.baseline_value
        assert total == pytest.approx(model(x)[0], abs=1e-6)


def test_works_with_interaction_values_methods_and_plots(sparse_game, tmp_path):
    matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    approx = SpexApproximator(N_SPARSE, max_order=2, index="k-SII", random_state=0, b=4)
    iv = approx.approximate(1200, sparse_game)
    doubled = iv + iv
    assert doubled[(1, 2)] == pytest.approx(2 * iv[(1, 2)])
    assert (iv * 3)[(0,)] == pytest.approx(3 * iv[(0,)])
    assert (iv - iv)[(0,)] == pytest.approx(0.0)
    mean = iv.aggregate([iv * 3], aggregation="mean")
    assert mean[(2, 7)] == pytest.approx(2 * iv[(2, 7)])
    top = iv.get_top_k_interactions(3)
    largest = sorted((abs(v) for s, v in iv.interactions.items() if s), reverse=True)
    kept = sorted((abs(v) for s, v in top.interactions.items() if s), reverse=True)
    assert kept == pytest.approx(largest[:len(kept)]) and len(kept) >= 2
    first = iv.get_n_order(order=1)
    assert set(map(len, first.interactions)) <= {0, 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("plot_network", "plot_stacked_bar", "plot_force", "plot_upset",
                     "plot_waterfall", "plot_si_graph"):
            assert getattr(iv, name)(show=False) is not None
            plt.gcf().savefig(tmp_path / f"{name}.png")
            assert (tmp_path / f"{name}.png").stat().st_size > 1000
            plt.close("all")


def test_compare_reports_every_method(sparse_game):
    methods = ("spex-plugins", "shapiq-regression-fbii", "shapiq-permutation-stii",
               "shapiq-svarmiq", "shapiq-proxyspex")
    options = {"spex-plugins": {"b": 4}, "shapiq-proxyspex": {"hpo": False}
               if "hpo" in _proxyspex_parameters() else {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = compare(sparse_game, N_SPARSE, 1500, indices=("FBII", "STII"),
                          methods=methods, n_test=500, options=options)
    by = {(r["method"], r["index"]): r for r in records}
    ours = [by["spex-plugins", i] for i in ("FBII", "STII")]
    for r in ours:
        assert r["status"] == "ok" and r["r2"] == pytest.approx(1.0, abs=1e-9)
        assert r["mse"] < 1e-15 and r["relative_mse"] < 1e-12 and r["precision_at_5"] == 1.0
        assert len(r["top"]) == 10 and 0 < r["model_calls"] <= 1500 and r["own_s"] > 0
    assert set(by) >= {("shapiq-regression-fbii", "FBII"), ("shapiq-permutation-stii", "STII"),
                       ("shapiq-svarmiq", "STII"), ("shapiq-svarmiq", "FBII")}
    assert ("shapiq-regression-fbii", "STII") not in by  # it does not estimate STII
    fbii = by["shapiq-regression-fbii", "FBII"]
    # FBII of order 2 is the best degree-2 fit: its surrogate misses the degree 3 and 4 terms
    assert fbii["status"] == "ok" and fbii["r2"] < 0.9
    # STII values are not a fit of the game: no R^2 (13.9), but MSE against the exact STII
    stii = by["shapiq-permutation-stii", "STII"]
    assert stii["status"] == "ok" and stii["r2"] is None and stii["mse"] >= 0
    proxy = by["shapiq-proxyspex", "FBII"]["status"]
    assert proxy == "ok" or "lightgbm" in proxy
    text = records.table()
    assert text.count("\n") == len(records) + 1 and "spex-plugins" in text


def test_compare_reports_only_the_asked_indices(sparse_game):
    records = compare(sparse_game, N_SPARSE, 1200, indices=("SV", "FBII"),
                      methods=("spex-plugins", "shapiq-permutation-stii",
                               "shapiq-regression-fbii"),
                      n_test=200, options={"spex-plugins": {"b": 4}})
    rows = {(r["method"], r["index"]) for r in records}
    assert rows == {("spex-plugins", "SV"), ("spex-plugins", "FBII"),
                    ("shapiq-regression-fbii", "FBII")}


def test_compare_accepts_the_old_svarmiq_name_with_a_warning(sparse_game):
    with pytest.warns(DeprecationWarning, match="'shapiq-svarmiq'"):
        records = compare(sparse_game, N_SPARSE, 1200, indices=("STII",),
                          methods=("shapiq-svarmiq-stii",), n_test=100)
    assert [(r["method"], r["index"]) for r in records] == [("shapiq-svarmiq", "STII")]


def _proxyspex_parameters():
    import inspect

    return inspect.signature(shapiq.ProxySPEX.__init__).parameters


def test_compare_skips_dense_estimators_that_cannot_fit_and_checks_input(sparse_game):
    game = fourier_game(40, {(0,): 1.0, (3, 9): 0.5})
    records = compare(game, 40, 600, indices=("FBII",), methods=("shapiq-regression-fbii",),
                      n_test=100)
    assert records[0]["status"].startswith("skipped: 821 unknowns")
    assert records[0]["status"].endswith("budget 600")  # the whole reason, never cut
    with pytest.raises(ValueError, match="unknown methods"):
        compare(sparse_game, N_SPARSE, 600, methods=("kernelshap",))
    with pytest.raises(ValueError, match="not supported"):
        compare(sparse_game, N_SPARSE, 600, indices=("XYZ",))
    assert METHODS[0] == "spex-plugins"
