"""The resumable on-disk cache of model outputs: an append-only file of (mask -> output).

- :class:`MaskCache`: the file and its in-memory index. Re-opening a cache re-queries nothing
  already stored; a half-written record (a crash mid-write) is detected (length and CRC) and
  dropped. Several processes may share one file: reads and appends are serialised by an
  advisory lock (:func:`~spex_plugins.runtime.locking.exclusive_lock`) and each writer picks up
  the others' records, so they share work and never store a mask twice.
- :class:`CachedValueFunction`: a value function with a :class:`MaskCache`; evaluating it goes
  through :func:`~spex_plugins.runtime.evaluate`, which stores every batch as it arrives.

File format: a header (magic ``SPEX-PLUGINS-CACHE\x01``, key length, key), then records
``SPXR``, n, k, flat, m (``<4sIIBI``), m packed masks, m * k little-endian float64 outputs and a
CRC32 of all of it.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Callable
from contextlib import contextmanager, suppress

import numpy as np

from .evaluation import evaluate
from .locking import O_BINARY, READ_ONLY_ERRORS, exclusive_lock
from .masks import as_masks, row_keys

__all__ = ["CachedValueFunction", "MaskCache", "default_cache_dir"]

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


class MaskCache:
    """An append-only on-disk store of (mask -> model output) with an in-memory index.

    ``key`` identifies what is cached; opening a file written under another key raises
    ``ValueError``. Every read-and-truncate and every append happens under an exclusive
    advisory lock on a sidecar file ``path + ".lock"`` (a sidecar because Windows locks are
    mandatory, and because the lock must exist before the header is written); the sidecar is a
    zero-byte file left in place. Under the lock a writer first reads whatever others appended
    since its last read, then appends only the masks still missing, so nothing is lost and no
    mask is stored twice. A torn tail found under the lock belongs to a writer that died
    mid-write and is dropped. Locks are advisory: only spex-plugins' own caches honour them.

    ``n_evaluated`` counts the masks this object stored, ``n_shared`` those other writers
    stored after this object first read the file.
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None):
        self.path = os.fspath(path)
        self.lock_path = self.path + ".lock"
        self.key = key
        self.n_evaluated = 0  # masks stored by this object
        self.n_shared = 0  # masks other writers stored after this object first read the file
        self._index: dict[bytes, int] = {}
        self._table = np.zeros((0, 1))  # stored outputs, rows [0, self._rows) in use
        self._rows = 0
        self._n: int | None = None
        self._k: int | None = None
        self._flat = True
        self._offset = 0  # file offset up to which records were read (0: header not read)
        self._file_id: tuple[int, int] | None = None
        self._load()

    def __len__(self) -> int:
        """Number of distinct masks in the cache (as last read)."""
        return len(self._index)

    # --- file format: header (magic, key length, key) then records --------------------------
    def _header(self) -> bytes:
        key = (self.key or "").encode()
        return _FILE_MAGIC + struct.pack("<I", len(key)) + key

    @contextmanager
    def _open_locked(self):
        """(file object, writable) of the cache file, under the lock."""
        with exclusive_lock(self.lock_path):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | O_BINARY, 0o666)
                writable = True
            except OSError as error:
                if error.errno not in READ_ONLY_ERRORS:
                    raise
                fd = os.open(self.path, os.O_RDONLY | O_BINARY)
                writable = False
            with os.fdopen(fd, "r+b" if writable else "rb") as fh:
                yield fh, writable

    def _load(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with self._open_locked() as (fh, writable):
            self._sync(fh, writable)

    def _read_header(self, fh, writable: bool) -> int:
        """Check the header (writing it into an empty file); the offset of the first record."""
        fh.seek(0)
        head = fh.read(len(_FILE_MAGIC) + 4)
        magic = head[:len(_FILE_MAGIC)]
        if magic != _FILE_MAGIC[:len(magic)]:
            raise ValueError(f"{self.path} is not a spex-plugins cache file")
        stored = None
        if len(head) == len(_FILE_MAGIC) + 4:
            (length,) = struct.unpack_from("<I", head, len(_FILE_MAGIC))
            stored = fh.read(length)
            if len(stored) < length:
                stored = None
        if stored is None:  # empty file, or a header torn by a crash: nothing follows it
            if not writable:
                raise ValueError(f"{self.path} has no complete header and is read-only")
            header = self._header()
            fh.seek(0)
            fh.truncate()
            fh.write(header)
            fh.flush()
            os.fsync(fh.fileno())
            return len(header)
        if self.key is not None and stored.decode(errors="replace") != self.key:
            raise ValueError(
                f"the cache {self.path} was written for another value function or input; "
                "use another cache path or delete the file"
            )
        return len(_FILE_MAGIC) + 4 + len(stored)

    def _sync(self, fh, writable: bool) -> int:
        """Read the records appended since the last read into the index (the lock is held).

        Drops a torn or corrupt tail (its writer died: live writers hold the lock). Returns
        the number of masks read. A file that shrank or was replaced is re-read from its start.
        """
        info = os.fstat(fh.fileno())
        file_id = (info.st_dev, info.st_ino)
        if self._offset == 0 or file_id != self._file_id or info.st_size < self._offset:
            self._offset = self._read_header(fh, writable)
            self._file_id = file_id
            info = os.fstat(fh.fileno())
        if info.st_size == self._offset:
            return 0
        fh.seek(self._offset)
        data = fh.read()
        offset = good = read = 0
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
            values = np.frombuffer(data, "<f8", m * k, start + m * row).reshape(m, k)
            masks = np.unpackbits(packed, axis=1, count=n).astype(bool)
            self._remember(masks, values.astype(np.float64), bool(flat))
            read += m
            offset = good = end
        if good < len(data) and writable:  # torn or corrupt tail of a dead writer: drop it
            fh.truncate(self._offset + good)
        self._offset += good
        return read

    def _remember(self, masks: np.ndarray, values: np.ndarray, flat: bool) -> None:
        n, k = masks.shape[1], values.shape[1]
        if self._n is None:
            self._n, self._k, self._flat = n, k, flat
            self._table = np.zeros((max(len(masks), 256), k))
        elif (n, k) != (self._n, self._k):
            raise ValueError(
                f"cache {self.path} holds masks of {self._n} features with {self._k} outputs, "
                f"got {n} features with {k} outputs"
            )
        base = self._rows
        if base + len(values) > len(self._table):
            grown = np.zeros((max(2 * len(self._table), base + len(values)), k))
            grown[:base] = self._table[:base]
            self._table = grown
        self._table[base:base + len(values)] = values
        self._rows += len(values)
        for offset, key in enumerate(row_keys(masks).tolist()):
            self._index[key] = base + offset

    def _check_width(self, masks: np.ndarray) -> None:
        if self._n is not None and masks.shape[1] != self._n:
            raise ValueError(f"cache {self.path} holds masks of {self._n} features, "
                             f"got masks of {masks.shape[1]}")

    def _absent(self, masks: np.ndarray) -> np.ndarray:
        index = self._index
        return np.fromiter((key not in index for key in row_keys(masks).tolist()), bool,
                           len(masks))

    def missing(self, masks: np.ndarray, refresh: bool = False) -> np.ndarray:
        """bool (m,): which rows of the bool masks (m, n) are not stored.

        ``refresh``: first pick up what other writers appended since the last read (done only
        when some rows are missing from what this object has read).
        """
        masks = as_masks(masks)
        self._check_width(masks)
        absent = self._absent(masks)
        if refresh and absent.any():
            with self._open_locked() as (fh, writable):
                read = self._sync(fh, writable)
            if read:
                self.n_shared += read
                absent = self._absent(masks)
        return absent

    def lookup(self, masks: np.ndarray) -> tuple[np.ndarray, bool]:
        """(float64 (m, k) stored outputs of the bool masks (m, n), whether the value function
        answered with 1-D arrays). Every row must be stored (KeyError otherwise)."""
        masks = as_masks(masks)
        self._check_width(masks)
        keys = row_keys(masks).tolist()
        rows = np.fromiter(map(self._index.__getitem__, keys), np.int64, len(keys))
        return self._table[rows].reshape(len(masks), self._k or 1), self._flat

    def store(self, masks: np.ndarray, values: np.ndarray, flat: bool) -> None:
        """Append the rows of the bool ``masks`` (m, n) with their float ``values`` (m, k) not
        yet stored (by anyone), flushed and fsynced before returning, and index them."""
        masks = as_masks(masks)
        values = np.asarray(values, np.float64).reshape(len(masks), -1)
        with self._open_locked() as (fh, writable):
            shared = self._sync(fh, writable)
            self.n_shared += shared
            if shared:  # another writer stored some of these masks meanwhile: skip those
                keep = self._absent(masks)
                masks, values = masks[keep], values[keep]
            if not len(masks):
                return
            m, n = masks.shape
            k = values.shape[1]
            body = (_RECORD_HEAD.pack(_RECORD_MAGIC, n, k, int(flat), m)
                    + np.packbits(masks, axis=1).tobytes() + values.astype("<f8").tobytes())
            if self._n is not None and (n, k) != (self._n, self._k):
                self._remember(masks, values, flat)  # raises the mismatch error
            fh.seek(self._offset)
            try:
                fh.write(body + _CRC.pack(zlib.crc32(body)))
                fh.flush()
                os.fsync(fh.fileno())
            except BaseException:  # disk full, Ctrl-C: leave no partial record behind
                with suppress(OSError):
                    fh.truncate(self._offset)
                raise
            self._offset = fh.tell()
            self._remember(masks, values, flat)
            self.n_evaluated += len(masks)



class CachedValueFunction:
    """A value function whose outputs are kept in a resumable on-disk :class:`MaskCache`.

    ``CachedValueFunction(value_function, path)(masks)`` returns what ``value_function`` would,
    sending it only the distinct masks not already stored, ``chunk_size`` at a time (default:
    the value function's ``batch_size``, else 256). Each evaluated batch is appended to ``path``
    and flushed before the next one runs (see :func:`~spex_plugins.runtime.evaluate`), so an
    interrupted run loses at most the batch in flight, and re-running the same explanation
    resumes it. Several processes may share one file (see :class:`MaskCache`).

    ``key`` identifies what is cached (default: ``value_function.cache_key()`` when present);
    opening a cache written under another key raises ``ValueError``. Attribute access falls
    through to the wrapped function (``.features``, ``.spans``, ...).
    """

    def __init__(self, value_function: Callable[[np.ndarray], np.ndarray],
                 path: str | os.PathLike, key: str | None = None, chunk_size: int | None = None):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if key is None and callable(getattr(value_function, "cache_key", None)):
            key = value_function.cache_key()
        self.value_function = value_function
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        if self.chunk_size is None and getattr(value_function, "batch_size", None) is None:
            self.chunk_size = 256
        self.mask_cache = MaskCache(path, key)

    def __getattr__(self, name: str):
        if name in ("value_function", "mask_cache"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.value_function, name)

    @property
    def path(self) -> str:
        return self.mask_cache.path

    @property
    def key(self) -> str | None:
        return self.mask_cache.key

    @property
    def n_evaluated(self) -> int:
        """Masks this object sent to the value function (and stored)."""
        return self.mask_cache.n_evaluated

    @property
    def n_shared(self) -> int:
        """Masks other writers stored after this object first read the file."""
        return self.mask_cache.n_shared

    def __len__(self) -> int:
        """Number of distinct masks in the cache (as last read)."""
        return len(self.mask_cache)

    def __call__(self, masks) -> np.ndarray:
        """Outputs (m,) or (m, k) for bool masks (m, n); only missing masks reach the model."""
        return evaluate(self, masks).output()
