"""Fixtures for training tests: the tiny random model's tokenizer (SmolLM2's), small JSONL data sets,
specs, and one shared 3-epoch training run that several tests inspect (training is the slow part)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuneserve.models import TINY_RANDOM, resolve_model
from tuneserve.training.spec import Hyperparameters, TrainingSpec

NAMES = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kit", "Lu", "Max", "Ned", "Oz", "Pia"]


def write_jsonl(path: Path, conversations: list[list[dict[str, Any]]]) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    return path


def tiny_conversations() -> list[list[dict[str, Any]]]:
    """16 short, very regular conversations: a LoRA on a random 2-layer model can still fit them."""
    return [
        [{"role": "user", "content": f"Who is {n}?"}, {"role": "assistant", "content": f"{n} is a friend of Nova."}]
        for n in NAMES
    ]


def read_events(job_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]


def make_spec(training_file: Path, **overrides: Any) -> TrainingSpec:
    hp = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0, "learning_rate": 2e-2}
    hp.update(overrides.pop("hyperparameters", {}))
    # No early stopping unless a test asks: a random 2-layer model's validation loss wanders by noise, and these
    # tests expect the last checkpoint to be the result.
    fields: dict[str, Any] = {
        "model": TINY_RANDOM,
        "training_file": str(training_file),
        "lora": {"r": 8, "alpha": 16},
        "early_stopping_patience": 0,
    }
    fields.update(overrides)
    return TrainingSpec(hyperparameters=Hyperparameters(**hp), **fields)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return resolve_model(TINY_RANDOM)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.jsonl: the 16 tiny conversations plus one whose answer lies past max_seq_length=64 (to be dropped);
    valid.jsonl: 4 of them."""
    root = tmp_path_factory.mktemp("data")
    long_question = "Please " + "tell me more " * 40 + "about Nova."
    too_long = [{"role": "user", "content": long_question}, {"role": "assistant", "content": "Nova is a star."}]
    write_jsonl(root / "train.jsonl", tiny_conversations() + [too_long])
    write_jsonl(root / "valid.jsonl", tiny_conversations()[:4])
    return root


@pytest.fixture(scope="session")
def trained_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted 3-epoch run (17 examples, 1 dropped, batch 4: 4 steps per epoch, 12 in all)."""
    from tuneserve.training.run import train

    job_dir = tmp_path_factory.mktemp("job-a")
    spec = make_spec(data_dir / "train.jsonl", validation_file=str(data_dir / "valid.jsonl"), max_seq_length=64, logging_steps=2)
    spec.write(job_dir)
    result = train(spec, job_dir)
    return {"spec": spec, "job_dir": job_dir, "result": result, "events": read_events(job_dir)}


# The project's sample data (LLaMA-Factory's data/ folder) lives in shared/ beside the checkout.
