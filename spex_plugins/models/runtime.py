"""Shared evaluation runtime for model value functions.

- :class:`MaskedValueFunction`: base class of the model value functions. Masks (m, n) are
  de-duplicated and evaluated in batches; a batch that runs out of memory is halved and retried.
- :class:`CachedValueFunction`: wraps any value function with an append-only on-disk cache of
  (mask -> output). Re-running with the same cache re-queries nothing already evaluated; a crash
  or Ctrl-C loses at most the chunk in flight, and a half-written record is detected (length and
  CRC) and dropped. Several processes may share one cache file: reads and appends are
  serialised by an advisory lock (:func:`exclusive_lock`) and each writer picks up the others'
  records, so they share work and never store a mask twice.
- :func:`fingerprint`: a short sha256 digest of arrays, tensors, model weights, estimators and
  callables, used by the value functions' ``cache_key()``.
- :func:`resolve_device`: torch device selection (CUDA when present).

Only :func:`resolve_device` imports torch, and only when called (:func:`fingerprint` handles
tensors and modules when torch is already imported).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import struct
import sys
import types
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import contextmanager, suppress

import numpy as np

from ..core.evaluation import row_keys, unique_masks

try:  # POSIX advisory locks
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

__all__ = ["CachedValueFunction", "MaskedValueFunction", "as_masks", "default_cache_dir",
           "exclusive_lock", "fingerprint", "is_out_of_memory", "model_key", "resolve_device",
           "run_batches"]


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
        """A JSON string identifying this value function's configuration (for the disk cache).

        Subclasses identify their model and inputs by content with :func:`fingerprint`.
        """
        return json.dumps({"class": type(self).__name__, "n": self.n,
                           "features": self.features}, sort_keys=True)


# --- Fingerprints -----------------------------------------------------------------------------
_ADDRESS = re.compile(r"\s+at\s+0x[0-9a-fA-F]+")


def model_key(model) -> dict:
    """Cache-key entries naming ``model`` (a transformers ``name_or_path``, else a function's
    ``__name__``, else the class name) and its :func:`fingerprint`."""
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "__name__", None) \
        or type(model).__name__
    return {"model": name, "model_fingerprint": fingerprint(model)}


def fingerprint(obj, length: int = 16) -> str:
    """A short sha256 hex digest identifying ``obj``'s content (for cache keys).

    Equal content gives equal digests in every process and session; any change of a value
    gives another digest. What is hashed:

    - numpy arrays and torch tensors: dtype, shape and the raw bytes (a tensor is copied to
      the CPU when needed; a tensor on the ``meta`` device has no data: dtype and shape only);
    - torch ``nn.Module``: its class, ``repr`` (the architecture, e.g. layer sizes and
      activations), a ``transformers`` config when it has one, and every parameter and buffer
      (name, dtype, shape, bytes). Hashing is limited by sha256's speed, roughly 1 GB/s
      (a 22M-parameter BERT takes about a tenth of a second);
    - bound methods (``model.predict_proba``): the object they are bound to plus the method
      name; plain Python functions: their module, name, bytecode, constants, defaults and
      closure (so ``lambda X: model.predict(X)`` follows ``model``, but a global it reads
      does not count);
    - None, bool, int, float, str, bytes by value; lists, tuples and dicts element by element;
      sets and frozensets order-free;
    - anything else (scikit-learn-like estimators, ...) by its pickle bytes (protocol 4).
      An object that cannot be pickled (an instance of a local class, one holding a lock or an
      open file) falls back to its type name plus its ``__dict__``, hashed item by item as
      above; without a ``__dict__``, to its type name and ``repr`` with memory addresses
      removed (``<Foo object at 0x...>`` becomes ``<Foo object>``): weaker, since two such
      objects with equal reprs share a digest. Pickles of sets of strings depend on the
      process's hash seed, so an estimator holding such a set may get a new digest per process
      (a missed cache, never a wrong one).

    The device a model or tensor lives on does not count, so CPU and GPU runs share a cache.
    """
    digest = hashlib.sha256()
    _feed(digest, obj, set())
    return digest.hexdigest()[:length]


def _tag(digest, kind: str, text: str = "") -> None:
    raw = f"{kind}:{text}".encode(errors="backslashreplace")
    digest.update(struct.pack("<Q", len(raw)) + raw)


def _feed_tensor(digest, tensor) -> None:
    tensor = tensor.detach()
    _tag(digest, "tensor", f"{tensor.dtype}{tuple(tensor.shape)}")
    if tensor.device.type == "meta":
        return
    if tensor.layout != sys.modules["torch"].strided:
        tensor = tensor.to_dense()
    flat = tensor.resolve_conj().resolve_neg().reshape(-1).contiguous().cpu()
    try:
        raw = flat.view(sys.modules["torch"].uint8).numpy()
    except (RuntimeError, TypeError):  # quantized and other exotic tensors
        raw = np.frombuffer(pickle.dumps(flat, protocol=4), np.uint8)
    digest.update(struct.pack("<Q", raw.nbytes))
    digest.update(raw)


def _feed(digest, obj, seen: set) -> None:
    torch = sys.modules.get("torch")
    if obj is None or isinstance(obj, bool | int | float | complex | str):
        _tag(digest, type(obj).__name__, repr(obj))
        return
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        _tag(digest, "bytes", str(len(raw)))
        digest.update(raw)
        return
    if isinstance(obj, np.generic):
        obj = np.asarray(obj)
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        array = np.ascontiguousarray(obj)
        _tag(digest, "ndarray", f"{array.dtype.str}{obj.shape}")
        digest.update(struct.pack("<Q", array.nbytes))
        digest.update(array.reshape(-1).view(np.uint8))
        return
    if torch is not None and torch.is_tensor(obj):
        _feed_tensor(digest, obj)
        return
    if id(obj) in seen:  # a cycle (a recursive closure, a self-referencing list)
        _tag(digest, "cycle", type(obj).__qualname__)
        return
    seen = seen | {id(obj)}
    if torch is not None and isinstance(obj, torch.nn.Module):
        kind = type(obj)
        _tag(digest, "module", f"{kind.__module__}.{kind.__qualname__}")
        _tag(digest, "repr", _ADDRESS.sub("", repr(obj)))
        config = getattr(obj, "config", None)
        if callable(getattr(config, "to_dict", None)):
            _tag(digest, "config", json.dumps(config.to_dict(), sort_keys=True, default=str))
        for prefix, named in (("param", obj.named_parameters()), ("buffer", obj.named_buffers())):
            for name, tensor in named:
                _tag(digest, prefix, name)
                _feed_tensor(digest, tensor)
        return
    if isinstance(obj, types.MethodType):
        _tag(digest, "method", obj.__func__.__qualname__)
        _feed(digest, obj.__self__, seen)
        return
    if isinstance(obj, types.FunctionType):
        _tag(digest, "function", f"{obj.__module__}.{obj.__qualname__}")
        _feed_code(digest, obj.__code__)
        _feed(digest, obj.__defaults__, seen)
        _feed(digest, obj.__kwdefaults__, seen)
        cells = []
        for cell in obj.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                cells.append(None)
        _feed(digest, tuple(cells), seen)
        return
    if isinstance(obj, list | tuple):
        _tag(digest, type(obj).__name__, str(len(obj)))
        for item in obj:
            _feed(digest, item, seen)
        return
    if isinstance(obj, dict):
        _tag(digest, "dict", str(len(obj)))
        for key, value in obj.items():
            _feed(digest, key, seen)
            _feed(digest, value, seen)
        return
    if isinstance(obj, set | frozenset):
        _tag(digest, "set", ",".join(sorted(fingerprint(item) for item in obj)))
        return
    try:
        raw = pickle.dumps(obj, protocol=4)
    except Exception:  # noqa: BLE001 - unpicklable (locks, open files, local classes, ...)
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict) and state:
            _tag(digest, "object", name)
            _feed(digest, state, seen)
        else:
            _tag(digest, "repr", f"{name}:" + _ADDRESS.sub("", repr(obj)))
        return
    _tag(digest, "pickle", str(len(raw)))
    digest.update(raw)


def _feed_code(digest, code: types.CodeType) -> None:
    _tag(digest, "code", f"{code.co_argcount},{code.co_names},{code.co_varnames}")
    digest.update(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            _feed(digest, const, set())


# --- On-disk cache ----------------------------------------------------------------------------
_FILE_MAGIC = b"SPEX-PLUGINS-CACHE\x01"
_RECORD_MAGIC = b"SPXR"
_RECORD_HEAD = struct.Struct("<4sIIBI")  # magic, n, k, flat, m
_CRC = struct.Struct("<I")
_O_BINARY = getattr(os, "O_BINARY", 0)
_READ_ONLY_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS)
_BUSY_ERRORS = {getattr(errno, name) for name in ("EDEADLOCK", "EDEADLK", "EACCES")
                if hasattr(errno, name)}
_NO_LOCK_ERRORS = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS")
                   if hasattr(errno, name)}


def default_cache_dir() -> str:
    """The user cache folder for spex-plugins (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA", os.path.expanduser("~"))
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "spex-plugins")


@contextmanager
def exclusive_lock(path: str):
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) while inside.

    POSIX: ``fcntl.flock``, which blocks until other holders (in any process, or through
    another open of the file in this one) let go; the kernel drops it when its holder dies, so
    a crash never leaves a stale lock behind. Windows: ``msvcrt.locking`` on the file's first
    byte, retried until it is had. Without either module, or where the file system refuses
    locks (``ENOLCK`` on some network mounts) or the lock file cannot be created (a read-only
    folder), it runs unlocked (with a warning for refused locks).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o666)
    except OSError as error:
        if error.errno not in _READ_ONLY_ERRORS:
            raise
        try:
            fd = os.open(path, os.O_RDONLY | _O_BINARY)
        except OSError:
            fd = None  # a read-only folder without a lock file: nobody can write here anyway
    if fd is None:
        yield
        return
    locked = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = True
            except OSError as error:
                if error.errno not in _NO_LOCK_ERRORS:
                    raise
                warnings.warn(f"cannot lock {path} ({error.strerror}); concurrent writers to "
                              "this cache are not serialised", RuntimeWarning, stacklevel=3)
        elif msvcrt is not None:
            while not locked:
                try:  # LK_LOCK gives up after 10 one-second tries: keep trying
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    locked = True
                except OSError as error:  # EDEADLOCK: still held by another process
                    if error.errno not in _BUSY_ERRORS:
                        raise
        yield
    finally:
        if locked and fcntl is None and msvcrt is not None:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)  # closing the descriptor also releases a flock


class CachedValueFunction:
    """Wrap a value function with an append-only on-disk (mask -> output) cache.

    ``CachedValueFunction(value_function, path)(masks)`` returns what ``value_function`` would,
    sending it only the distinct masks not already in the cache, ``chunk_size`` at a time. Each
    evaluated chunk is appended to ``path`` and flushed to disk at once, so an interrupted run
    loses at most the chunk in flight, and re-running the same explanation resumes it.

    ``key`` identifies what is cached (default: ``value_function.cache_key()`` when present);
    opening a cache written under another key raises ``ValueError``. Records carry a CRC32: a
    torn or corrupt tail (a crash mid-write) is dropped when the file is opened, or before the
    next record is appended.

    Several processes (or several objects in one process) may use one cache file at once. Every
    read-and-truncate of the file and every append happens under an exclusive advisory lock
    (:func:`exclusive_lock`) on a sidecar file ``path + ".lock"``; a sidecar rather than the
    cache file itself because Windows locks are mandatory (a locked cache file could not even be
    read by others) and because the lock must exist before the cache file's header is written.
    The sidecar is a zero-byte file left in place (deleting a lock file others may hold is
    unsafe); it may be removed when no process uses the cache. Under the lock a writer first
    reads whatever others appended since its last read (from its last known file offset to the
    end) into its index, then appends only the masks of its chunk still missing, so nothing is
    lost and no mask is stored twice; before evaluating, a call also picks up others' records,
    so processes explaining the same input share work. A torn tail found under the lock belongs
    to a writer that died mid-write (live writers hold the lock until their record is complete)
    and is dropped. The file format (header with the key, then CRC'd records) is unchanged.
    Locks are advisory: only spex-plugins' own cache objects honour them.

    Attribute access falls through to the wrapped function (``.features``, ``.spans``, ...).
    """

    def __init__(self, value_function: Callable[[np.ndarray], np.ndarray],
                 path: str | os.PathLike, key: str | None = None, chunk_size: int = 256):
        self.value_function = value_function
        self.path = os.fspath(path)
        self.lock_path = self.path + ".lock"
        if key is None and callable(getattr(value_function, "cache_key", None)):
            key = value_function.cache_key()
        self.key = key
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.n_evaluated = 0  # masks sent to value_function by this object
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

    def __getattr__(self, name: str):
        if name == "value_function":  # not yet set (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.value_function, name)

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
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o666)
                writable = True
            except OSError as error:
                if error.errno not in _READ_ONLY_ERRORS:
                    raise
                fd = os.open(self.path, os.O_RDONLY | _O_BINARY)
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

    def _missing(self, masks: np.ndarray) -> np.ndarray:
        """bool (m,): which rows of ``masks`` are not in the index."""
        index = self._index
        return np.fromiter((key not in index for key in row_keys(masks).tolist()), bool,
                           len(masks))

    def _refresh(self) -> None:
        """Pick up the records other writers appended since the last read."""
        with self._open_locked() as (fh, writable):
            self.n_shared += self._sync(fh, writable)

    def _store(self, masks: np.ndarray, values: np.ndarray, flat: bool) -> None:
        """Append the rows of ``masks`` not yet stored (by anyone) and add them to the index."""
        with self._open_locked() as (fh, writable):
            shared = self._sync(fh, writable)
            self.n_shared += shared
            if shared:  # another writer stored some of these masks meanwhile: skip those
                keep = self._missing(masks)
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
        missing = np.fromiter((key not in self._index for key in keys), bool, len(keys))
        if missing.any():  # others may have evaluated some of them since the last read
            shared = self.n_shared
            self._refresh()
            if self.n_shared != shared:
                missing = self._missing(distinct)
        todo = distinct[missing]
        planned = self.n_shared
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start:start + self.chunk_size]
            if self.n_shared != planned:  # drop what other writers stored since the plan
                chunk = chunk[self._missing(chunk)]
                if not len(chunk):
                    continue
            raw = self.value_function(chunk)
            values = np.asarray(raw, dtype=np.float64)
            flat = values.ndim == 1
            if values.ndim not in (1, 2) or values.shape[0] != len(chunk):
                raise ValueError(f"value_function must return ({len(chunk)},) or "
                                 f"({len(chunk)}, k) for {len(chunk)} masks, got {values.shape}")
            self.n_evaluated += len(chunk)
            self._store(chunk, values.reshape(len(chunk), -1), flat)
        k = self._k or 1
        rows = np.fromiter(map(self._index.__getitem__, keys), np.int64, len(keys))
        out = self._table[rows].reshape(len(distinct), k)[inverse]
        return out[:, 0] if self._flat and out.shape[1] == 1 else out
