"""Model calls on Ray (spex_plugins.runtime.ray): the one evaluation loop fed by Ray actors.

One local Ray for the module (``ray.init(num_cpus=2, num_gpus=2)``: the two GPUs are declared,
not real, so the GPU placement is tested for plumbing on CPU); skipped where Ray is not
installed, except the tests of what happens without it.
"""

import copy
import functools
import importlib
import json
import os
import pickle
import re
import sys
import time

import numpy as np
import pytest
from test_runtime import planted, stored_rows

from spex_plugins import SPEX
from spex_plugins.models import CachedValueFunction, MaskedValueFunction
from spex_plugins.runtime import MaskCache, evaluate

N = 16


class Planted(MaskedValueFunction):
    """The planted sparse game of test_runtime as a value function built on a worker.

    What it does beyond that is read from the JSON file ``control`` (when given) at the start
    of each batch, so that one pool of actors serves all tests: ``log``, a folder where each
    process appends the masks it evaluated (one file per pid); ``delay``, seconds per batch;
    ``fail_on``, a mask whose batch raises ValueError; ``nan``, answer NaN.
    """

    def __init__(self, control=None, batch_size=32):
        self.n, self.features, self.batch_size = N, [f"x{i}" for i in range(N)], batch_size
        self.control = control

    def evaluate_batch(self, masks):
        settings = {}
        if self.control is not None:
            with open(self.control) as fh:
                settings = json.load(fh)
        time.sleep(settings.get("delay", 0))
        fail_on = settings.get("fail_on")
        if fail_on is not None and (masks == np.array(fail_on, bool)).all(axis=1).any():
            raise ValueError("planted failure")
        if settings.get("log"):
            with open(os.path.join(settings["log"], f"{os.getpid()}.bin"), "ab") as fh:
                fh.write(np.packbits(masks, axis=1).tobytes())
        return np.full(len(masks), np.nan) if settings.get("nan") else planted(masks)


def logged(folder):
    """Masks (as packed bytes) the workers evaluated, all processes together."""
    rows = []
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as fh:
            data = np.frombuffer(fh.read(), np.uint8).reshape(-1, (N + 7) // 8)
        rows.extend(map(bytes, data))
    return rows


def random_masks(m, seed=0):
    rng = np.random.default_rng(seed)
    return np.unique(rng.random((m, N)) < 0.5, axis=0)


class Interrupting:
    """A MaskStore around a MaskCache that calls ``hook(stores so far)`` after each store."""

    def __init__(self, cache, hook):
        self.cache, self.hook, self.stores = cache, hook, 0

    path = property(lambda self: self.cache.path)
    n_shared = property(lambda self: self.cache.n_shared)

    def missing(self, masks, refresh=False):
        return self.cache.missing(masks, refresh)

    def lookup(self, masks):
        return self.cache.lookup(masks)

    def store(self, masks, values, flat):
        self.cache.store(masks, values, flat)
        self.stores += 1
        self.hook(self.stores)


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install "
                                            "'spex-plugins[ray]')")
    # the workers unpickle this module's value functions by reference: let them import it
    here, path = os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([here] + ([path] if path else []))
    try:
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    finally:
        if path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def RayEvaluator(ray):  # noqa: N802 (the class under test)
    return importlib.import_module("spex_plugins.runtime.ray").RayEvaluator


@pytest.fixture(scope="module")
def control_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("control") / "control.json"
    path.write_text("{}")
    return str(path)


@pytest.fixture(scope="module")
def shared(RayEvaluator, control_file):  # noqa: N803
    """Two CPU actors (half a CPU each: the GPU test places its own beside them), started
    once for the module; tests steer them through :func:`control`."""
    evaluator = RayEvaluator(functools.partial(Planted, control_file), n_actors=2,
                             num_gpus_per_actor=0, num_cpus_per_actor=0.5, batch_size=16)
    with evaluator:
        yield evaluator


@pytest.fixture()
def control(control_file, tmp_path):
    """control(**settings) steers the shared actors' value function; ``log=True`` gives a
    fresh log folder (returned). Reset after the test."""

    def steer(**settings):
        if settings.get("log") is True:
            settings["log"] = str(tmp_path / f"log{len(os.listdir(tmp_path))}")
            os.mkdir(settings["log"])
        if settings.get("fail_on") is not None:
            settings["fail_on"] = np.asarray(settings["fail_on"]).tolist()
        with open(control_file, "w") as fh:
            json.dump(settings, fh)
        return settings.get("log")

    steer()
    yield steer
    steer()


# --- without Ray ----------------------------------------------------------------------------
def test_missing_ray_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "spex_plugins.runtime.ray", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'spex-plugins\[ray\]'"):
        importlib.import_module("spex_plugins.runtime.ray")


# --- with Ray ---------------------------------------------------------------------------------
def test_explanation_equals_the_in_process_one(shared, tmp_path):
    reference = SPEX(max_order=3, random_state=4).explain(Planted(), N, 700, progress=False)
    assert shared.batch_size == 16 and len(shared.workers_) == 2
    on_ray = SPEX(max_order=3, random_state=4).explain(shared, N, 700, progress=False)
    np.testing.assert_array_equal(on_ray.locations, reference.locations)
    np.testing.assert_array_equal(on_ray.coefficients, reference.coefficients)
    assert on_ray.n_model_calls == reference.n_model_calls

    # through the cache; the key is the worker's value function's, so a cache written in
    # process is reused on Ray and the other way round
    path = tmp_path / "run.cache"
    cached = CachedValueFunction(shared, path)
    assert cached.key == Planted().cache_key()
    SPEX(max_order=3, random_state=4).explain(cached, N, 700, progress=False)
    rows = stored_rows(path)
    assert len(rows) == len(set(rows)) == reference.n_model_calls
    again = CachedValueFunction(Planted(), path)
    SPEX(max_order=3, random_state=4).explain(again, N, 700, progress=False)
    assert again.n_evaluated == 0
    masks = random_masks(40, seed=1)
    np.testing.assert_array_equal(shared(masks), planted(masks))

    # a copy keeps the configuration, not the actors (it starts its own when used)
    for clone in (pickle.loads(pickle.dumps(shared)), copy.deepcopy(shared)):
        assert repr(clone) == repr(shared) and clone.actors_ == [] and shared.actors_


@pytest.mark.parametrize("no_restart", [True, False], ids=["killed", "restarted"])
def test_killed_actor_loses_and_duplicates_nothing(shared, control, ray, tmp_path, no_restart):
    masks = random_masks(400)
    log = control(log=True, delay=0.03)
    victim = shared.actors_[0]

    def kill(stores):
        if stores == 2:  # mid-run: both actors hold a batch
            ray.kill(victim, no_restart=no_restart)

    result = evaluate(shared, masks, cache=Interrupting(MaskCache(tmp_path / "run.cache"), kill))
    if no_restart:  # dead for good: replaced by a new actor
        assert victim not in shared.actors_
    assert len(shared.actors_) == 2
    np.testing.assert_array_equal(result.output(), planted(masks))
    assert result.n_model_calls == len(masks)
    rows = stored_rows(tmp_path / "run.cache")
    assert len(rows) == len(set(rows)) == len(masks)  # each mask exactly once
    assert set(rows) == set(map(bytes, np.packbits(masks, axis=1)))
    np.testing.assert_array_equal(MaskCache(tmp_path / "run.cache").lookup(masks)[0][:, 0],
                                  planted(masks))
    assert set(logged(log)) == set(rows)


def test_interrupted_run_resumes_without_requerying(shared, control, ray, tmp_path):
    clean = SPEX(max_order=3, random_state=4).explain(Planted(), N, 700, progress=False)
    path = tmp_path / "run.cache"
    first = control(log=True)

    def interrupt(stores):
        if stores == 3:
            raise KeyboardInterrupt("simulated Ctrl-C")

    cached = CachedValueFunction(shared, path)
    cached.mask_cache = Interrupting(cached.mask_cache, interrupt)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        SPEX(max_order=3, random_state=4).explain(cached, N, 700, progress=False)
    assert any("48 masks evaluated before this error are stored" in note
               for note in interrupted.value.__notes__)
    done = set(stored_rows(path))
    assert len(done) == 3 * 16
    ray.get([actor.describe.remote() for actor in shared.actors_])  # the batches in flight end
    assert done < set(logged(first))  # they were evaluated, but not stored

    second = control(log=True)
    resumed = SPEX(max_order=3, random_state=4).explain(CachedValueFunction(shared, path), N,
                                                        700, progress=False)
    sent = logged(second)
    assert not done & set(sent)
    assert len(sent) == len(set(sent)) == clean.n_model_calls - len(done)
    np.testing.assert_array_equal(resumed.locations, clean.locations)
    np.testing.assert_array_equal(resumed.coefficients, clean.coefficients)


def test_worker_error_is_raised_after_storing_what_completed(shared, control, tmp_path):
    masks = random_masks(300, seed=2)
    path = tmp_path / "run.cache"
    log = control(log=True, fail_on=masks[100])
    with pytest.raises(ValueError, match="planted failure") as raised:
        evaluate(CachedValueFunction(shared, path), masks)
    assert re.search(r"for masks \d+\.\.\.\d+ of the evaluation", str(raised.value))
    assert any("evaluating again resumes" in note for note in raised.value.__notes__)
    rows = stored_rows(path)
    assert len(rows) == len(set(rows)) and set(rows) == set(logged(log))  # nothing lost
    assert bytes(np.packbits(masks[100])) not in set(rows)

    log = control(log=True)  # the actors survive a raising value function
    cached = CachedValueFunction(shared, path)
    np.testing.assert_array_equal(cached(masks), planted(masks))
    assert cached.n_evaluated == len(masks) - len(rows) == len(logged(log))

    control(nan=True)
    with pytest.raises(ValueError, match="non-finite"):
        shared(np.eye(N, dtype=bool))


def test_factory_errors_keep_their_type(RayEvaluator):  # noqa: N803
    def broken():
        raise FileNotFoundError("no model files here")

    with pytest.raises(FileNotFoundError, match="no model files here") as raised, \
            RayEvaluator(broken, n_actors=1, num_gpus_per_actor=0, num_cpus_per_actor=0):
        pass
    assert "value function factory" in str(raised.value)
    with pytest.raises(TypeError, match="a value function itself"):
        RayEvaluator(Planted())
    with pytest.raises(ValueError, match="n_actors must be >= 1"):
        RayEvaluator(Planted, n_actors=0)


def test_gpus_are_placed_one_per_actor(RayEvaluator, shared):  # noqa: N803
    # the shared actors hold 1 of the 2 CPUs; the cluster declares 2 GPUs
    with RayEvaluator(Planted, num_cpus_per_actor=0.5) as evaluator:  # "auto": 1 GPU each
        assert evaluator.gpus_per_actor_ == 1.0 and len(evaluator.actors_) == 2
        assert sorted(w["gpu_ids"][0] for w in evaluator.workers_) == ["0", "1"]
        assert evaluator.batch_size == 32  # the value function's own
        masks = random_masks(50)
        np.testing.assert_array_equal(evaluator(masks), planted(masks))
    with pytest.raises(ValueError, match=r"do not fit \(at most 2\)"):
        RayEvaluator(Planted, n_actors=3, num_gpus_per_actor=1, num_cpus_per_actor=0).start()
    with pytest.raises(ValueError, match=r"do not fit \(at most 4\)"):
        RayEvaluator(Planted, n_actors=5, num_gpus_per_actor=0.5, num_cpus_per_actor=0).start()
    with pytest.raises(ValueError, match="not one actor with .*num_gpus_per_actor=3 fits"):
        RayEvaluator(Planted, num_gpus_per_actor=3).start()


@pytest.mark.slow  # the worker imports torch and transformers: several seconds
def test_cli_ray_workers_rebuild_the_same_value_function(RayEvaluator, shared,  # noqa: N803
                                                         tmp_path, monkeypatch):
    import argparse

    from test_cli import TEXT, save_tiny  # skips without torch / transformers

    from spex_plugins.cli import build_parser, on_ray, rebuild_value_function

    args = build_parser().parse_args(["explain", "--model", save_tiny(tmp_path, "classify"),
                                      "--task", "classify", "--text", TEXT, "--target", "1",
                                      "--granularity", "word", "--ray", "1"])
    here = rebuild_value_function(argparse.Namespace(**{**vars(args), "device": "cpu"}), TEXT)
    masks = random_masks(30, seed=3)[:, :here.n]
    evaluator = on_ray(here, TEXT, args)
    try:
        np.testing.assert_allclose(evaluator(masks), here(masks), rtol=1e-5, atol=1e-6)
    finally:
        evaluator.close()

    # workers whose value function differs from this process's (here: a planted game, cheaper
    # to start than a second copy of the model) are refused
    cheap = RayEvaluator(Planted, n_actors=1, num_gpus_per_actor=0, num_cpus_per_actor=0)
    monkeypatch.setattr(importlib.import_module("spex_plugins.runtime.ray"), "RayEvaluator",
                        lambda *args, **kwargs: cheap)
    with pytest.raises(SystemExit, match="the Ray workers built another value function"):
        on_ray(here, TEXT, args)
    assert cheap.actors_ == []
