"""Direct preference optimisation (method "dpo", OpenAI's shape, with `beta`), read top to bottom.

    read preference pairs -> load model + tokenizer -> format chosen and rejected answers
    -> reference log-probabilities, once -> the shared loop (training.loop) with the DPO loss

Each pair is the same prompt with two answers; only the answer tokens count. The loss is
-log sigmoid(beta * ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected))), averaged over a
step's pairs (Rafailov et al. 2023; TRL's "sigmoid" loss).
The reference is the model as loaded, before any step (a new adapter starts as the identity; a
continued one is the model being improved, e.g. the SFT result). Its log-probabilities never
change, so they are computed once, before the first step (and before a resumed run loads its
checkpoint), instead of at every step of every epoch (TRL's precompute_ref_log_probs). No second
copy of the model is held, even for full fine-tuning.
Metrics per step: loss, rewards of the chosen and the rejected answers, their margin, and how
often the chosen one wins (rewards_accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console

from tuneserve.data.records import DataError, PreferenceExample
from tuneserve.models import load_tokenizer, resolve_model
from tuneserve.training import model as model_io
from tuneserve.training.batching import collate_packed, collate_padded
from tuneserve.training.events import EventWriter
from tuneserve.data.formatting import Formatted, format_pair
from tuneserve.training.early_stopping import with_holdout
from tuneserve.training.loop import train_loop
from tuneserve.training.losses import dpo_loss, sequence_logprobs
from tuneserve.training.recipes.sft import pad_id
from tuneserve.training.spec import TrainingSpec

REFERENCE_BATCH = 8


class Pair:
    """A tokenized preference pair and, once computed, its reference log-probabilities."""

    __slots__ = ("chosen", "rejected", "ref_chosen", "ref_rejected")

    def __init__(self, chosen: Formatted, rejected: Formatted):
        self.chosen, self.rejected = chosen, rejected
        self.ref_chosen = self.ref_rejected = 0.0


def run(
    spec: TrainingSpec,
    job_dir: Path,
    events: EventWriter,
    *,
    console: Console | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Train one DPO job; return the result event."""
    torch.manual_seed(spec.seed)
    train_records = load_pairs(spec.training_file, "training")
    valid_records = load_pairs(spec.validation_file, "validation") if spec.validation_file else []
    train_records, valid_records = with_holdout(train_records, valid_records, spec, events)

    model_dir = resolve_model(spec.model)
    tokenizer = load_tokenizer(model_dir)
    loaded = model_io.load(spec, model_dir, events)

    train_set = format_pairs(train_records, tokenizer, spec, events, "training")
    valid_set = format_pairs(valid_records, tokenizer, spec, events, "validation")
    if not train_set:
        raise DataError(f"no preference pair has answer tokens within max_seq_length={spec.max_seq_length}")

    task = PreferenceTask(loaded, pad_id(tokenizer), spec.hyperparameters.beta or 0.1)
    events.message(f"Computing reference log-probabilities for {len(train_set) + len(valid_set)} pairs (once, before training)")
    task.compute_reference(train_set + valid_set)
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


class PreferenceTask:
    def __init__(self, loaded: model_io.Loaded, pad: int, beta: float):
        self.loaded = loaded
        self.pad = pad
        self.beta = beta

    def lengths(self, items: Sequence[Pair]) -> list[int]:
        return [len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in items]

    def units(self, items: Sequence[Pair]) -> int:
        return len(items)

    def metric_names(self) -> dict[str, str]:
        return {
            "chosen": "rewards_chosen",
            "rejected": "rewards_rejected",
            "margin": "rewards_margin",
            "wins": "rewards_accuracy",
        }

    def _logprobs(self, forward, items: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Policy log-probabilities of every chosen answer, then every rejected one, in one forward pass."""
        sequences = [p.chosen for p in items] + [p.rejected for p in items]
        device = self.loaded.device
        if self.loaded.batching == "rows" or (self.loaded.batching == "mixed" and len(items) == 1):  # each answer alone
            parts = [self._one_sequence(forward, s) for s in sequences]
            logps = torch.cat([p for p, _ in parts])
            return logps[: len(items)], logps[len(items) :], sum(n for _, n in parts)
        if self.loaded.padding_free:
            batch = collate_packed(sequences, device)
            owners = torch.repeat_interleave(
                torch.arange(len(sequences), device=device), torch.tensor([len(s.input_ids) for s in sequences], device=device)
            )[None, :]
        else:
            batch = collate_padded(sequences, self.pad, device)
            owners = torch.arange(len(sequences), device=device)[:, None].expand_as(batch.input_ids)
        logps = forward(_logprobs_head(batch.labels, owners, len(sequences)), **batch.model_inputs())
        return logps[: len(items)], logps[len(items) :], batch.n_tokens

    def _one_sequence(self, forward, sequence: Formatted) -> tuple[torch.Tensor, int]:
        batch = collate_padded([sequence], self.pad, self.loaded.device)
        owners = torch.zeros_like(batch.input_ids)
        return forward(_logprobs_head(batch.labels, owners, 1), input_ids=batch.input_ids), batch.n_tokens

    @torch.no_grad()
    def compute_reference(self, pairs: list[Pair]) -> None:
        model = self.loaded.model
        was_training = model.training
        model.eval()
        for start in range(0, len(pairs), REFERENCE_BATCH):
            chunk = pairs[start : start + REFERENCE_BATCH]
            chosen, rejected, _ = self._logprobs(self.loaded.apply_head, chunk)  # before training: the model unwrapped
            for pair, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
                pair.ref_chosen, pair.ref_rejected = c, r
        model.train(was_training)

    def loss(self, forward, items: Sequence[Pair]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        chosen, rejected, n_tokens = self._logprobs(forward, items)
        device = chosen.device
        ref_chosen = torch.tensor([p.ref_chosen for p in items], device=device)
        ref_rejected = torch.tensor([p.ref_rejected for p in items], device=device)
        losses, rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta)
        metrics = {
            "chosen": rewards["chosen"].sum(),
            "rejected": rewards["rejected"].sum(),
            "margin": rewards["margin"].sum(),
            "wins": (rewards["margin"] > 0).sum(),
        }
        return losses.sum(), metrics, n_tokens

    @torch.no_grad()
    def evaluate(self, forward, items: Sequence[Pair], prefix: str) -> dict[str, float]:
        model = self.loaded.model
        was_training = model.training
        model.eval()
        loss_sum, wins, margin = 0.0, 0, 0.0
        for start in range(0, len(items), REFERENCE_BATCH):
            losses, metrics, _ = self.loss(forward, items[start : start + REFERENCE_BATCH])
            loss_sum, wins, margin = loss_sum + float(losses), wins + int(metrics["wins"]), margin + float(metrics["margin"])
        model.train(was_training)
        n = max(len(items), 1)
        return {f"{prefix}_loss": loss_sum / n, f"{prefix}_rewards_accuracy": wins / n, f"{prefix}_rewards_margin": margin / n}


def _logprobs_head(labels: torch.Tensor, owners: torch.Tensor, n_sequences: int):
    """The head the wrapped model applies to its hidden states (training.model.Loaded.apply_head)."""
    return lambda hidden, lm_head: sequence_logprobs(hidden, lm_head, labels, owners, n_sequences)


def load_pairs(path: str, kind: str) -> list[PreferenceExample]:
    from tuneserve.data import load_examples

    records = load_examples(Path(path))
    if not isinstance(records[0], PreferenceExample):
        raise DataError(
            f"method dpo trains on preference pairs (prompt, chosen, rejected); the {kind} file holds "
            f"{type(records[0]).__name__} records: use method supervised for them",
            code="not_preference_data",
        )
    return records


def format_pairs(
    records: Sequence[PreferenceExample], tokenizer: Any, spec: TrainingSpec, events: EventWriter, kind: str
) -> list[Pair]:
    """Each answer after the same prompt, through the chat template (data.formatting.format_pair); only the answer is labelled."""
    pairs, dropped = [], 0
    for record in records:
        chosen, rejected = format_pair(tokenizer, record, spec.max_seq_length)
        if chosen.trainable and rejected.trainable:
            pairs.append(Pair(chosen, rejected))
        else:
            dropped += 1
    if dropped:
        events.message(
            f"Dropped {dropped} of {len(records)} {kind} pairs: an answer has no token left within "
            f"max_seq_length={spec.max_seq_length}",
            level="warn",
        )
    return pairs
