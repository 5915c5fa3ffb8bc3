"""The adapters loaded into base models, least recently used first out.

Owns: loading a PEFT adapter directory into its base model (wrapping the base in a PeftModel on
the first one), the adapter's own tokenizer, and evicting the least recently used adapter when
more than `max_adapters` are loaded across all bases.
Does not own: loading base models, locking, generation (engine.py). Callers hold the engine lock.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass
class LoadedBase:
    """A base model as loaded: `model` becomes a PeftModel once an adapter is loaded into it."""

    path: Path
    model: Any
    tokenizer: Any
    context_length: int


@dataclass
class LoadedAdapter:
    path: Path
    name: str  # the PEFT adapter name inside the base's PeftModel
    tokenizer: Any | None  # the adapter dir's own tokenizer (its chat template wins), if it has one


def adapter_name(path: Path) -> str:
    """A PEFT adapter name for a resolved directory: readable, unique, and without dots.

    PEFT stores adapters as module keys, which must not contain "."; the hash keeps two
    checkpoints called "final" of different jobs apart.
    """
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    readable = re.sub(r"\W", "_", f"{path.parent.name}_{path.name}")[-40:]
    return f"{readable}_{digest}"


class AdapterCache:
    def __init__(self, max_adapters: int):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        self.max_adapters = max_adapters
        self._lru: OrderedDict[tuple[Path, Path], tuple[LoadedBase, LoadedAdapter]] = OrderedDict()

    def get(self, base: LoadedBase, adapter_dir: Path) -> LoadedAdapter:
        """Return the adapter loaded and marked most recently used; load it (and evict) if needed."""
        path = Path(adapter_dir).expanduser().resolve()
        key = (base.path, path)
        if key in self._lru:
            self._lru.move_to_end(key)
            return self._lru[key][1]
        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no PEFT adapter (adapter_config.json) in {path}")
        adapter = LoadedAdapter(path=path, name=adapter_name(path), tokenizer=_maybe_tokenizer(path))
        _load_into(base, adapter)
        self._lru[key] = (base, adapter)
        base.model.set_adapter(adapter.name)  # so an evicted adapter is never the active one
        # Evict after loading, never before: PEFT cannot delete the only adapter of a PeftModel
        # cleanly, and with max_adapters=1 the old one is always the only one.
        while len(self._lru) > self.max_adapters:
            _, (old_base, old) = self._lru.popitem(last=False)
            old_base.model.delete_adapter(old.name)
        return adapter

    def paths(self) -> list[str]:
        return [str(path) for _, path in self._lru]

    def clear(self) -> None:
        self._lru.clear()


def _load_into(base: LoadedBase, adapter: LoadedAdapter) -> None:
    from peft import PeftModel

    if isinstance(base.model, PeftModel):
        base.model.load_adapter(str(adapter.path), adapter_name=adapter.name, is_trainable=False)
    else:
        base.model = PeftModel.from_pretrained(
            base.model, str(adapter.path), adapter_name=adapter.name, is_trainable=False
        )
    base.model.eval()


def _maybe_tokenizer(path: Path):
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
