"""The event stream of a training process: one JSON object per line in JOB_DIR/events.jsonl.

This is the only thing that crosses from a training process to the server (besides the
artifacts on disk). Kinds:
  {"type":"message","level":"info","message":"..."}
  {"type":"metrics","step":3,"total_steps":30,"epoch":1,"train_loss":1.9,
   "train_mean_token_accuracy":0.6,"learning_rate":1e-3,"tokens_per_second":800.0,
   "valid_loss":..., "valid_mean_token_accuracy":..., "full_valid_loss":..., ...}
  {"type":"checkpoint","step":10,"epoch":1,"path":"checkpoints/step-10","metrics":{...}}
  {"type":"result","trained_tokens":12345,"train_runtime_s":12.3,"train_loss":0.4,
   "model_path":"/abs/base/model/dir","adapter_path":"/abs/job/final"}
Every line also carries "time" (Unix seconds, float).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable


# A file in JOB_DIR that asks a run to checkpoint and stop at its next step (a pause, where a
# signal cannot reach the process: Ray workers). Written by the runner, read by the training side.
STOP_REQUEST_FILE = "stop-requested"


class EventWriter:
    """Appends events to a JSON-lines file, flushed line by line so a reader can tail it."""

    def __init__(self, path: Path, echo: Callable[[dict[str, Any]], None] | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._echo = echo

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type, "time": time.time(), **fields}
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()
        if self._echo:
            self._echo(event)
        return event

    def message(self, message: str, level: str = "info") -> None:
        self.emit("message", level=level, message=message)

    def close(self) -> None:
        self._file.close()


class NullEventWriter(EventWriter):
    """For the processes of a data-parallel run other than rank 0: only rank 0 reports."""

    def __init__(self):
        self._echo = None

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        return {"type": type, "time": time.time(), **fields}

    def close(self) -> None:
        pass


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Read complete lines from `offset`; return the events and the new offset.

    A partial last line (the writer is mid-write) is left for the next call.
    """
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for line in chunk[: end + 1].splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"type": "message", "level": "warn", "message": f"unreadable event line: {line[:200]!r}"})
    return events, offset + end + 1
