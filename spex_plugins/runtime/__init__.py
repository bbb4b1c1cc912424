"""The evaluation runtime (numpy only): every model call of the project goes through it.

- :func:`evaluate` (:mod:`.evaluation`): the one loop that validates masks, de-duplicates them,
  skips what a cache holds, batches, shows progress, halves batches on out-of-memory, checks
  each output and stores it as it arrives; a value function with ``map_batches``
  (:class:`BatchMapper`) evaluates the batches elsewhere, several at a time;
- :class:`MaskCache`, :class:`CachedValueFunction` (:mod:`.cache`): the resumable on-disk cache;
- :func:`exclusive_lock` (:mod:`.locking`): the cross-process lock the cache uses;
- :func:`fingerprint`, :func:`model_key` (:mod:`.fingerprint`): content digests for cache keys;
- :mod:`.masks`: mask validation and exact row de-duplication;
- :mod:`.ray` (optional, ``pip install 'spex-plugins[ray]'``): :class:`~.ray.RayEvaluator`,
  model-holding Ray actors behind the same loop. Not imported here: this package stays
  ray-free.
"""

from .cache import CachedValueFunction, MaskCache, default_cache_dir
from .evaluation import (
    DEFAULT_BATCH_SIZE,
    BatchMapper,
    Evaluation,
    ValueFunction,
    evaluate,
    is_out_of_memory,
)
from .fingerprint import fingerprint, model_key
from .locking import exclusive_lock
from .masks import as_masks, row_keys, unique_masks, unique_rows

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchMapper",
    "CachedValueFunction",
    "Evaluation",
    "MaskCache",
    "ValueFunction",
    "as_masks",
    "default_cache_dir",
    "evaluate",
    "exclusive_lock",
    "fingerprint",
    "is_out_of_memory",
    "model_key",
    "row_keys",
    "unique_masks",
    "unique_rows",
]
