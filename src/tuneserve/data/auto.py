"""The "auto" hyperparameter rules that depend only on the data: epochs and batch size from its size.

Owns: `auto_n_epochs` and `auto_batch_size`. training/spec.py resolves "auto" with them; the
token report (tokens.py) estimates training tokens and time with the same epochs. Here, in data/,
because both need them and training imports data, never the other way.
"""

from __future__ import annotations

import math


def auto_n_epochs(n_examples: int) -> int:
    """OpenAI's heuristic (3 epochs, more for small sets, fewer for huge ones), but small sets
    get enough passes to see at least ~400 examples: a 91-example identity set gets 5."""
    if n_examples <= 0:
        return 1
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return min(25, max(3, math.ceil(400 / n_examples)))


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the data (as OpenAI does), at least 4 (CPU steps are costly), at most 32."""
    return max(4, min(32, round(n_examples * 0.002)))
