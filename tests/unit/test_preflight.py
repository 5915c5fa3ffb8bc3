"""The vLLM preflight (jobs/preflight.py): every adapter vLLM would refuse is a 400 naming its parameter,
with code adapter_rejected_by_upstream; tuneserve's defaults (r=16, all-linear) pass."""

from __future__ import annotations

import json

import pytest

from tuneserve.errors import InvalidRequest, NotFound
from tuneserve.jobs.preflight import (
    CODE,
    LORA_MODULES,
    check_adapter_dir_for_vllm,
    check_adapter_for_vllm,
    check_spec_for_vllm,
    model_type_of,
)
from tuneserve.training.spec import Hyperparameters, LoraSpec, TrainingSpec


def refused(call, *args, **kwargs) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        call(*args, **kwargs)
    assert info.value.status == 400
    return info.value


def test_defaults_pass_for_every_known_architecture():
    for model_type in [*LORA_MODULES, None, "some-new-arch"]:
        check_adapter_for_vllm(LoraSpec(), model_type=model_type, max_lora_rank=16)


def test_rank_over_the_server_max_is_refused_with_the_rank_to_start_vllm_with():
    error = refused(check_adapter_for_vllm, LoraSpec(r=64), model_type="llama", max_lora_rank=16)
    assert (error.param, error.code) == ("lora.r", CODE)
    assert "64" in error.message and "max_lora_rank 16" in error.message and "--max-lora-rank 64" in error.message
    check_adapter_for_vllm(LoraSpec(r=64), model_type="llama", max_lora_rank=64)  # the server's max is configurable
    assert "--max-lora-rank 32" in refused(check_adapter_for_vllm, {"r": 17}, model_type=None, max_lora_rank=16).message


def test_dora_is_refused():
    error = refused(check_adapter_for_vllm, LoraSpec(), model_type="llama", max_lora_rank=16, use_dora=True)
    assert (error.param, error.code) == ("lora.use_dora", CODE)
    assert "DoRA" in error.message


def test_modules_to_save_is_refused():
    error = refused(check_adapter_for_vllm, LoraSpec(), model_type="qwen2", max_lora_rank=16, modules_to_save=["lm_head"])
    assert (error.param, error.code) == ("lora.modules_to_save", CODE)
    assert "lm_head" in error.message


@pytest.mark.parametrize("module", ["lm_head", "embed_tokens", "model.embed_tokens"])
def test_embeddings_and_the_lm_head_are_refused_for_any_architecture(module):
    for model_type in ("llama", None):
        error = refused(
            check_adapter_for_vllm, LoraSpec(target_modules=["q_proj", module]), model_type=model_type, max_lora_rank=16
        )
        assert (error.param, error.code) == ("lora.target_modules", CODE)
        assert module in error.message


def test_modules_vllm_cannot_apply_lora_to_for_the_architecture_are_refused():
    # Phi-3 is fused in transformers too: its adapters name qkv_proj / gate_up_proj, not q_proj.
    error = refused(check_adapter_for_vllm, LoraSpec(target_modules=["q_proj", "v_proj"]), model_type="phi3", max_lora_rank=16)
    assert (error.param, error.code) == ("lora.target_modules", CODE)
    assert "phi3" in error.message and "qkv_proj" in error.message
    check_adapter_for_vllm(LoraSpec(target_modules=["qkv_proj", "gate_up_proj"]), model_type="phi3", max_lora_rank=16)
    # Mixtral's experts need FusedMoE LoRA: attention only.
    assert refused(check_adapter_for_vllm, {"target_modules": ["w1"]}, model_type="mixtral", max_lora_rank=16).code == CODE
    # A norm is no linear layer.
    norm = {"target_modules": ["input_layernorm"]}
    assert refused(check_adapter_for_vllm, norm, model_type="llama", max_lora_rank=16).code == CODE


def test_explicit_linear_modules_and_full_names_pass():
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "model.layers.0.self_attn.q_proj"]
    for model_type in ("llama", "mistral", "qwen2"):
        check_adapter_for_vllm(LoraSpec(target_modules=targets), model_type=model_type, max_lora_rank=16)


def test_vision_tower_modules_are_refused():
    error = refused(
        check_adapter_for_vllm, {"target_modules": ["vision_tower.encoder.q_proj"]}, model_type=None, max_lora_rank=16
    )
    assert error.param == "lora.target_modules" and "vision" in error.message


def test_a_peft_regex_is_refused_when_it_reaches_the_lm_head():
    assert (
        refused(check_adapter_for_vllm, {"target_modules": r".*(q_proj|lm_head)"}, model_type="llama", max_lora_rank=16).code
        == CODE
    )
    check_adapter_for_vllm({"target_modules": r".*\.(q_proj|v_proj)"}, model_type="llama", max_lora_rank=16)


def test_model_type_comes_from_config_json_without_torch(tmp_path):
    assert model_type_of("tuneserve/tiny-random") == "llama"
    model_dir = tmp_path / "phi"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    assert model_type_of(str(model_dir)) == "phi3"
    assert model_type_of(str(tmp_path / "nothing-here")) is None


def _adapter_dir(tmp_path, **config):
    directory = tmp_path / "adapter"
    directory.mkdir(parents=True)
    base = {
        "peft_type": "LORA",
        "r": 16,
        "lora_alpha": 32,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "tuneserve/tiny-random",
        "use_dora": False,
        "modules_to_save": None,
    }
    (directory / "adapter_config.json").write_text(json.dumps({**base, **config}))
    (directory / "adapter_model.safetensors").write_bytes(b"")
    return directory


def test_adapter_dir_passes_and_is_refused_by_the_same_rules(tmp_path):
    check_adapter_dir_for_vllm(_adapter_dir(tmp_path / "ok"), 16)
    assert refused(check_adapter_dir_for_vllm, _adapter_dir(tmp_path / "r", r=32), 16).param == "r"
    assert refused(check_adapter_dir_for_vllm, _adapter_dir(tmp_path / "d", use_dora=True), 16).param == "use_dora"
    assert (
        refused(check_adapter_dir_for_vllm, _adapter_dir(tmp_path / "m", modules_to_save=["embed_tokens"]), 16).param
        == "modules_to_save"
    )
    assert (
        refused(check_adapter_dir_for_vllm, _adapter_dir(tmp_path / "t", target_modules=["lm_head"]), 16).param
        == "target_modules"
    )
    assert refused(check_adapter_dir_for_vllm, _adapter_dir(tmp_path / "i", peft_type="IA3"), 16).param == "peft_type"


def test_a_missing_adapter_dir_or_config_is_a_404_on_lora_path(tmp_path):
    """No adapter there is a reference to nothing (404, as schemathesis expects of a well-formed request)."""
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(NotFound) as info:
            check_adapter_dir_for_vllm(where, 16)
        assert (info.value.status, info.value.param, info.value.code) == (404, "lora_path", "adapter_not_found")


def _spec(**kwargs) -> TrainingSpec:
    hp = Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1, learning_rate=1e-4)
    return TrainingSpec(model="tuneserve/tiny-random", training_file="train.jsonl", hyperparameters=hp, **kwargs)


def test_the_job_preflight_checks_the_spec_or_the_adapter_it_continues_from(tmp_path):
    check_spec_for_vllm(_spec(), max_lora_rank=16)
    assert refused(check_spec_for_vllm, _spec(lora=LoraSpec(r=64)), max_lora_rank=16).param == "lora.r"
    # Continued fine-tuning keeps the starting adapter's shape (not the spec's): that one is checked.
    start = _adapter_dir(tmp_path, r=32)
    assert refused(check_spec_for_vllm, _spec(init_adapter=str(start)), max_lora_rank=16).param == "lora.r"
    check_spec_for_vllm(_spec(init_adapter=str(start)), max_lora_rank=32)
