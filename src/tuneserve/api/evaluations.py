"""/v1/evaluations: evaluations as jobs (a tuneserve extension; OpenAI has no such route).

Models answer the items of an uploaded dataset file ({question, answer} items or chat format)
through this server's OpenAI API; the answers are scored with ROUGE-1/2/L, exact match and
optionally an LLM judge. Create one, watch `status` and `progress`, then read `summary` (means
with 95% bootstrap intervals), the per-item answers, and the HTML report. A fine-tuning job created
with `auto_evaluate: true` and a validation file gets one when it succeeds (`fine_tuning_job_id`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneserve.api.deps import Evaluations, Project
from tuneserve.api.responses import Page, WireObject, error_responses

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


class CreateEvaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        max_length=8,
        description="the models to compare, e.g. a base and a fine-tuned model",
        json_schema_extra={"uniqueItems": True},  # the service refuses a repeated model with a 400
    )
    dataset_file: str = Field(
        min_length=1,
        description="an uploaded file (purpose 'evals' or 'fine-tune') of "
        "{question, answer} items, or chat format (the last assistant turn is the reference)",
    )
    judge_model: str | None = Field(None, min_length=1, description="an LLM judge: YES/NO and a reason per answer")
    judge_base_url: str | None = Field(None, description="the judge's OpenAI-compatible endpoint (default: this server)")
    max_tokens: int = Field(256, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0, le=2)
    concurrency: int | None = Field(None, ge=1, le=64, description="answers requested at once (default 4)")
    max_items: int | None = Field(None, ge=1, le=2**31 - 1, description="use only the first N items (default: all)")
    metadata: dict[str, str] | None = None


class Progress(BaseModel):
    done: int = Field(description="answers given (items x models)")
    total: int


class Evaluation(WireObject):
    id: str
    object: Literal["evaluation"] = "evaluation"
    created_at: int
    started_at: int | None
    finished_at: int | None
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    models: list[str]
    dataset_file: str
    judge_model: str | None
    judge_base_url: str | None
    fine_tuning_job_id: str | None = Field(description="the job whose auto_evaluate made it")
    progress: Progress
    summary: dict[str, Any] | None = Field(description="per model, per metric: mean with a 95% bootstrap interval")
    error: dict[str, Any] | None
    metadata: dict[str, str] | None
    max_tokens: int | None
    temperature: float | None
    concurrency: int | None
    max_items: int | None

    @classmethod
    def of(cls, evaluation) -> Evaluation:
        params = evaluation.params
        return cls(
            id=evaluation.id,
            created_at=evaluation.created_at,
            started_at=evaluation.started_at,
            finished_at=evaluation.finished_at,
            status=evaluation.status,
            models=evaluation.models,
            dataset_file=evaluation.dataset_file,
            judge_model=evaluation.judge_model,
            judge_base_url=evaluation.judge_base_url,
            fine_tuning_job_id=evaluation.fine_tuning_job_id,
            progress=Progress(done=evaluation.progress_done, total=evaluation.progress_total),
            summary=evaluation.summary,
            error=evaluation.error,
            metadata=evaluation.user_metadata,
            **{k: params.get(k) for k in ("max_tokens", "temperature", "concurrency", "max_items")},
        )


class EvaluationList(Page[Evaluation]):
    pass


class EvaluationItem(BaseModel):
    index: int
    question: str
    reference: str
    answers: dict[str, dict[str, Any]] = Field(
        description="per model: {text, rouge1, rouge2, rougeL, exact_match, judge: {verdict, reason} | null, error, judge_error}"
    )


class EvaluationItemList(Page[EvaluationItem]):
    pass


@router.post("", response_model=Evaluation, responses=error_responses(400, 401, 404))
def create_evaluation(evaluations: Evaluations, project: Project, body: CreateEvaluation):
    """Queue an evaluation. The models and the dataset are checked now: a bad line is a 400 naming it."""
    return Evaluation.of(evaluations.create(project, body.model_dump()))


@router.get("", response_model=EvaluationList, responses=error_responses(400, 401))
def list_evaluations(evaluations: Evaluations, project: Project, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    """List evaluations, newest first, with cursor pagination (`after`, `limit`, `has_more`)."""
    rows, has_more = evaluations.list(project, after=after, limit=limit)
    return EvaluationList.of([Evaluation.of(r) for r in rows], has_more)


@router.get("/{evaluation_id}", response_model=Evaluation, responses=error_responses(401, 404))
def retrieve_evaluation(evaluations: Evaluations, project: Project, evaluation_id: str):
    """One evaluation: status, progress, and the summary once it has succeeded."""
    return Evaluation.of(evaluations.get(project, evaluation_id))


@router.get("/{evaluation_id}/items", response_model=EvaluationItemList, responses=error_responses(400, 401, 404))
def list_items(
    evaluations: Evaluations,
    project: Project,
    evaluation_id: str,
    after: int | None = Query(None, ge=0, description="the index of the last item seen"),
    limit: int = Query(20, ge=1, le=1000),
):
    """Per item, in dataset order: {index, question, reference, answers: {MODEL: {text, rouge1, rouge2,
    rougeL, exact_match, judge: {verdict, reason} | null, error, judge_error}}}. Empty until it has succeeded."""
    items, has_more = evaluations.items(project, evaluation_id, after=after, limit=limit)
    return EvaluationItemList.of([EvaluationItem.model_validate(item) for item in items], has_more)


@router.get(
    "/{evaluation_id}/report.html",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **error_responses(400, 401, 404, 409)},
)
def report_html(evaluations: Evaluations, project: Project, evaluation_id: str):
    """The self-contained HTML report: a chart of the metrics and the answers side by side."""
    return FileResponse(evaluations.report_html(project, evaluation_id), media_type="text/html")


@router.post("/{evaluation_id}/cancel", response_model=Evaluation, responses=error_responses(400, 401, 404, 409))
def cancel_evaluation(evaluations: Evaluations, project: Project, evaluation_id: str):
    """Cancel a queued or running evaluation (a running one stops after the answers in flight)."""
    return Evaluation.of(evaluations.cancel(project, evaluation_id))
