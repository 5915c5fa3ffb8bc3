"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints (OpenAI's API)."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request

from tuneserve.api.deps import Project
from tuneserve.api.schemas import CreateFineTuningJob, checkpoint_object, event_object, job_object, list_object

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("")
def create_job(
    request: Request,
    project: Project,
    body: CreateFineTuningJob,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
):
    """Create a job. A retry with the same Idempotency-Key returns the first job instead of a second one."""
    job = request.app.state.jobs.create(project, body.to_service_request(), idempotency_key=idempotency_key)
    return job_object(job)


@router.get("")
def list_jobs(request: Request, project: Project, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    """List jobs, newest first, with cursor pagination (`after`, `limit`, `has_more`)."""
    metadata = {
        k[len("metadata[") : -1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")
    }
    jobs, has_more = request.app.state.jobs.list(project, after=after, limit=limit, metadata=metadata or None)
    return list_object([job_object(j) for j in jobs], has_more)


@router.get("/{job_id}")
def retrieve_job(request: Request, project: Project, job_id: str):
    """One job."""
    return job_object(request.app.state.jobs.get(project, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(request: Request, project: Project, job_id: str):
    """Cancel a job; a running job's process group is stopped within seconds."""
    return job_object(request.app.state.jobs.cancel(project, job_id))


@router.post("/{job_id}/pause")
def pause_job(request: Request, project: Project, job_id: str):
    """Pause a queued or running job; a running one writes a checkpoint at its next step, then stops."""
    return job_object(request.app.state.jobs.pause(project, job_id))


@router.post("/{job_id}/resume")
def resume_job(request: Request, project: Project, job_id: str):
    """Resume a paused job: it is queued again and continues from its last checkpoint."""
    return job_object(request.app.state.jobs.resume(project, job_id))


@router.get("/{job_id}/events")
def list_events(request: Request, project: Project, job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    """The job's events, newest first: status changes, messages, and metrics per logging step."""
    events, has_more = request.app.state.jobs.events(project, job_id, after=after, limit=limit)
    return list_object([event_object(e) for e in events], has_more)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    request: Request, project: Project, job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=1000)
):
    """The job's checkpoints (one per epoch), newest first, each usable as a model."""
    ckpts, has_more = request.app.state.jobs.checkpoints(project, job_id, after=after, limit=limit)
    return list_object([checkpoint_object(c) for c in ckpts], has_more, with_ids=True)
