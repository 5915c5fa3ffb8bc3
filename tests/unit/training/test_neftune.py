"""NEFTune: noise on the input embeddings while training only, of the scale the paper gives."""

from __future__ import annotations

import math

import torch

from tests.unit.training.conftest import make_spec
from tuneserve.training import model as model_io
from tuneserve.training.events import NullEventWriter


def test_noise_while_training_within_alpha_over_sqrt_length_times_width(tmp_path, tiny_model_dir):
    loaded = model_io.load(make_spec(tmp_path / "t.jsonl", neftune_noise_alpha=5.0), tiny_model_dir, NullEventWriter())
    embed = loaded.causal_lm.get_input_embeddings()
    ids = torch.arange(10, 22).unsqueeze(0).to(loaded.device)
    clean = torch.nn.functional.embedding(ids, embed.weight)
    bound = 5.0 / math.sqrt(ids.shape[1] * clean.shape[-1])

    loaded.model.train()
    noisy_a, noisy_b = embed(ids), embed(ids)
    assert not torch.equal(noisy_a, noisy_b)  # fresh noise each pass
    assert (noisy_a - clean).abs().max() <= bound * (1 + 1e-5)
    assert (noisy_a - clean).abs().max() > bound / 2  # uniform noise reaches near its bound over 12 x width draws

    loaded.model.eval()
    assert torch.equal(embed(ids), clean)


def test_no_noise_by_default(tmp_path, tiny_model_dir):
    loaded = model_io.load(make_spec(tmp_path / "t.jsonl"), tiny_model_dir, NullEventWriter())
    embed = loaded.causal_lm.get_input_embeddings()
    loaded.model.train()
    ids = torch.arange(5).unsqueeze(0).to(loaded.device)
    assert torch.equal(embed(ids), embed(ids))
