"""Every training type and method trains the tiny model: the loss falls and what is trainable changes.
QLoRA needs CUDA and bitsandbytes, so it is skipped here; so is flash-attention."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneserve.training.run import train

from tests.unit.training.conftest import make_spec, read_events

CUDA = torch.cuda.is_available()


def train_losses(job_dir: Path) -> list[float]:
    return [e["train_loss"] for e in read_events(job_dir) if e["type"] == "metrics" and "train_loss" in e]


def first_vs_last_epoch(losses: list[float], per_epoch: int) -> tuple[float, float]:
    return sum(losses[:per_epoch]) / per_epoch, sum(losses[-per_epoch:]) / per_epoch


@pytest.mark.parametrize("training_type, lora, lr, trained_key", [
    ("ia3", {}, 5e-2, "ia3_l"),
    ("lora", {"r": 8, "alpha": 16, "use_dora": True}, 2e-2, "lora_magnitude_vector"),
    ("lora", {"r": 8, "alpha": 16, "use_rslora": True}, 2e-2, "lora_B"),
])
def test_adapter_types_learn(data_dir, tmp_path, training_type, lora, lr, trained_key):
    spec = make_spec(data_dir / "train.jsonl", training_type=training_type, lora=lora, max_seq_length=64,
                     hyperparameters={"learning_rate": lr})
    result = train(spec, tmp_path)
    first, last = first_vs_last_epoch(train_losses(tmp_path), 4)
    assert last < first
    config = json.loads((tmp_path / "final" / "adapter_config.json").read_text())
    assert config["peft_type"] == ("IA3" if training_type == "ia3" else "LORA")
    assert config.get("use_dora", False) == lora.get("use_dora", False)
    assert config.get("use_rslora", False) == lora.get("use_rslora", False)
    tensors = load_file(Path(result["adapter_path"]) / "adapter_model.safetensors")
    changed = [k for k, v in tensors.items() if trained_key in k]
    assert changed, sorted(tensors)[:5]
    if training_type == "ia3":  # IA3 vectors start at exactly 1
        assert any(not torch.allclose(tensors[k], torch.ones_like(tensors[k])) for k in changed)


def test_full_fine_tuning_changes_every_weight_and_saves_a_whole_model(data_dir, tmp_path, tiny_model_dir):
    spec = make_spec(data_dir / "train.jsonl", training_type="full", max_seq_length=64, hyperparameters={"learning_rate": 1e-3})
    train(spec, tmp_path)
    first, last = first_vs_last_epoch(train_losses(tmp_path), 4)
    assert last < first
    final = tmp_path / "final"
    assert (final / "config.json").is_file() and not (final / "adapter_config.json").exists()
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(final / "model.safetensors")
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert len(changed) >= 0.9 * len(before), f"{len(changed)} of {len(before)} tensors changed"
    assert (tmp_path / "checkpoints" / "step-4" / "model.safetensors").is_file()


def test_full_fine_tuning_resumes_exactly(data_dir, tmp_path):
    import shutil

    spec = make_spec(data_dir / "train.jsonl", training_type="full", max_seq_length=64,
                     hyperparameters={"learning_rate": 1e-3, "n_epochs": 2})
    train(spec, tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-4", tmp_path / "b" / "checkpoints" / "step-4")
    train(spec, tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "final" / "model.safetensors"), load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# The first 8 pairs of LLaMA-Factory's dpo_en_demo.json (ShareGPT preference format), kept in the repo
# so CI trains on them from a clean clone.
DPO_SUBSET = Path(__file__).parent / "data" / "dpo_en_demo_8.json"


@pytest.mark.parametrize("training_type", ["lora", "full"])
def test_dpo_on_dpo_en_demo_learns_the_preference(tmp_path, training_type):
    data = DPO_SUBSET
    lr = 5e-3 if training_type == "lora" else 1e-4
    spec = make_spec(data, method="dpo", training_type=training_type, max_seq_length=192,
                     hyperparameters={"n_epochs": 4, "batch_size": 4, "learning_rate": lr, "beta": 0.1})
    result = train(spec, tmp_path / "job")
    metrics = [e for e in read_events(tmp_path / "job") if e["type"] == "metrics" and "train_loss" in e]
    assert len(metrics) == 8
    # DPO's loss starts at log 2 (policy == reference) and falls as the chosen answers win.
    assert metrics[0]["train_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.05
    assert metrics[-1]["rewards_margin"] > 0 and metrics[-1]["rewards_accuracy"] > 0.5
    assert {"rewards_chosen", "rewards_rejected"} <= set(metrics[-1])
    assert Path(result["adapter_path"]).is_dir()


def test_preference_data_is_refused_by_sft_and_chat_data_by_dpo(data_dir, tmp_path):
    from tuneserve.data.records import DataError

    spec = make_spec(data_dir / "train.jsonl", method="dpo", hyperparameters={"beta": 0.1})
    with pytest.raises(DataError, match="preference pairs"):
        train(spec, tmp_path)


@pytest.mark.skipif(not CUDA or importlib.util.find_spec("bitsandbytes") is None, reason="QLoRA needs CUDA and bitsandbytes")
def test_qlora_trains_a_4bit_base(data_dir, tmp_path):
    spec = make_spec(data_dir / "train.jsonl", training_type="qlora", max_seq_length=64)
    train(spec, tmp_path)
    first, last = first_vs_last_epoch(train_losses(tmp_path), 4)
    assert last < first


@pytest.mark.skipif(not CUDA or importlib.util.find_spec("flash_attn") is None, reason="flash-attention needs CUDA and flash_attn")
def test_padding_free_flash_attention_trains(data_dir, tmp_path):
    spec = make_spec(data_dir / "train.jsonl", max_seq_length=64, optimization={"packing": "padding_free"})
    train(spec, tmp_path)
    messages = [e["message"] for e in read_events(tmp_path) if e["type"] == "message"]
    assert any("padding-free flash-attention" in m for m in messages)
    first, last = first_vs_last_epoch(train_losses(tmp_path), 4)
    assert last < first
