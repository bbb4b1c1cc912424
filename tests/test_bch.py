"""The shift code equals galois's BCH code, and the batched decoder corrects up to t errors."""

import numpy as np
import pytest

from spex_plugins.core.bch import BCHCode, bch_code, code_parameters


@pytest.mark.parametrize(("n", "t"), [(20, 2), (36, 5), (100, 3)])
def test_code_matches_galois_bch(n, t):
    galois = pytest.importorskip("galois")
    code = BCHCode(n, t)
    reference = galois.BCH(code.nc, d=2 * t + 1)
    assert (reference.n, reference.k) == (code.nc, code.kc)
    assert int(reference.generator_poly) == code.generator_poly
    generator = np.array(reference.G, dtype=np.uint8)
    # shortened systematic code: the n features are the last n message positions
    np.testing.assert_array_equal(generator[code.kc - n:, code.kc:].T, code.parity_matrix)


@pytest.mark.parametrize(("n", "t", "expected"), [
    (8, 5, (5, 31, 11)), (36, 5, (6, 63, 36)), (37, 5, (7, 127, 92)), (1000, 5, (11, 2047, 1992)),
    (4035, 5, (12, 4095, 4035)), (16, 1, (5, 31, 26)),
])
def test_code_parameters(n, t, expected):
    assert code_parameters(n, t) == expected


def _random_words(code, rng, count, max_flips=None):
    supports, words, flips = [], [], []
    for _ in range(count):
        degree = rng.integers(0, code.t + 1)
        k = np.sort(rng.choice(code.n, degree, replace=False))
        room = code.t - degree if max_flips is None else min(max_flips, code.t - degree)
        e = rng.integers(0, room + 1)
        word = code.parity_bits(np.pad(k, (0, code.t - degree), constant_values=-1)[None])[0]
        word = word.copy()
        word[rng.choice(code.n_parity, e, replace=False)] ^= True
        supports.append(k)
        words.append(word)
        flips.append(e)
    return supports, np.array(words), np.array(flips)


@pytest.mark.parametrize(("n", "t"), [(16, 3), (300, 5), (1000, 5)])
def test_hard_decoding_corrects_up_to_t_errors(n, t):
    code = bch_code(n, t)
    rng = np.random.default_rng(n)
    supports, words, flips = _random_words(code, rng, 400)
    decoded = code.decode(words)
    assert decoded.ok.all()
    for i, k in enumerate(supports):
        got = decoded.support[i][decoded.support[i] >= 0]
        np.testing.assert_array_equal(got, k)
        assert decoded.n_errors[i] == len(k) + flips[i]
        assert decoded.parity_errors[i].sum() == flips[i]


def test_hard_decoding_reports_failure_beyond_t():
    code = bch_code(1000, 5)
    rng = np.random.default_rng(1)
    # a random 55-bit word lies within distance 5 of a codeword with probability ~3e-4
    words = rng.random((500, code.n_parity)) < 0.5
    decoded = code.decode(words)
    failed = ~decoded.ok
    assert failed.mean() > 0.9
    assert (decoded.n_errors[failed] == -1).all()
    assert (decoded.support[failed] == -1).all()


def test_chase_recovers_words_hard_decoding_misses():
    code = bch_code(1000, 5)
    rng = np.random.default_rng(7)
    supports, words, _ = _random_words(code, rng, 200, max_flips=0)
    signs = 1.0 - 2.0 * words
    soft = signs + rng.normal(0, 0.75, signs.shape)
    hard = code.decode(soft < 0)
    hard_right = np.array([hard.ok[i] and np.array_equal(hard.support[i][hard.support[i] >= 0], k)
                           for i, k in enumerate(supports)])
    word, candidates, cost = code.chase(soft, depth=10, n_patterns=55)
    best = {}
    for w, support, c in zip(word, candidates.support, cost, strict=True):
        if w not in best or c < best[w][1]:
            best[w] = (support, c)
    chase_right = np.array([i in best and np.array_equal(best[i][0][best[i][0] >= 0], k)
                            for i, k in enumerate(supports)])
    assert chase_right.sum() >= hard_right.sum() + 20
    assert (chase_right | ~hard_right).all()  # never loses a word hard decoding got right


def test_primitive_polynomials_are_galois_bch_defaults():
    galois = pytest.importorskip("galois")
    from spex_plugins.core.bch import PRIMITIVE_POLYS

    for m, poly in PRIMITIVE_POLYS.items():
        assert int(galois.matlab_primitive_poly(2, m)) == poly, m


def test_engine_does_not_import_galois():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from spex_plugins import SPEX; "
            "SPEX(b=3).explain(lambda m: m.sum(1) * 1.0, 20, progress=False); "
            "print('galois' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("n", "t"), [(16, 3), (1000, 5)])
def test_every_single_error_position_is_located(n, t):
    """One error anywhere (a weight-1 message or one flipped parity bit) decodes exactly."""
    code = bch_code(n, t)
    message_words = code.parity_bits(np.pad(np.arange(n)[:, None], ((0, 0), (0, t - 1)),
                                            constant_values=-1))
    parity_words = np.eye(code.n_parity, dtype=bool)
    decoded = code.decode(np.vstack([message_words, parity_words]))
    assert decoded.ok.all() and (decoded.n_errors == 1).all()
    np.testing.assert_array_equal(decoded.support[:n, 0], np.arange(n))
    assert (decoded.support[:n, 1:] == -1).all() and not decoded.parity_errors[:n].any()
    assert (decoded.support[n:] == -1).all()
    np.testing.assert_array_equal(decoded.parity_errors[n:], parity_words)


def test_cheapest_flip_patterns_equal_a_full_listing():
    from spex_plugins.core.bch import _cheapest_patterns

    rng = np.random.default_rng(3)
    for depth, keep in [(3, 8), (5, 10), (10, 55), (12, 78), (8, 256)]:
        costs = rng.random((40, depth))
        costs[:15] = np.round(3 * costs[:15])  # ties: broken by the smaller bit mask
        subsets = (np.arange(1 << depth)[:, None] >> np.arange(depth)) & 1
        listing = np.argsort(costs @ subsets.T, axis=1, kind="stable")[:, :keep]
        np.testing.assert_array_equal(_cheapest_patterns(costs, keep), listing)


def test_chase_plan_bounds_patterns_and_depth():
    from spex_plugins.core.bch import MAX_CHASE_PATTERNS, chase_plan

    assert chase_plan(27, 10, 55) == (10, 55)  # degree 5 defaults are kept
    assert chase_plan(77, 24, 300) == (24, MAX_CHASE_PATTERNS)  # n = t = 12
    assert chase_plan(5, 10, 55) == (5, 32)  # no more positions than parity bits
    assert chase_plan(100, 40, 10) == (9, 10)  # positions past the 9th never enter 10 patterns
    assert chase_plan(100, 1000, 10 ** 9) == (63, MAX_CHASE_PATTERNS)


def test_chase_work_per_word_is_bounded_at_any_depth():
    from spex_plugins.core.bch import MAX_CHASE_PATTERNS

    code = bch_code(12, 12)  # 77 parity bits
    rng = np.random.default_rng(5)
    soft = rng.normal(size=(30, code.n_parity))
    patterns, decoded = code.n_chase_patterns, code.n_decoded
    code.chase(soft, depth=24, n_patterns=300)  # listing all 2^24 patterns took minutes
    assert code.n_chase_patterns - patterns == 30 * MAX_CHASE_PATTERNS
    assert code.n_decoded - decoded <= 30 * MAX_CHASE_PATTERNS
