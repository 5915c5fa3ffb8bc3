"""Supervised fine-tuning (method "supervised"), for every training type, read top to bottom.

    read data -> load model + tokenizer -> format + mask -> the shared loop (training.loop)

Data: conversations (chat, prompt/completion, alpaca, ShareGPT, with tools) train their
assistant turns (every token with `train_on_inputs`); raw text trains every token; preference
pairs are refused with a DataError naming method dpo (its own recipe).
The loss is the mean over a step's trained tokens (not a mean of per-example means), so a long
answer counts as much per token as a short one; this is what HF/TRL do. It is computed from the
last hidden states at trained positions only (training.losses), never from full logits.
Does not own: parsing data files (tuneserve.data), chat-template masking (data.formatting),
the loop, checkpoints and resume (training.loop), or the model set-up (training.model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console

from tuneserve.data.records import DataError, PreferenceExample, Record
from tuneserve.models import load_tokenizer, resolve_model
from tuneserve.training import model as model_io
from tuneserve.training.batching import collate_packed, collate_padded
from tuneserve.training.events import EventWriter
from tuneserve.data.formatting import IGNORE_INDEX, Formatted, format_examples
from tuneserve.training.early_stopping import with_holdout
from tuneserve.training.loop import train_loop
from tuneserve.training.losses import token_cross_entropy
from tuneserve.training.spec import TrainingSpec


def run(
    spec: TrainingSpec,
    job_dir: Path,
    events: EventWriter,
    *,
    console: Console | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Train one SFT job; return the result event."""
    torch.manual_seed(spec.seed)

    # 1. Read the data first: a file this recipe cannot train on fails before a model loads.
    train_records = load_records(spec.training_file, "training")
    valid_records = load_records(spec.validation_file, "validation") if spec.validation_file else []
    train_records, valid_records = with_holdout(train_records, valid_records, spec, events)

    # 2. Load the base model, its tokenizer, and what to train.
    model_dir = resolve_model(spec.model)
    tokenizer = load_tokenizer(model_dir)
    loaded = model_io.load(spec, model_dir, events)

    # 3. Format and mask the data through the model's own chat template (raw text as it is).
    train_set = format_set(train_records, tokenizer, spec, events, "training")
    valid_set = format_set(valid_records, tokenizer, spec, events, "validation")
    if not train_set:
        raise DataError(f"no training example has a trained token within max_seq_length={spec.max_seq_length}")

    # 4. Train.
    task = SupervisedTask(loaded, pad_id(tokenizer), spec.hyperparameters.batch_size)
    return train_loop(
        spec,
        job_dir,
        events,
        loaded,
        tokenizer,
        task,
        train_set,
        valid_set,
        model_path=model_dir,
        console=console,
        stop_requested=stop_requested,
    )


class SupervisedTask:
    """Token-level cross-entropy on the trained positions; accuracy = argmax hits per trained token."""

    def __init__(self, loaded: model_io.Loaded, pad: int, eval_batch_size: int):
        self.loaded = loaded
        self.pad = pad
        self.eval_batch_size = eval_batch_size

    def lengths(self, items: Sequence[Formatted]) -> list[int]:
        return [len(e.input_ids) for e in items]

    def units(self, items: Sequence[Formatted]) -> int:
        return sum(sum(1 for label in e.labels[1:] if label != IGNORE_INDEX) for e in items)

    def metric_names(self) -> dict[str, str]:
        return {"correct": "train_mean_token_accuracy"}

    def collate(self, items: Sequence[Formatted]):
        device = self.loaded.device
        return collate_packed(items, device) if self.loaded.padding_free else collate_padded(items, self.pad, device)

    def eval_batches(self, items: Sequence[Formatted]):
        size = 1 if self.loaded.batching in ("rows", "mixed") else self.eval_batch_size
        return (self.collate(items[start : start + size]) for start in range(0, len(items), size))

    def loss(self, forward, items: Sequence[Formatted]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        batch = self.collate(items)
        loss_sum, correct, _count = forward(_cross_entropy(batch.labels), **batch.model_inputs())
        return loss_sum, {"correct": correct}, batch.n_tokens

    @torch.no_grad()
    def evaluate(self, forward, items: Sequence[Formatted], prefix: str) -> dict[str, float]:
        """Token-weighted loss and accuracy over `items` (in order, no dropout)."""
        model = self.loaded.model
        was_training = model.training
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for batch in self.eval_batches(items):
            batch_loss, batch_correct, batch_count = forward(_cross_entropy(batch.labels), **batch.model_inputs())
            loss_sum, correct, count = loss_sum + float(batch_loss), correct + int(batch_correct), count + int(batch_count)
        model.train(was_training)
        return {f"{prefix}_loss": loss_sum / max(count, 1), f"{prefix}_mean_token_accuracy": correct / max(count, 1)}

    @torch.no_grad()
    def answer_score(self, forward, items: Sequence[Formatted], prefix: str) -> dict[str, float]:
        """How the model answers held-out prompts, not how it scores their reference tokens: each item's first
        answer generated greedily from its prompt, against the reference, as ROUGE-L F1 over token ids (mean).
        Greedy with no cache (one forward per token): the held-out answers are few and short."""
        model = self.loaded.model
        was_training = model.training
        model.eval()
        scores = []
        for item in items:
            start, end = item.trained_spans()[0]
            reference, ids = item.input_ids[start:end], list(item.input_ids[:start])
            answer: list[int] = []
            while len(answer) < len(reference) + ANSWER_SLACK_TOKENS:
                inputs = torch.tensor([ids + answer], device=self.loaded.device)
                answer.append(int(forward(_next_token, input_ids=inputs)))
                if answer[-1] == reference[-1]:  # the end-of-turn token the answer was trained to end with
                    break
            scores.append(rouge_l_f1(answer, reference))
        model.train(was_training)
        return {f"{prefix}_answer_rouge_l": sum(scores) / max(len(scores), 1)}


# Past its reference's length, an answer is cut this many tokens on: long enough for a paraphrase, short of a ramble.
ANSWER_SLACK_TOKENS = 16


def _next_token(hidden: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    return lm_head(hidden[0, -1]).argmax()


def rouge_l_f1(candidate: Sequence[int], reference: Sequence[int]) -> float:
    """ROUGE-L F1 of two token sequences: their longest common subsequence against both lengths."""
    if not candidate or not reference:
        return 0.0
    previous = [0] * (len(reference) + 1)
    for token in candidate:
        current = [0]
        for j, ref in enumerate(reference):
            current.append(previous[j] + 1 if token == ref else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(candidate) + len(reference))


def _cross_entropy(labels: torch.Tensor):
    """The head the wrapped model applies to its hidden states (training.model.Loaded.apply_head)."""
    return lambda hidden, lm_head: token_cross_entropy(hidden, lm_head, labels)


def pad_id(tokenizer: Any) -> int:
    """Any id works for padding: padded positions are masked by length, never recognised by id."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def load_records(path: str, kind: str) -> list[Record]:
    """Every record of a data file; preference pairs are refused (they need the DPO recipe)."""
    from tuneserve.data import load_examples  # the data package owns every file format and its validation

    records = load_examples(Path(path))
    if isinstance(records[0], PreferenceExample):  # a file holds one format, so the first record tells
        raise DataError(
            f"preference data needs method dpo: the {kind} file holds preference pairs (chosen/rejected); "
            "supervised fine-tuning trains on conversations, prompt/completion, or text",
            code="preference_data_for_sft",
        )
    return records


def format_set(records: list[Record], tokenizer: Any, spec: TrainingSpec, events: EventWriter, kind: str) -> list[Formatted]:
    formatted, dropped = format_examples(tokenizer, records, spec.max_seq_length)
    if spec.train_on_inputs:  # every token of the rendered conversation, prompts and template included
        formatted = [f.all_trained() for f in formatted]
    if dropped:
        events.message(
            f"Dropped {dropped} of {len(records)} {kind} examples: no trained token left "
            f"within max_seq_length={spec.max_seq_length}",
            level="warn",
        )
    return formatted
