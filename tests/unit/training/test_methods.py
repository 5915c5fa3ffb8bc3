"""Every training type and method trains the tiny model: the loss falls and what is trainable changes.
QLoRA (torchao's NF4 base) and packed rows run here on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneserve.training.run import train

from tests.unit.training.conftest import make_spec, read_events

pytestmark = pytest.mark.training  # runs a real training loop: not in make test-fast

CUDA = torch.cuda.is_available()


def train_losses(job_dir: Path) -> list[float]:
    return [e["train_loss"] for e in read_events(job_dir) if e["type"] == "metrics" and "train_loss" in e]


def first_vs_last_epoch(losses: list[float], per_epoch: int) -> tuple[float, float]:
    return sum(losses[:per_epoch]) / per_epoch, sum(losses[-per_epoch:]) / per_epoch


@pytest.mark.parametrize(
    "training_type, lora, lr, trained_key",
    [
        ("ia3", {}, 5e-2, "ia3_l"),
        ("lora", {"r": 8, "alpha": 16, "use_dora": True}, 2e-2, "lora_magnitude_vector"),
        ("lora", {"r": 8, "alpha": 16, "use_rslora": True}, 2e-2, "lora_B"),
    ],
)
def test_adapter_types_learn(data_dir, tmp_path, training_type, lora, lr, trained_key):
    spec = make_spec(
        data_dir / "train.jsonl", training_type=training_type, lora=lora, max_seq_length=64, hyperparameters={"learning_rate": lr}
    )
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

    spec = make_spec(
        data_dir / "train.jsonl", training_type="full", max_seq_length=64, hyperparameters={"learning_rate": 1e-3, "n_epochs": 2}
    )
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
    spec = make_spec(
        data,
        method="dpo",
        training_type=training_type,
        max_seq_length=192,
        hyperparameters={"n_epochs": 4, "batch_size": 4, "learning_rate": lr, "beta": 0.1},
    )
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


# --- QLoRA: the base's linear layers as frozen NF4 (training.quantize), LoRA on top -------------------


def linear_layers(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 0.135), (torch.bfloat16, 0.265)])
def test_nf4_holds_every_linear_weight_but_the_head_in_about_4_bits(tiny_model_dir, dtype, bound):
    """Measured on the tiny model: 0.132 of the fp32 bytes, 0.261 of the bf16 ones (4.2 bits a weight:
    4-bit codes, an int8 scaler per 64 weights, a factor per scaler block); 9% relative error."""
    from transformers import AutoModelForCausalLM

    from tuneserve.training.quantize import FrozenNF4Linear, is_nf4, quantize_nf4, weight_bytes

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
    originals = {name: m.weight.detach().clone() for name, m in linear_layers(model).items() if name != "lm_head"}
    before, total_before = sum(w.numel() * w.element_size() for w in originals.values()), weight_bytes(model)
    names = quantize_nf4(model)
    assert sorted(names) == sorted(originals) and len(names) == 14  # 7 per decoder layer; not the (tied) LM head
    after = 0
    for name in names:
        module = model.get_submodule(name)
        assert isinstance(module, FrozenNF4Linear) and is_nf4(module.weight) and not module.weight.requires_grad
        assert module.weight.dtype == dtype  # the compute dtype it dequantizes to
        restored, original = module.weight.get_original_weight().float(), originals[name].float()
        assert (restored - original).norm() / original.norm() < 0.12
        after += weight_bytes(module)
    assert after < bound * before, f"NF4 holds {after / before:.3f} of the {dtype} bytes"
    assert total_before - weight_bytes(model) == before - after  # the helper counts the whole model the same way
    assert not is_nf4(model.lm_head.weight) and model.lm_head.weight is model.model.embed_tokens.weight
    assert quantize_nf4(model) == []  # already quantized


@pytest.mark.parametrize("adapter", ["lora", "ia3"])
def test_peft_wraps_nf4_layers_and_only_the_adapter_gets_gradients(tiny_model_dir, adapter):
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneserve.training.quantize import is_nf4, quantize_nf4

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    quantize_nf4(model)
    config = (
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        if adapter == "lora"
        else IA3Config(task_type="CAUSAL_LM")
    )
    peft_model = get_peft_model(model, config)
    ids = torch.randint(0, 1000, (2, 16))
    peft_model(input_ids=ids, labels=ids).loss.backward()
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" if adapter == "lora" else "ia3_") in n for n in trainable)
    assert {n for n, p in peft_model.named_parameters() if p.grad is not None} == trainable
    assert sum(is_nf4(p) for p in peft_model.parameters()) == 14


def test_qlora_refuses_dora(data_dir, tiny_model_dir):
    from tuneserve.training.model import load

    spec = make_spec(data_dir / "train.jsonl", training_type="qlora", lora={"r": 8, "alpha": 16, "use_dora": True})
    with pytest.raises(ValueError, match="DoRA"):
        load(spec, tiny_model_dir, events=None)


@pytest.fixture(scope="module")
def qlora_run(data_dir, tmp_path_factory):
    """One 3-epoch QLoRA run (4 steps an epoch), in the precision this machine trains in."""
    job_dir = tmp_path_factory.mktemp("qlora")
    spec = make_spec(data_dir / "train.jsonl", training_type="qlora", max_seq_length=64)
    return {"spec": spec, "job_dir": job_dir, "result": train(spec, job_dir)}


def test_qlora_trains_a_4bit_base_on_this_machine(qlora_run):
    job_dir = qlora_run["job_dir"]
    messages = [e["message"] for e in read_events(job_dir) if e["type"] == "message"]
    assert any("for qlora (NF4 weights in 14 linear layers" in m for m in messages), messages
    first, last = first_vs_last_epoch(train_losses(job_dir), 4)  # measured in fp32: 10.62 -> 10.29
    assert last < first - 0.1


def test_qlora_adapter_holds_only_lora_weights_and_serves_on_the_unquantized_base(qlora_run, tiny_model_dir, tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneserve.export import export_merged
    from tuneserve.models import TINY_RANDOM
    from tuneserve.training.quantize import FrozenNF4Linear

    adapter = Path(qlora_run["result"]["adapter_path"])
    for directory in (adapter, qlora_run["job_dir"] / "checkpoints" / "step-4"):
        tensors = load_file(directory / "adapter_model.safetensors")
        assert len(tensors) == 28 and all(".lora_A." in k or ".lora_B." in k for k in tensors), sorted(tensors)[:4]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == TINY_RANDOM

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who is Ada?"}, {"role": "assistant", "content": "Ada is a friend of Nova."}],
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]

    def loss(model) -> float:
        with torch.no_grad():
            return model(input_ids=ids, labels=ids).loss.item()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    base_loss = loss(base)
    served = PeftModel.from_pretrained(base, adapter)  # as inference/ and export load it: on the full-precision base
    assert not any(isinstance(m, FrozenNF4Linear) for m in served.modules())
    served_loss = loss(served)
    assert served_loss < base_loss - 0.1  # what was learnt on the NF4 base carries over
    merged = AutoModelForCausalLM.from_pretrained(export_merged(adapter, TINY_RANDOM, tmp_path / "merged"), dtype=torch.float32)
    assert loss(merged) == pytest.approx(served_loss, abs=1e-4)


def test_qlora_resumes_exactly(qlora_run, tmp_path):
    import shutil

    shutil.copytree(qlora_run["job_dir"] / "checkpoints" / "step-4", tmp_path / "checkpoints" / "step-4")
    result = train(qlora_run["spec"], tmp_path)
    assert any(e["message"].startswith("Resumed from checkpoint step-4") for e in read_events(tmp_path) if e["type"] == "message")
    assert result["train_loss"] == pytest.approx(qlora_run["result"]["train_loss"], rel=1e-5)
    a = load_file(Path(qlora_run["result"]["adapter_path"]) / "adapter_model.safetensors")
    b = load_file(tmp_path / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_padding_free_packed_rows_train(data_dir, tmp_path):
    """Packed rows train everywhere: flash-attention varlen where installed, else SDPA's block-diagonal mask."""
    spec = make_spec(data_dir / "train.jsonl", max_seq_length=64, optimization={"packing": "padding_free"})
    train(spec, tmp_path)
    messages = [e["message"] for e in read_events(tmp_path) if e["type"] == "message"]
    attention = "flash_attention_2" if CUDA and importlib.util.find_spec("flash_attn") else "sdpa"
    assert any(f"padding-free packed rows ({attention})" in m for m in messages)
    first, last = first_vs_last_epoch(train_losses(tmp_path), 4)
    assert last < first
