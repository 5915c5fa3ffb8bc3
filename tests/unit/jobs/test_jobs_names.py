"""Fine-tuned model names: ft:{base}:{org}:{suffix}:{id}, checkpoints add :ckpt-step-{N}."""

from __future__ import annotations

import pytest

from tuneserve.ids import new_id
from tuneserve.jobs.names import checkpoint_model_name, fine_tuned_model_name, job_id_of, split_checkpoint_name


@pytest.mark.parametrize("base", ["tuneserve/tiny-random", "HuggingFaceTB/SmolLM2-135M-Instruct", "/models/llama"])
@pytest.mark.parametrize("suffix", ["my-bot", None])
def test_model_name_round_trip(base, suffix):
    job_id = new_id("ftjob")
    name = fine_tuned_model_name(base, "proj-a", suffix, job_id)
    short = job_id.removeprefix("ftjob-")
    assert name == f"ft:{base}:proj-a:{suffix or ''}:{short}"
    assert job_id_of(name) == job_id

    for step in (1, 10, 12345):
        ckpt = checkpoint_model_name(name, step)
        assert ckpt == f"{name}:ckpt-step-{step}"
        assert split_checkpoint_name(ckpt) == (name, step)


def test_known_shape():
    assert (
        fine_tuned_model_name("tuneserve/tiny-random", "org", "sfx", "ftjob-abc123") == "ft:tuneserve/tiny-random:org:sfx:abc123"
    )
    assert fine_tuned_model_name("m", "org", "", "ftjob-abc123") == "ft:m:org::abc123"


@pytest.mark.parametrize(
    "name",
    [
        "ft:m:org:sfx:abc123",  # a model, not a checkpoint
        "m:ckpt-step-3",  # not a fine-tuned model
        "ft:m:org:sfx:abc123:ckpt-step-",  # no step
        "ft:m:org:sfx:abc123:ckpt-step-3x",
        "ft:m:org:sfx:abc123:ckpt-step--1",
    ],
)
def test_split_checkpoint_name_rejects_others(name):
    assert split_checkpoint_name(name) is None


@pytest.mark.parametrize("name", ["tuneserve/tiny-random", "gpt-4o-mini", "", "file-abc"])
def test_job_id_of_base_models_is_none(name):
    assert job_id_of(name) is None
