"""The one evaluation loop: validate, de-duplicate, look up the cache, batch, show progress,
halve batches on out-of-memory, check every output and store it as it arrives.

Every model call of the project goes through :func:`evaluate`: the SPEX core, the value
functions of :mod:`spex_plugins.models` when called directly, and
:class:`~spex_plugins.runtime.CachedValueFunction`. Value functions only turn one batch of
distinct masks into model outputs.

What :func:`evaluate` understands of a value function (all optional, duck-typed):

- ``evaluate_batch(masks)``: the model on one batch of distinct masks; when present it is called
  instead of the object itself (so a value function's own ``__call__``, which comes back here,
  is never nested);
- ``batch_size``: the default batch size; it is lowered in place after an out-of-memory halving,
  so later calls start from a size that fits;
- ``mask_cache`` and ``value_function``: a value function wrapped with a resumable cache
  (:class:`~spex_plugins.runtime.CachedValueFunction`), evaluated through that cache;
- ``map_batches(batches)`` (:class:`BatchMapper`): a value function that evaluates several
  batches at a time elsewhere (:class:`spex_plugins.runtime.ray.RayEvaluator`: on Ray actors).
  The loop still does everything else (validation, de-duplication, cache look-up and writes,
  output checks, progress), taking each batch's outputs as it completes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .masks import as_masks, unique_masks

__all__ = ["DEFAULT_BATCH_SIZE", "BatchMapper", "Evaluation", "MaskStore", "ValueFunction",
           "evaluate", "is_out_of_memory"]

ValueFunction = Callable[[np.ndarray], np.ndarray]
"""``value_function(masks: bool (m, n)) -> (m,) or (m, k)``; True = feature kept."""

DEFAULT_BATCH_SIZE = 4096
"""Masks per call when neither the caller nor the value function names a batch size."""


class MaskStore(Protocol):
    """What :func:`evaluate` needs of a cache (see :class:`~spex_plugins.runtime.MaskCache`)."""

    n_shared: int

    def missing(self, masks: np.ndarray, refresh: bool = False) -> np.ndarray: ...

    def lookup(self, masks: np.ndarray) -> tuple[np.ndarray, bool]: ...

    def store(self, masks: np.ndarray, values: np.ndarray, flat: bool) -> None: ...


class BatchMapper(Protocol):
    """A value function that evaluates batches of masks elsewhere, several at a time."""

    def map_batches(self, batches: Iterable[tuple[int, np.ndarray]]
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """Evaluate each ``(key, masks)`` of ``batches`` (bool (b, n), distinct) and yield
        ``(key, outputs (b,) or (b, k))`` as each finishes, in any order, each key once.

        ``batches`` is pulled lazily, as workers free up. When a batch raises, the batches
        already in flight are still yielded before the error is raised, so none is lost.
        """
        ...


@dataclass(frozen=True)
class Evaluation:
    """The outputs of :func:`evaluate`.

    ``values``: float64 (m, k), one row per mask asked for, in order; ``flat``: the value
    function answered with 1-D arrays (so a scalar output is (m,) to the user); ``n_model_calls``:
    distinct masks sent to the model by this call (cache hits and repeats excluded); ``n_distinct``:
    distinct masks asked for; ``seconds``: time inside the model.
    """

    values: np.ndarray
    flat: bool
    n_model_calls: int
    n_distinct: int
    seconds: float

    def output(self) -> np.ndarray:
        """``values`` as the value function gave them: (m,) when ``flat`` and k = 1."""
        return self.values[:, 0] if self.flat and self.values.shape[1] == 1 else self.values


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS or CPU allocator)."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError | MemoryError) and "out of memory" in str(error).lower()


def _release_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _describe(mask: np.ndarray, limit: int = 12) -> str:
    kept = np.flatnonzero(mask)
    shown = ", ".join(map(str, kept[:limit])) + (", ..." if len(kept) > limit else "")
    return f"{len(kept)} of {len(mask)} kept: [{shown}]"


def check_outputs(values, masks: np.ndarray, n_outputs: int | None, start: int = 0
                  ) -> np.ndarray:
    """One batch's outputs as float64 (m, k), or a ValueError that says what is wrong: not an
    array of m rows, a number of outputs k that changed, or NaN/inf (naming the masks by their
    position among the masks evaluated, the batch starting at ``start``)."""
    out = np.asarray(values, dtype=np.float64) if values is not None else None
    m = len(masks)
    if out is None or out.ndim == 0 or out.ndim > 2 or out.shape[0] != m:
        got = None if out is None else out.shape
        raise ValueError(
            f"value_function must return an array of shape ({m},) or ({m}, k) for a batch of "
            f"{m} masks, got shape {got}"
        )
    out = out.reshape(m, -1)
    if n_outputs is not None and out.shape[1] != n_outputs:
        raise ValueError(
            f"value_function returned {out.shape[1]} outputs per mask for masks {start}..."
            f"{start + m - 1}, but {n_outputs} before")
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        first = rows[0]
        raise ValueError(
            f"value_function returned non-finite values (NaN or inf) for {len(rows)} of {m} "
            f"masks in the batch starting at mask {start} (mask rows {(rows[:10] + start).tolist()}"
            f"{', ...' if len(rows) > 10 else ''}); first offending mask: "
            f"{_describe(masks[first])}, output {out[first]}"
        )
    return out


def _progress_bar(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="mask", leave=False)


def evaluate(value_function: ValueFunction, masks, *, batch_size: int | None = None,
             progress: bool = False, desc: str = "model calls",
             cache: MaskStore | None = None) -> Evaluation:
    """Evaluate ``value_function`` on bool masks (m, n): each distinct mask once.

    Masks already in ``cache`` (or in the cache of a wrapped value function) are not sent
    again; the others go in batches of ``batch_size`` (default: the value function's
    ``batch_size``, else :data:`DEFAULT_BATCH_SIZE`). A batch that raises an out-of-memory error
    is retried at half the size (down to 1). Every batch's outputs are checked (shape, a
    constant number of outputs, finite) and, with a cache, stored before the next batch runs, so
    an interruption loses at most the batch in flight. ``progress`` shows one tqdm bar (total
    and ETA from the first call on) when tqdm is installed.

    A value function with ``map_batches`` (see :class:`BatchMapper`) evaluates the batches
    itself, several at a time (e.g. on Ray actors); each result is checked, stored and counted
    here as it arrives, in completion order, so an interruption loses only the batches in
    flight.
    """
    masks = as_masks(masks)
    model = value_function
    store = cache
    if getattr(model, "mask_cache", None) is not None:
        store = store if store is not None else model.mask_cache
        size_hint = getattr(model, "chunk_size", None)
        model = model.value_function
    else:
        size_hint = None
    size = batch_size or size_hint or getattr(model, "batch_size", None) or DEFAULT_BATCH_SIZE
    size = max(1, int(size))

    distinct, inverse = unique_masks(masks)
    todo = distinct
    if store is not None and len(distinct):
        todo = distinct[store.missing(distinct, refresh=True)]
    planned = store.n_shared if store is not None else 0

    outputs: dict[int, np.ndarray] = {}  # start in todo -> outputs, when there is no store
    spent, n_outputs, flat, called = 0.0, None, True, 0
    bar = _progress_bar(len(todo), desc) if progress and len(todo) else None

    def still_missing(chunk: np.ndarray) -> np.ndarray:
        if store is not None and store.n_shared != planned:  # others stored some meanwhile
            return chunk[store.missing(chunk)]
        return chunk

    def accept(start: int, chunk: np.ndarray, raw) -> None:
        nonlocal flat, n_outputs, called
        flat = flat and np.ndim(raw) == 1
        out = check_outputs(raw, chunk, n_outputs, start)
        n_outputs = out.shape[1]
        called += len(chunk)
        if store is not None:
            store.store(chunk, out, flat)
        else:
            outputs[start] = out
        if bar is not None:
            bar.update(len(chunk))

    try:
        if callable(getattr(model, "map_batches", None)):
            spent = _evaluate_mapped(model, todo, size, still_missing, accept)
        else:
            spent = _evaluate_in_process(model, todo, size, still_missing, accept)
    except BaseException as error:
        if store is not None and called:
            error.add_note(f"{called} masks evaluated before this error are stored in "
                           f"{getattr(store, 'path', 'the cache')}; evaluating again resumes")
        raise
    finally:
        if bar is not None:
            bar.close()

    if store is not None:
        values, flat = store.lookup(distinct) if len(distinct) else (np.zeros((0, 1)), flat)
    elif outputs:
        values = np.vstack([outputs[start] for start in sorted(outputs)])  # todo's order
    else:
        values = np.zeros((0, 1))
    return Evaluation(values[inverse] if len(masks) else values, flat, called, len(distinct),
                      spent)


def _evaluate_in_process(model, todo: np.ndarray, size: int, still_missing, accept) -> float:
    """Batches of ``todo`` through ``model.evaluate_batch`` (or ``model``) one at a time,
    halving on out-of-memory; the seconds spent in the model."""
    batch = getattr(model, "evaluate_batch", model)
    spent, start, halved = 0.0, 0, False
    try:
        while start < len(todo):
            chunk = still_missing(todo[start:start + size])
            if not len(chunk):
                start += size
                continue
            began = time.perf_counter()
            try:
                raw = batch(chunk)
            except (RuntimeError, MemoryError) as error:
                if len(chunk) == 1 or not is_out_of_memory(error):
                    raise
                _release_memory()
                size, halved = max(1, len(chunk) // 2), True
                continue
            finally:
                spent += time.perf_counter() - began
            accept(start, chunk, raw)
            start += size
    finally:
        if halved and isinstance(getattr(model, "batch_size", None), int | np.integer):
            model.batch_size = min(int(model.batch_size), size)  # later calls start there
    return spent


def _evaluate_mapped(model: BatchMapper, todo: np.ndarray, size: int, still_missing, accept
                     ) -> float:
    """Batches of ``todo`` through ``model.map_batches``, accepted in completion order; the
    seconds spent waiting for results."""
    sent: dict[int, np.ndarray] = {}

    def batches() -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(todo), size):  # pulled as workers free up
            chunk = still_missing(todo[start:start + size])
            if len(chunk):
                sent[start] = chunk
                yield start, chunk

    results = model.map_batches(batches())
    spent = 0.0
    try:
        while True:
            began = time.perf_counter()
            try:
                start, raw = next(results)
            except StopIteration:
                break
            finally:
                spent += time.perf_counter() - began
            accept(start, sent.pop(start), raw)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return spent
