"""The shared loop: a paused run resumes to exactly where an uninterrupted one ends; packing and
gradient accumulation change speed and memory, not the numbers; schedules and batch plans."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneserve.data import load_examples
from tuneserve.training.batching import collate_packed, collate_padded, epoch_plan, micro_batches
from tuneserve.data.formatting import format_examples
from tuneserve.training.loop import latest_checkpoint, lr_factor
from tuneserve.training.losses import token_cross_entropy
from tuneserve.training.run import train

from tests.unit.training.conftest import make_spec, read_events

pytestmark = pytest.mark.training  # runs a real training loop: not in make test-fast


def assert_same_adapter(dir_a: Path, dir_b: Path, atol: float = 1e-6) -> None:
    a, b = load_file(dir_a / "adapter_model.safetensors"), load_file(dir_b / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=atol), key


def test_a_paused_run_resumes_to_the_same_result(trained_run, tmp_path):
    """Stop after step 5 (mid-epoch 2 of 3), then run again: same steps, same final adapter."""
    spec, job_dir = trained_run["spec"], tmp_path / "job"
    calls = {"n": 0}

    def stop_after_five() -> bool:
        calls["n"] += 1
        return calls["n"] >= 5

    stopped = train(spec, job_dir, stop_requested=stop_after_five)
    assert stopped == {"type": "stopped", "step": 5}
    assert latest_checkpoint(job_dir) == job_dir / "checkpoints" / "step-5"
    events = read_events(job_dir)
    assert [c["step"] for c in events if c["type"] == "checkpoint"] == [4, 5]
    assert not any(e["type"] == "result" for e in events)

    result = train(spec, job_dir)
    events = read_events(job_dir)
    assert [e["step"] for e in events if e["type"] == "metrics" and "train_loss" in e] == [2, 4, 6, 8, 10, 12]
    assert [c["step"] for c in events if c["type"] == "checkpoint"] == [4, 5, 8, 12]
    assert result["trained_tokens"] == trained_run["result"]["trained_tokens"]
    assert result["train_loss"] == pytest.approx(trained_run["result"]["train_loss"], rel=1e-5)
    assert_same_adapter(trained_run["job_dir"] / "final", job_dir / "final")


def test_gradient_accumulation_gives_the_same_update(data_dir, tmp_path):
    base = dict(max_seq_length=64, hyperparameters={"n_epochs": 1})  # fp32: bf16 rounding would hide the comparison
    train(make_spec(data_dir / "train.jsonl", optimization={"precision": "fp32"}, **base), tmp_path / "one")
    train(
        make_spec(data_dir / "train.jsonl", optimization={"gradient_accumulation_steps": 2, "precision": "fp32"}, **base),
        tmp_path / "two",
    )
    losses = [[e["train_loss"] for e in read_events(tmp_path / d) if e["type"] == "metrics"] for d in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # Summation order differs, and Adam magnifies float noise in near-zero gradients: 1e-4 on weights of ~0.1.
    assert_same_adapter(tmp_path / "one" / "final", tmp_path / "two" / "final", atol=1e-4)


def test_packed_rows_give_the_loss_of_padded_rows(data_dir, tokenizer, tiny_model_dir):
    """No example attends to another in a packed row: the summed loss matches the padded batch within 1e-4 relative."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    examples, _ = format_examples(tokenizer, load_examples(data_dir / "train.jsonl"), 64)
    batch = examples[:6]
    padded = collate_padded(batch, tokenizer.eos_token_id, torch.device("cpu"))
    packed = collate_packed(batch, torch.device("cpu"))
    assert packed.input_ids.shape[0] == 1 and packed.n_tokens == padded.n_tokens == sum(len(e.input_ids) for e in batch)
    with torch.no_grad():
        results = []
        for b in (padded, packed):
            hidden = model.model(**b.model_inputs(), use_cache=False).last_hidden_state
            results.append(token_cross_entropy(hidden, model.lm_head, b.labels))
    (loss_pad, correct_pad, count_pad), (loss_pack, correct_pack, count_pack) = results
    assert int(count_pad) == int(count_pack) and int(correct_pad) == int(correct_pack)
    assert float(loss_pack) == pytest.approx(float(loss_pad), rel=1e-4)


def test_epoch_plans_are_seeded_grouped_by_length_and_cover_every_example():
    lengths = [(i * 37) % 100 + 1 for i in range(64)]
    plan = epoch_plan(lengths, 8, seed=3, epoch=1)
    assert plan == epoch_plan(lengths, 8, seed=3, epoch=1)
    assert plan != epoch_plan(lengths, 8, seed=3, epoch=2)
    assert sorted(i for batch in plan for i in batch) == list(range(64))
    spread = lambda p: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in p)  # noqa: E731
    assert spread(plan) < spread(epoch_plan(lengths, 8, seed=3, epoch=1, group_by_length=False)) / 3


def test_micro_batches_split_a_step_evenly():
    assert micro_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert micro_batches([1, 2], 4) == [[1], [2]]


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedules_warm_up_then_end_at_the_floor(kind):
    factor = lr_factor(kind, warmup_steps=2, total_steps=10, min_ratio=0.1)
    assert [factor(0), factor(1)] == [0.5, 1.0]
    if kind == "constant":
        assert factor(9) == 1.0
    else:
        assert factor(10) == pytest.approx(0.1)
        assert all(factor(s) >= factor(s + 1) for s in range(2, 10))


def test_n_checkpoints_and_n_evals_spread_over_the_run(data_dir, tmp_path):
    spec = make_spec(
        data_dir / "train.jsonl",
        validation_file=str(data_dir / "valid.jsonl"),
        max_seq_length=64,
        n_checkpoints=2,
        n_evals=4,
        hyperparameters={"n_epochs": 2},
    )
    train(spec, tmp_path)
    events = read_events(tmp_path)
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [4, 8]
    assert [e["step"] for e in events if e["type"] == "metrics" and "valid_loss" in e] == [2, 4, 6, 8]
    assert (tmp_path / "tensorboard").is_dir() and any((tmp_path / "tensorboard").iterdir())


def test_train_on_inputs_trains_prompt_tokens_too(data_dir, tmp_path):
    only_answers = train(make_spec(data_dir / "train.jsonl", max_seq_length=64, hyperparameters={"n_epochs": 1}), tmp_path / "a")
    everything = train(
        make_spec(data_dir / "train.jsonl", max_seq_length=64, train_on_inputs=True, hyperparameters={"n_epochs": 1}),
        tmp_path / "b",
    )
    assert only_answers["trained_tokens"] == everything["trained_tokens"]  # same tokens go through the model
    first_step = lambda d: [e for e in read_events(d) if e["type"] == "metrics" and "train_loss" in e][0]  # noqa: E731
    assert first_step(tmp_path / "a")["train_loss"] != first_step(tmp_path / "b")["train_loss"]


@pytest.mark.parametrize("method", ["supervised", "dpo"])
def test_one_example_per_forward_gives_the_losses_of_padded_batches(data_dir, tmp_path, method):
    """per_example (CPU's choice for real models) computes what padded batches compute, in fp32 to 1e-5."""
    if method == "dpo":
        data, extra = Path(__file__).parent / "data" / "dpo_en_demo_8.json", {"method": "dpo", "max_seq_length": 96}
    else:
        data, extra = data_dir / "train.jsonl", {"max_seq_length": 64}
    losses = {}
    for packing in ("per_example", "length_grouped"):
        spec = make_spec(data, optimization={"packing": packing, "precision": "fp32"}, hyperparameters={"n_epochs": 1}, **extra)
        train(spec, tmp_path / packing)
        losses[packing] = [
            e["train_loss"] for e in read_events(tmp_path / packing) if e["type"] == "metrics" and "train_loss" in e
        ]
        messages = [e["message"] for e in read_events(tmp_path / packing) if e["type"] == "message"]
        assert any(
            ("one example per forward pass" if packing == "per_example" else "length-grouped batches") in m for m in messages
        )
    assert len(losses["per_example"]) >= 2
    assert losses["per_example"] == pytest.approx(losses["length_grouped"], rel=1e-5)
