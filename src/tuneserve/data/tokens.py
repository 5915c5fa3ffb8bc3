"""Token statistics of a training set, counted by formatting it exactly as training does.

Owns: `token_report(records, model, ...)`: tokens per example (min, mean, p50, p95, max), the
trained tokens and their share, what truncation at `max_seq_length` does, estimated training
tokens for n_epochs, and an estimated time from measured throughput (models/throughput.py).
Does not own: reading files or validating records (data/formats.py, data/validation.py), the
tokenizer (models.load_tokenizer, the one training loads), nor the loss mask: every record goes
through data/formatting.py's `format_record` / `format_pair`, the functions the training recipes
call, so "trained tokens" is the number of labelled tokens training will see, not an estimate.

Each record is formatted once, uncut, and then cut with `Formatted.truncated` (which is what
formatting with `max_seq_length` does: training keeps the head):
  * the lengths (min ... max, total_tokens) are the uncut renderings; a preference pair counts
    its prompt + chosen answer there, and its prompt + rejected answer under "rejected";
  * trained_tokens is the sum of the cut renderings' labels over the examples training keeps
    (`Formatted.trainable`; a pair needs both answers), so it equals the sum of the training mask;
  * truncation: examples longer than max_seq_length, the tokens cut from them, and the examples
    training drops because no trained token is left within the limit (or they had none);
  * estimated_training_tokens = n_epochs x the cut lengths of the kept examples (both sides of a
    pair: DPO runs both), the tokens training will process.
Records are consumed as a stream and only per-example counts are kept, in `array('I')` (4 bytes
an example and a column), never the texts or the ids. The cost is that of formatting the data
for training: one render per trained turn (about a millisecond a conversation with SmolLM2).
"""

from __future__ import annotations

from array import array
from typing import Any, Callable, Iterable

from tuneserve.data.auto import auto_n_epochs
from tuneserve.data.formatting import UNLIMITED, format_pair, format_record
from tuneserve.data.records import DataError, Example, PreferenceExample, Record, TextExample
from tuneserve.models import load_tokenizer


def token_report(records: Iterable[Record], model: str, *, max_seq_length: int, n_epochs: int | None) -> dict:
    """Format `records` (streamed) as training does, with `model`'s tokenizer, and summarise. JSON-able."""
    counter = _Counter(load_tokenizer(model), max_seq_length)
    for record in records:
        counter.add(record)
    return counter.report(model, n_epochs)


class _Counter:
    """Per-example counts in compact arrays; the formatted ids are dropped after counting."""

    def __init__(self, tokenizer: Any, max_seq_length: int):
        if max_seq_length <= 0:
            raise ValueError("max_seq_length must be positive")
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.lengths = array("I")  # tokens per example (chosen side for preferences), uncut
        self.trained = array("I")  # trained tokens per example, as training labels them (0 when dropped)
        self.rejected = array("I")  # tokens of prompt + rejected, preference examples only
        self.over = 0
        self.tokens_cut = 0
        self.dropped = 0  # examples training drops: no trained token within max_seq_length
        self.kept_tokens = 0  # cut lengths of the kept examples, rejected sides included
        self.rejected_over = 0

    # -- counting ---------------------------------------------------------------------------
    def add(self, record: Record) -> None:
        if isinstance(record, PreferenceExample):
            chosen, rejected = _formatted(format_pair, self.tokenizer, record)
        elif isinstance(record, (Example, TextExample)):
            chosen, rejected = _formatted(format_record, self.tokenizer, record), None
        else:
            raise TypeError(f"not a record: {type(record).__name__}")
        limit = self.max_seq_length
        cut = chosen.truncated(limit)
        rejected_cut = rejected.truncated(limit) if rejected is not None else None
        keep = cut.trainable and (rejected_cut is None or rejected_cut.trainable)  # the recipes' rule
        length = len(chosen.input_ids)
        self.lengths.append(length)
        self.trained.append(cut.n_trained if keep else 0)
        if length > limit:
            self.over += 1
            self.tokens_cut += length - limit
        if keep:
            self.kept_tokens += len(cut.input_ids) + (len(rejected_cut.input_ids) if rejected_cut is not None else 0)
        else:
            self.dropped += 1
        if rejected is not None:
            self.rejected.append(len(rejected.input_ids))
            if len(rejected.input_ids) > limit:
                self.rejected_over += 1

    # -- summary ----------------------------------------------------------------------------
    def report(self, model: str, n_epochs: int | None) -> dict:
        import numpy as np

        from tuneserve.models.throughput import measured_throughput

        n = len(self.lengths)
        lengths = np.frombuffer(self.lengths, dtype=np.uint32) if n else np.zeros(0, dtype=np.uint32)
        total = int(lengths.sum(dtype=np.int64))
        trained = int(np.frombuffer(self.trained, dtype=np.uint32).sum(dtype=np.int64)) if n else 0
        epochs = int(n_epochs) if n_epochs is not None else auto_n_epochs(n)
        estimated = epochs * self.kept_tokens
        device = _device()
        throughput = measured_throughput(model, device)
        report = {
            "model": model,
            "max_seq_length": self.max_seq_length,
            "examples": n,
            "total_tokens": total,
            "min": int(lengths.min()) if n else 0,
            "mean": round(float(lengths.mean()), 1) if n else 0.0,
            "p50": _percentile(lengths, 50),
            "p95": _percentile(lengths, 95),
            "max": int(lengths.max()) if n else 0,
            "trained_tokens": trained,
            "trained_share": round(trained / total, 4) if total else 0.0,
            "over_max_length": self.over,
            "truncation": {
                "examples_truncated": self.over,
                "tokens_cut": self.tokens_cut,
                "examples_losing_all_trained": self.dropped,
            },
            "n_epochs": epochs,
            "estimated_training_tokens": estimated,
            "throughput_tokens_per_s": throughput,
            "estimated_time_s": round(estimated / throughput, 1) if throughput else None,
            "device": device,
        }
        if len(self.rejected):
            rejected = np.frombuffer(self.rejected, dtype=np.uint32)
            report["rejected"] = {
                "examples": len(rejected),
                "total_tokens": int(rejected.sum(dtype=np.int64)),
                "mean": round(float(rejected.mean()), 1),
                "max": int(rejected.max()),
                "over_max_length": self.rejected_over,
            }
        return report


def _formatted(format_: Callable[..., Any], tokenizer: Any, record: Record) -> Any:
    """`format_(tokenizer, record, no limit)`; a template that cannot render the record is a DataError naming its line."""
    try:
        return format_(tokenizer, record, UNLIMITED)
    except DataError:
        raise
    except Exception as exc:  # a template that rejects the conversation (roles, tool shapes)
        raise DataError(
            f"the model's chat template cannot render this conversation: {exc}", line=record.line, code="template_error"
        ) from exc


def _percentile(values: Any, q: float) -> float:
    """Linear-interpolated percentile (numpy's default), rounded to 0.1; 0 for no data."""
    import numpy as np

    return round(float(np.percentile(values, q)), 1) if len(values) else 0.0


def _device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
