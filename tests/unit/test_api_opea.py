"""OPEA's General/Dataset/Training sections of the create body become the job service's JobRequest
(api/opea.job_request); a bad value in a section is a 400 naming the field it became."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError

from tuneserve.api.opea import job_request
from tuneserve.api.schemas import CreateFineTuningJob
from tuneserve.jobs.requests import JobRequest

TINY = "tuneserve/tiny-random"


def test_opea_sections_map_onto_the_request():
    body = CreateFineTuningJob(
        model=TINY,
        training_file="file-x",
        General={"lora_config": None, "task": "dpo", "enable_gradient_checkpointing": True},
        Training={
            "num_training_workers": 2,
            "resources_per_worker": {"CPU": 1},
            "dpo_beta": 0.2,
            "gradient_accumulation_steps": 4,
            "lr_scheduler": "cosine",
            "learning_rate": 3e-4,
        },
        Dataset={"max_length": "256"},
    )
    request = job_request(body)
    assert isinstance(request, JobRequest)
    assert request.training_type == "full" and request.method.type == "dpo"
    assert request.method.hyperparameters() == {"beta": 0.2}
    assert (request.num_workers, request.resources_per_worker, request.gradient_accumulation_steps) == (2, {"CPU": 1}, 4)
    assert request.lr_scheduler_type == "cosine" and request.gradient_checkpointing is True
    assert (request.learning_rate, request.max_seq_length) == (3e-4, 256)


def test_openai_fields_pass_as_they_are_and_win_over_the_sections_options():
    body = CreateFineTuningJob(
        model=TINY,
        training_file="train.jsonl",
        hyperparameters={"n_epochs": 5, "batch_size": "auto"},
        learning_rate=1e-4,
        num_workers=3,
        suffix="mine",
        unknown_openai_field=1,  # accepted and ignored
        Training={"epochs": 2, "learning_rate": 3e-4, "num_training_workers": 8},
        General={"lora_config": {"r": 4, "lora_alpha": 8}},
    )
    request = job_request(body)
    # OPEA's epochs override (as they always did); the top-level learning_rate and num_workers win
    assert request.hyperparameters.n_epochs == 2 and request.hyperparameters.batch_size == "auto"
    assert (request.learning_rate, request.num_workers, request.suffix) == (1e-4, 3, "mine")
    assert request.lora == {"r": 4, "alpha": 8} and request.training_type is None


@pytest.mark.parametrize(
    ("sections", "param"),
    [
        ({"Training": {"epochs": 0}}, ("hyperparameters", "n_epochs")),
        ({"Training": {"learning_rate": "fast"}}, ("learning_rate",)),
        ({"Training": {"lr_scheduler": "polynomial"}}, ("lr_scheduler_type",)),
        ({"Dataset": {"max_length": "long"}}, ("max_seq_length",)),  # was a 500 (int() of the raw value)
    ],
)
def test_a_bad_section_value_is_a_validation_error_naming_its_field(sections, param):
    with pytest.raises(RequestValidationError) as info:
        job_request(CreateFineTuningJob(model=TINY, training_file="file-x", **sections))
    assert tuple(info.value.errors()[0]["loc"][: len(param)]) == param
