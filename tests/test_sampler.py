"""Sample counts, budget -> b, the mask design and the Walsh-Hadamard bins."""

import numpy as np
import pytest

from spex_plugins.core.sampler import (
    SubsampleDesign,
    b_for_budget,
    min_budget,
    n_shifts,
    sample_count,
)
from spex_plugins.core.transforms import fwht

# spex_algorithm.md section 2.4: t = 5, C = 3
TABLE = {
    (8, 11): (21, {3: 504, 4: 1008, 6: 4032, 8: 16128, 10: 64512}),
    (12, 36): (28, {3: 672, 4: 1344, 6: 5376, 8: 21504, 10: 86016}),
    (37, 92): (36, {3: 864, 4: 1728, 6: 6912, 8: 27648, 10: 110592}),
    (93, 215): (41, {3: 984, 4: 1968, 6: 7872, 8: 31488, 10: 125952}),
    (216, 466): (46, {3: 1104, 4: 2208, 6: 8832, 8: 35328, 10: 141312}),
    (467, 973): (51, {3: 1224, 4: 2448, 6: 9792, 8: 39168, 10: 156672}),
    (974, 1992): (56, {3: 1344, 4: 2688, 6: 10752, 8: 43008, 10: 172032}),
    (1993, 4035): (61, {3: 1464, 4: 2928, 6: 11712, 8: 46848, 10: 187392}),
}


@pytest.mark.parametrize(("bounds", "expected"), TABLE.items())
def test_sample_counts_match_the_reference_table(bounds, expected):
    shifts, counts = expected
    for n in bounds:
        assert n_shifts(n, 5) == shifts
        for b, count in counts.items():
            assert sample_count(n, 5, 3, b) == count


@pytest.mark.parametrize(("t", "shifts"), [
    (1, (6, 8, 9, 11)), (2, (11, 15, 17, 21)), (3, (16, 22, 25, 34)), (4, (25, 29, 33, 45)),
    (6, (34, 43, 49, 67)),
])
def test_shift_counts_for_other_degrees(t, shifts):
    assert tuple(n_shifts(n, t) for n in (16, 64, 128, 1000)) == shifts


def test_examples_from_the_issue():
    assert sample_count(500, 5, 3, 8) == 39168
    assert sample_count(1000, 5, 3, 8) == 43008
    assert [sample_count(1000, t, 3, 8) for t in (2, 3, 4)] == [16128, 26112, 34560]


def test_budget_to_b_is_the_largest_fitting_b():
    for budget, b in [(43008, 8), (43007, 7), (1344, 3), (2688, 4), (10**7, 15)]:
        assert b_for_budget(1000, 5, 3, budget) == b
        assert sample_count(1000, 5, 3, b) <= budget


def test_budget_below_minimum_states_the_minimum():
    assert min_budget(1000, 5) == 1344
    with pytest.raises(ValueError, match=r"minimum SPEX budget of 1344 .*n=1000.*max_order=5"):
        b_for_budget(1000, 5, 3, 1343)
    assert min_budget(10, 2) == 3 * n_shifts(10, 2) * 8


def test_masks_follow_the_design_and_bins_alias_frequencies():
    n, b = 40, 4
    design = SubsampleDesign.create(n, 3, 3, b, np.random.default_rng(3))
    masks = design.masks()
    assert masks.shape == (3, design.n_shifts, 2 ** b, n) and masks.dtype == bool
    shifts = design.shift_matrix()
    assert not shifts[0].any()
    for c in range(3):
        for ell in (0, 5, 2 ** b - 1):
            bits = (ell >> np.arange(b)) & 1
            expected = (design.matrices[c].astype(int) @ bits) % 2
            for p in (0, 3):
                np.testing.assert_array_equal(masks[c, p, ell], expected.astype(bool) ^ shifts[p])
    # the character of k lands in exactly one bin per group, with its shift signature
    support = np.array([[2, 17, 33], [5, -1, -1]])
    bins = design.bins(support)
    signatures = design.signatures(support)
    for w, k in enumerate(support):
        k = k[k >= 0]
        character = 1.0 - 2.0 * (masks[..., k].sum(axis=-1) % 2)
        transformed = fwht(character, axis=2)  # (C, P, 2^b)
        for c in range(3):
            nonzero = np.flatnonzero(np.abs(transformed[c]).sum(axis=0) > 1e-12)
            assert nonzero.tolist() == [bins[c, w]]
            np.testing.assert_allclose(transformed[c, :, bins[c, w]], signatures[w])


def test_the_doubled_design_starts_with_the_design():
    design = SubsampleDesign.create(40, 3, 2, 4, np.random.default_rng(3))
    doubled = design.doubled(np.random.default_rng(4))
    assert doubled.b == 5 and doubled.n_groups == 2 and doubled.code is design.code
    np.testing.assert_array_equal(doubled.matrices[:, :, :4], design.matrices)
    # its first 2^b masks per (group, shift) are the design's own; the others are new
    np.testing.assert_array_equal(doubled.masks()[:, :, :16], design.masks())
    assert not np.array_equal(doubled.masks()[:, :, 16:], design.masks())


def test_fwht_matches_dense_hadamard():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16))
    idx = np.arange(16)
    hadamard = (-1.0) ** np.array([[bin(i & j).count("1") for j in idx] for i in idx])
    np.testing.assert_allclose(fwht(x, axis=1), x @ hadamard / 16)
    np.testing.assert_allclose(fwht(fwht(x)) * 16, x)
    with pytest.raises(ValueError, match="power of two"):
        fwht(np.zeros(6))
