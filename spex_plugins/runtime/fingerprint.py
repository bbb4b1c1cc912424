"""Content fingerprints for cache keys: arrays, tensors, model weights, estimators, callables.

torch is never imported here; tensors and modules are recognised when torch is already loaded.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import struct
import sys
import types

import numpy as np

__all__ = ["fingerprint", "model_key"]

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


