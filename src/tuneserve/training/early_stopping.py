"""Judging a run by held-out data: the split auto makes when no validation file is given, and which
checkpoint becomes the result.

    training records --(no validation file)--> 90% train / 10% held out (a fixed draw)
    every validation --> Keeper.update(loss) --> "improved" (checkpoint it) / "stop" (patience spent)
    end of run --> the checkpoint with the lowest validation loss is the result

Why: the lowest training loss is the model that best recites its training sentences; what a user
wants is the model that best answers what it was not trained on, and held-out loss is the measure of
that a run has. The held-out draw does not depend on the job's seed, so runs that differ only in seed
judge themselves on the same examples.
Owns: `holdout_split` and `Keeper`. Does not own when validations run or how checkpoints are
written (training.loop).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from tuneserve.training.spec import MIN_EXAMPLES_TO_SPLIT, MIN_HOLDOUT, TrainingSpec

T = TypeVar("T")
SPLIT_SEED = 0


def with_holdout(train: Sequence[T], valid: Sequence[T], spec: TrainingSpec, events) -> tuple[list[T], list[T]]:
    """(train, validation) for a recipe: the validation file's records, or a split held out of the training
    records (said in an event), or none."""
    if valid:
        return list(train), list(valid)
    kept, held = holdout_split(train, spec)
    if held:
        events.message(
            f"Held out {len(held)} of {len(kept) + len(held)} training examples to validate on (no validation file; "
            f"validation_split {spec.validation_split:g}, the same draw for every job on this file)"
        )
    return kept, held


def holdout_split(records: Sequence[T], spec: TrainingSpec) -> tuple[list[T], list[T]]:
    """(train, held out): `validation_split` of the records, at least MIN_HOLDOUT, drawn with a fixed
    seed; nothing is held out when the spec names a validation file, asks for no split, or the set
    is too small to spare any."""
    records = list(records)
    if spec.validation_file or spec.validation_split <= 0 or len(records) < MIN_EXAMPLES_TO_SPLIT:
        return records, []
    n_held = max(MIN_HOLDOUT, round(len(records) * spec.validation_split))
    held = set(random.Random(SPLIT_SEED).sample(range(len(records)), n_held))
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


@dataclass
class Best:
    """The best validation so far; saved in checkpoints (LoopState) so a resumed run keeps it. `loss` is the value
    judged: the validation loss, or with early_stopping_metric "answers" the held-out answers' ROUGE-L F1."""

    loss: float | None = None
    step: int = 0
    epoch: int = 0
    evals_since: int = 0  # validations since the best one


# early_stopping_metric -> (the validation's metric name, whether higher is better, how an event says it)
METRICS = {
    "loss": ("valid_loss", False, "validation loss"),
    "answers": ("valid_answer_rouge_l", True, "held-out answer ROUGE-L"),
}


class Keeper:
    """Follows a validation metric and says when to checkpoint (a new best) and when to stop."""

    def __init__(self, patience: int, best: Best | dict[str, Any] | None = None, metric: str = "loss"):
        self.patience = patience
        self.best = Best(**best) if isinstance(best, dict) else (best or Best())
        self.key, self.higher_is_better, self.label = METRICS[metric]

    @property
    def active(self) -> bool:
        return self.patience > 0

    def update(self, value: float, step: int, epoch: int) -> str:
        """ "improved", "wait" or "stop" for a validation just measured."""
        better = self.best.loss is None or (value > self.best.loss if self.higher_is_better else value < self.best.loss)
        if better:
            self.best = Best(loss=value, step=step, epoch=epoch)
            return "improved"
        self.best.evals_since += 1
        return "stop" if self.best.evals_since >= self.patience else "wait"

    def explain(self, last_step: int, last_epoch: float, stopped_early: bool) -> str:
        """The event that says which checkpoint is the result, and why."""
        best = self.best
        where = f"epoch {best.epoch} (step {best.step})"
        superlative = "highest" if self.higher_is_better else "lowest"
        if best.step == last_step:
            return f"Kept the last checkpoint, {where}: its {self.label} {best.loss:.4f} is the {superlative} of the run"
        why = (
            f"stopped early at epoch {last_epoch:g} after {best.evals_since} validation(s) without improvement (patience {self.patience})"
            if stopped_early
            else f"the later validations did not improve on it (last: epoch {last_epoch:g}, step {last_step})"
        )
        return f"Kept the checkpoint of {where}, the {superlative} {self.label} {best.loss:.4f}; {why}"
