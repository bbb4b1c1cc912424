"""Evaluation runtime: batching with out-of-memory halving, de-duplication, disk cache, resume."""

import os

import numpy as np
import pytest

from spex_plugins import SPEX
from spex_plugins.models import CachedValueFunction, MaskedValueFunction
from spex_plugins.models.runtime import as_masks, run_batches


def planted(masks):
    masks = np.asarray(masks, dtype=bool)
    return (1.5 * masks[:, 2] - 0.7 * (masks[:, 4] & masks[:, 9])
            + 0.9 * (masks[:, 1] & masks[:, 7] & masks[:, 11]))


class Counting:
    """Records every mask it is asked for; raises once ``fail_after`` calls were served."""

    def __init__(self, fail_after=None, outputs=1):
        self.seen = []
        self.calls = 0
        self.fail_after = fail_after
        self.outputs = outputs

    def __call__(self, masks):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        self.calls += 1
        self.seen.extend(map(bytes, np.packbits(masks, axis=1)))
        value = planted(masks)
        return value if self.outputs == 1 else np.stack([value, -2 * value], axis=1)


def test_run_batches_halves_on_out_of_memory():
    sizes = []

    def evaluate(batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.sum(1)

    masks = np.random.default_rng(0).random((10, 5)) < 0.5
    out, size = run_batches(evaluate, masks, batch_size=16)
    np.testing.assert_array_equal(out, masks.sum(1))
    assert size == 2 and sizes[:3] == [10, 5, 2]

    def broken(batch):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches(broken, masks, batch_size=4)


def test_masked_value_function_deduplicates_and_batches():
    class Sum(MaskedValueFunction):
        def __init__(self):
            self.n, self.features, self.batch_size, self.batches = 6, list("abcdef"), 2, []

        def evaluate_batch(self, masks):
            self.batches.append(len(masks))
            return masks.sum(1) * 1.0

    f = Sum()
    base = np.random.default_rng(1).random((5, 6)) < 0.5
    masks = np.vstack([base, base, base[:2]])
    np.testing.assert_array_equal(f(masks), masks.sum(1))
    assert sum(f.batches) == len(np.unique(base, axis=0)) and max(f.batches) == 2
    with pytest.raises(ValueError, match=r"shape \(m, 6\)"):
        f(np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="boolean"):
        as_masks(np.full((1, 6), 2), 6)


def test_cache_returns_stored_values_and_survives_reopen(tmp_path):
    path = tmp_path / "sub" / "cache.bin"
    inner = Counting(outputs=2)
    cached = CachedValueFunction(inner, path, key="demo", chunk_size=4)
    masks = np.random.default_rng(2).random((30, 12)) < 0.5
    first = cached(np.vstack([masks, masks[:5]]))
    assert first.shape == (35, 2) and len(inner.seen) == len(np.unique(masks, axis=0))
    np.testing.assert_array_equal(first[:30], inner(masks))
    again = CachedValueFunction(Counting(fail_after=0), path, key="demo")
    np.testing.assert_array_equal(again(masks), first[:30])
    assert again.n_evaluated == 0 and len(again) == len(np.unique(masks, axis=0))
    with pytest.raises(ValueError, match="another value function"):
        CachedValueFunction(inner, path, key="something else")


def test_torn_tail_is_dropped(tmp_path):
    path = tmp_path / "cache.bin"
    masks = np.random.default_rng(3).random((12, 12)) < 0.5
    CachedValueFunction(Counting(), path, chunk_size=5)(masks)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:  # a crash in the middle of writing the last record
        fh.truncate(size - 7)
    inner = Counting()
    reopened = CachedValueFunction(inner, path)
    assert len(reopened) == 10  # the two complete records of 5 masks
    np.testing.assert_array_equal(reopened(masks), planted(masks))
    assert inner.calls == 1 and len(inner.seen) == 2
    with open(path, "ab") as fh:  # garbage after the records
        fh.write(b"SPXR\x00\x01garbage")
    assert len(CachedValueFunction(Counting(), path)) == 12


def test_resume_after_crash_requeries_nothing_and_gives_identical_explanation(tmp_path):
    n, budget = 16, 700
    clean = SPEX(max_order=3, random_state=4).explain(Counting(), n, budget, progress=False)
    path = tmp_path / "run.cache"
    crashing = Counting(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        SPEX(max_order=3, random_state=4).explain(
            CachedValueFunction(crashing, path, chunk_size=64), n, budget, progress=False)
    done = set(crashing.seen)
    assert len(done) == 3 * 64
    rest = Counting()
    resumed = SPEX(max_order=3, random_state=4).explain(
        CachedValueFunction(rest, path, chunk_size=64), n, budget, progress=False)
    assert not done & set(rest.seen)
    assert len(rest.seen) == clean.n_model_calls - len(done)
    np.testing.assert_array_equal(resumed.locations, clean.locations)
    np.testing.assert_array_equal(resumed.coefficients, clean.coefficients)
    again = Counting()
    SPEX(max_order=3, random_state=4).explain(CachedValueFunction(again, path), n, budget,
                                              progress=False)
    assert again.calls == 0
