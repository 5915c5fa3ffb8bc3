"""transformers' names for code that runs in the server's threads, imported under one lock.

transformers' top-level module loads its names lazily (its _LazyModule), and that is not thread-safe: two
threads taking names from it at once (the engine loading a model while the scheduler's data report loads a
tokenizer, say) fail with `ImportError: cannot import name 'AutoTokenizer' from 'transformers'`, or with a
half-imported dependency (seen: 3 runs in 5 with 6 threads, and as a 500 of a chat completion).
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()


def transformers_names(*names: str) -> tuple[Any, ...]:
    """The named attributes of `transformers`, in order; the first import of each is made by one thread at a time."""
    with _LOCK:
        import transformers

        return tuple(getattr(transformers, name) for name in names)
