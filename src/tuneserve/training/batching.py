"""Which examples go in which step, and how a micro-batch becomes tensors without wasted compute.

Owns: the per-epoch batch plan (seeded, so a resumed run sees the same batches), the split of a
step into micro-batches (on CPU, by default, one example each: see training.model.choose_batching),
and two collates:
- `collate_padded`: rows right-padded to the longest row of the micro-batch. Batches are
  length-grouped (examples of similar length share a step), so there is almost no padding.
- `collate_packed`: every example of the micro-batch in one row, no padding at all, with
  position ids restarting at each example. transformers turns those position ids into
  flash-attention varlen boundaries (CUDA) or a block-diagonal mask (SDPA/eager), so no example
  attends to another either way.
Does not own: formatting/masking (data.formatting) or the loss (training.losses).

Why length grouping rather than packing on CPU: with SDPA a packed row costs attention over the
whole row (masked, not skipped), quadratic in the packed length; length-grouped rows cost
attention over each example only, and the grouping leaves a few percent of padding.
benchmarks/train_throughput.py measures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from tuneserve.data.formatting import IGNORE_INDEX

# Length grouping sorts within windows of this many batches: enough to match lengths closely,
# small enough that each step still draws from across the data set.
GROUP_WINDOW_BATCHES = 64


class Tokenized(Protocol):
    input_ids: list[int]
    labels: list[int]


@dataclass
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None  # None when packed: position ids carry the boundaries
    position_ids: torch.Tensor | None
    n_tokens: int  # real (non-pad) tokens: what the forward pass had to process

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
        return inputs


def epoch_plan(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, *, group_by_length: bool = True
) -> list[list[int]]:
    """The example indices of each step of `epoch`; depends only on (lengths, batch_size, seed, epoch).

    Shuffle, sort each window of GROUP_WINDOW_BATCHES batches by length, cut into batches, then
    shuffle the batch order, so similar lengths share a step but steps stay in random order.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group_by_length:
        window = batch_size * GROUP_WINDOW_BATCHES
        order = [
            i for start in range(0, len(order), window) for i in sorted(order[start : start + window], key=lambda i: -lengths[i])
        ]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def micro_batches(indices: list[int], n: int) -> list[list[int]]:
    """Split one step's examples into at most `n` non-empty micro-batches of near-equal size (none for none)."""
    if not indices:
        return []
    n = max(1, min(n, len(indices)))
    size, extra = divmod(len(indices), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        out.append(indices[start:end])
        start = end
    return out


def collate_padded(examples: Sequence[Tokenized], pad_id: int, device: torch.device) -> Batch:
    """Right-pad to the longest example; padding gets attention 0 and label -100."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    # One row has no padding: no mask at all, so SDPA takes its fused causal kernel (no L x L matrix).
    mask = attention_mask.to(device) if len(examples) > 1 else None
    return Batch(input_ids.to(device), labels.to(device), mask, None, int(attention_mask.sum()))


def collate_packed(examples: Sequence[Tokenized], device: torch.device) -> Batch:
    """All examples in one row, positions restarting at 0 for each; the first label of each
    example is masked so no position learns to predict across a boundary."""
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        input_ids.extend(example.input_ids)
        labels.extend([IGNORE_INDEX] + list(example.labels[1:]))
        positions.extend(range(len(example.input_ids)))
    as_row = lambda values: torch.tensor([values], dtype=torch.long, device=device)  # noqa: E731
    return Batch(as_row(input_ids), as_row(labels), None, as_row(positions), len(input_ids))
