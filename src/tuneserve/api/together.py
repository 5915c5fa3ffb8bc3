"""Together's fine-tuning API, so that the official `together` SDK runs against tuneserve unmodified:
/v1/fine-tunes (create, list, retrieve, cancel, delete, events, metrics, checkpoints, preview), the model limits
and price estimate the SDK asks for before each create, /v1/finetune/download, and the upload's extra steps (api/together_files.py).

Kept apart from the OpenAI routes, as OPEA's are (api/opea.py): the same services, another dialect. Files, chat and
completions are the OpenAI routes themselves: Together's SDK uses the same paths and parses their answers.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from tuneserve.api import downloads, together_files
from tuneserve.api.deps import Files, Jobs, LocalInference, Project, UpstreamServer
from tuneserve.api.responses import error_responses
from tuneserve.api.together_requests import base_model_of, job_request
from tuneserve.api.together_schemas import (
    EstimatePriceBody,
    FullLimits,
    JobDeleted,
    LoraLimits,
    ModelLimits,
    Preview,
    PreviewBody,
    PriceEstimate,
    TogetherCheckpoint,
    TogetherCheckpointList,
    TogetherCreateBody,
    TogetherEvent,
    TogetherEventList,
    TogetherJob,
    TogetherJobList,
    TogetherMetrics,
    iso,
)
from tuneserve.errors import InvalidRequest
from tuneserve.jobs.names import fine_tuned_model_name
from tuneserve.jobs.service import JobService
from tuneserve.models import check_model
from tuneserve.training.spec import MAX_BATCH_SIZE, MAX_EPOCHS, LoraSpec, TrainingSpec

router = APIRouter(tags=["together"])
router.include_router(together_files.router)

_ALL = 1_000_000  # Together's lists are not paginated: one page holds them all


def _model_name_of_job(jobs: JobService, project: str):
    def name(job_id: str) -> str:
        job = jobs.get(project, job_id)
        return fine_tuned_model_name(job.spec["model"], job.project, job.suffix, job.id)

    return name


@router.post("/v1/fine-tunes", response_model=TogetherJob, responses=error_responses(400, 401, 404))
def create_fine_tune(jobs: Jobs, project: Project, body: TogetherCreateBody):
    """Create a job from Together's parameters; one tuneserve cannot honour is a 400 naming it."""
    model = base_model_of(body, _model_name_of_job(jobs, project))
    job = jobs.create(project, job_request(body, model))
    return TogetherJob.of(job, from_checkpoint=body.from_checkpoint)


@router.get("/v1/fine-tunes", response_model=TogetherJobList, responses=error_responses(401))
def list_fine_tunes(jobs: Jobs, project: Project):
    """Every job of the project, newest first."""
    rows, _ = jobs.list(project, limit=_ALL)
    return TogetherJobList(data=[TogetherJob.of(j) for j in rows])


@router.get("/v1/fine-tunes/models/limits", response_model=ModelLimits, responses=error_responses(400, 401, 404))
def model_limits(jobs: Jobs, project: Project, model_name: str = Query(min_length=1)):
    """The ranges a job on `model_name` (a model, a fine-tuned model or a job id) accepts: tuneserve's, the same for
    any model. The model itself is checked by the create (a 404 naming it); a job id must be the project's."""
    if model_name.startswith("ftjob-"):  # the SDK asks with from_checkpoint's job id
        model_name = jobs.get(project, model_name).spec["model"]
    fields = TrainingSpec.model_fields
    seq = fields["max_seq_length"].metadata
    return ModelLimits(
        model_name=model_name,
        default_gradient_accumulation_steps=1,
        lora_training=LoraLimits(
            default_rank=LoraSpec().r,
            max_batch_size=MAX_BATCH_SIZE,
            max_batch_size_dpo=MAX_BATCH_SIZE,
            max_rank=1024,
            min_batch_size=1,
            target_modules=["all-linear"],
        ),
        full_training=FullLimits(max_batch_size=MAX_BATCH_SIZE, max_batch_size_dpo=MAX_BATCH_SIZE, min_batch_size=1),
        max_learning_rate=1.0,
        min_learning_rate=1e-9,
        max_num_checkpoints=1000,
        max_num_epochs=MAX_EPOCHS,
        max_num_evals=1000,
        max_seq_length_dpo=_bound(seq, "le"),
        max_seq_length_sft=_bound(seq, "le"),
        min_max_seq_length=_bound(seq, "ge"),
        merge_output_lora=True,
        supports_full_training=True,
        supports_reasoning=False,
        supports_tools=True,
        supports_vision=False,
    )


def _bound(metadata: list, name: str) -> int:
    return next(getattr(m, name) for m in metadata if getattr(m, name, None) is not None)


@router.post("/v1/fine-tunes/estimate-price", response_model=PriceEstimate, responses=error_responses(400, 401, 404))
def estimate_price(files: Files, project: Project, body: EstimatePriceBody):
    """What the SDK asks before each create: self-hosted training costs nothing. The files must exist."""
    files.find(project, body.training_file, "training_file")
    if body.validation_file:
        files.find(project, body.validation_file, "validation_file")
    return PriceEstimate()


# Together's names for the shapes of SFT data (its preview's dataset_format).
_DATASET_FORMATS = {
    "text": "general",
    "chat": "conversation",
    "sharegpt": "conversation",
    "alpaca": "instruction",
    "prompt_completion": "instruction",
}


@router.post("/v1/fine-tunes/preview", response_model=Preview, responses=error_responses(400, 401, 404))
def preview_fine_tune(files: Files, project: Project, body: PreviewBody):
    """The first `top_k` rows of the training file tokenized as training tokenizes them: ids, labels, trained spans.
    The sequence length is tuneserve's default max_seq_length. Preference files are refused, as Together does."""
    row, path = files.content_path(project, body.training_file, "training_file")
    model = check_model(body.model)  # ModelNotFound is a 404 on param "model"
    if row.format not in _DATASET_FORMATS:  # preference pairs, or a file that did not pass its check
        raise InvalidRequest(
            f"{body.training_file} holds {row.format or 'no valid'} data; the preview shows SFT data only "
            "(conversations, instructions or text)",
            param="training_file",
            code="invalid_training_file",
        )
    if not path.exists():
        raise InvalidRequest(
            f"the content of {body.training_file} is no longer stored", param="training_file", code="file_content_missing"
        )
    from tuneserve.data.preview import tokenized_examples  # imports transformers: only when asked

    max_seq_length = TrainingSpec.model_fields["max_seq_length"].default
    examples = tokenized_examples(path, model, body.top_k, max_seq_length=max_seq_length, train_on_inputs=body.train_on_inputs)
    return Preview(
        dataset_format=_DATASET_FORMATS[row.format],
        max_seq_length=max_seq_length,
        model=model,
        rows=examples,
        train_on_inputs=body.train_on_inputs,
    )


@router.get("/v1/fine-tunes/{job_id}", response_model=TogetherJob, responses=error_responses(401, 404))
def retrieve_fine_tune(jobs: Jobs, project: Project, job_id: str):
    """One job."""
    return TogetherJob.of(jobs.get(project, job_id))


@router.post("/v1/fine-tunes/{job_id}/cancel", response_model=TogetherJob, responses=error_responses(401, 404, 409))
def cancel_fine_tune(jobs: Jobs, project: Project, job_id: str):
    """Cancel a job; a running job's process is stopped within seconds."""
    return TogetherJob.of(jobs.cancel(project, job_id))


@router.delete("/v1/fine-tunes/{job_id}", response_model=JobDeleted, responses=error_responses(401, 404, 409))
def delete_fine_tune(jobs: Jobs, engine: LocalInference, upstream: UpstreamServer, project: Project, job_id: str):
    """Delete an ended job with its events, checkpoints and weights; its models leave serving. A job that may still
    run is a 409: cancel it first."""
    for name, directory in jobs.delete(project, job_id):
        if upstream is not None:
            upstream.unregister_adapter(name)
        engine.unload_adapter(directory)
    return JobDeleted(message=f"Fine-tune job {job_id} deleted, with its events, checkpoints and models")


@router.get("/v1/fine-tunes/{job_id}/events", response_model=TogetherEventList, responses=error_responses(401, 404))
def list_fine_tune_events(jobs: Jobs, project: Project, job_id: str):
    """The job's events, oldest first (per-step metrics are at /v1/fine-tunes/{job_id}/metrics)."""
    events, _ = jobs.events(project, job_id, limit=_ALL)
    return TogetherEventList(data=[TogetherEvent.of(e) for e in reversed(events) if e.type != "metrics"])


def _iso_only(value):
    # pydantic would take a number as Unix seconds; the document says an ISO-8601 date-time, and so does Together.
    if isinstance(value, str) and not re.match(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("an ISO-8601 date-time is expected, e.g. 2026-01-01T00:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


@router.get("/v1/fine-tunes/{job_id}/metrics", response_model=TogetherMetrics, responses=error_responses(400, 401, 404))
def list_fine_tune_metrics(
    jobs: Jobs,
    project: Project,
    job_id: str,
    global_step_from: int | None = None,
    global_step_to: int | None = None,
    logged_at_from: IsoDateTime | None = None,
    logged_at_to: IsoDateTime | None = None,
    resolution: int | None = Query(None, ge=1, description="at most this many, evenly sampled"),
):
    """The job's metrics, one record per logged step, oldest first: its `metrics` events' numbers and `global_step`."""
    events, _ = jobs.events(project, job_id, limit=_ALL)
    start, end = _seconds(logged_at_from), _seconds(logged_at_to)
    records = []
    for event in reversed(events):
        step = (event.data or {}).get("step")
        if event.type != "metrics" or not isinstance(step, int):
            continue
        if (global_step_from is not None and step < global_step_from) or (global_step_to is not None and step > global_step_to):
            continue
        if (start is not None and event.created_at < start) or (end is not None and event.created_at > end):
            continue
        numbers = {k: float(v) for k, v in event.data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        records.append({**numbers, "global_step": float(step)})
    if resolution is not None and len(records) > resolution:
        last = len(records) - 1
        records = [records[round(i * last / max(resolution - 1, 1))] for i in range(resolution)]
    return TogetherMetrics(metrics=records)


def _seconds(moment: datetime | None) -> float | None:
    """Unix seconds; a time without a zone is UTC, as Together's timestamps are."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@router.get("/v1/fine-tunes/{job_id}/checkpoints", response_model=TogetherCheckpointList, responses=error_responses(401, 404))
def list_fine_tune_checkpoints(jobs: Jobs, project: Project, job_id: str):
    """The final model (once the job has completed), then the checkpoints, newest first; each `path` is a model name."""
    job = jobs.get(project, job_id)
    ckpts, _ = jobs.checkpoints(project, job_id, limit=_ALL)
    data = [
        TogetherCheckpoint(
            checkpoint_type=f"Intermediate (step {c.step_number})",
            created_at=iso(c.created_at),
            path=c.fine_tuned_model_checkpoint,
            step=c.step_number,
            checkpoint="adapter",
        )
        for c in ckpts
    ]
    if job.status == "succeeded" and job.fine_tuned_model:
        final = TogetherCheckpoint(
            checkpoint_type="Final",
            created_at=iso(job.finished_at or job.created_at),
            path=job.fine_tuned_model,
            step=job.last_step or 0,
            checkpoint="adapter",
        )
        data.insert(0, final)
    return TogetherCheckpointList(data=data)


@router.get(
    "/v1/finetune/download",
    response_class=downloads.FileResponse,
    responses={
        200: {"content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(400, 401, 404, 409, 507),
    },
)
def download_fine_tune(
    jobs: Jobs,
    project: Project,
    ft_id: str = Query(min_length=1, description="the job's id"),
    checkpoint: Literal["merged", "adapter", "model_output_path"] = Query(
        "merged", description="merged (full weights, the default), adapter (PEFT), model_output_path (as trained)"
    ),
    checkpoint_step: int | None = Query(None, ge=0, description="a checkpoint's step; 0 or none: the final model"),
):
    """A tar.gz of the fine-tuned model, as GET /v1/fine_tuning/jobs/{id}/download (Range requests too)."""
    kind = "merged" if checkpoint == "merged" else "adapter"
    return downloads.model_tarball(jobs, project, ft_id, kind, None, checkpoint_step or None)
