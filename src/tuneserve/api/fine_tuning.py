"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints (OpenAI's API)."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request

from tuneserve.api import opea
from tuneserve.api.deps import Jobs, Project
from tuneserve.api.responses import (
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
    error_responses,
)
from tuneserve.api.schemas import CreateFineTuningJob

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("", response_model=FineTuningJob, responses=error_responses(400, 401, 404))
def create_job(
    jobs: Jobs,
    project: Project,
    body: CreateFineTuningJob,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
):
    """Create a job. A retry with the same Idempotency-Key returns the first job instead of a second one."""
    job = jobs.create(project, opea.job_request(body), idempotency_key=idempotency_key)
    return FineTuningJob.of(job)


@router.get("", response_model=FineTuningJobList, responses=error_responses(400, 401))
def list_jobs(request: Request, jobs: Jobs, project: Project, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    """List jobs, newest first, with cursor pagination (`after`, `limit`, `has_more`).
    `metadata[KEY]=VALUE` query parameters keep only the jobs whose metadata has those pairs."""
    metadata = {
        k[len("metadata[") : -1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")
    }
    rows, has_more = jobs.list(project, after=after, limit=limit, metadata=metadata or None)
    return FineTuningJobList.of([FineTuningJob.of(j) for j in rows], has_more)


@router.get("/{job_id}", response_model=FineTuningJob, responses=error_responses(401, 404))
def retrieve_job(jobs: Jobs, project: Project, job_id: str):
    """One job."""
    return FineTuningJob.of(jobs.get(project, job_id))


@router.post("/{job_id}/cancel", response_model=FineTuningJob, responses=error_responses(400, 401, 404, 409))
def cancel_job(jobs: Jobs, project: Project, job_id: str):
    """Cancel a job; a running job's process group is stopped within seconds."""
    return FineTuningJob.of(jobs.cancel(project, job_id))


@router.post("/{job_id}/pause", response_model=FineTuningJob, responses=error_responses(400, 401, 404, 409))
def pause_job(jobs: Jobs, project: Project, job_id: str):
    """Pause a queued or running job; a running one writes a checkpoint at its next step, then stops."""
    return FineTuningJob.of(jobs.pause(project, job_id))


@router.post("/{job_id}/resume", response_model=FineTuningJob, responses=error_responses(400, 401, 404, 409))
def resume_job(jobs: Jobs, project: Project, job_id: str):
    """Resume a paused job: it is queued again and continues from its last checkpoint."""
    return FineTuningJob.of(jobs.resume(project, job_id))


@router.get("/{job_id}/events", response_model=FineTuningJobEventList, responses=error_responses(400, 401, 404))
def list_events(jobs: Jobs, project: Project, job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    """The job's events, newest first: status changes, messages, and metrics per logging step."""
    events, has_more = jobs.events(project, job_id, after=after, limit=limit)
    return FineTuningJobEventList.of([FineTuningJobEvent.of(e) for e in events], has_more)


@router.get("/{job_id}/checkpoints", response_model=FineTuningJobCheckpointList, responses=error_responses(400, 401, 404))
def list_checkpoints(jobs: Jobs, project: Project, job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=1000)):
    """The job's checkpoints (one per epoch), newest first, each usable as a model."""
    ckpts, has_more = jobs.checkpoints(project, job_id, after=after, limit=limit)
    return FineTuningJobCheckpointList.of([FineTuningJobCheckpoint.of(c) for c in ckpts], has_more)
