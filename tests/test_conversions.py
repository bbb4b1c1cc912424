"""Tests for ``spex_plugins.core.conversions``.

Every index is checked against a brute-force computation from its *definition* on the full
game table (all 2^n coalitions), not against the closed forms used by the module.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spex_plugins.core import conversions as conv

ATOL = 1e-9
N_OUT = 2
BERNOULLI = (1.0, -0.5, 1.0 / 6.0, 0.0)  # B_0..B_3 (B_1 = -1/2)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def random_spectrum(n, n_terms, max_degree, n_out, seed):
    """Random sparse Fourier spectrum with distinct supports (always contains the empty set)."""
    rng = np.random.default_rng(seed)
    sets = {()}
    while len(sets) < n_terms:
        degree = int(rng.integers(1, max_degree + 1))
        sets.add(tuple(sorted(rng.choice(n, size=degree, replace=False).tolist())))
    sets = sorted(sets)
    width = max(max_degree, 1)
    locs = np.full((len(sets), width), -1, dtype=np.int64)
    for row, s in enumerate(sets):
        locs[row, : len(s)] = s
    perm = rng.permutation(len(sets))  # the module must not rely on the input order
    return locs[perm], rng.normal(size=(len(sets), n_out))


def to_dict(locs, vals):
    out = {}
    for row, v in zip(locs, vals, strict=True):
        key = tuple(int(x) for x in row if x >= 0)
        out[key] = out.get(key, 0.0) + np.asarray(v, dtype=float)
    return out


def assert_sparse_close(got, expected, atol=ATOL):
    """``got``/``expected`` map sets to value vectors; a missing set counts as zero."""
    keys = set(got) | set(expected)
    assert keys, "nothing to compare"
    for key in sorted(keys, key=lambda k: (len(k), k)):
        a = got.get(key, 0.0)
        b = expected.get(key, 0.0)
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f"set {key}")


def mask_of(s):
    return sum(1 << i for i in s)


def set_of(mask, n):
    return tuple(i for i in range(n) if mask >> i & 1)


def sets_up_to(n, order):
    return [s for k in range(order + 1) for s in itertools.combinations(range(n), k)]


class BruteGame:
    """A game given by its full value table, with every index computed from its definition."""

    def __init__(self, n, locs, coefs):
        self.n = n
        self.locs, self.coefs = locs, coefs
        self.masks = np.arange(2**n)
        self.size = np.array([bin(m).count("1") for m in range(2**n)])
        # f(T) = sum_K F(K) (-1)^{|T ∩ K|}
        self.f = np.zeros((2**n, coefs.shape[1]))
        for row, c in zip(locs, coefs, strict=True):
            k = mask_of(int(x) for x in row if x >= 0)
            parity = np.array([bin(m & k).count("1") & 1 for m in range(2**n)])
            self.f += np.outer(1 - 2 * parity, c)
        self.full = 2**n - 1

    # ----- basic objects
    def fourier(self):
        signs = np.array(
            [[(-1) ** bin(t & k).count("1") for t in range(2**self.n)] for k in range(2**self.n)]
        )
        table = signs @ self.f / 2**self.n
        return {set_of(k, self.n): table[k] for k in range(2**self.n)}

    @functools.cache  # noqa: B019 - one instance per module
    def moebius(self):
        """Inclusion-exclusion a(S) = sum_{T ⊆ S} (-1)^{|S|-|T|} f(T)."""
        out = {}
        for s in range(2**self.n):
            total = np.zeros(self.f.shape[1])
            sub = s
            while True:
                total += (-1) ** (self.size[s] - self.size[sub]) * self.f[sub]
                if sub == 0:
                    break
                sub = (sub - 1) & s
            out[set_of(s, self.n)] = total
        return out

    @functools.cache  # noqa: B019
    def derivative(self, s):
        """Discrete derivative Δ_S f(T) for all T ⊆ N \\ S: returns (T masks, values)."""
        s_mask = mask_of(s)
        ts = self.masks[(self.masks & s_mask) == 0]
        total = np.zeros((len(ts), self.f.shape[1]))
        for k in range(len(s) + 1):
            for sub in itertools.combinations(s, k):
                total += (-1) ** (len(s) - k) * self.f[ts | mask_of(sub)]
        return ts, total

    # ----- values
    def shapley(self):
        n = self.n
        out = np.zeros((n, self.f.shape[1]))
        for i in range(n):
            ts, d = self.derivative((i,))
            t = self.size[ts]
            w = np.array([math.factorial(x) * math.factorial(n - x - 1) for x in t])
            out[i] = (w[:, None] * d).sum(0) / math.factorial(n)
        return out

    def banzhaf(self):
        return np.stack([self.derivative((i,))[1].mean(0) for i in range(self.n)])

    # ----- interaction indices
    def bii(self, order):
        return {s: self.derivative(s)[1].mean(0) for s in sets_up_to(self.n, order)}

    @functools.cache  # noqa: B019
    def sii(self, order):
        n, out = self.n, {}
        for s in sets_up_to(n, order):
            ts, d = self.derivative(s)
            t = self.size[ts]
            w = np.array(
                [
                    math.factorial(n - x - len(s))
                    * math.factorial(x)
                    / math.factorial(n - len(s) + 1)
                    for x in t
                ]
            )
            out[s] = (w[:, None] * d).sum(0)
        return out

    def ksii(self, order):
        sii = self.sii(order)
        out = {(): self.f[0]}
        for s in sets_up_to(self.n, order)[1:]:
            rest = [i for i in range(self.n) if i not in s]
            total = np.zeros(self.f.shape[1])
            for j in range(order - len(s) + 1):
                for r in itertools.combinations(rest, j):
                    total += BERNOULLI[j] * sii[tuple(sorted(s + r))]
            out[s] = total
        return out

    def stii(self, order):
        n, a, out = self.n, self.moebius(), {}
        for s in sets_up_to(n, order):
            if len(s) < order:
                out[s] = a[s]
                continue
            ts, d = self.derivative(s)
            w = np.array([1.0 / math.comb(n - 1, x) for x in self.size[ts]])
            out[s] = order / n * (w[:, None] * d).sum(0)
        return out

    def _design(self, order):
        sets = sets_up_to(self.n, order)
        smasks = np.array([mask_of(s) for s in sets])
        x = ((self.masks[:, None] & smasks[None, :]) == smasks[None, :]).astype(float)
        return sets, x

    def fbii(self, order):
        """Unweighted least squares over all 2^n coalitions on the features 1[S ⊆ T]."""
        sets, x = self._design(order)
        coef = np.linalg.lstsq(x, self.f, rcond=None)[0]
        return dict(zip(sets, coef, strict=True))

    def fsii(self, order):
        """Shapley-kernel weighted least squares with exact constraints at T = ∅ and T = N (KKT)."""
        n = self.n
        sets, x = self._design(order)
        t = self.size
        inner = (t > 0) & (t < n)
        mu = np.zeros(2**n)
        mu[inner] = [(n - 1) / (math.comb(n, k) * k * (n - k)) for k in t[inner]]
        a = x[[0, self.full]]
        p = len(sets)
        kkt = np.zeros((p + 2, p + 2))
        kkt[:p, :p] = x.T @ (mu[:, None] * x)
        kkt[:p, p:] = a.T
        kkt[p:, :p] = a
        rhs = np.vstack([x.T @ (mu[:, None] * self.f), self.f[[0, self.full]]])
        coef = np.linalg.solve(kkt, rhs)[:p]
        return dict(zip(sets, coef, strict=True))

    def expected(self, index, order):
        if index == "Fourier":
            fourier = self.fourier()
            return {s: v for s, v in fourier.items() if len(s) <= order}
        if index == "Moebius":
            return {s: v for s, v in self.moebius().items() if len(s) <= order}
        if index == "SV":
            out = {(i,): v for i, v in enumerate(self.shapley())}
            out[()] = self.f[0]
            return out
        if index == "BV":
            return self.fbii(1)
        method = {"BII": self.bii, "SII": self.sii, "k-SII": self.ksii, "STII": self.stii}
        method.update({"FBII": self.fbii, "FSII": self.fsii})
        return method[index](order)


@functools.cache
def game(n):
    locs, coefs = random_spectrum(n, n_terms=12, max_degree=4, n_out=N_OUT, seed=1000 + n)
    return BruteGame(n, locs, coefs)


NS = (5, 8)
ORDERED_INDICES = ("Fourier", "Moebius", "BII", "SII", "k-SII", "FBII", "FSII", "STII")


# --------------------------------------------------------------------------------------------
# canonical form
# --------------------------------------------------------------------------------------------


def test_canonicalise_sorts_merges_drops_and_orders():
    locs = np.array(
        [
            [3, 1, -1, -1],  # unsorted {1, 3}
            [1, 3, -1, -1],  # duplicate of it
            [-1, 2, -1, -1],  # padding on the left
            [0, -1, -1, -1],
            [4, -1, -1, -1],  # cancels with the next row
            [4, -1, -1, -1],
            [-1, -1, -1, -1],  # empty set
            [0, 2, -1, -1],  # zero row
        ]
    )
    vals = np.array(
        [[1.0, 0.0], [2.0, 0.5], [3.0, 0.0], [4.0, 0.0], [1.0, 2.0], [-1.0, -2.0], [5, 0], [0, 0]]
    )
    out_locs, out_vals = conv.canonicalise(locs, vals)
    assert out_locs.dtype == np.int64 and out_vals.dtype == np.float64
    np.testing.assert_array_equal(out_locs, [[-1, -1], [0, -1], [2, -1], [1, 3]])
    np.testing.assert_array_equal(out_vals, [[5, 0], [4, 0], [3, 0], [3, 0.5]])
    # idempotent
    again = conv.canonicalise(out_locs, out_vals)
    np.testing.assert_array_equal(again[0], out_locs)
    np.testing.assert_array_equal(again[1], out_vals)


def test_canonicalise_keeps_row_with_one_nonzero_output_and_lexicographic_order():
    locs = np.array([[2, 5, 7], [0, 9, -1], [0, 3, -1], [1, 2, -1], [0, 1, 9]])
    vals = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    out_locs, out_vals = conv.canonicalise(locs, vals)
    np.testing.assert_array_equal(
        out_locs, [[0, 3, -1], [0, 9, -1], [1, 2, -1], [0, 1, 9], [2, 5, 7]]
    )
    np.testing.assert_array_equal(out_vals[:, 0], [1.0, 1.0, 2.0, 3.0, 0.0])


def test_canonicalise_edge_shapes():
    locs, vals = conv.canonicalise(np.zeros((0, 3), dtype=np.int64), np.zeros((0, 4)))
    assert locs.shape == (0, 1) and vals.shape == (0, 4)
    locs, vals = conv.canonicalise(np.array([[-1, -1, -1]]), np.array([[2.0]]))
    np.testing.assert_array_equal(locs, [[-1]])
    np.testing.assert_array_equal(vals, [[2.0]])
    locs, vals = conv.canonicalise(np.array([[1, 2]]), np.array([[0.0, 0.0]]))
    assert locs.shape == (0, 1) and vals.shape == (0, 2)


@pytest.mark.parametrize(
    ("locs", "vals"),
    [
        (np.array([[1, 1]]), np.ones((1, 1))),  # repeated player
        (np.array([[-2, 1]]), np.ones((1, 1))),  # bad padding
        (np.array([[0, 1]]), np.ones((2, 1))),  # row count mismatch
        (np.array([0, 1]), np.ones((2, 1))),  # 1-D locations
        (np.array([[0], [1]]), np.ones(2)),  # 1-D values
        (np.array([[0.5]]), np.ones((1, 1))),  # non-integer player
    ],
)
def test_canonicalise_rejects_bad_input(locs, vals):
    with pytest.raises(ValueError):
        conv.canonicalise(locs, vals)


# --------------------------------------------------------------------------------------------
# Fourier <-> Möbius
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
def test_fourier_to_moebius_matches_inclusion_exclusion(n):
    g = game(n)
    got = to_dict(*conv.fourier_to_moebius(g.locs, g.coefs))
    assert_sparse_close(got, g.moebius())


@pytest.mark.parametrize("n", NS)
def test_moebius_to_fourier_matches_wht(n):
    g = game(n)
    a = g.moebius()
    keys = [s for s, v in a.items() if np.any(np.abs(v) > 1e-12)]
    locs = np.full((len(keys), max(1, max(map(len, keys)))), -1)
    for row, s in enumerate(keys):
        locs[row, : len(s)] = s
    vals = np.array([a[s] for s in keys])
    got = to_dict(*conv.moebius_to_fourier(locs, vals))
    assert_sparse_close(got, g.fourier())


@pytest.mark.parametrize("seed", range(3))
def test_round_trip_large_sparse(seed):
    locs, coefs = random_spectrum(200, n_terms=300, max_degree=6, n_out=3, seed=seed)
    m_locs, m_vals = conv.fourier_to_moebius(locs, coefs)
    back = to_dict(*conv.moebius_to_fourier(m_locs, m_vals))
    # cancellation leaves round-off residues (~1e-15) on sets that are absent in the input
    assert_sparse_close(back, to_dict(locs, coefs), atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 12),
    n_terms=st.integers(0, 15),
    max_degree=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_round_trip_property(n, n_terms, max_degree, seed):
    max_degree = min(max_degree, n)
    n_terms = min(n_terms, 2**n)
    rng = np.random.default_rng(seed)
    locs = np.full((n_terms, max_degree), -1)
    for row in range(n_terms):
        size = int(rng.integers(0, max_degree + 1))
        locs[row, :size] = rng.choice(n, size=size, replace=False)  # unsorted rows, duplicate sets
    coefs = rng.normal(size=(n_terms, 2))
    ref = to_dict(*conv.canonicalise(locs, coefs))
    back = to_dict(*conv.moebius_to_fourier(*conv.fourier_to_moebius(locs, coefs)))
    if ref or back:  # round-off may leave ~1e-16 residues on absent sets
        assert_sparse_close(back, ref, atol=1e-10)


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
def test_shapley_and_banzhaf_values(n):
    g = game(n)
    sv = conv.shapley_values(g.locs, g.coefs, n)
    bv = conv.banzhaf_values(g.locs, g.coefs, n)
    assert sv.shape == (n, N_OUT) and bv.shape == (n, N_OUT)
    np.testing.assert_allclose(sv, g.shapley(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(bv, g.banzhaf(), rtol=0, atol=ATOL)
    # efficiency
    np.testing.assert_allclose(sv.sum(0), g.f[g.full] - g.f[0], rtol=0, atol=ATOL)


def test_values_single_output_and_extra_players():
    locs = np.array([[0, -1], [2, -1], [0, 2]])
    coefs = np.array([[1.0], [2.0], [3.0]])
    sv = conv.shapley_values(locs, coefs, 6)
    bv = conv.banzhaf_values(locs, coefs, 6)
    np.testing.assert_allclose(sv[:, 0], [-2.0, 0, -4.0, 0, 0, 0])
    np.testing.assert_allclose(bv[:, 0], [-2.0, 0, -4.0, 0, 0, 0])
    with pytest.raises(ValueError):
        conv.shapley_values(locs, coefs, 2)


# --------------------------------------------------------------------------------------------
# interaction indices against brute force from the definitions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("index", ORDERED_INDICES)
def test_index_matches_definition(n, index, order):
    g = game(n)
    locs, vals = conv.interaction_values(g.locs, g.coefs, n, index, order)
    assert vals.shape[1] == N_OUT
    assert locs.shape[1] == max(1, int((locs >= 0).sum(1).max(initial=0)))
    assert np.all((locs >= 0).sum(1) <= order)
    assert np.all(np.any(vals != 0, axis=1))
    # result is canonical
    np.testing.assert_array_equal(conv.canonicalise(locs, vals)[0], locs)
    assert_sparse_close(to_dict(locs, vals), g.expected(index, order))


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("index", ["Fourier", "Moebius", "BII", "SII", "FBII"])
def test_order_zero(n, index):
    g = game(n)
    got = to_dict(*conv.interaction_values(g.locs, g.coefs, n, index, 0))
    assert set(got) <= {()}
    assert_sparse_close(got, g.expected(index, 0))


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("index", ["SV", "BV"])
def test_sv_bv_as_sets(n, index):
    g = game(n)
    locs, vals = conv.interaction_values(g.locs, g.coefs, n, index)
    assert locs.shape[1] == 1
    assert_sparse_close(to_dict(locs, vals), g.expected(index, 1))
    dense = (conv.shapley_values if index == "SV" else conv.banzhaf_values)(g.locs, g.coefs, n)
    singles = {k: v for k, v in to_dict(locs, vals).items() if k}
    assert_sparse_close(singles, {(i,): dense[i] for i in range(n)})


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_ksii_efficiency(n, order):
    g = game(n)
    locs, vals = conv.interaction_values(g.locs, g.coefs, n, "k-SII", order)
    nonempty = (locs >= 0).any(1)
    np.testing.assert_allclose(vals[nonempty].sum(0), g.f[g.full] - g.f[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(vals[~nonempty].sum(0), g.f[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("index", ORDERED_INDICES)
def test_full_order_equals_moebius_where_it_should(index):
    g = game(5)
    got = to_dict(*conv.interaction_values(g.locs, g.coefs, 5, index))  # order None -> n
    if index in ("Fourier", "BII"):
        expected = g.fourier() if index == "Fourier" else g.bii(5)
    elif index == "SII":
        expected = g.sii(5)
    else:  # efficient indices of full order are the Möbius transform
        expected = g.moebius()
    assert_sparse_close(got, expected)


@pytest.mark.parametrize("index", [*ORDERED_INDICES, "SV", "BV"])
def test_multi_output_is_columnwise(index):
    g = game(8)
    both = to_dict(*conv.interaction_values(g.locs, g.coefs, 8, index, 2))
    for col in range(N_OUT):
        single_locs, single_vals = conv.interaction_values(g.locs, g.coefs[:, [col]], 8, index, 2)
        assert single_vals.shape[1] == 1
        expected = {k: v[[col]] for k, v in both.items()}
        assert_sparse_close(to_dict(single_locs, single_vals), expected, atol=0)


def test_large_sparse_input_stays_sparse():
    n = 10**7  # anything dense in n (or in C(n, k)) would not fit in memory
    locs, coefs = random_spectrum(1000, n_terms=2000, max_degree=5, n_out=2, seed=7)
    locs = np.where(locs >= 0, locs * 9973, -1)  # spread the players over a huge range
    for index in conv.INDICES:
        out_locs, out_vals = conv.interaction_values(locs, coefs, n, index, 3)
        assert out_locs.max() < n and out_vals.shape[1] == 2
    ksii_locs, ksii_vals = conv.interaction_values(locs, coefs, n, "k-SII", 3)
    sv_locs, sv_vals = conv.interaction_values(locs, coefs, n, "SV")
    f_empty = coefs.sum(0)
    f_full = (coefs * (-1.0) ** (locs >= 0).sum(1)[:, None]).sum(0)
    np.testing.assert_allclose(ksii_vals.sum(0), f_full, atol=1e-8, rtol=0)
    np.testing.assert_allclose(sv_vals.sum(0), f_full, atol=1e-8, rtol=0)
    np.testing.assert_allclose(sv_vals[0], f_empty, atol=1e-10, rtol=0)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("mobius", "Moebius"),
        ("Möbius", "Moebius"),
        ("MOEBIUS", "Moebius"),
        ("M\u006f\u0308bius", "Moebius"),  # decomposed umlaut
        ("k-sii", "k-SII"),
        ("fsii", "FSII"),
        ("fourier", "Fourier"),
        ("sv", "SV"),
        (" bv ", "BV"),
    ],
)
def test_index_aliases(alias, name):
    g = game(5)
    a = conv.interaction_values(g.locs, g.coefs, 5, alias, 2)
    b = conv.interaction_values(g.locs, g.coefs, 5, name, 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("bad", ["Shapley", "kSII2", "", "FSI", None, 3])
def test_unknown_index_raises(bad):
    g = game(5)
    with pytest.raises(ValueError, match="supported") as info:
        conv.interaction_values(g.locs, g.coefs, 5, bad, 2)
    for name in conv.INDICES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("index", "order"),
    [
        ("FSII", 0),
        ("STII", 0),
        ("k-SII", 0),
        ("SV", 0),
        ("BV", -1),
        ("Fourier", -1),
        ("FBII", -2),
        ("SII", 1.5),
        ("BII", True),
    ],
)
def test_bad_order_raises(index, order):
    g = game(5)
    with pytest.raises(ValueError, match="order"):
        conv.interaction_values(g.locs, g.coefs, 5, index, order)


def test_player_out_of_range_raises():
    g = game(8)
    with pytest.raises(ValueError):
        conv.interaction_values(g.locs, g.coefs, 5, "SII", 2)


# --------------------------------------------------------------------------------------------
# cross-check against shapiq's MoebiusConverter
# --------------------------------------------------------------------------------------------


def _shapiq_convert(n, m_locs, m_vals, index, order):
    shapiq_iv = pytest.importorskip("shapiq.interaction_values")
    shapiq_mc = pytest.importorskip("shapiq.game_theory.moebius_converter")
    results = []
    moebius = to_dict(m_locs, m_vals)
    lookup = {s: i for i, s in enumerate(moebius)}
    for col in range(m_vals.shape[1]):
        values = np.array([v[col] for v in moebius.values()])
        iv = shapiq_iv.InteractionValues(
            values=values,
            index="Moebius",
            max_order=n,
            min_order=0,
            n_players=n,
            interaction_lookup=dict(lookup),
            baseline_value=float(moebius.get((), np.zeros(m_vals.shape[1]))[col]),
            estimated=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = shapiq_mc.MoebiusConverter(iv)(index, order)
        results.append((dict(out.interactions), float(out.baseline_value)))
    return results


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("index", ["k-SII", "FSII", "STII", "FBII", "SII", "SV", "BV"])
def test_matches_shapiq_moebius_converter(n, index, order):
    g = game(n)
    m_locs, m_vals = conv.fourier_to_moebius(g.locs, g.coefs)
    reference = _shapiq_convert(n, m_locs, m_vals, index, order)
    ours = to_dict(*conv.interaction_values(g.locs, g.coefs, n, index, order))
    for col, (theirs, baseline) in enumerate(reference):
        mine = {k: v[col] for k, v in ours.items()}
        if index == "SII":
            # shapiq's SII has no empty-set entry; ours carries Grabisch's SII(∅)
            assert () not in theirs
            mine.pop((), None)
        elif index == "BV" and () not in theirs:
            # shapiq >= 1.5 computes BV as order-1 BII (no empty-set entry, f(∅) as baseline);
            # 1.4 as order-1 FBII with its intercept, which is what ours carries on ∅
            mine.pop((), None)
        elif () not in theirs:  # shapiq's SV keeps f(∅) only as baseline_value
            theirs[()] = baseline
        assert_sparse_close(mine, theirs)
