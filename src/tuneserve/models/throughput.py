"""Measured training throughput per (model, device), so reports can estimate a run's time.

Owns: the small JSON store `cache_dir()/throughput.json` with the last few measurements per
(model reference, device) and their median. Does not own: measuring (the training recipes call
`record_throughput` at the end of a run) nor estimating (data/tokens.py divides by it).

The unit is tokens *processed* per second: every input token of every batch, padding excluded,
trained or not, the same quantity as `estimated_training_tokens` in a token report.

No torch here; safe to import from the API. Writes are atomic (a temporary file renamed into
place) and serialized between processes by a lock file, so two runs finishing together lose
neither measurement and a reader never sees half a file.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from tuneserve.atomic import write_text_atomically
from tuneserve.models.resolve import cache_dir, file_lock

KEEP_LAST = 5  # measurements kept per (model, device); the estimate is their median
_FILE = "throughput.json"


def throughput_path() -> Path:
    return cache_dir() / _FILE


def record_throughput(model_ref: str, device: str, tokens_per_second: float) -> float:
    """Add one measurement; return the new median for (model_ref, device)."""
    value = float(tokens_per_second)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"tokens_per_second must be a positive number, got {tokens_per_second!r}")
    path = throughput_path()
    with file_lock(path):
        data = _read(path)
        entry = data.setdefault(model_ref, {}).setdefault(device, {})
        samples = [float(x) for x in entry.get("samples", [])][-(KEEP_LAST - 1) :] + [value]
        entry.update(samples=samples, median=statistics.median(samples), updated_at=int(time.time()))
        write_text_atomically(path, json.dumps(data, indent=1, sort_keys=True))
    return entry["median"]


def measured_throughput(model_ref: str, device: str) -> float | None:
    """The median of the last measurements for (model_ref, device), or None if never measured."""
    entry = _read(throughput_path()).get(model_ref, {}).get(device)
    if not entry or not entry.get("samples"):
        return None
    return float(statistics.median(float(x) for x in entry["samples"]))


def _read(path: Path) -> dict:
    """The store's content; an absent or unreadable file counts as empty (it is only a cache)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
