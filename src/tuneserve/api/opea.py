"""The OPEA fine-tuning micro-service's side of the API: its own paths, which take the job id in a
POST body, and its General/Dataset/Training sections of the create body (`job_request`).

Kept separate so the OpenAI routes stay exactly OpenAI's. `training_file` may be a file name
there; the job service accepts both.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from tuneserve.api.deps import Jobs, Project
from tuneserve.api.responses import FineTuningJob, FineTuningJobCheckpoint, HealthCheck, error_responses
from tuneserve.api.schemas import CreateFineTuningJob, JobIdBody, OpeaGeneral
from tuneserve.jobs.requests import JobRequest

router = APIRouter(tags=["opea"])

# OPEA's Training keys that are tuneserve options under another name (or the same one).
_TRAINING_OPTIONS = (
    ("num_workers", "num_training_workers"),
    ("resources_per_worker", "resources_per_worker"),
    ("weight_decay", "weight_decay"),
    ("gradient_accumulation_steps", "gradient_accumulation_steps"),
    ("lr_scheduler_type", "lr_scheduler"),
)


def job_request(body: CreateFineTuningJob) -> JobRequest:
    """The job service's request for a create body: its OpenAI fields, with OPEA's config sections mapped onto them.

    A value that came from a section is checked as the field it became: a bad one is the usual 400 naming that field.
    """
    request: dict[str, Any] = body.model_dump(include=set(JobRequest.model_fields), exclude_none=True)
    training = body.Training or {}
    opea_hp = {
        "n_epochs": training.get("epochs"),
        "batch_size": training.get("batch_size"),
        "beta": training.get("dpo_beta"),
    }
    if any(v is not None for v in opea_hp.values()):
        request["hyperparameters"] = {
            **request.get("hyperparameters", {}),
            **{k: v for k, v in opea_hp.items() if v is not None},
        }
    # OpenAI's hyperparameters have no absolute rate; the top-level learning_rate is one (and wins, given too).
    if training.get("learning_rate") is not None:
        request.setdefault("learning_rate", training["learning_rate"])
    for ours, theirs in _TRAINING_OPTIONS:
        if training.get(theirs) is not None:
            request.setdefault(ours, training[theirs])
    if (body.Dataset or {}).get("max_length"):
        request["max_seq_length"] = body.Dataset["max_length"]
    general = body.General or OpeaGeneral()
    if general.task == "dpo":
        request["method"] = {"type": "dpo", "dpo": {"hyperparameters": request.pop("hyperparameters", {})}}
    if general.enable_gradient_checkpointing:
        request.setdefault("gradient_checkpointing", True)
    if "lora_config" in general.model_fields_set:
        lora = general.lora_config
        if lora is None:  # OPEA's way of asking for full fine-tuning
            request.setdefault("training_type", "full")
        else:
            mapped = {
                "r": lora.get("r"),
                "alpha": lora.get("lora_alpha"),
                "dropout": lora.get("lora_dropout"),
                "target_modules": lora.get("target_modules"),
            }
            request["lora"] = {k: v for k, v in mapped.items() if v is not None}
    try:
        return JobRequest.model_validate(request)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.post("/v1/fine_tuning/jobs/retrieve", response_model=FineTuningJob, responses=error_responses(400, 401, 404))
def opea_retrieve(jobs: Jobs, project: Project, body: JobIdBody):
    """OPEA: retrieve a job by `fine_tuning_job_id`."""
    return FineTuningJob.of(jobs.get(project, body.fine_tuning_job_id))


@router.post("/v1/fine_tuning/jobs/cancel", response_model=FineTuningJob, responses=error_responses(400, 401, 404, 409))
def opea_cancel(jobs: Jobs, project: Project, body: JobIdBody):
    """OPEA: cancel a job by `fine_tuning_job_id`."""
    return FineTuningJob.of(jobs.cancel(project, body.fine_tuning_job_id))


@router.post(
    "/v1/finetune/list_checkpoints", response_model=list[FineTuningJobCheckpoint], responses=error_responses(400, 401, 404)
)
def opea_list_checkpoints(jobs: Jobs, project: Project, body: JobIdBody):
    """OPEA: a bare JSON array of the job's checkpoints, oldest first."""
    ckpts, _ = jobs.checkpoints(project, body.fine_tuning_job_id, limit=1000)
    return [FineTuningJobCheckpoint.of(c) for c in reversed(ckpts)]


@router.get("/v1/health_check", response_model=HealthCheck)
def health_check():
    """OPEA: liveness."""
    return HealthCheck()
