"""Two CPU processes over gloo train as one (as on two GPUs, or two Ray Train workers): FSDP for
full fine-tuning, DDP for adapters. Each gives the weights one process gives, in fp32 (only the
order of the sums differs), and checkpoints move between the two: a checkpoint one process wrote
resumes on two FSDP ranks, and one that FSDP wrote resumes in one process, to the same weights.

Batch 3 over 2 ranks with gradient accumulation 2 leaves one rank with fewer micro-batches than
the other in every step, and none at all in each epoch's last step (16 examples): the padding
micro-batches that keep the ranks in step are exercised."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneserve.jobs.runners.local import LocalRunner
from tuneserve.training.run import train

from tests.unit.training.conftest import make_spec, read_events

pytestmark = pytest.mark.training  # runs a real training loop: not in make test-fast


def run_ranks(spec, job_dir: Path, n: int = 2) -> None:
    """`python -m tuneserve.training JOB_DIR` as n ranks, started by the local runner."""
    spec.write(job_dir)
    handle = LocalRunner(procs_per_job=n).start(job_dir.name, job_dir)
    codes = [p.wait(timeout=300) for p in (handle.process, *handle.others)]
    assert codes == [0] * n, (job_dir / "stderr.log").read_text()[-3000:] + (job_dir / "stderr-rank1.log").read_text()[-3000:]


def spec_for(data_dir: Path, training_type: str):
    lr = 1e-3 if training_type == "full" else 2e-2
    return make_spec(
        data_dir / "train.jsonl",
        validation_file=str(data_dir / "valid.jsonl"),
        training_type=training_type,
        max_seq_length=64,
        hyperparameters={"learning_rate": lr, "n_epochs": 2, "batch_size": 3},
        optimization={"precision": "fp32", "gradient_accumulation_steps": 2},
    )


def weights(job_dir: Path, name: str = "final") -> dict[str, torch.Tensor]:
    directory = job_dir / name if name == "final" else job_dir / "checkpoints" / name
    file = "model.safetensors" if (directory / "model.safetensors").exists() else "adapter_model.safetensors"
    return load_file(directory / file)


def assert_trained_alike(job_a: Path, job_b: Path) -> None:
    """The same final weights, up to float noise: the order of sums differs, and AdamW divides by
    the gradients' own size, so the noise grows with the learning rate. Measured against how far
    the second epoch moved the weights: the largest difference was 0.1% of it (full) and 0.6% (LoRA)."""
    a, b = weights(job_a), weights(job_b)
    assert sorted(a) == sorted(b)
    halfway = weights(job_a, "step-6")
    moved = max((a[k] - halfway[k]).abs().max().item() for k in a)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 0 and worst < 0.02 * moved, f"largest difference {worst:.2e}, the second epoch moved them by {moved:.2e}"


def step_losses(job_dir: Path) -> list[float]:
    return [e["train_loss"] for e in read_events(job_dir) if e["type"] == "metrics" and "train_loss" in e]


@pytest.fixture(scope="module")
def single_full(data_dir, tmp_path_factory) -> Path:
    job_dir = tmp_path_factory.mktemp("single-full")
    train(spec_for(data_dir, "full"), job_dir)
    return job_dir


@pytest.fixture(scope="module")
def fsdp_full(data_dir, tmp_path_factory) -> Path:
    job_dir = tmp_path_factory.mktemp("fsdp-full")
    run_ranks(spec_for(data_dir, "full"), job_dir)
    return job_dir


def test_fsdp_trains_full_fine_tuning_to_the_weights_of_one_process(single_full, fsdp_full):
    messages = [e["message"] for e in read_events(fsdp_full) if e["type"] == "message"]
    assert any("2 process(es) (FSDP)" in m for m in messages), messages
    assert step_losses(fsdp_full) == pytest.approx(step_losses(single_full), rel=1e-4)
    assert len(step_losses(fsdp_full)) == 12
    assert_trained_alike(fsdp_full, single_full)
    valid = [e for e in read_events(fsdp_full) if e["type"] == "metrics" and "full_valid_loss" in e]
    expected = [e for e in read_events(single_full) if e["type"] == "metrics" and "full_valid_loss" in e]
    assert valid[0]["full_valid_loss"] == pytest.approx(expected[0]["full_valid_loss"], rel=1e-4)


def test_checkpoints_resume_across_one_process_and_fsdp(data_dir, single_full, fsdp_full, tmp_path):
    spec = spec_for(data_dir, "full")
    on_two = tmp_path / "on-two"
    shutil.copytree(single_full / "checkpoints" / "step-6", on_two / "checkpoints" / "step-6")
    run_ranks(spec, on_two)
    assert any(e.get("message", "").startswith("Resumed from checkpoint step-6") for e in read_events(on_two))
    assert_trained_alike(single_full, on_two)

    on_one = tmp_path / "on-one"
    shutil.copytree(fsdp_full / "checkpoints" / "step-6", on_one / "checkpoints" / "step-6")
    train(spec, on_one)
    assert_trained_alike(fsdp_full, on_one)


def test_ddp_trains_an_adapter_to_the_weights_of_one_process(data_dir, tmp_path):
    spec = spec_for(data_dir, "lora")
    train(spec, tmp_path / "one")
    run_ranks(spec, tmp_path / "two")
    messages = [e["message"] for e in read_events(tmp_path / "two") if e["type"] == "message"]
    assert any("2 process(es) (DDP)" in m for m in messages), messages
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), rel=1e-4)
    assert_trained_alike(tmp_path / "one", tmp_path / "two")


def test_full_fine_tuning_in_a_group_of_one_is_sharded_and_trains_as_one_process(data_dir, single_full, tmp_path):
    """A process group of one (a one-GPU Ray Train worker; gpu_suite.py's NCCL check) runs the FSDP code, to the
    weights one process without a group gives."""
    import torch.distributed as dist

    from tuneserve.jobs.runners.local import free_port
    from tuneserve.training import parallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", world_size=1, rank=0)
    try:
        assert (parallel.strategy("full"), parallel.strategy("lora")) == (parallel.FSDP, parallel.SINGLE)
        train(spec_for(data_dir, "full"), tmp_path)
    finally:
        dist.destroy_process_group()
    messages = [e["message"] for e in read_events(tmp_path) if e["type"] == "message"]
    assert any("1 process(es) (FSDP)" in m for m in messages), messages
    assert step_losses(tmp_path) == pytest.approx(step_losses(single_full), rel=1e-4)
    assert_trained_alike(tmp_path, single_full)
