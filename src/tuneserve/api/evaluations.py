"""/v1/evaluations: evaluations as jobs (a tuneserve extension; OpenAI has no such route).

Models answer the items of an uploaded dataset file ({question, answer} items or chat format)
through this server's OpenAI API; the answers are scored with ROUGE-1/2/L, exact match and
optionally an LLM judge. Create one, watch `status` and `progress`, then read `summary` (means
with 95% bootstrap intervals), the per-item answers, and the HTML report. A fine-tuning job created
with `auto_evaluate: true` and a validation file gets one when it succeeds (`fine_tuning_job_id`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneserve.api.deps import Project
from tuneserve.api.schemas import list_object
from tuneserve.store.tables import Evaluation

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


class CreateEvaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, max_length=8, description="the models to compare, e.g. a base and a fine-tuned model"
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
    max_items: int | None = Field(None, ge=1, description="use only the first N items (default: all)")
    metadata: dict[str, str] | None = None


def evaluation_object(row: Evaluation) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "evaluation",
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "status": row.status,
        "models": row.models,
        "dataset_file": row.dataset_file,
        "judge_model": row.judge_model,
        "judge_base_url": row.judge_base_url,
        "fine_tuning_job_id": row.fine_tuning_job_id,
        "progress": {"done": row.progress_done, "total": row.progress_total},  # answers (items x models)
        "summary": row.summary,
        "error": row.error,
        "metadata": row.user_metadata,
        **{k: row.params.get(k) for k in ("max_tokens", "temperature", "concurrency", "max_items")},
    }


@router.post("")
def create_evaluation(request: Request, project: Project, body: CreateEvaluation):
    """Queue an evaluation. The models and the dataset are checked now: a bad line is a 400 naming it."""
    row = request.app.state.evaluations.create(project, body.model_dump())
    return evaluation_object(row)


@router.get("")
def list_evaluations(request: Request, project: Project, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    """List evaluations, newest first, with cursor pagination (`after`, `limit`, `has_more`)."""
    rows, has_more = request.app.state.evaluations.list(project, after=after, limit=limit)
    return list_object([evaluation_object(r) for r in rows], has_more)


@router.get("/{evaluation_id}")
def retrieve_evaluation(request: Request, project: Project, evaluation_id: str):
    """One evaluation: status, progress, and the summary once it has succeeded."""
    return evaluation_object(request.app.state.evaluations.get(project, evaluation_id))


@router.get("/{evaluation_id}/items")
def list_items(
    request: Request,
    project: Project,
    evaluation_id: str,
    after: str | None = Query(None, description="the last index seen"),
    limit: int = Query(20, ge=1, le=1000),
):
    """Per item, in dataset order: {index, question, reference, answers: {MODEL: {text, rouge1, rouge2,
    rougeL, exact_match, judge: {verdict, reason} | null, error, judge_error}}}. Empty until it has succeeded."""
    items, has_more = request.app.state.evaluations.items(project, evaluation_id, after=after, limit=limit)
    return list_object(items, has_more)


@router.get("/{evaluation_id}/report.html")
def report_html(request: Request, project: Project, evaluation_id: str):
    """The self-contained HTML report: a chart of the metrics and the answers side by side."""
    return FileResponse(request.app.state.evaluations.report_html(project, evaluation_id), media_type="text/html")


@router.post("/{evaluation_id}/cancel")
def cancel_evaluation(request: Request, project: Project, evaluation_id: str):
    """Cancel a queued or running evaluation (a running one stops after the answers in flight)."""
    return evaluation_object(request.app.state.evaluations.cancel(project, evaluation_id))
