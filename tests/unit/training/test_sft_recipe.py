"""The SFT LoRA recipe on the tiny random model: it learns, checkpoints, reports, and resumes exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneserve.data import load_examples
from tuneserve.data.formatting import format_examples
from tuneserve.training.loop import latest_checkpoint, lr_factor

from tests.unit.training.conftest import read_events

pytestmark = pytest.mark.training  # runs a real training loop: not in make test-fast

METRICS_KEYS = {
    "type",
    "time",
    "step",
    "total_steps",
    "epoch",
    "train_loss",
    "train_mean_token_accuracy",
    "learning_rate",
    "tokens_per_second",
}
RESULT_KEYS = {"type", "time", "trained_tokens", "train_runtime_s", "train_loss", "model_path", "adapter_path", "kept_checkpoint"}


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def test_loss_falls_and_lora_weights_change(trained_run):
    checkpoints = of_type(trained_run["events"], "checkpoint")
    epoch_losses = [c["metrics"]["train_loss"] for c in checkpoints]
    assert len(epoch_losses) == 3
    assert epoch_losses[-1] < epoch_losses[0]
    valid_losses = [c["metrics"]["valid_loss"] for c in checkpoints]
    assert valid_losses[-1] < valid_losses[0]

    tensors = load_file(trained_run["job_dir"] / "final" / "adapter_model.safetensors")
    lora_b = {k: v for k, v in tensors.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # PEFT starts every B at zero


def test_checkpoints_and_final_adapter_are_complete(trained_run):
    job_dir: Path = trained_run["job_dir"]
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["step-12", "step-4", "step-8"]  # no temp dirs left
    for directory in [*(job_dir / "checkpoints").iterdir(), job_dir / "final"]:
        for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja"):
            assert (directory / name).is_file(), f"{directory.name}/{name}"
        config = json.loads((directory / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "tuneserve/tiny-random"
        assert config["r"] == 8 and config["lora_alpha"] == 16
    assert (job_dir / "checkpoints" / "step-4" / "trainer_state.pt").is_file()
    assert not (job_dir / "final" / "trainer_state.pt").exists()
    assert latest_checkpoint(job_dir) == job_dir / "checkpoints" / "step-12"


def test_events_follow_the_contract(trained_run):
    events = trained_run["events"]
    assert events[0]["message"] == "Fine-tuning job started"
    assert any(e["type"] == "message" and '"learning_rate": 0.02' in e["message"] for e in events)  # the resolved spec
    assert all("time" in e for e in events)

    warnings = [e for e in events if e["type"] == "message" and e["level"] == "warn"]
    assert len(warnings) == 1 and "Dropped 1 of 17 training examples" in warnings[0]["message"]

    train_metrics = [e for e in of_type(events, "metrics") if "train_loss" in e]
    assert [e["step"] for e in train_metrics] == [2, 4, 6, 8, 10, 12]  # logging_steps=2
    assert all(set(e) == METRICS_KEYS and e["total_steps"] == 12 for e in train_metrics)
    assert [e["epoch"] for e in train_metrics] == [1, 1, 2, 2, 3, 3]
    assert train_metrics[0]["learning_rate"] > train_metrics[-1]["learning_rate"] > 0
    assert all(e["tokens_per_second"] > 0 and 0 <= e["train_mean_token_accuracy"] <= 1 for e in train_metrics)

    valid_metrics = [e for e in of_type(events, "metrics") if "valid_loss" in e]
    assert [(e["step"], e["epoch"]) for e in valid_metrics] == [(4, 1), (8, 2), (12, 3)]
    (full,) = [e for e in of_type(events, "metrics") if "full_valid_loss" in e]
    assert full["step"] == 12 and 0 <= full["full_valid_mean_token_accuracy"] <= 1

    checkpoints = of_type(events, "checkpoint")
    assert [(c["step"], c["epoch"], c["path"]) for c in checkpoints] == [
        (4, 1, "checkpoints/step-4"),
        (8, 2, "checkpoints/step-8"),
        (12, 3, "checkpoints/step-12"),
    ]
    assert set(checkpoints[0]["metrics"]) == {
        "step",
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    }

    (result,) = of_type(events, "result")
    assert set(result) == RESULT_KEYS and result == trained_run["result"]
    assert result["train_loss"] == checkpoints[-1]["metrics"]["train_loss"]
    assert result["adapter_path"] == str(trained_run["job_dir"] / "final")
    assert (Path(result["model_path"]) / "config.json").is_file()
    assert result["train_runtime_s"] > 0


def test_trained_tokens_counts_every_non_pad_input_token(trained_run, tokenizer):
    spec = trained_run["spec"]
    formatted, _ = format_examples(tokenizer, load_examples(Path(spec.training_file)), spec.max_seq_length)
    assert len(formatted) == 16
    assert trained_run["result"]["trained_tokens"] == 3 * sum(len(f.input_ids) for f in formatted)


def test_resume_from_a_checkpoint_ends_with_the_same_adapter(trained_run, tmp_path):
    from tuneserve.training.run import train

    job_a: Path = trained_run["job_dir"]
    job_b = tmp_path / "job-b"
    shutil.copytree(job_a / "checkpoints" / "step-8", job_b / "checkpoints" / "step-8")
    (job_b / "checkpoints" / ".step-12.tmp-999").mkdir()  # a crashed save: must be ignored
    result = train(trained_run["spec"], job_b)

    events = read_events(job_b)
    assert any(e["type"] == "message" and e["message"].startswith("Resumed from checkpoint step-8") for e in events)
    assert [c["step"] for c in of_type(events, "checkpoint")] == [12]
    assert [e["step"] for e in of_type(events, "metrics") if "train_loss" in e] == [10, 12]
    assert result["trained_tokens"] == trained_run["result"]["trained_tokens"]
    assert result["train_loss"] == pytest.approx(trained_run["result"]["train_loss"], rel=1e-5)

    final_a = load_file(job_a / "final" / "adapter_model.safetensors")
    final_b = load_file(job_b / "final" / "adapter_model.safetensors")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.allclose(final_a[key], final_b[key], rtol=1e-5, atol=1e-6), key


def test_init_adapter_continues_from_a_trained_adapter(trained_run, tmp_path):
    from tuneserve.training.run import train

    spec = trained_run["spec"].model_copy(update={"init_adapter": str(trained_run["job_dir"] / "final"), "logging_steps": 1})
    train(spec, tmp_path / "job-c")

    events = read_events(tmp_path / "job-c")
    assert any(e["type"] == "message" and e["message"].startswith("Continuing from adapter") for e in events)
    first_loss = next(e["train_loss"] for e in events if e["type"] == "metrics" and "train_loss" in e)
    fresh_first_loss = next(e["train_loss"] for e in trained_run["events"] if e["type"] == "metrics" and "train_loss" in e)
    assert first_loss < fresh_first_loss  # it starts where the first run ended, not from a zero LoRA


def test_schedule_warms_up_then_decays_to_zero():
    factor = lr_factor("linear", warmup_steps=2, total_steps=10, min_ratio=0.0)
    assert [factor(s) for s in range(3)] == [0.5, 1.0, 1.0]
    assert factor(9) == pytest.approx(1 / 8) and factor(10) == 0.0
    assert all(factor(s) > factor(s + 1) for s in range(2, 10))


def test_incomplete_checkpoints_are_never_resumed_from(tmp_path):
    (tmp_path / "checkpoints" / "step-30").mkdir(parents=True)  # adapter but no trainer state
    (tmp_path / "checkpoints" / "step-30" / "adapter_model.safetensors").write_bytes(b"")
    complete = tmp_path / "checkpoints" / "step-20"
    complete.mkdir()
    for name in ("adapter_model.safetensors", "trainer_state.pt"):
        (complete / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == complete
    assert latest_checkpoint(tmp_path / "nothing-here") is None
