"""Model calls on Ray: a pool of model-holding actors behind the one evaluation loop.

:class:`RayEvaluator` is a value function for :func:`~spex_plugins.runtime.evaluate` (and so
for ``SPEX.explain``, the adapters and :class:`~spex_plugins.runtime.CachedValueFunction`)
whose batches run on Ray actors. Each actor builds the model once, with the ``factory`` the
user gives (``factory() -> value function``, run on the worker), and then evaluates the mask
batches sent to it with :func:`~spex_plugins.runtime.evaluate` on the worker (the value
function's own ``batch_size`` and out-of-memory halving, where the memory is). The driver keeps
the rest of the one loop: validation, de-duplication, cache look-up, output checks, progress,
and writing each batch into the resumable cache as it completes.

Why :class:`ray.util.ActorPool` and not Ray Data ``map_batches`` with an actor class:

- results must reach the cache in completion order, batch by batch, with the masks they
  belong to. ``ActorPool.get_next_unordered`` hands back exactly the batches we cut, as each
  finishes; Ray Data re-blocks rows into its own batches, runs a streaming executor whose
  output order and block boundaries are its own, and needs ``ray[data]`` (pyarrow);
- batches are pulled from the loop only as actors free up (at most one in flight per
  actor), so masks another process stored meanwhile in a shared cache are skipped, and an
  interruption loses only the batches in flight;
- failures stay ours to handle precisely. Ray restarts a crashed actor process
  (``max_restarts``) and re-runs its task (``max_task_retries=-1``); an actor dead for good
  (``ray.kill``, restarts spent) is replaced, and the batches it held are sent again, so no
  output is lost or stored twice. A value function that raises ends the run with its own
  error, raised after the batches in flight have come back and been stored. Ray Data fails the
  whole dataset on the first user error.

Ray not initialised: the first evaluation calls ``ray.init()`` with Ray's own rules (joins the
cluster named by ``RAY_ADDRESS`` or a running local one, else starts a local Ray with all CPUs
and GPUs of this machine). Call ``ray.init(...)`` yourself first to choose.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import numpy as np

try:
    import ray
except ImportError as error:
    raise ImportError(
        "spex_plugins.runtime.ray needs Ray: pip install 'spex-plugins[ray]'") from error
if tuple(int(part) for part in ray.__version__.split(".")[:2]) < (2, 58):
    raise ImportError(f"spex_plugins.runtime.ray needs Ray >= 2.58 (its ActorPool drops dead "
                      f"actors), found {ray.__version__}: pip install 'spex-plugins[ray]'")
from ray.exceptions import RayActorError, RayTaskError  # noqa: E402
from ray.util import ActorPool  # noqa: E402

from .evaluation import ValueFunction, evaluate

__all__ = ["RayEvaluator"]

DEFAULT_TASK_SIZE = 256
"""Masks per task when neither the caller nor the value function names a batch size."""


@ray.remote
class _ModelActor:
    """One value function, built on this Ray worker by the user's factory."""

    def __init__(self, factory: Callable[[], ValueFunction]):
        self.value_function = None
        self.failure: Exception | None = None
        try:
            self.value_function = factory()
        except Exception as error:  # raised again by every call, as the caller's error type
            error.add_note("raised by the value function factory on a Ray worker")
            self.failure = error

    def _built(self):
        if self.failure is not None:
            raise self.failure
        return self.value_function

    def describe(self) -> dict:
        """Where this actor runs and the value function's ``batch_size``."""
        value_function = self._built()
        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": context.get_node_id(),
                "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                "batch_size": getattr(value_function, "batch_size", None)}

    def cache_key(self) -> str | None:
        key = getattr(self._built(), "cache_key", None)
        return key() if callable(key) else None

    def evaluate(self, key: int, masks: np.ndarray) -> tuple[int, np.ndarray]:
        """(key, outputs (b,) or (b, k)) of one batch of distinct masks (b, n)."""
        value_function = self._built()
        try:
            return key, evaluate(value_function, masks).output()
        except Exception as error:
            error.spex_batch_key = key  # tells the driver which batch raised
            error.add_note(f"raised on a Ray worker (pid {os.getpid()}) for masks {key}..."
                           f"{key + len(masks) - 1} of the evaluation (positions above count "
                           "from the start of that batch)")
            raise


class RayEvaluator:
    """A value function whose mask batches are evaluated by a pool of Ray actors.

    ``RayEvaluator(factory)`` starts (at the first evaluation) ``n_actors`` actors that each
    build the model once with ``factory()`` on their worker; ``factory`` is a picklable
    callable without arguments (a module-level function, a ``functools.partial`` or a lambda)
    returning a value function (bool masks (b, n) -> (b,) or (b, k); a
    :class:`~spex_plugins.models.MaskedValueFunction` or any callable). Use it wherever a value
    function goes::

        evaluator = RayEvaluator(partial(build_model_value_function, text), n_actors=8)
        SPEX(...).explain(CachedValueFunction(evaluator, "run.cache"), n, budget)

    Parameters
    ----------
    factory : builds the value function on each worker.
    n_actors : number of actors; None: as many as the Ray cluster holds (GPUs /
        ``num_gpus_per_actor``, else CPUs / ``num_cpus_per_actor``; 1 when an actor reserves
        neither). More than the cluster holds is a ValueError; more than fit in what is free
        now, a warning (they wait).
    num_gpus_per_actor : GPUs each actor reserves (Ray sets ``CUDA_VISIBLE_DEVICES`` for it, so
        a value function choosing "cuda when available" uses its own GPU); fractions share a
        GPU between actors. ``"auto"``: 1 when the cluster has GPUs, else 0.
    num_cpus_per_actor : CPUs each actor reserves (Ray also sets ``OMP_NUM_THREADS`` to it).
    batch_size : masks sent per task (and stored per cache write); None: the value function's
        own ``batch_size`` (asked of the first actor), else 256. Inside a task the value
        function still runs in its own batches, halved on out-of-memory.
    max_restarts : Ray restarts a crashed actor up to this many times, re-running its task; an
        actor dead for good (``ray.kill``, restarts spent) is replaced, up to this many times
        per evaluation, and the batches it held are sent again. Beyond that: RuntimeError,
        after everything that completed is stored.
    progress : show a progress bar when the evaluator is called directly.

    Attributes (after the first evaluation): ``actors_`` (the actor handles), ``workers_`` (per
    actor started: ``pid``, ``node_id``, ``gpu_ids``, ``batch_size``), ``gpus_per_actor_``.

    Actors live until :meth:`close` (or ``with RayEvaluator(...) as evaluator:``), or until the
    evaluator is garbage collected, so later evaluations reuse the loaded models.
    """

    def __init__(self, factory: Callable[[], ValueFunction], *, n_actors: int | None = None,
                 num_gpus_per_actor: float | Literal["auto"] = "auto",
                 num_cpus_per_actor: float = 1, batch_size: int | None = None,
                 max_restarts: int = 3, progress: bool = False):
        built = not isinstance(factory, type) and (hasattr(factory, "evaluate_batch")
                                                   or hasattr(factory, "mask_cache"))
        if not callable(factory) or built:
            raise TypeError(
                f"factory must be a callable without arguments that builds the value function "
                f"on a worker (e.g. lambda: MyValueFunction(...)), got {type(factory).__name__}"
                + (" (a value function itself)" if built else ""))
        if n_actors is not None and int(n_actors) < 1:
            raise ValueError(f"n_actors must be >= 1 (or None: as many as fit), got {n_actors}")
        if num_gpus_per_actor != "auto" and not float(num_gpus_per_actor) >= 0:
            raise ValueError(f"num_gpus_per_actor must be >= 0 or 'auto', got "
                             f"{num_gpus_per_actor!r}")
        if not float(num_cpus_per_actor) >= 0:
            raise ValueError(f"num_cpus_per_actor must be >= 0, got {num_cpus_per_actor}")
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(max_restarts) < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self.factory = factory
        self.n_actors = None if n_actors is None else int(n_actors)
        self.num_gpus_per_actor = num_gpus_per_actor
        self.num_cpus_per_actor = float(num_cpus_per_actor)
        self._batch_size = None if batch_size is None else int(batch_size)
        self.max_restarts = int(max_restarts)
        self.progress = progress
        self.actors_: list = []
        self.workers_: list[dict] = []
        self.gpus_per_actor_ = 0.0

    # --- actors ---------------------------------------------------------------------------
    def _placement(self) -> tuple[int, float]:
        """(number of actors, GPUs per actor): ValueError when they can never fit in the Ray
        cluster, a warning when they do not fit in what is free now (the rest then wait)."""
        total, free = ray.cluster_resources(), ray.available_resources()
        per_gpu = (1.0 if total.get("GPU", 0) >= 1 else 0.0) \
            if self.num_gpus_per_actor == "auto" else float(self.num_gpus_per_actor)
        per_cpu = self.num_cpus_per_actor

        def fitting(resources) -> float:
            return min(resources.get("GPU", 0.0) // per_gpu if per_gpu else np.inf,
                       resources.get("CPU", 0.0) // per_cpu if per_cpu else np.inf)

        most, now = fitting(total), fitting(free)
        n = self.n_actors if self.n_actors is not None else \
            (1 if np.isinf(most) else int(most))
        need = f"num_cpus_per_actor={per_cpu:g}, num_gpus_per_actor={per_gpu:g}"
        cluster = (f"the Ray cluster has {total.get('CPU', 0):g} CPUs and "
                   f"{total.get('GPU', 0):g} GPUs")
        if n < 1:
            raise ValueError(f"{cluster}: not one actor with {need} fits")
        if n > most:
            raise ValueError(f"{cluster}: {n} actors with {need} do not fit (at most {int(most)})")
        if n > now:
            warnings.warn(f"{n} actors with {need}: only {int(now)} fit in the Ray resources "
                          "free now, the others wait until resources are released", stacklevel=3)
        return n, per_gpu

    def _new_actor(self, gpus: float):
        return _ModelActor.options(
            num_cpus=self.num_cpus_per_actor, num_gpus=gpus,
            max_restarts=self.max_restarts, max_task_retries=-1).remote(self.factory)

    def start(self) -> RayEvaluator:
        """Start the actors (done by the first evaluation) and wait until each built its
        value function; the factory's error is raised here, with its own type."""
        if self.actors_:
            return self
        if not ray.is_initialized():
            ray.init()
        n, gpus = self._placement()
        self.gpus_per_actor_ = gpus
        actors = [self._new_actor(gpus) for _ in range(n)]
        try:
            self.workers_ = ray.get([actor.describe.remote() for actor in actors])
        except BaseException:
            for actor in actors:
                ray.kill(actor)
            raise
        self.actors_ = actors
        return self

    def close(self) -> None:
        """Stop the actors (their models are freed); a later evaluation starts new ones."""
        actors, self.actors_, self.workers_ = self.actors_, [], []
        for actor in actors:
            ray.kill(actor)

    def __getstate__(self) -> dict:
        """A copy (pickle, deepcopy) keeps the configuration and starts its own actors."""
        return {**self.__dict__, "actors_": [], "workers_": []}

    def __enter__(self) -> RayEvaluator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what evaluate() asks of a value function ------------------------------------------
    @property
    def batch_size(self) -> int:
        """Masks per task: as given, else the value function's own ``batch_size`` (from the
        first actor), else 256."""
        if self._batch_size is not None:
            return self._batch_size
        remote = self.start().workers_[0]["batch_size"]
        return int(remote) if remote else DEFAULT_TASK_SIZE

    def cache_key(self) -> str | None:
        """The remote value function's ``cache_key()`` (None when it has none), so a cache
        written in process is reused on Ray and the other way round."""
        return ray.get(self.start().actors_[0].cache_key.remote())

    def __call__(self, masks) -> np.ndarray:
        """Outputs (m,) or (m, k) for bool masks (m, n), through :func:`evaluate`."""
        return evaluate(self, masks, progress=self.progress, desc="Ray model calls").output()

    def map_batches(self, batches: Iterable[tuple[int, np.ndarray]]
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """Evaluate ``(key, masks)`` batches on the actors; yield ``(key, outputs)`` in
        completion order, each key once (see :class:`~spex_plugins.runtime.BatchMapper`).

        A batch whose actor died is sent again (to a restarted or a new actor). When the value
        function raises, no further batch is sent, the batches in flight are still yielded,
        and then its error is raised (an instance of the worker's exception type).
        """
        self.start()
        pool = ActorPool(list(self.actors_))
        source = iter(batches)
        again: deque[tuple[int, np.ndarray]] = deque()  # batches an actor lost
        in_flight: dict[int, tuple[np.ndarray, object]] = {}  # key -> (masks, actor)
        error: BaseException | None = None
        deaths = 0

        def send(actor, item: tuple[int, np.ndarray]):
            key, masks = item
            in_flight[key] = (masks, actor)
            return actor.evaluate.remote(key, masks)

        while True:
            while error is None and pool.has_free():
                item = again.popleft() if again else next(source, None)
                if item is None:
                    break
                pool.submit(send, item)
            if not pool.has_next():  # every live task came back; what is left was lost
                if not in_flight:
                    break
                for key, (masks, actor) in list(in_flight.items()):
                    del in_flight[key]
                    again.append((key, masks))
                    if actor in self.actors_:
                        self.actors_.remove(actor)
                if error is not None:
                    break
                continue
            try:
                key, outputs = pool.get_next_unordered()
            except RayTaskError as raised:  # the value function (or the factory) raised
                in_flight.pop(getattr(raised.cause, "spex_batch_key", None), None)
                error = error or raised
                continue
            except RayActorError as died:  # dead for good: killed, or restarts spent
                deaths += 1
                if deaths > self.max_restarts:
                    if error is None:
                        error = RuntimeError(
                            f"Ray actors died {deaths} times in this evaluation (more than "
                            f"max_restarts={self.max_restarts}); the batches that completed "
                            "are kept, the others were not evaluated")
                        error.__cause__ = died
                    continue
                replacement = self._new_actor(self.gpus_per_actor_)
                self.actors_.append(replacement)
                pool.push(replacement)
                continue
            in_flight.pop(key)
            yield key, outputs
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return (f"RayEvaluator({self.factory!r}, n_actors={self.n_actors}, "
                f"num_gpus_per_actor={self.num_gpus_per_actor!r}, "
                f"num_cpus_per_actor={self.num_cpus_per_actor:g}, batch_size={self._batch_size}, "
                f"max_restarts={self.max_restarts})")
