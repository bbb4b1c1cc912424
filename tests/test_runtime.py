"""Evaluation runtime: one loop (batching, out-of-memory halving, de-duplication, output checks),
disk cache, resume."""

import multiprocessing
import os
import struct
import threading
import time

import numpy as np
import pytest

from spex_plugins import SPEX
from spex_plugins.models import CachedValueFunction, MaskedValueFunction
from spex_plugins.runtime import as_masks, evaluate, exclusive_lock, fingerprint


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


def test_evaluate_halves_on_out_of_memory_and_remembers_the_size():
    class Model:
        batch_size = 16

        def __init__(self):
            self.sizes = []

        def evaluate_batch(self, batch):
            self.sizes.append(len(batch))
            if len(batch) > 3:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return batch.sum(1)

    masks = (np.arange(1, 11)[:, None] >> np.arange(5) & 1).astype(bool)  # 10 distinct masks
    model = Model()
    result = evaluate(model, masks)
    np.testing.assert_array_equal(result.output(), masks.sum(1))
    assert model.sizes[:3] == [10, 5, 2] and model.batch_size == 2
    assert result.n_model_calls == 10 and result.flat

    def broken(batch):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluate(broken, masks, batch_size=4)


def test_evaluate_checks_every_batch():
    masks = (np.arange(8)[:, None] >> np.arange(4) & 1).astype(bool)
    with pytest.raises(ValueError, match=r"shape \(8,\) or \(8, k\)"):
        evaluate(lambda m: np.zeros(3), masks)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(lambda m: np.where(m[:, 0], np.inf, 0.0), np.eye(4, dtype=bool))
    calls = iter([np.zeros((2, 2)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="3 outputs per mask for masks 2...3, but 2 before"):
        evaluate(lambda m: next(calls), np.eye(4, dtype=bool), batch_size=2)


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


# --- several writers on one cache file ----------------------------------------------------------
def stored_rows(path):
    """Masks stored in a cache file, record by record (duplicates included)."""
    with open(path, "rb") as fh:
        data = fh.read()
    magic = b"SPEX-PLUGINS-CACHE\x01"
    (length,) = struct.unpack_from("<I", data, len(magic))
    offset, rows = len(magic) + 4 + length, []
    head = struct.Struct("<4sIIBI")
    while offset < len(data):
        _, n, k, _, m = head.unpack_from(data, offset)
        start = offset + head.size
        packed = np.frombuffer(data, np.uint8, m * ((n + 7) // 8), start)
        rows.extend(map(bytes, packed.reshape(m, -1)))
        offset = start + m * ((n + 7) // 8) + m * k * 8 + 4
    return rows


class Slow(Counting):
    def __call__(self, masks):
        time.sleep(0.002)  # let the other writer interleave
        return super().__call__(masks)


def write_concurrently(path, masks, barrier, results):
    """A writer process: opens the cache at the same moment as the other writer, evaluates its
    masks in many small calls and chunks, and re-opens the file as it goes."""
    barrier.wait()
    inner = Slow()
    cached = CachedValueFunction(inner, path, key="shared", chunk_size=3)
    seen_sizes = []
    for start in range(0, len(masks), 11):
        part = masks[start:start + 11]
        np.testing.assert_array_equal(cached(part), planted(part))
        seen_sizes.append(len(CachedValueFunction(Counting(fail_after=0), path, key="shared")))
    results.put((cached.n_evaluated, cached.n_shared, seen_sizes))


def test_concurrent_writers_lose_nothing_and_store_no_duplicates(tmp_path):
    path = str(tmp_path / "shared.cache")
    pool = np.random.default_rng(5).random((900, 12)) < 0.5
    first, second = pool[:600], pool[300:][::-1]  # half of each is also the other's
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=write_concurrently, args=(path, masks, barrier, results))
               for masks in (first, second)]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    union = np.unique(pool, axis=0)
    fresh = CachedValueFunction(Counting(fail_after=0), path, key="shared")
    assert len(fresh) == len(union)
    np.testing.assert_array_equal(fresh(pool), planted(pool))  # nothing re-evaluated
    rows = stored_rows(path)
    assert len(rows) == len(set(rows)) == len(union)  # every mask stored exactly once
    assert sum(evaluated for evaluated, _, _ in reports) >= len(union)
    for _, _, sizes in reports:  # a re-open never saw records disappear
        assert sizes == sorted(sizes) and sizes[-1] <= len(union)


def test_writer_picks_up_other_writers_records_before_evaluating(tmp_path):
    path = tmp_path / "two.cache"
    masks = np.unique(np.random.default_rng(6).random((80, 12)) < 0.5, axis=0)
    one, two = Counting(), Counting()
    a = CachedValueFunction(one, path, key="k", chunk_size=4)
    b = CachedValueFunction(two, path, key="k", chunk_size=4)  # opened before a wrote anything
    a(masks[:50])
    np.testing.assert_array_equal(b(masks), planted(masks))
    assert len(two.seen) == len(masks) - 50 and b.n_shared == 50  # the 50 came from a's records
    np.testing.assert_array_equal(a(masks), planted(masks))
    assert len(one.seen) == 50 and len(a) == len(masks)
    rows = stored_rows(path)
    assert len(rows) == len(set(rows)) == len(masks)


def test_chunk_evaluated_by_both_writers_is_stored_once(tmp_path):
    path = tmp_path / "race.cache"
    masks = np.unique(np.random.default_rng(7).random((20, 12)) < 0.5, axis=0)
    b = CachedValueFunction(Counting(), path, key="k", chunk_size=8)

    class Racing(Counting):  # while a evaluates, b stores the same masks
        def __call__(self, chunk):
            if not self.calls:
                b(masks[:12])
            return super().__call__(chunk)

    inner = Racing()
    a = CachedValueFunction(inner, path, key="k", chunk_size=8)
    np.testing.assert_array_equal(a(masks), planted(masks))
    # a's first chunk was evaluated before b stored it (not stored twice); its second chunk
    # dropped the 4 masks that b had stored in the meantime
    assert len(inner.seen) == 8 + len(masks) - 12
    rows = stored_rows(path)
    assert len(rows) == len(set(rows)) == len(masks)


def test_torn_tail_of_a_dead_writer_is_dropped_before_appending(tmp_path):
    path = tmp_path / "dead.cache"
    masks = np.unique(np.random.default_rng(8).random((30, 12)) < 0.5, axis=0)
    alive = CachedValueFunction(Counting(), path, chunk_size=5)
    alive(masks[:10])
    CachedValueFunction(Counting(), path, chunk_size=5)(masks[10:20])
    with open(path, "r+b") as fh:  # the second writer died in the middle of its last record
        fh.truncate(os.path.getsize(path) - 9)
    np.testing.assert_array_equal(alive(masks), planted(masks))
    reopened = CachedValueFunction(Counting(fail_after=0), path)
    assert len(reopened) == len(masks)
    np.testing.assert_array_equal(reopened(masks), planted(masks))
    rows = stored_rows(path)
    assert len(rows) == len(set(rows)) == len(masks)


def test_torn_header_is_rewritten(tmp_path):
    path = tmp_path / "header.cache"
    path.write_bytes(b"SPEX-PLUG")  # a crash while the first process wrote the header
    masks = np.random.default_rng(9).random((6, 12)) < 0.5
    np.testing.assert_array_equal(CachedValueFunction(Counting(), path, key="k")(masks),
                                  planted(masks))
    assert len(CachedValueFunction(Counting(fail_after=0), path, key="k")) == len(
        np.unique(masks, axis=0))
    path.write_bytes(b"something else entirely")
    with pytest.raises(ValueError, match="not a spex-plugins cache"):
        CachedValueFunction(Counting(), path)


def test_exclusive_lock_serialises_holders(tmp_path):
    lock, events = str(tmp_path / "x.lock"), []

    def hold(name):
        with exclusive_lock(lock):
            events.append(name + "+")
            time.sleep(0.05)
            events.append(name + "-")

    threads = [threading.Thread(target=hold, args=(str(i),)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(events[i][0] == events[i + 1][0] for i in range(0, 6, 2))


# --- fingerprints and cache keys ----------------------------------------------------------------
def test_fingerprint_basics():
    a = np.arange(12.0).reshape(3, 4)
    assert fingerprint(a) == fingerprint(a.copy()) == fingerprint(np.asfortranarray(a))
    assert fingerprint(a) != fingerprint(a.astype(np.float32))  # dtype counts
    assert fingerprint(a) != fingerprint(a.reshape(4, 3))  # shape counts
    b = a.copy()
    b[2, 3] += 1e-12
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint({"x", "y", "z"}) == fingerprint({"z", "y", "x"})
    assert fingerprint([1, "1"]) != fingerprint(["1", 1])

    class Model:  # a picklable estimator-like object
        def __init__(self, w):
            self.w = w

        def predict(self, rows):
            return rows @ self.w

    m1, m2 = Model(np.ones(4)), Model(np.ones(4))
    assert fingerprint(m1.predict) == fingerprint(m2.predict)  # the owner, not its id
    m2.w[0] = 2
    assert fingerprint(m1.predict) != fingerprint(m2.predict)
    assert len(fingerprint(threading.Lock())) == 16  # unpicklable: type name and repr
    m1.lock = m2.lock = threading.Lock()  # unpicklable, with a __dict__: hashed by content
    assert fingerprint(m1) != fingerprint(m2)
    m2.w[0] = 1
    assert fingerprint(m1) == fingerprint(m2)

    def closure(w):
        return lambda rows: rows @ w

    assert fingerprint(closure(np.ones(3))) == fingerprint(closure(np.ones(3)))
    assert fingerprint(closure(np.ones(3))) != fingerprint(closure(np.zeros(3)))


def test_tabular_cache_key_follows_background_model_and_row():
    pytest.importorskip("sklearn", reason="scikit-learn estimator")
    from sklearn.linear_model import LogisticRegression

    from spex_plugins.models import TabularValueFunction

    def build():
        rng = np.random.default_rng(0)
        X = rng.normal(size=(60, 5))
        y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
        return LogisticRegression().fit(X, y), X

    model, X = build()
    key = TabularValueFunction(model.predict_proba, X[0], X).cache_key()
    again_model, again_X = build()  # rebuilt from scratch
    assert TabularValueFunction(again_model.predict_proba, again_X[0], again_X).cache_key() == key
    moved = X.copy()
    moved[17, 3] += 0.5  # one background row
    assert TabularValueFunction(model.predict_proba, X[0], moved).cache_key() != key
    assert TabularValueFunction(model.predict_proba, X[1], X).cache_key() != key
    other = LogisticRegression(C=0.01).fit(X, model.predict(X))
    assert TabularValueFunction(other.predict_proba, X[0], X).cache_key() != key


def test_image_cache_key_follows_pixels_and_weights():
    torch = pytest.importorskip("torch", reason="image value functions need torch")
    from spex_plugins.models import ImagePatches

    def build():
        torch.manual_seed(0)
        cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                                  torch.nn.Linear(16, 5)).eval()
        return cnn, torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(1))

    cnn, image = build()
    key = ImagePatches(cnn, image, patch_size=8, target=1, device="cpu").cache_key()
    assert ImagePatches(*build(), patch_size=8, target=1, device="cpu").cache_key() == key
    pixel = image.clone()
    pixel[1, 13, 7] += 1e-3
    assert ImagePatches(cnn, pixel, patch_size=8, target=1, device="cpu").cache_key() != key
    other, _ = build()
    with torch.no_grad():
        other[0].weight[2, 1, 0, 0] += 1e-4
    assert ImagePatches(other, image, patch_size=8, target=1, device="cpu").cache_key() != key
    assert ImagePatches(cnn, image, patch_size=8, target=1, device="cpu",
                        sigma=1.0).cache_key() != key  # another blur


def test_text_cache_key_follows_weights():
    torch = pytest.importorskip("torch", reason="causal-LM value functions need torch")
    pytest.importorskip("transformers", reason="causal-LM value functions need transformers")
    from spex_plugins.models import CausalLMLogProb, tiny_causal_lm

    corpus = ["the cat sat on the mat", "a dog ran in the park"]
    text = "the cat ran in the park"

    def key(model, tokenizer, target=" on the mat"):
        return CausalLMLogProb(model, tokenizer, text, target=target, granularity="token",
                               device="cpu").cache_key()

    tokenizer, model = tiny_causal_lm(corpus, hidden=32, seed=0)
    base = key(model, tokenizer)
    assert key(*reversed(tiny_causal_lm(corpus, hidden=32, seed=0))) == base  # rebuilt
    assert key(*reversed(tiny_causal_lm(corpus, hidden=32, seed=1))) != base  # same name
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-4
    assert key(model, tokenizer) != base
    assert key(model, tokenizer, target=" on the dog") != key(model, tokenizer)
