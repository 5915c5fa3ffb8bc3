"""The sampler's draw (inference/logits._draw): in proportion to the weights, never a zero-weight token, and the
same draws for the same seed."""

from __future__ import annotations

import torch

from tuneserve.inference.logits import _draw, _sample


def _counts(weights: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(weights.numel())
    for _ in range(n):
        counts[_draw(weights, generator)] += 1
    return counts


def test_draws_follow_the_weights_and_skip_zero_weights():
    weights = torch.tensor([0.1, 0.0, 0.6, 0.0, 0.3, 0.0])  # zeros between, and at the end
    counts = _counts(weights, 6000)
    assert counts[1] == counts[3] == counts[5] == 0
    shares = counts / counts.sum()
    assert torch.allclose(shares[[0, 2, 4]], torch.tensor([0.1, 0.6, 0.3]), atol=0.03), shares


def test_unnormalized_weights_and_a_single_token():
    assert torch.equal(_counts(torch.tensor([0.0, 5.0, 0.0]), 50), torch.tensor([0.0, 50.0, 0.0]))
    shares = _counts(torch.tensor([2.0, 6.0]), 4000) / 4000
    assert abs(float(shares[1]) - 0.75) < 0.03


def test_same_seed_same_tokens_and_top_p_keeps_the_head():
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(1))
    first = [_sample(logits, 1.0, g) for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    again = [_sample(logits, 1.0, g) for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    assert first == again
    tight = torch.tensor([8.0, 7.9, 7.8] + [0.0] * 100)  # the three first tokens hold nearly all the mass
    generator = torch.Generator().manual_seed(3)
    assert {_sample(tight, 0.5, generator) for _ in range(200)} <= {0, 1, 2}
