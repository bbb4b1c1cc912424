"""Shared evaluation runtime for model value functions.

- :class:`MaskedValueFunction`: base class of the model value functions. Masks (m, n) are
  de-duplicated and evaluated in batches; a batch that runs out of memory is halved and retried.
- :class:`CachedValueFunction`: wraps any value function with an append-only on-disk cache of
  (mask -> output). Re-running with the same cache re-queries nothing already evaluated; a crash
  or Ctrl-C loses at most the chunk in flight, and a half-written record is detected (length and
  CRC) and dropped.
- :func:`resolve_device`: torch device selection (CUDA when present).

Only :func:`resolve_device` imports torch, and only when called.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from ..core.evaluation import row_keys, unique_masks

__all__ = ["CachedValueFunction", "MaskedValueFunction", "as_masks", "default_cache_dir",
           "is_out_of_memory", "resolve_device", "run_batches"]


def as_masks(masks, n: int) -> np.ndarray:
    """Validate masks as a bool (m, n) array (a single (n,) mask becomes (1, n))."""
    masks = np.asarray(masks)
    if masks.ndim == 1:
        masks = masks[None, :]
    if masks.ndim != 2 or masks.shape[1] != n:
        raise ValueError(f"masks must have shape (m, {n}), got {masks.shape}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (or 0/1), True = feature kept")
        masks = masks.astype(bool)
    return masks


def resolve_device(device=None):
    """``torch.device``: ``device`` when given, else CUDA when available, else CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS or CPU allocator)."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError | MemoryError) and "out of memory" in str(error).lower()


def _release_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_batches(evaluate: Callable[[np.ndarray], np.ndarray], masks: np.ndarray,
                batch_size: int, progress: bool = False,
                desc: str = "model calls") -> tuple[np.ndarray, int]:
    """Evaluate ``evaluate`` on bool masks (m, n) in batches of ``batch_size``.

    A batch that raises an out-of-memory error is retried at half the size (down to 1).
    Returns (outputs (m,) or (m, k), the batch size that worked).
    """
    m = len(masks)
    size = max(1, int(batch_size))
    bar = None
    if progress and m > size:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=m, desc=desc, unit="mask", leave=False)
        except ImportError:
            bar = None
    outputs = []
    start = 0
    try:
        while start < m:
            batch = masks[start:start + size]
            try:
                out = np.asarray(evaluate(batch), dtype=np.float64)
            except (RuntimeError, MemoryError) as error:
                if len(batch) == 1 or not is_out_of_memory(error):
                    raise
                _release_memory()
                size = max(1, len(batch) // 2)
                continue
            outputs.append(out)
            start += len(batch)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if not outputs:
        return np.zeros((0,)), size
    return np.concatenate(outputs, axis=0), size


class MaskedValueFunction(ABC):
    """Base of the model value functions: bool masks (m, n) -> outputs (m,) or (m, k).

    Subclasses set ``n``, ``features`` (list[str]) and ``batch_size`` and implement
    :meth:`evaluate_batch`. Calls de-duplicate masks, evaluate them in batches (halving on
    out-of-memory) and show a tqdm bar when ``progress`` is set.
    """

    n: int
    features: list[str]
    batch_size: int
    progress: bool = False

    def __call__(self, masks) -> np.ndarray:
        masks = as_masks(masks, self.n)
        distinct, inverse = unique_masks(masks)
        out, self.batch_size = run_batches(self.evaluate_batch, distinct, self.batch_size,
                                           self.progress, desc=type(self).__name__)
        return out[inverse]

    @abstractmethod
    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        """Model outputs for one batch of distinct bool masks (b, n) -> (b,) or (b, k)."""

    def cache_key(self) -> str:
        """A string identifying this value function's configuration (for the disk cache)."""
        return json.dumps({"class": type(self).__name__, "n": self.n,
                           "features": self.features}, sort_keys=True)


# --- On-disk cache ----------------------------------------------------------------------------
_FILE_MAGIC = b"SPEX-PLUGINS-CACHE\x01"
_RECORD_MAGIC = b"SPXR"
_RECORD_HEAD = struct.Struct("<4sIIBI")  # magic, n, k, flat, m
_CRC = struct.Struct("<I")


def default_cache_dir() -> str:
    """The user cache folder for spex-plugins (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA", os.path.expanduser("~"))
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "spex-plugins")


class CachedValueFunction:
    """Wrap a value function with an append-only on-disk (mask -> output) cache.

    ``CachedValueFunction(value_function, path)(masks)`` returns what ``value_function`` would,
    sending it only the distinct masks not already in the cache, ``chunk_size`` at a time. Each
    evaluated chunk is appended to ``path`` and flushed to disk at once, so an interrupted run
    loses at most the chunk in flight, and re-running the same explanation resumes it.

    ``key`` identifies what is cached (default: ``value_function.cache_key()`` when present);
    opening a cache written under another key raises ``ValueError``. Records carry a CRC32: a
    torn or corrupt tail (a crash mid-write) is dropped when the file is opened.
    Attribute access falls through to the wrapped function (``.features``, ``.spans``, ...).
    """

    def __init__(self, value_function: Callable[[np.ndarray], np.ndarray],
                 path: str | os.PathLike, key: str | None = None, chunk_size: int = 256):
        self.value_function = value_function
        self.path = os.fspath(path)
        if key is None and callable(getattr(value_function, "cache_key", None)):
            key = value_function.cache_key()
        self.key = key
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.n_evaluated = 0  # masks sent to value_function by this object
        self._index: dict[bytes, int] = {}
        self._values: list[np.ndarray] = []
        self._n: int | None = None
        self._k: int | None = None
        self._flat = True
        self._load()

    def __getattr__(self, name: str):
        if name == "value_function":  # not yet set (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.value_function, name)

    def __len__(self) -> int:
        """Number of distinct masks in the cache."""
        return len(self._index)

    # --- file format: header (magic, key length, key) then records --------------------------
    def _header(self) -> bytes:
        key = (self.key or "").encode()
        return _FILE_MAGIC + struct.pack("<I", len(key)) + key

    def _load(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        header = self._header()
        if not os.path.exists(self.path) or os.path.getsize(self.path) < len(_FILE_MAGIC) + 4:
            with open(self.path, "wb") as fh:
                fh.write(header)
                fh.flush()
                os.fsync(fh.fileno())
            return
        with open(self.path, "rb") as fh:
            data = fh.read()
        if not data.startswith(_FILE_MAGIC):
            raise ValueError(f"{self.path} is not a spex-plugins cache file")
        (length,) = struct.unpack_from("<I", data, len(_FILE_MAGIC))
        stored = data[len(_FILE_MAGIC) + 4:len(_FILE_MAGIC) + 4 + length].decode(errors="replace")
        if self.key is not None and stored != self.key:
            raise ValueError(
                f"the cache {self.path} was written for another value function or input; "
                "use another cache path or delete the file"
            )
        offset = len(_FILE_MAGIC) + 4 + length
        good = offset
        while offset + _RECORD_HEAD.size <= len(data):
            magic, n, k, flat, m = _RECORD_HEAD.unpack_from(data, offset)
            row = (n + 7) // 8
            end = offset + _RECORD_HEAD.size + m * row + m * k * 8 + _CRC.size
            if magic != _RECORD_MAGIC or end > len(data):
                break
            body = data[offset:end - _CRC.size]
            if zlib.crc32(body) != _CRC.unpack_from(data, end - _CRC.size)[0]:
                break
            start = offset + _RECORD_HEAD.size
            packed = np.frombuffer(data, np.uint8, m * row, start).reshape(m, row)
            values = np.frombuffer(data, np.float64, m * k, start + m * row).reshape(m, k)
            masks = np.unpackbits(packed, axis=1, count=n).astype(bool)
            self._remember(masks, values.copy(), bool(flat))
            offset = good = end
        if good < len(data):  # torn or corrupt tail from an interrupted write: drop it
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def _remember(self, masks: np.ndarray, values: np.ndarray, flat: bool) -> None:
        n, k = masks.shape[1], values.shape[1]
        if self._n is None:
            self._n, self._k, self._flat = n, k, flat
        elif (n, k) != (self._n, self._k):
            raise ValueError(
                f"cache {self.path} holds masks of {self._n} features with {self._k} outputs, "
                f"got {n} features with {k} outputs"
            )
        base = len(self._values)
        for offset, key in enumerate(row_keys(masks).tolist()):
            self._index[key] = base + offset
        self._values.extend(values)

    def _append(self, masks: np.ndarray, values: np.ndarray, flat: bool) -> None:
        m, n = masks.shape
        k = values.shape[1]
        body = (_RECORD_HEAD.pack(_RECORD_MAGIC, n, k, int(flat), m)
                + np.packbits(masks, axis=1).tobytes() + values.astype("<f8").tobytes())
        with open(self.path, "ab") as fh:
            fh.write(body + _CRC.pack(zlib.crc32(body)))
            fh.flush()
            os.fsync(fh.fileno())

    # --- evaluation -----------------------------------------------------------------------------
    def __call__(self, masks) -> np.ndarray:
        masks = np.asarray(masks)
        if masks.ndim != 2:
            raise ValueError(f"masks must be a 2-D bool array (m, n), got shape {masks.shape}")
        masks = as_masks(masks, masks.shape[1])
        if self._n is not None and masks.shape[1] != self._n:
            raise ValueError(f"cache {self.path} holds masks of {self._n} features, "
                             f"got masks of {masks.shape[1]}")
        distinct, inverse = unique_masks(masks)
        keys = row_keys(distinct).tolist()
        missing = np.array([key not in self._index for key in keys], dtype=bool)
        todo = distinct[missing]
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start:start + self.chunk_size]
            raw = self.value_function(chunk)
            values = np.asarray(raw, dtype=np.float64)
            flat = values.ndim == 1
            if values.ndim not in (1, 2) or values.shape[0] != len(chunk):
                raise ValueError(f"value_function must return ({len(chunk)},) or "
                                 f"({len(chunk)}, k) for {len(chunk)} masks, got {values.shape}")
            values = values.reshape(len(chunk), -1)
            self._append(chunk, values, flat)
            self._remember(chunk, values, flat)
            self.n_evaluated += len(chunk)
        k = self._k or 1
        rows = [self._index[key] for key in keys]
        out = np.array([self._values[r] for r in rows]).reshape(len(distinct), k)[inverse]
        return out[:, 0] if self._flat and out.shape[1] == 1 else out
