"""Fixtures for the inference engine tests: one shared inference engine, the tiny model, LoRA adapters."""

from __future__ import annotations

import pytest

from tuneserve.inference.engine import Engine
from tuneserve.models import TINY_RANDOM, resolve_model


@pytest.fixture(scope="session")
def tiny() -> str:
    return TINY_RANDOM


@pytest.fixture(scope="session")
def inference_engine():
    inference_engine = Engine()
    yield inference_engine
    inference_engine.close()


def _build_adapter(out, seed: int):
    """A LoRA adapter on tiny-random whose lora_B is random, so it really changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(TINY_RANDOM)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT initialises B to zero: a fresh adapter is a no-op
                param.copy_(torch.randn(param.shape, generator=generator))
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)  # as training does: tokenizer beside it
    return out


@pytest.fixture(scope="session")
def adapter_a(tmp_path_factory):
    return _build_adapter(tmp_path_factory.mktemp("job-a") / "final", seed=1)


@pytest.fixture(scope="session")
def adapter_b(tmp_path_factory):
    return _build_adapter(tmp_path_factory.mktemp("job-b") / "final", seed=2)
