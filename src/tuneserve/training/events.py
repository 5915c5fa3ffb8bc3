"""The event stream of a training process: one JSON object per line in JOB_DIR/events.jsonl.

This is the only thing that crosses from a training process to the server (besides the
artifacts on disk), so both sides check it against the same models: the writer builds an
`Event` (a typo or a wrong type fails in the training process, where it is made) and the reader
parses each line with `parse_event_line`. Kinds, told apart by "type":
  {"type":"message","level":"info","message":"..."}
  {"type":"metrics","step":3,"total_steps":30,"epoch":1,"train_loss":1.9,
   "train_mean_token_accuracy":0.6,"learning_rate":1e-3,"tokens_per_second":800.0,
   "valid_loss":..., "valid_mean_token_accuracy":..., "full_valid_loss":..., ...}
  {"type":"checkpoint","step":10,"epoch":1,"path":"checkpoints/step-10","metrics":{...}}
  {"type":"result","trained_tokens":12345,"train_runtime_s":12.3,"train_loss":0.4,
   "model_path":"/abs/base/model/dir","adapter_path":"/abs/job/final"}
Every line also carries "time" (Unix seconds, float).

Owns: the event models, writing them, reading them back. Does not own what the server makes of
them (jobs/ingest.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

log = logging.getLogger("tuneserve.events")

# A file in JOB_DIR that asks a run to checkpoint and stop at its next step (a pause, where a
# signal cannot reach the process: Ray workers). Written by the runner, read by the training side.
STOP_REQUEST_FILE = "stop-requested"

Number = Union[int, float]  # an int stays an int on disk (a step count), a float a float


class _Event(BaseModel):
    # Unknown keys are refused: a misspelt field fails where it is written, not silently on the server.
    # A diverged loss is written NaN (as json.dumps writes it), not null, so the line still reads back.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    type: str
    time: float = Field(default_factory=time.time)


class Message(_Event):
    """Something to tell the user; an `error` message is the run's own account of its failure."""

    type: Literal["message"] = "message"
    level: Literal["info", "warn", "error"] = "info"
    message: str

    @field_validator("level", mode="before")
    @classmethod
    def _warning_is_warn(cls, level: Any) -> Any:
        return "warn" if level == "warning" else level  # Python logging's word, OpenAI's is "warn"


class Metrics(_Event):
    """The numbers of one step (or one validation pass): step and total_steps, then every number the
    recipe reports under its own name (SFT: loss, token accuracy, learning rate, tokens/s; DPO: rewards)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Number]

    type: Literal["metrics"] = "metrics"
    step: int
    total_steps: int
    epoch: int | None = None

    def numbers(self) -> dict[str, Number]:
        """Everything but type and time: what the job event's data holds."""
        return self.model_dump(exclude={"type", "time"}, exclude_none=True)


class Checkpoint(_Event):
    """A checkpoint was written under JOB_DIR/`path`, with the epoch's metrics so far."""

    type: Literal["checkpoint"] = "checkpoint"
    step: int
    epoch: int | None = None
    path: str
    metrics: dict[str, Number] = {}


class Result(_Event):
    """The run finished and saved its final artifact."""

    type: Literal["result"] = "result"
    trained_tokens: int
    train_runtime_s: float | None = None
    train_loss: float | None = None
    model_path: str | None = None
    adapter_path: str | None = None
    kept_checkpoint: dict[str, Any] | None = None  # with early stopping: which checkpoint the result is, and why


Event = Annotated[Union[Message, Metrics, Checkpoint, Result], Field(discriminator="type")]
_EVENT = TypeAdapter(Event)


def parse_event_line(line: str | bytes) -> Event:
    """One line of events.jsonl as its event; ValidationError if it is not one (bad JSON, an unknown
    type, a missing or mistyped field)."""
    return _EVENT.validate_json(line)


class EventWriter:
    """Appends events to a JSON-lines file, flushed line by line so a reader can tail it."""

    def __init__(self, path: Path, echo: Callable[[dict[str, Any]], None] | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._echo = echo

    def emit(self, event: Event) -> dict[str, Any]:
        """Write `event`; return it as the dict its line holds."""
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()
        fields = event.model_dump()
        if self._echo:
            self._echo(fields)
        return fields

    def message(self, message: str, level: Literal["info", "warn", "error"] = "info") -> None:
        self.emit(Message(level=level, message=message))

    def close(self) -> None:
        self._file.close()


class NullEventWriter(EventWriter):
    """For the processes of a data-parallel run other than rank 0: only rank 0 reports."""

    def __init__(self):
        self._echo = None

    def emit(self, event: Event) -> dict[str, Any]:
        return event.model_dump()

    def close(self) -> None:
        pass


def read_events(path: Path, offset: int = 0) -> tuple[list[Event], int]:
    """Read complete lines from `offset`; return the events and the new offset.

    A partial last line (the writer is mid-write) is left for the next call. A line that is not an
    event (bad JSON, an unknown type, a missing field) becomes a warning Message that quotes it, so
    that one bad line is shown to the user and never stops the reader.
    """
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events: list[Event] = []
    for line in chunk[: end + 1].splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            events.append(parse_event_line(line))
        except ValidationError as exc:
            why = _first_problem(exc)
            log.warning("%s: a line that is not an event (%s): %.200r", path, why, line)
            events.append(Message(level="warn", message=f"unreadable event line ({why}): {line[:200]!r}"))
    return events, offset + end + 1


def _first_problem(exc: ValidationError) -> str:
    """E.g. "checkpoint.path: Field required", or "Invalid JSON: ..." for a line that is not JSON."""
    problem = exc.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}" if where else problem["msg"]
