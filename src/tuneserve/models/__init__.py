"""Model references: what a `model` string means and where its weights live on disk.

Owns: resolving a reference (local dir, built-in offline model, tiny test model, hub id) to a
local directory with config, safetensors weights and tokenizer; the model cache; loading a
model's tokenizer (`load_tokenizer`, the one every caller uses).
Does not own: loading models for training or inference (training/, inference/ do that).
"""

from tuneserve.models.resolve import (
    BUILTIN_SMOLLM2,
    TINY_RANDOM,
    ModelNotFound,
    available_base_models,
    cache_dir,
    check_model,
    resolve_model,
)
from tuneserve.models.tokenizer import has_tokenizer, load_tokenizer

__all__ = [
    "BUILTIN_SMOLLM2",
    "TINY_RANDOM",
    "ModelNotFound",
    "available_base_models",
    "cache_dir",
    "check_model",
    "has_tokenizer",
    "load_tokenizer",
    "resolve_model",
]
