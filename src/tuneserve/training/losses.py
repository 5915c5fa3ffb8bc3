"""Losses computed from the last hidden states, without ever holding the full logits.

Owns: the causal-LM cross-entropy (summed over trained tokens, with token accuracy) and the
per-sequence log-probabilities DPO needs, both over chunks of positions, plus the DPO loss.
Does not own: which positions are trained (labels, from data.formatting) or batching.

Why: the logits of a batch are positions x vocabulary floats (SmolLM2: 2,400 x 49,152 x 4 B =
470 MB, then as much again for their gradient). Only positions whose next token is trained are
projected at all, in chunks of CHUNK_TOKENS:
- `FusedLinearCrossEntropy` computes the loss and its gradients chunk by chunk in the forward
  pass (as Liger's fused linear cross-entropy does on GPU), so no logits outlive their chunk
  and nothing is recomputed;
- `sequence_logprobs` (DPO) needs a per-token gradient, so each chunk is checkpointed instead:
  its logits are recomputed in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tuneserve.data.formatting import IGNORE_INDEX

CHUNK_TOKENS = 1024


def trained_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask over positions [B, L-1] whose next token is trained, the target ids there)."""
    next_labels = labels[:, 1:]
    keep = next_labels != IGNORE_INDEX
    return keep, next_labels[keep]


class FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T, target_i), and how many argmaxes hit; gradients made in forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, with_grad: bool):
        grad_hidden = torch.empty_like(hidden) if with_grad and hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if with_grad and weight.requires_grad else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            h = hidden[start : start + CHUNK_TOKENS]
            t = targets[start : start + CHUNK_TOKENS]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            correct += (logits.argmax(dim=-1) == t).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            dlogits = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
            dlogits[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            if grad_hidden is not None:
                grad_hidden[start : start + CHUNK_TOKENS] = (dlogits.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += dlogits.T @ h.float()
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight) if g is not None))
        ctx.has = (grad_hidden is not None, grad_weight is not None)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_correct: torch.Tensor):
        saved = list(ctx.saved_tensors)
        grad_hidden = grad_weight = None
        if ctx.has[0]:
            grad = saved.pop(0)
            grad_hidden = grad * grad_loss.to(grad.dtype)
        if ctx.has[1]:
            grad_weight = (saved.pop(0) * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None


def token_cross_entropy(
    hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over trained tokens, the number predicted right, and how many there were.

    `hidden` is the decoder's last hidden state [B, L, d]; position t predicts token t+1.
    """
    keep, targets = trained_positions(labels)
    picked = hidden[:, :-1][keep].to(lm_head.weight.dtype)  # autocast's bf16 states meet fp32 weights (full fine-tuning)
    count = keep.sum()
    if lm_head.bias is not None:  # no fused path for biased heads (rare in causal LMs): plain, unchunked
        logits = lm_head(picked).float()
        return F.cross_entropy(logits, targets, reduction="sum"), (logits.argmax(-1) == targets).sum(), count
    loss, correct = FusedLinearCrossEntropy.apply(picked, lm_head.weight, targets, torch.is_grad_enabled())
    return loss, correct, count


def _chunk_logprobs(h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    logits = (h @ weight.T).float()
    return logits.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def sequence_logprobs(
    hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor, sequence_ids: torch.Tensor, n_sequences: int
) -> torch.Tensor:
    """Sum of log p(trained token) per sequence: [n_sequences]. `sequence_ids` [B, L] says which
    sequence each position belongs to (packed rows hold several)."""
    keep, targets = trained_positions(labels)
    picked = hidden[:, :-1][keep].to(lm_head.weight.dtype)
    owners = sequence_ids[:, 1:][keep]
    parts = []
    for start in range(0, picked.shape[0], CHUNK_TOKENS):
        args = (picked[start : start + CHUNK_TOKENS], lm_head.weight, targets[start : start + CHUNK_TOKENS])
        parts.append(
            checkpoint(_chunk_logprobs, *args, use_reentrant=False) if torch.is_grad_enabled() else _chunk_logprobs(*args)
        )
    token_logprobs = torch.cat(parts) if parts else picked.new_zeros(0, dtype=torch.float32)
    return torch.zeros(n_sequences, dtype=torch.float32, device=hidden.device).index_add(0, owners, token_logprobs)


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO (sigmoid) loss per pair, and the implicit rewards: beta * (policy - reference) log-ratio."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    losses = -F.logsigmoid(margin)
    return losses, {"chosen": chosen_reward.detach(), "rejected": rejected_reward.detach(), "margin": margin.detach()}
