"""The event stream, the one contract between a training process and the server: every kind of event
survives the trip through events.jsonl, the writer refuses what is not an event, and the reader turns
a bad line into a warning message instead of stopping (and leaves a half-written last line for later)."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from tuneserve.training.events import (
    Checkpoint,
    EventWriter,
    Message,
    Metrics,
    NullEventWriter,
    Result,
    parse_event_line,
    read_events,
)

EVENTS = [
    Message(level="warn", message="W&B logging is off"),
    Metrics(step=3, total_steps=30, epoch=1, train_loss=1.9, train_mean_token_accuracy=0.6, learning_rate=1e-3),
    Metrics(step=3, total_steps=30, rewards_margin=0.25, rewards_accuracy=1.0),  # a DPO step: the recipe's own names
    Checkpoint(step=10, epoch=1, path="checkpoints/step-10", metrics={"step": 10, "train_loss": 0.5}),
    Result(trained_tokens=12345, train_runtime_s=12.3, train_loss=0.4, model_path="/m", adapter_path="/j/final"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_every_kind_round_trips_through_the_file(tmp_path, event):
    writer = EventWriter(tmp_path / "events.jsonl")
    written = writer.emit(event)
    writer.close()
    (back,), offset = read_events(tmp_path / "events.jsonl")
    assert back == event and type(back) is type(event)
    assert written == json.loads((tmp_path / "events.jsonl").read_text()) == event.model_dump()
    assert offset == (tmp_path / "events.jsonl").stat().st_size


def test_a_diverged_loss_reads_back_as_nan(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    writer.emit(Metrics(step=1, total_steps=2, train_loss=float("nan")))
    writer.close()
    (back,), _ = read_events(tmp_path / "events.jsonl")
    assert isinstance(back, Metrics) and math.isnan(back.numbers()["train_loss"])


def test_lines_of_the_existing_format_still_parse():
    """Job directories written before the models existed: same keys, so the same events."""
    old = [
        '{"type": "message", "time": 1700000000.5, "level": "info", "message": "Fine-tuning job started"}',
        '{"type": "metrics", "time": 1700000001.0, "step": 1, "total_steps": 4, "epoch": 0, "train_loss": 2.5, '
        '"learning_rate": 0.001, "tokens_per_second": 812.0}',
        '{"type": "checkpoint", "time": 1700000002.0, "step": 2, "epoch": 0, "path": "checkpoints/step-2", '
        '"metrics": {"step": 2, "train_loss": 2.1}}',
        '{"type": "result", "time": 1700000003.0, "trained_tokens": 99, "train_runtime_s": 3.0, "train_loss": 2.0, '
        '"model_path": "/m", "adapter_path": "/a"}',
    ]
    message, metrics, checkpoint, result = (parse_event_line(line) for line in old)
    assert (message.time, message.message) == (1700000000.5, "Fine-tuning job started")
    assert metrics.numbers() == {
        "step": 1,
        "total_steps": 4,
        "epoch": 0,
        "train_loss": 2.5,
        "learning_rate": 0.001,
        "tokens_per_second": 812.0,
    }
    assert isinstance(metrics.numbers()["step"], int)  # a step stays a whole number
    assert (checkpoint.path, checkpoint.metrics) == ("checkpoints/step-2", {"step": 2, "train_loss": 2.1})
    assert result.trained_tokens == 99
    assert parse_event_line('{"type": "message", "level": "warning", "message": "x"}').level == "warn"


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"type": "estimate", "step": 3}', "does not match any of the expected tags"),  # an unknown kind
        ('{"step": 3}', "Unable to extract tag"),
        ('{"type": "checkpoint", "step": 10}', "checkpoint.path"),  # a missing field
        ('{"type": "metrics", "step": 1, "total_steps": 2, "train_loss": "low"}', "train_loss"),  # not a number
        ('{"type": "message", "message": "x", "colour": "red"}', "colour"),  # a key no event has
        ('{"type": "message", "level": "loud", "message": "x"}', "level"),
        ("[1, 2]", "object"),
    ],
)
def test_what_is_not_an_event_is_refused(line, problem):
    with pytest.raises(ValidationError, match=problem):
        parse_event_line(line)


def test_the_writer_refuses_a_bad_event_before_writing(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    with pytest.raises(ValidationError):
        writer.emit(Metrics(step=1, total_steps=2, loss="high"))
    with pytest.raises(ValidationError):
        writer.emit(Checkpoint(step=1, path="checkpoints/step-1", metrics={}, epochs=1))
    writer.close()
    assert (tmp_path / "events.jsonl").read_text() == ""
    assert NullEventWriter().emit(Result(trained_tokens=3))["trained_tokens"] == 3  # other ranks check too, write nothing


def test_a_bad_line_becomes_a_warning_and_reading_goes_on(tmp_path):
    path = tmp_path / "events.jsonl"
    good = Message(message="before").model_dump_json()
    after = Metrics(step=2, total_steps=4, train_loss=1.0).model_dump_json()
    path.write_text(f'{good}\n{{"type": "checkpoint", "step": 1\n{{"type": "estimate"}}\n{after}\n{{"type": "mess')
    events, offset = read_events(path)
    assert [type(e).__name__ for e in events] == ["Message", "Message", "Message", "Metrics"]
    assert [e.level for e in events[:3]] == ["info", "warn", "warn"]
    assert events[1].message.startswith("unreadable event line (Invalid JSON") and '"step": 1' in events[1].message
    assert events[2].message.startswith("unreadable event line (") and "estimate" in events[2].message
    assert events[3].step == 2
    # The half-written last line is left for the next read, which finds it complete.
    with path.open("a") as f:
        f.write('age", "message": "done"}\n')
    rest, end = read_events(path, offset)
    assert [e.message for e in rest] == ["done"] and end == path.stat().st_size


def test_the_ray_driver_sees_whether_a_worker_reported_its_error(tmp_path):
    """ray_train reports Ray's own words only when no worker wrote an error since the attempt began."""
    from tuneserve.training.ray_train import _error_reported_since

    writer = EventWriter(tmp_path / "events.jsonl")
    writer.message("an error of an earlier attempt", level="error")
    _, start = read_events(tmp_path / "events.jsonl")
    writer.message("this attempt started")
    assert not _error_reported_since(tmp_path, start)
    writer.message("RuntimeError: CUDA out of memory", level="error")
    writer.close()
    assert _error_reported_since(tmp_path, start)
