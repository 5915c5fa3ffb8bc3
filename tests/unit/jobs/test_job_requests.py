"""JobRequest, the typed request JobService.create takes: it carries every option a TrainingSpec has,
checks its types, literals and the hyperparameters' limits itself, and the service turns it into the
spec."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneserve.errors import InvalidRequest
from tuneserve.jobs import service
from tuneserve.jobs.requests import JobRequest
from tuneserve.training.spec import MAX_EPOCHS, OPTIMIZATION_KEYS, TrainingSpec

TINY = "tuneserve/tiny-random"


def test_every_spec_option_is_a_request_field():
    """create copies these by name: a spec option the request lacked would be dropped without a word."""
    assert set(OPTIMIZATION_KEYS) <= set(JobRequest.model_fields)
    assert set(service._SPEC_OPTIONS) <= set(JobRequest.model_fields)


def test_the_request_checks_what_it_can_alone():
    with pytest.raises(ValidationError):
        JobRequest(model=TINY, training_file="f", hyperparameters={"n_epochs": MAX_EPOCHS + 1})
    with pytest.raises(ValidationError):
        JobRequest(model=TINY, training_file="f", lr_scheduler_type="polynomial")  # the spec's literal
    with pytest.raises(ValidationError):
        JobRequest(model=TINY, training_file="f", n_epoch=3)  # a misspelt field is refused, not ignored
    assert JobRequest(model=TINY, training_file="f", hyperparameters={"n_epochs": "auto"}).hyperparameters.n_epochs == "auto"


def test_create_turns_a_typed_request_into_the_spec(jobs, jobs_dir, training_file):
    request = JobRequest(
        model=TINY,
        training_file=training_file.id,
        hyperparameters={"n_epochs": 7, "batch_size": 2},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        training_type="ia3",
        learning_rate=3e-4,
        lr_scheduler_type="cosine",
        train_on_inputs="auto",
        max_seq_length=256,
        seed=11,
        suffix="typed",
        metadata={"k": "v"},
    )
    job = jobs.create("proj", request)
    spec = TrainingSpec.read(jobs_dir / job.id)
    assert (spec.hyperparameters.n_epochs, spec.hyperparameters.batch_size, spec.hyperparameters.learning_rate) == (3, 2, 3e-4)
    assert (spec.training_type, spec.optimization.lr_scheduler_type, spec.max_seq_length, spec.seed) == ("ia3", "cosine", 256, 11)
    assert spec.train_on_inputs is False  # "auto" is the spec's default
    assert (job.suffix, job.user_metadata, job.seed) == ("typed", {"k": "v"}, 11)


def test_what_needs_the_spec_is_still_a_400_from_create(jobs, training_file):
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", JobRequest(model=TINY, training_file=training_file.id, warmup_ratio=2.0))
    assert (info.value.param, info.value.code) == ("warmup_ratio", "invalid_hyperparameters")
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", JobRequest(model=TINY, training_file=training_file.id, method={"type": "reinforcement"}))
    assert info.value.code == "unsupported_method"
