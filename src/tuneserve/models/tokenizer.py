"""The one way tuneserve loads a tokenizer: `load_tokenizer(model)`, kept in a small cache.

Owns: turning a model reference (built-in, tiny test model, hub id: resolved through the model
cache, so the built-in SmolLM2 comes from its packaged GGUF, converted once) or a local directory
holding a tokenizer (a base model, a fine-tuned model, an adapter that training saved its
tokenizer beside) into a transformers tokenizer with its chat template. Every caller (training
recipes, the data report and preview, the adapters served) goes through it, so they all tokenize
and render alike. Does not own: resolving references (resolve.py) or choosing a pad id (the
recipes: any id works, padding is masked by length).

Why a cache: loading a fast tokenizer takes about a second, and the API asks for the same one
for every report, preview and adapter. Entries are keyed by the reference, and a local directory
also by its tokenizer files' modification times, so a directory written again is read again.
Callers must not change the tokenizer they get: it is shared.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneserve.models.resolve import ModelNotFound, resolve_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_CACHE_SIZE = 8


def has_tokenizer(directory: Path) -> bool:
    """Whether `directory` holds a tokenizer of its own (training saves one beside each artifact)."""
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(model: str | Path) -> Any:
    """The tokenizer and chat template of `model`: a Path or path string (absolute, ./, ~) is read
    as the directory it names; any other string is a model reference, resolved through the model
    cache. Raises ModelNotFound for a directory without a tokenizer or an unknown reference."""
    if isinstance(model, Path) or str(model).startswith((".", "/", "~")):
        directory = Path(model).expanduser().resolve()
        if not has_tokenizer(directory):
            raise ModelNotFound(f"no tokenizer ({', '.join(TOKENIZER_FILES)}) in {directory}")
        return _load(str(directory), _stamp(directory))
    return _load(model, None)


def _stamp(directory: Path) -> tuple[int, ...]:
    return tuple((directory / name).stat().st_mtime_ns for name in TOKENIZER_FILES if (directory / name).is_file())


@lru_cache(maxsize=_CACHE_SIZE)
def _load(ref: str, stamp: tuple[int, ...] | None) -> Any:
    """A directory when `stamp` is given, else a reference to resolve (which may build or download it)."""
    from tuneserve.models.hf_imports import transformers_names

    (AutoTokenizer,) = transformers_names("AutoTokenizer")
    return AutoTokenizer.from_pretrained(Path(ref) if stamp is not None else resolve_model(ref))
