"""The adapters loaded into base models, least recently used first out, under a memory budget.

Owns: loading a PEFT adapter directory into its base model (wrapping the base in a PeftModel on
the first one), the adapter's own tokenizer, its size in bytes, and evicting the least recently
used adapters when more than `max_adapters` are loaded or their tensors take more than
`budget_bytes` — never one that a running batch uses (`in_use`). When a base loses its last
adapter it is unwrapped back to the plain model (PEFT cannot delete a PeftModel's only adapter).
Does not own: loading base models, threads, generation (engine.py, batcher.py). Everything that
changes a model runs on the batcher's worker thread, between decode steps; the lock only guards
what other threads read (`paths`, `lookup`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneserve import models


@dataclass
class LoadedBase:
    """A base model as loaded: `model` becomes a PeftModel while adapters are loaded into it."""

    path: Path
    model: Any
    tokenizer: Any
    context_length: int
    eos_ids: tuple[int, ...] = ()


@dataclass
class LoadedAdapter:
    path: Path
    name: str  # the PEFT adapter name inside the base's PeftModel
    tokenizer: Any | None  # the adapter dir's own tokenizer (its chat template wins), if it has one
    nbytes: int = 0  # its tensors in memory


def adapter_name(path: Path) -> str:
    """A PEFT adapter name for a resolved directory: readable, unique, and without dots.

    PEFT stores adapters as module keys, which must not contain "."; the hash keeps two
    checkpoints called "final" of different jobs apart.
    """
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    readable = re.sub(r"\W", "_", f"{path.parent.name}_{path.name}")[-40:]
    return f"{readable}_{digest}"


def check_adapter_dir(adapter_dir) -> Path:
    path = Path(adapter_dir).expanduser().resolve()
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no PEFT adapter (adapter_config.json) in {path}")
    return path


class AdapterCache:
    def __init__(self, max_adapters: int = 8, budget_bytes: int = 512 * 2**20):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        self.max_adapters = max_adapters
        self.budget_bytes = budget_bytes
        self._lru: OrderedDict[tuple[Path, Path], tuple[LoadedBase, LoadedAdapter]] = OrderedDict()
        self._lock = threading.Lock()

    # ---- read from any thread ---------------------------------------------------------------

    def lookup(self, base: LoadedBase, path: Path) -> LoadedAdapter | None:
        """The adapter if loaded (and mark it used), else None."""
        with self._lock:
            entry = self._lru.get((base.path, path))
            if entry is None:
                return None
            self._lru.move_to_end((base.path, path))
            return entry[1]

    def paths(self) -> list[str]:
        with self._lock:
            return [str(path) for _, path in self._lru]

    def total_bytes(self) -> int:
        with self._lock:
            return sum(adapter.nbytes for _, adapter in self._lru.values())

    # ---- worker thread only -----------------------------------------------------------------

    def get(self, base: LoadedBase, path: Path, in_use: set[str] = frozenset(), tokenizer=None) -> LoadedAdapter:
        """Return the adapter loaded and marked most recently used; load it (and evict) if needed."""
        adapter = self.lookup(base, path)
        if adapter is not None:
            return adapter
        path = check_adapter_dir(path)
        adapter = LoadedAdapter(path=path, name=adapter_name(path), tokenizer=tokenizer or adapter_tokenizer(path))
        _load_into(base, adapter)
        adapter.nbytes = _adapter_bytes(base.model, adapter.name)
        with self._lock:
            self._lru[(base.path, path)] = (base, adapter)
        self.evict(in_use | {adapter.name})
        return adapter

    def evict(self, in_use: set[str]) -> None:
        """Drop least recently used adapters, not in use, while over the count or the byte budget."""
        while True:
            with self._lock:
                over = len(self._lru) > self.max_adapters or sum(a.nbytes for _, a in self._lru.values()) > self.budget_bytes
                victim = next((key for key, (_, a) in self._lru.items() if a.name not in in_use), None) if over else None
                if victim is None:
                    return
                base, adapter = self._lru.pop(victim)
            _delete(base, adapter)

    def remove(self, path: Path) -> bool:
        """Unload an adapter from every base (the caller checked that no batch uses it)."""
        with self._lock:
            keys = [key for key in self._lru if key[1] == path]
            entries = [self._lru.pop(key) for key in keys]
        for base, adapter in entries:
            _delete(base, adapter)
        return bool(entries)

    def names_for(self, path: Path) -> set[str]:
        with self._lock:
            return {a.name for (_, p), (_, a) in self._lru.items() if p == path}

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()


def adapter_tokenizer(path: Path):
    """The adapter dir's own tokenizer, if training saved one beside it (else None: the base's is used)."""
    return models.load_tokenizer(path) if models.has_tokenizer(path) else None


def _load_into(base: LoadedBase, adapter: LoadedAdapter) -> None:
    from peft import PeftModel

    if isinstance(base.model, PeftModel):
        base.model.load_adapter(str(adapter.path), adapter_name=adapter.name, is_trainable=False)
    else:
        base.model = PeftModel.from_pretrained(base.model, str(adapter.path), adapter_name=adapter.name, is_trainable=False)
    base.model.eval()


def _delete(base: LoadedBase, adapter: LoadedAdapter) -> None:
    from peft import PeftModel

    model = base.model
    if not isinstance(model, PeftModel) or adapter.name not in model.peft_config:
        return
    if len(model.peft_config) == 1:
        base.model = model.unload().eval()  # the last one: back to the plain model
    else:
        model.delete_adapter(adapter.name)


def _adapter_bytes(model, name: str) -> int:
    marker = f".{name}."
    total = 0
    for key, tensor in model.state_dict(keep_vars=True).items():
        if marker in key:
            total += tensor.numel() * tensor.element_size()
    return total
